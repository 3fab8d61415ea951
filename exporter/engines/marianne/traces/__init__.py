"""Marianne spans, rebuilt from a workspace DB's jobs, sheets and execution history (see :mod:`.spans`)."""
