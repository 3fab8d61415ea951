"""Observability daemon for the state DBs of Python workflow engines (one package per engine)."""

__version__ = "0.1.0"
