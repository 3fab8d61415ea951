"""seeknal runs as traces: one per run, a span per executed node (see :mod:`.spans`)."""
