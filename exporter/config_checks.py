"""Checks that look beyond the configuration's text: the listen host resolves, TLS files hold PEM data
that loads, the span-export state file is not the state DB, the ``OTEL_*`` variables parse.

:func:`exporter.config.load_config` runs :func:`environment_problems` after the schema validation, so
``check-config``, ``run`` and a SIGHUP reload refuse the same configurations, before anything starts.
``run`` adds :func:`listen_problems` (the port must be free), ``run`` and ``check-config``
:func:`db_path_problems`.
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
import ssl
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from exporter.components import state_directory
from exporter.engines.flujo.jobs.config import WRITE_GRANTS
from exporter.listen_address import parse_listen_address
from exporter.traces.config import DEFAULT_STATE_FILE_NAME, OtelEnvError, TLSConfig, apply_otel_env_traced

if TYPE_CHECKING:
    from exporter.config import Config, DatabaseConfig, TLSServerConfig, WebConfig

_CERTIFICATE = b"-----BEGIN CERTIFICATE-----"
_PRIVATE_KEY = b"PRIVATE KEY-----"


@dataclass(frozen=True)
class Problem:
    loc: tuple[str, ...]
    message: str
    source: str | None = None  # e.g. "environment OTEL_EXPORTER_OTLP_HEADERS"; None: where the key was set


Check = Callable[["Config"], list[Problem]]


def environment_problems(config: Config, env: Mapping[str, str]) -> list[Problem]:
    from exporter.targets.config import target_problems

    targets = [p for name, t in config.targets.items() for p in _db(t.db, ("targets", name, "db"))]
    return [*_web(config.web), *_db(config.db), *_traces(config, env), *target_problems(config), *targets]


def db_path_problems(config: Config) -> list[Problem]:
    if config.db.url is not None:
        return list(_postgres_limits(config))
    problems = []
    if config.db.path is None and not config.targets:  # with targets, each has its own (target_problems)
        problems.append(
            Problem(("db", "path"), "required (set it in the config file, STATE_EXPORTER_DB__PATH or --db)")
        )
    if config.jobs.postgres.url is not None:
        problems.append(Problem(("jobs", "postgres", "url"), "is for db.url (a Postgres database), not a SQLite file"))
    return problems


def _postgres_limits(config: Config) -> Iterator[Problem]:
    """What the write jobs need on Postgres: a role of their own, since db.url's is SELECT-only."""
    jobs = config.jobs
    if jobs.postgres.url is None:
        writing = [
            ("cleanup", jobs.cleanup.enabled and not jobs.cleanup.dry_run),
            ("stale_background_tasks", jobs.stale_background_tasks.enabled),
        ]
        for name, enabled in writing:
            if enabled:
                yield Problem(
                    ("jobs", "postgres", "url"),
                    f"required by jobs.{name} on db.url (Postgres): the write jobs need a role with {WRITE_GRANTS}, "
                    "db.url's is SELECT-only (see the README's write role)",
                )


def listen_problems(config: Config) -> list[Problem]:
    """Binds the listen address once, so that a taken port or a foreign address is a config error."""
    host, port = parse_listen_address(config.web.listen_address)
    try:
        addresses = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror:
        return []  # reported by environment_problems
    for family, kind, proto, _, address in addresses:
        try:
            probe = socket.socket(family, kind, proto)
        except OSError:  # a family this host does not support: the server skips it as well
            continue
        with probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server does
            if family == socket.AF_INET6:
                probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                probe.bind(address)
            except OSError as exc:
                return [Problem(("web", "listen_address"), f"cannot listen on {address[0]}:{port}: {exc.strerror}")]
    return []


# --- web -------------------------------------------------------------------------------------------------


def _web(web: WebConfig) -> Iterator[Problem]:
    host, _ = parse_listen_address(web.listen_address)
    if host and not _is_ip(host):
        try:
            socket.getaddrinfo(host, None, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        except socket.gaierror as exc:
            yield Problem(("web", "listen_address"), f"cannot resolve host {host!r}: {exc.strerror}")
    for user in web.basic_auth_users:
        if ":" in user:
            yield Problem(
                ("web", "basic_auth_users", user),
                "user name must not contain ':' (HTTP basic auth separates user and password with it)",
            )
    if web.tls_server_config is not None:
        yield from _server_tls(web.tls_server_config)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _server_tls(tls: TLSServerConfig) -> Iterator[Problem]:
    from exporter.web import TLSConfigError, build_ssl_context  # aiohttp: only when TLS is configured

    loc = ("web", "tls_server_config")
    problems = [
        *_pem((*loc, "cert_file"), tls.cert_file, _CERTIFICATE, "a PEM certificate"),
        *_pem((*loc, "key_file"), tls.key_file, _PRIVATE_KEY, "a PEM private key"),
        *_pem((*loc, "client_ca_file"), tls.client_ca_file, _CERTIFICATE, "a PEM certificate"),
    ]
    yield from problems
    if not problems:
        try:
            build_ssl_context(tls)  # exactly what the server loads: a key that does not match, ...
        except TLSConfigError as exc:
            yield Problem(loc, re.sub(r"^tls_server_config[.:] ?", "", str(exc)))


def _pem(loc: tuple[str, ...], path: Path | None, marker: bytes, what: str) -> Iterator[Problem]:
    if path is None:
        return
    try:
        data = path.read_bytes()
    except OSError as exc:
        yield Problem(loc, f"cannot read {path}: {exc.strerror or exc}")
        return
    if marker not in data:
        yield Problem(loc, f"{path} does not contain {what}")


# --- db --------------------------------------------------------------------------------------------------


def _db(db: DatabaseConfig, loc: tuple[str, ...] = ("db",)) -> Iterator[Problem]:
    if db.path is None:
        return
    if (blocker := _non_directory_ancestor(db.path)) is not None:
        yield Problem((*loc, "path"), f"{blocker} is not a directory")


def _non_directory_ancestor(path: Path) -> Path | None:
    """The first existing ancestor of ``path`` when it is not a directory (the file can never exist)."""
    for parent in path.absolute().parents:
        if parent.exists():
            return None if parent.is_dir() else parent
    return None


# --- traces ----------------------------------------------------------------------------------------------


def _traces(config: Config, env: Mapping[str, str]) -> Iterator[Problem]:
    if not config.traces.enabled:
        return  # the OTEL_* variables may be meant for another program
    try:
        traces, origin = apply_otel_env_traced(config.traces, env)
    except OtelEnvError as exc:
        for problem in exc.problems:
            yield Problem(("traces", *problem.key.split(".")), problem.message, f"environment {problem.variable}")
        return
    yield from _client_tls(traces.tls, origin)
    yield from _state_file(config, traces.state_file)


def _client_tls(tls: TLSConfig, origin: Mapping[str, str]) -> Iterator[Problem]:
    problems: list[Problem] = []
    for field, marker, what in (
        ("ca_file", _CERTIFICATE, "a PEM certificate"),
        ("cert_file", _CERTIFICATE, "a PEM certificate"),
        ("key_file", _PRIVATE_KEY, "a PEM private key"),
    ):
        path: Path | None = getattr(tls, field)
        variable = origin.get(f"tls.{field}")
        for problem in _pem(("traces", "tls", field), path, marker, what):
            problems.append(Problem(problem.loc, problem.message, f"environment {variable}" if variable else None))
    yield from problems
    if problems:
        return
    try:
        context = ssl.create_default_context(cafile=str(tls.ca_file) if tls.ca_file else None)
    except ssl.SSLError as exc:
        yield _tls_problem("ca_file", f"cannot load {tls.ca_file}: {exc.reason or exc}", origin)
        return
    if tls.cert_file is not None and tls.key_file is not None:
        try:
            context.load_cert_chain(tls.cert_file, tls.key_file, password=_no_password)
        except (ssl.SSLError, _EncryptedKey) as exc:
            reason = "encrypted keys are not supported" if isinstance(exc, _EncryptedKey) else exc.reason or exc
            yield _tls_problem(
                "key_file", f"cannot load {tls.key_file} with cert_file {tls.cert_file}: {reason}", origin
            )


class _EncryptedKey(Exception):
    pass


def _no_password() -> str:  # OpenSSL would otherwise prompt on the terminal
    raise _EncryptedKey()


def _tls_problem(field: str, message: str, origin: Mapping[str, str]) -> Problem:
    variable = origin.get(f"tls.{field}")
    return Problem(("traces", "tls", field), message, f"environment {variable}" if variable else None)


def _state_file(config: Config, configured: Path | None) -> Iterator[Problem]:
    loc = ("traces", "state_file")
    state = configured or state_directory() / DEFAULT_STATE_FILE_NAME
    shown = str(state) if configured else f"the default {state} (set traces.state_file or STATE_DIRECTORY)"
    if state.is_dir():
        yield Problem(loc, f"{shown} is a directory: give a file name")
        return
    if (blocker := _non_directory_ancestor(state)) is not None:
        yield Problem(loc, f"{shown} cannot be created: {blocker} is not a directory")
        return
    db = config.db.path
    if db is None:
        return
    if _same_files(state, db):
        yield Problem(
            loc, f"{shown} is the state DB {db} or one of its -wal, -shm or -journal files: use a file of its own"
        )
    elif db.resolve() in state.resolve().parents:
        yield Problem(loc, f"{shown} lies below the state DB path {db}: use a file of its own")


_SIDECARS = ("", "-wal", "-shm", "-journal")


def _same_files(state: Path, db: Path) -> bool:
    """Whether the state file or one of its SQLite sidecars is the DB or one of its sidecars: the
    same path after resolving symlinks, or the same inode (a hard link)."""
    states = [Path(f"{state}{suffix}") for suffix in _SIDECARS]
    dbs = [Path(f"{db}{suffix}") for suffix in _SIDECARS]
    if {p.resolve() for p in states} & {p.resolve() for p in dbs}:
        return True
    inodes = {(s.st_dev, s.st_ino) for s in (_stat(p) for p in dbs) if s is not None}
    return any(s is not None and (s.st_dev, s.st_ino) in inodes for s in (_stat(p) for p in states))


def _stat(path: Path) -> os.stat_result | None:
    try:
        return path.stat()
    except OSError:
        return None
