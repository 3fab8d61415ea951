"""``python -m exporter.traces replay|tail``: the span export without the daemon.

    state-exporter replay --db flujo_ops.db --endpoint http://localhost:4317 [--engine NAME] \\
        [--since 2026-11-01 | --since 7d] [--until ...] [--run-id ID ...] [--state traces-state.sqlite]
    python -m exporter.traces tail --db flujo_ops.db --state traces-state.sqlite --endpoint ...

Without ``--state``: the config's ``traces.state_file``, else a file named after the DB in the state
directory (``$STATE_DIRECTORY`` or ``./var/state``: ``traces-<db name>-<hash of its path>.sqlite``),
printed at the start.

Settings come from ``--config`` (its ``traces:`` section), then the flags, then ``OTEL_*`` variables
for whatever neither set.  Exit status: 0 done, 1 interrupted or failed, 2 bad arguments/config.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import logging
import signal
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from exporter import logs
from exporter.clock import system_clock
from exporter.components import state_directory
from exporter.config import ConfigError, is_postgres_url, load_config, parse_duration
from exporter.reader import DatabaseUnavailable, Reader, StateReader
from exporter.redact import redact_url
from exporter.timeparse import resolve_timezone
from exporter.traces.backfill import replay
from exporter.traces.cli import REPLAY_DESCRIPTION, REPLAY_HELP, TAIL_HELP, add_replay_flags, add_tail_flags
from exporter.traces.config import TracesConfig, apply_otel_env, parse_key_values
from exporter.traces.tailer import SpanTailer

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
log = logging.getLogger("exporter.traces")


def _parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    add_replay_flags(sub.add_parser("replay", help=REPLAY_HELP, description=REPLAY_DESCRIPTION))
    add_tail_flags(sub.add_parser("tail", help=TAIL_HELP))
    return parser


def parse_when(text: str | None, now: datetime) -> datetime | None:
    """An ISO-8601 instant (naive = UTC) or a duration before ``now`` (``7d``, ``12h``)."""
    if text is None:
        return None
    try:
        return now - parse_duration(text)
    except ValueError:
        pass
    try:
        instant = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{text!r} is neither an ISO-8601 time nor a duration such as 7d") from None
    return instant if instant.tzinfo is not None else instant.replace(tzinfo=UTC)


def load_settings(args: argparse.Namespace) -> tuple[TracesConfig, str]:
    """The span export settings and the engine of the DB: ``--config`` (with the ``STATE_EXPORTER_*``
    environment, as ``run`` reads it; without it, neither), then the flags, then ``OTEL_*``."""
    loaded = load_config(args.config, env=None if args.config else {}, overrides={"db": {"engine": args.engine}})
    return build_config(args, dict(loaded.traces) if args.config else {}), loaded.db.engine


def build_config(args: argparse.Namespace, data: dict[str, Any]) -> TracesConfig:
    """``data``: the ``traces:`` settings of the config file, which the flags override."""
    overrides: dict[str, Any] = {
        "endpoint": args.endpoint,
        "protocol": args.protocol,
        "compression": args.compression,
        "timeout": args.timeout,
        "batch_size": args.batch_size,
        "service_name": args.service_name,
        "id_namespace": args.id_namespace,
    }
    if getattr(args, "command", None) == "tail":
        overrides.update(
            poll_interval=args.poll_interval,
            grace_period=args.grace_period,
            settle_period=args.settle_period,
            start_at=args.start_at,
        )
    data.update({k: v for k, v in overrides.items() if v is not None})
    if args.insecure:
        data["tls"] = {**data.get("tls", {}), "insecure": True}
    if args.header:
        data["headers"] = {**data.get("headers", {}), **parse_key_values(",".join(args.header), "--header")}
    data.setdefault("enabled", True)
    return apply_otel_env(TracesConfig.model_validate(data))


def default_state_file(db: str) -> Path:
    """The state file of ``db`` in the state directory: its name, plus a hash of its full path (of a
    database's URL without its secrets) so that two DBs with the same name do not share one."""
    if is_postgres_url(db):
        stem, key = "postgres", redact_url(db)
    else:
        stem, key = Path(db).stem, str(Path(db).resolve())
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    return state_directory() / f"traces-{stem}-{digest}.sqlite"


def db_reader(db: str, timezone: str | None, engine: str) -> Reader:
    """``--db``: a SQLite file (or a plain-file engine's state), or a Postgres URL (read-only; the
    password from libpq's PGPASSWORD/PGPASSFILE rather than the command line)."""
    if is_postgres_url(db):
        from exporter.reader.postgres import PostgresReader

        return PostgresReader(db, engine=engine)
    return StateReader(Path(db), naive_timezone=resolve_timezone(timezone), engine=engine)


def main(argv: list[str] | None = None, prog: str = "python -m exporter.traces") -> int:
    return run(_parser(prog).parse_args(argv), prog)


def run(args: argparse.Namespace, prog: str) -> int:
    """The parsed ``replay`` or ``tail`` command (``args.command``), whichever parser read it."""
    logs.configure(args.log_level, "text")  # redacts URLs like the daemon's logs
    try:
        config, engine = load_settings(args)
        reader = db_reader(args.db, args.timezone, engine)
        now = system_clock()
        since = parse_when(getattr(args, "since", None), now)
        until = parse_when(getattr(args, "until", None), now)
    except ConfigError as exc:  # as the other commands of state-exporter report it
        print(f"{prog}: invalid configuration:\n{exc}", file=sys.stderr)
        return EXIT_USAGE
    except (ValidationError, ValueError) as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.state is None:
        args.state = config.state_file or default_state_file(args.db)
        print(f"{prog}: state file {args.state}", file=sys.stderr, flush=True)
    try:
        if args.command == "replay":
            return _replay(args, config, reader, since, until)
        return _tail(args, config, reader)
    except DatabaseUnavailable as exc:
        print(f"{prog}: {exc.message}", file=sys.stderr)
        return EXIT_FAILED


def _replay(
    args: argparse.Namespace,
    config: TracesConfig,
    reader: Reader,
    since: datetime | None,
    until: datetime | None,
) -> int:
    halt = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: halt.set())
    result = replay(
        config,
        reader,
        args.state,
        since,
        until,
        args.run_id or None,
        progress=not args.no_progress and sys.stderr.isatty(),
        halt=halt,
        restart=args.restart,
    )
    state = "complete" if result.complete else "interrupted (run it again to resume)"
    print(
        f"replay {result.key}: {state}; {result.spans_exported} spans exported in {result.seconds:.1f}s"
        f" ({result.spans_exported / result.seconds if result.seconds else 0:.0f}/s),"
        f" {result.spans_dead_lettered} dead-lettered, {result.spans_rejected} rejected,"
        f" {result.total_exported} in total{'' if result.supported else '; DB layout has no spans'}",
        flush=True,
    )
    return EXIT_OK if result.complete else EXIT_FAILED


def _tail(args: argparse.Namespace, config: TracesConfig, reader: Reader) -> int:
    tailer = SpanTailer(config, reader, args.state)
    if args.once:
        try:
            report = tailer.run_once()
        finally:
            tailer.close()
        print(f"tail: {report}", flush=True)
        return EXIT_OK if not report.interrupted else EXIT_FAILED

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await tailer.run(stop)

    asyncio.run(run())
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
