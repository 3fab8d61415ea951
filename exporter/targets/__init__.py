"""Multi-target mode: the ``targets:`` section (:mod:`.config`) and one refresh, registry and span
export per target behind ``/probe?target=NAME`` (:mod:`.serve`)."""
