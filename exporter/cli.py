"""state-exporter: run the daemon, check a config, print one snapshot, replay stored spans, run the demo."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import textwrap
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prometheus_client import generate_latest

from exporter import __version__, logs
from exporter.clock import ManualClock, system_clock
from exporter.config import ConfigError, is_postgres_url, load_config
from exporter.config_checks import db_path_problems, listen_problems
from exporter.engines import AUTO, engines
from exporter.traces.cli import REPLAY_DESCRIPTION, REPLAY_HELP, add_engine_flag, add_replay_flags

EXIT_CONFIG = 2


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if args.command is None:
        parser.print_help()
        return EXIT_CONFIG
    handler = {
        "run": _run,
        "check-config": _check_config,
        "snapshot": _snapshot,
        "replay": _replay,
        "demo": _demo,
    }[args.command]
    try:
        return handler(args)
    except ConfigError as exc:
        print(f"state-exporter: invalid configuration:\n{exc}", file=sys.stderr)
        return EXIT_CONFIG


def engines_epilog() -> str:
    """The registered engines, one line each, for ``--help``."""
    listed = engines()
    width = max(len(e.name) for e in listed)
    lines = [f"  {e.name:<{width}}  {e.summary}" for e in listed]
    return "\n".join([f"engines (db.engine or --engine; {AUTO}, the default, detects the DB's):", *lines])


def _parser() -> argparse.ArgumentParser:
    epilog = engines_epilog()

    def command(name: str, description: str | None = None, **kwargs: Any) -> argparse.ArgumentParser:
        # Raw text keeps the epilog's one line per engine; the description is wrapped here instead.
        wrapped = textwrap.fill(description, 79) if description else None
        return sub.add_parser(name, description=wrapped, formatter_class=argparse.RawDescriptionHelpFormatter, **kwargs)

    parser = argparse.ArgumentParser(
        prog="state-exporter",
        description=textwrap.fill(__doc__ or "", 79),
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"state-exporter {__version__}")
    sub = parser.add_subparsers(dest="command")

    def db_flags(p: argparse.ArgumentParser) -> None:
        p.add_argument("--config", type=Path, help="YAML config file (see config.example.yaml)")
        p.add_argument(
            "--db",
            type=str,  # not Path: it would fold the "//" of a postgresql:// URL
            help="the state DB: SQLite, seeknal's target/ or run_state.json (overrides db.path), or a "
            "postgresql:// URL of Flujo's Postgres backend (overrides db.url; no password in it: use "
            "db.password_file or PGPASSFILE)",
        )
        add_engine_flag(p)
        p.add_argument("--timezone", help="writer's time zone for naive timestamps (overrides db.writer_timezone)")

    run = command("run", help="serve /metrics until stopped", epilog=epilog)
    db_flags(run)
    run.add_argument("--listen", help="HOST:PORT (overrides web.listen_address)")
    check = command(
        "check-config",
        help="validate a config file as `run` would (without binding the port); exit 2 on error",
        description="Validate FILE: exit 2 with file:line: key: message for every problem `run` would refuse."
        " The flags stand for those given to `run`.",
    )
    check.add_argument("file", type=Path)
    check.add_argument(
        "--env",
        action="store_true",
        help="also apply this environment, as `run` does: STATE_EXPORTER_* overrides and OTEL_* variables",
    )
    check.add_argument("--db", type=str, help="as `run --db`")
    check.add_argument("--engine", metavar="NAME", help="as `run --engine`")
    check.add_argument("--timezone", help="as `run --timezone`")
    check.add_argument("--listen", help="as `run --listen`")
    snapshot = command("snapshot", help="print the metrics exposition once and exit", epilog=epilog)
    db_flags(snapshot)
    snapshot.add_argument("--now", help="pin the clock (ISO-8601, e.g. 2026-11-21T11:14:44+00:00)")
    snapshot.add_argument("--target", metavar="NAME", help="with targets: in the config, this target's metrics")
    replay = command("replay", help=REPLAY_HELP, description=REPLAY_DESCRIPTION, epilog=epilog)
    add_replay_flags(replay)
    demo = command(
        "demo", help="run the daemon on a demo DB kept busy by a simulated Flujo (or pynenc, Marianne, seeknal) app"
    )
    demo.add_argument("--dir", type=Path, default=Path("var/demo"), help="where the demo DB lives")
    demo.add_argument("--listen", default="127.0.0.1:10078")
    demo.add_argument(
        "--engine",
        choices=("flujo", "pynenc", "marianne", "seeknal"),
        default="flujo",
        help="which engine's app writes the demo DB (default: flujo)",
    )
    return parser


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    overrides: dict[str, Any] = {}
    if getattr(args, "db", None) is not None:
        # --db postgresql://… names a Postgres database (db.url), anything else a file (db.path)
        key = "url" if is_postgres_url(str(args.db)) else "path"
        overrides.setdefault("db", {})[key] = str(args.db)
    if getattr(args, "engine", None) is not None:
        overrides.setdefault("db", {})["engine"] = args.engine
    if getattr(args, "timezone", None):
        overrides.setdefault("db", {})["writer_timezone"] = args.timezone
    if getattr(args, "listen", None):
        overrides.setdefault("web", {})["listen_address"] = args.listen
    return overrides


def _run(args: argparse.Namespace) -> int:
    from exporter.daemon import Daemon

    overrides = _overrides(args)
    config = load_config(args.config, env=os.environ, overrides=overrides, checks=(db_path_problems, listen_problems))
    logs.configure(config.logging.level, config.logging.format)
    daemon = Daemon(config, config_path=args.config, overrides=overrides)
    return asyncio.run(daemon.run())


def _check_config(args: argparse.Namespace) -> int:
    env = os.environ if args.env else {}
    load_config(args.file, env=env, overrides=_overrides(args), checks=(db_path_problems,))
    print(f"{args.file}: ok")
    return 0


def _snapshot(args: argparse.Namespace) -> int:
    from exporter.collectors import View, build_registry
    from exporter.daemon import make_metrics_reader
    from exporter.refresh import Refresher

    config = load_config(args.config, env=os.environ, overrides=_overrides(args))
    logs.configure("error", config.logging.format)
    clock = ManualClock(_parse_now(args.now)) if args.now else system_clock
    if args.target is not None:  # one target of multi-target mode: its own db and metrics sections
        target = config.targets.get(args.target)
        if target is None:
            names = ", ".join(config.targets) or "none"
            raise ConfigError(f"--target: {args.target!r} is not a configured target (configured: {names})")
        config = config.model_copy(update={"db": target.db, "metrics": target.metrics})
    refresher = Refresher(make_metrics_reader(config), lambda: config.metrics, clock)
    state = refresher.refresh(force_all=True)
    registry = build_registry(View(lambda: refresher.state, lambda: config.metrics, clock))
    sys.stdout.write(generate_latest(registry).decode())
    if state.problem is not None:
        print(f"state-exporter: {state.problem.message}", file=sys.stderr)
        return 1
    return 0


def _parse_now(text: str) -> datetime:
    try:
        instant = datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError([f"--now: not an ISO-8601 instant: {text!r}"]) from None
    return instant if instant.tzinfo is not None else instant.replace(tzinfo=UTC)


def _replay(args: argparse.Namespace) -> int:
    # grpc and protobuf load only now: the other commands never pay for them.
    from exporter.traces.__main__ import run

    return run(args, "state-exporter")


def _demo(args: argparse.Namespace) -> int:
    from exporter.demo import run_demo

    return run_demo(args.dir, args.listen, args.engine)
