"""A throwaway PostgreSQL 15 for the Flujo-on-Postgres tests, started the way root-owned CI must
(tests/fixtures/flujo-postgres/README.md): ``initdb`` refuses root, so the cluster belongs to the OS
user ``postgres`` and every server command runs through ``runuser``; the test process stays root.

One server per test session (under 1 s to start); each test gets its own database, copied from a
template that holds the loaded dump, so a test may write (shift times, add rows) without touching
another's data.  The exporter reads as ``exporter``: LOGIN, a password (scram-sha-256 over TCP),
``CONNECT`` + ``USAGE`` + ``SELECT`` and nothing else, ``default_transaction_read_only`` on.

Locally a missing PostgreSQL skips these tests; in CI (``CI=true``) it fails them: they must run.
"""

from __future__ import annotations

import itertools
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from support import FIXTURES, expected, in_ci, parse_exposition

from exporter.clock import ManualClock
from exporter.collectors import View, build_registry
from exporter.config import MetricsConfig
from exporter.exposition import CachedExposition
from exporter.reader import Reader
from exporter.refresh import Refresher

PG_FIXTURES = FIXTURES / "flujo-postgres"
DUMP = PG_FIXTURES / "sample06-pg.sql"
EXPECTED = expected("flujo-postgres/sample06-pg.sql")
COMPUTED_AT = datetime.fromisoformat(EXPECTED["computed_at_utc"])  # the oracle's instant
ANCHOR = datetime.fromisoformat(EXPECTED["anchor_utc"])  # the rows' "now" as written
TEMPLATE = "flujo_template"
EXPORTER_PASSWORD = "exporter-Secret-42"  # a value a log scan can find verbatim
OWNER = "flujo"
_START_ATTEMPTS = 5


def pg_bindir() -> Path | None:
    """The server binaries: ``pg_config --bindir`` first, then Debian's versioned directories
    (they are not on PATH there)."""
    pg_config = shutil.which("pg_config")
    if pg_config is not None:
        found = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False).stdout.strip()
        if found and (Path(found) / "initdb").exists():
            return Path(found)
    for candidate in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (candidate / "initdb").exists():
            return candidate
    return None


def require_postgres() -> Path:
    """The binaries' directory; skips locally and fails in CI when PostgreSQL or runuser is missing."""
    found = pg_bindir()
    problem = None
    if found is None:
        problem = "PostgreSQL server binaries not installed (run scripts/install-test-tools.sh)"
    elif shutil.which("runuser") is None:
        problem = "runuser not installed (util-linux): the server must run as the OS user postgres"
    elif os.geteuid() != 0:
        problem = "the throwaway PostgreSQL is started through runuser, which needs root"
    if problem is not None:
        if in_ci():
            pytest.fail(problem)
        pytest.skip(problem)
    assert found is not None
    return found


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class PostgresServer:
    bindir: Path
    root: Path  # mode 711: postgres must be able to enter it
    port: int = 0
    _names: Iterator[int] = field(default_factory=itertools.count)

    @property
    def data(self) -> Path:
        return self.root / "pg" / "data"

    @property
    def socket_dir(self) -> Path:
        return self.root / "pg"

    @property
    def log(self) -> Path:
        return self.root / "pg" / "server.log"

    def _as_postgres(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["runuser", "-u", "postgres", "--", *args], capture_output=True, text=True, check=False, timeout=60
        )

    def init(self) -> None:
        pg = self.root / "pg"
        pg.mkdir(mode=0o700)
        shutil.chown(pg, "postgres", "postgres")
        done = self._as_postgres(
            str(self.bindir / "initdb"),
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "-A",
            "trust",
            "--no-sync",
            "-E",
            "UTF8",
            "--locale=C.UTF-8",
        )
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed: {done.stderr}")
        # The exporter's roles must log in with their password over TCP (what a deployment does); the
        # superuser and the app's role are trusted on this throwaway cluster only.
        (self.data / "pg_hba.conf").write_text(
            "local all all trust\n"
            f"host  all postgres,{OWNER} 127.0.0.1/32 trust\n"
            "host  all all 127.0.0.1/32 scram-sha-256\n"
        )

    def start(self, port: int | None = None) -> None:
        """Start on a free port (or ``port``: a restart where clients expect it); a free port can be
        taken between the probe and the start, so retry."""
        failure = ""
        for _ in range(_START_ATTEMPTS):
            candidate = port or free_port()
            options = (
                f"-c listen_addresses=127.0.0.1 -p {candidate} -k {self.socket_dir} -c fsync=off"
                " -c full_page_writes=off -c synchronous_commit=off -c TimeZone=UTC"
            )
            done = self._as_postgres(
                str(self.bindir / "pg_ctl"),
                "-D",
                str(self.data),
                "-l",
                str(self.log),
                "-w",
                "-t",
                "30",
                "-o",
                options,
                "start",
            )
            if done.returncode == 0:
                self.port = candidate
                return
            failure = done.stderr + (self.log.read_text(errors="replace") if self.log.exists() else "")
        raise RuntimeError(f"pg_ctl start failed {_START_ATTEMPTS} times: {failure}")

    def stop(self) -> None:
        self._as_postgres(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")

    def psql(self, database: str, sql: str, *, user: str = "postgres") -> str:
        """Run ``sql`` through psql on the Unix socket (trusted), stopping at the first error."""
        done = subprocess.run(
            [
                str(self.bindir / "psql"),
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                str(self.socket_dir),
                "-p",
                str(self.port),
                "-U",
                user,
                "-d",
                database,
            ],
            input=sql,
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        if done.returncode != 0:
            raise RuntimeError(f"psql on {database} as {user} failed: {done.stderr}")
        return done.stdout

    def load_template(self) -> None:
        """The dump loaded once, as the app's role (it owns the tables, as in production), with the
        exporter's table grants; every test's database is a copy of it."""
        self.psql(
            "postgres",
            f"CREATE ROLE {OWNER} LOGIN PASSWORD '{OWNER}';\n"
            f"CREATE ROLE exporter LOGIN PASSWORD '{EXPORTER_PASSWORD}';\n"
            "ALTER ROLE exporter SET default_transaction_read_only = on;\n"
            f"CREATE DATABASE {TEMPLATE} OWNER {OWNER} TEMPLATE template0 ENCODING 'UTF8';\n",
        )
        self.psql(TEMPLATE, DUMP.read_text(), user=OWNER)
        self.psql(
            TEMPLATE,
            "GRANT USAGE ON SCHEMA public TO exporter;\n"
            "GRANT SELECT ON ALL TABLES IN SCHEMA public TO exporter;\n"
            f"ALTER DEFAULT PRIVILEGES FOR ROLE {OWNER} IN SCHEMA public GRANT SELECT ON TABLES TO exporter;\n",
        )

    def new_database(self) -> str:
        """A fresh copy of the loaded dump.  Database-level grants live in the cluster catalogue,
        not in the copied database, so they are given again."""
        name = f"flujo_{next(self._names)}"
        self.psql(
            "postgres",
            f"CREATE DATABASE {name} OWNER {OWNER} TEMPLATE {TEMPLATE};\n"
            f"REVOKE ALL ON DATABASE {name} FROM PUBLIC;\n"
            f"GRANT CONNECT ON DATABASE {name} TO {OWNER}, exporter;\n",
        )
        return name

    def reader_role(self, database: str, role: str, password: str) -> None:
        """Another least-privilege role like ``exporter`` (README), with its own password."""
        self.psql(
            "postgres",
            f"CREATE ROLE {role} LOGIN PASSWORD '{password}';\n"
            f"ALTER ROLE {role} SET default_transaction_read_only = on;\n"
            f"GRANT CONNECT ON DATABASE {database} TO {role};\n",
        )
        self.psql(
            database,
            f"GRANT USAGE ON SCHEMA public TO {role};\nGRANT SELECT ON ALL TABLES IN SCHEMA public TO {role};\n",
        )

    def url(self, database: str, role: str) -> str:
        """A URL without a password (it comes from a file or the environment)."""
        return f"postgresql://{role}@127.0.0.1:{self.port}/{database}"

    def owner_url(self, database: str) -> str:
        return f"postgresql://{OWNER}@127.0.0.1:{self.port}/{database}"

    def exporter_url(self, database: str, *, password: str | None = EXPORTER_PASSWORD) -> str:
        secret = f":{password}" if password is not None else ""
        return f"postgresql://exporter{secret}@127.0.0.1:{self.port}/{database}"


# Every timestamptz column moved by now() - anchor (README: "Making the 24 h windows current").
# spans' monotonic seconds and the times inside JSONB stay as they are.
_SHIFT_SQL = """
SELECT set_config('fix.anchor', '{anchor}', false);
DO $$
DECLARE r record; d interval := {target} - current_setting('fix.anchor')::timestamptz;
BEGIN
  FOR r IN SELECT table_name, string_agg(format('%I = %I + $1', column_name, column_name), ', ') AS sets
             FROM information_schema.columns
            WHERE table_schema = 'public' AND data_type = 'timestamp with time zone'
            GROUP BY table_name LOOP
    EXECUTE format('UPDATE public.%I SET %s', r.table_name, r.sets) USING d;
  END LOOP;
END $$;
"""


def shift_to(server: PostgresServer, database: str, anchor: datetime, target: datetime | None = None) -> None:
    """Move every row so that ``anchor`` becomes ``target`` (the server's ``now()`` when None), as the
    owner: then the ``*_at_anchor`` values hold at ``target``."""
    when = "now()" if target is None else f"'{target.isoformat()}'::timestamptz"
    server.psql(database, _SHIFT_SQL.format(anchor=anchor.isoformat(), target=when), user=OWNER)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    bindir = require_postgres()
    root = Path(tempfile.mkdtemp(prefix="state-exporter-pg-"))
    root.chmod(0o711)  # postgres must enter it; /tmp itself is world-searchable
    server = PostgresServer(bindir, root)
    try:
        server.init()
        server.start()
        server.load_template()
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def pg_database(pg_server: PostgresServer) -> str:
    """A fresh database holding the shared dump (times as written, anchor 2026-12-05T12:37:00Z)."""
    return pg_server.new_database()


# flujo 0.6.11's SQLite DDL (as its SQLiteBackend creates it), for the same rows written to a file.
SQLITE_DDL = FIXTURES / "schemas" / "v0.6.11-github-fresh.sql"


def export_to_sqlite(server: PostgresServer, database: str, target: Path) -> None:
    """Every row of the Postgres database written into a new SQLite file with flujo 0.6.11's DDL,
    each value stored the way flujo's SQLiteBackend stores it: instants as ISO-8601 text with
    ``+00:00`` (``datetime.isoformat()``), spans' ``created_at`` as SQLite's ``datetime('now')`` text,
    booleans as 0/1, JSON as compact text.  Tables flujo's Postgres backend did not create here
    (``evaluations``: migration 003 needs pgvector) are left out of the file too: same data, same
    layout.  Columns only the SQLite DDL has (``runs.end_time``, ``total_cost``,
    ``final_context_blob``) stay NULL, as flujo 0.6 leaves them."""
    import sqlite3

    import psycopg

    ddl = [
        statement
        for statement in SQLITE_DDL.read_text().split(";\n")
        if statement.strip() and "sqlite_sequence" not in statement and "evaluations" not in statement
    ]
    out = sqlite3.connect(target)
    try:
        for statement in ddl:
            out.execute(statement)
        with psycopg.connect(server.owner_url(database)) as pg:
            tables = [t for (t,) in pg.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")]
            for table in tables:
                if table == "flujo_schema_versions":
                    continue  # SQLite files keep no such table
                cursor = pg.execute(f"SELECT * FROM {table}")
                described = cursor.description or []
                columns = [c.name for c in described]
                jsonb = {c.name for c in described if c.type_code == _JSONB_OID}
                rows = [
                    [_sqlite_value(table, c, v, c in jsonb) for c, v in zip(columns, row, strict=True)]
                    for row in cursor
                ]
                marks = ", ".join("?" * len(columns))
                out.executemany(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})", rows)
        out.commit()
    finally:
        out.close()


_JSONB_OID = 3802


def _sqlite_value(table: str, column: str, value: object, is_json: bool) -> object:
    import json

    if value is None:
        return None
    if is_json:  # psycopg decodes jsonb; flujo's SQLite columns hold the JSON text
        return json.dumps(value, separators=(",", ":"))
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, datetime):
        if table == "spans" and column == "created_at":
            return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
        return value.astimezone(UTC).isoformat()
    return value


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(reader: Reader, now: datetime, settings: MetricsConfig | None = None) -> Samples:
    """Every tier refreshed (each must succeed) and rendered as the daemon's /metrics renders it."""
    config = settings or MetricsConfig()
    clock = ManualClock(now)
    refresher = Refresher(reader, lambda: config, clock)
    state = refresher.refresh(force_all=True)
    assert state.problem is None, state.problem
    assert all(phase.success for phase in state.phases.values()), state.failing_phases()
    live = CollectorRegistry(auto_describe=False)
    registry = build_registry(View(lambda: refresher.state, lambda: config, clock), live=live)
    body, _ = CachedExposition(registry, live, lambda: (refresher.state,)).render("text/plain")
    return parse_exposition(body.decode())
