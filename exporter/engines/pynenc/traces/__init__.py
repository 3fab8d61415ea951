"""pynenc spans, rebuilt from the invocation history (see :mod:`.spans`)."""
