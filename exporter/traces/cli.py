"""The flags of the span export commands, defined once for ``state-exporter replay`` and
``python -m exporter.traces replay|tail`` (which runs them: :mod:`exporter.traces.__main__`).

Kept free of the export's own imports (grpc, protobuf): ``state-exporter --help`` builds these parsers.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from exporter.engines import AUTO, ENGINE_NAMES

REPLAY_HELP = "backfill stored spans over OTLP (resumable)"
REPLAY_DESCRIPTION = (
    "Export the spans stored in the DB over OTLP, run by run; interrupted, it resumes where it stopped."
    " Settings come from --config (its traces: section), then the flags, then OTEL_* variables."
    " Exit status: 0 done, 1 interrupted or failed, 2 bad arguments or configuration."
)
TAIL_HELP = "follow the DB and export runs as they finish (like the daemon)"


def add_engine_flag(parser: argparse.ArgumentParser) -> None:
    """``--engine``, shared by every command that reads a DB.  Not an argparse ``choices``: a bad name is
    a configuration error like a bad ``db.engine`` in the file or the environment."""
    parser.add_argument(
        "--engine",
        metavar="NAME",
        help=f"engine that wrote the DB: {AUTO} (the default: detect it) or one of: {', '.join(ENGINE_NAMES)}"
        " (overrides db.engine)",
    )


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--db",
        required=True,
        help="the state DB: a SQLite file (opened read-only), or postgresql://USER@HOST:PORT/DB (Flujo on"
        " Postgres, read-only; the password from PGPASSWORD or PGPASSFILE)",
    )
    add_engine_flag(parser)
    parser.add_argument(
        "--state",
        type=Path,
        help="the exporter's state file (created if missing; default: traces.state_file, else one named"
        " after the DB in $STATE_DIRECTORY or ./var/state)",
    )
    parser.add_argument(
        "--config", type=Path, help="YAML config; its traces: section and db.engine are used (with STATE_EXPORTER_*)"
    )
    parser.add_argument("--endpoint", help="collector endpoint (traces.endpoint)")
    parser.add_argument("--protocol", choices=("grpc", "http/protobuf"), help="traces.protocol")
    parser.add_argument("--insecure", action="store_true", default=None, help="gRPC without TLS (traces.tls.insecure)")
    parser.add_argument("--header", action="append", default=[], metavar="K=V", help="request header (repeatable)")
    parser.add_argument("--compression", choices=("none", "gzip"))
    parser.add_argument("--timeout", help="per request, e.g. 10s")
    parser.add_argument("--batch-size", type=int, help="spans per request (traces.batch_size)")
    parser.add_argument("--service-name", help="resource service.name (traces.service_name)")
    parser.add_argument(
        "--id-namespace", help="mixed into every trace and span id, as the daemon's (traces.id_namespace)"
    )
    parser.add_argument(
        "--timezone", default=None, help="zone of the naive local times the engine writes (default: local)"
    )
    parser.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))


def add_replay_flags(parser: argparse.ArgumentParser) -> None:
    _common(parser)
    parser.add_argument("--since", help="runs started at or after: ISO-8601 instant or a duration ago (7d)")
    parser.add_argument("--until", help="runs started before: ISO-8601 instant or a duration ago")
    parser.add_argument("--run-id", action="append", default=[], help="only this run (repeatable)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--restart", action="store_true", help="start a finished or interrupted replay over")


def add_tail_flags(parser: argparse.ArgumentParser) -> None:
    _common(parser)
    parser.add_argument("--poll-interval", help="traces.poll_interval, e.g. 1s")
    parser.add_argument("--grace-period", help="traces.grace_period")
    parser.add_argument("--settle-period", help="traces.settle_period")
    parser.add_argument("--start-at", choices=("beginning", "end"))
    parser.add_argument("--once", action="store_true", help="one cycle, then exit")
