"""Observability daemon for the SQLite state DB of Flujo workflow engines."""

__version__ = "0.1.0"
