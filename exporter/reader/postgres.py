"""The daemon's read-only view of an engine's state in a Postgres database (Flujo's ``PostgresBackend``).

Read-only by construction, not by trust in the role:

* every session is one short ``REPEATABLE READ READ ONLY`` transaction (``conn.read_only``), on a
  connection opened with ``default_transaction_read_only=on``: the server refuses every write even if
  the role could write (the README's role can only ``SELECT`` anyway);
* ``statement_timeout`` (``db.query_timeout``) bounds every query on the server, where it is enforced
  even when this process is stuck; ``idle_in_transaction_session_timeout`` ends a session whose
  process vanished mid-transaction, so it never pins old row versions (VACUUM) for long;
* ``application_name=state-exporter`` names the sessions in ``pg_stat_activity``.

One connection is kept between sessions (connecting costs a TCP and SCRAM handshake, more than a
refresh tier's own queries on a big database), idle and outside any transaction, so it pins nothing;
a session that finds it in use (two at once) or broken opens another, and any error closes it, so
the next session connects afresh (a restarted server, a failover).

The password comes from ``db.password_file`` (read at every connect, so it can be rotated), else
libpq's own ``PGPASSWORD``/``PGPASSFILE``, else the URL.  It is never logged: messages show the URL
without its userinfo, and any text from the server or libpq is scrubbed of it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC
from pathlib import Path
from typing import TYPE_CHECKING, Any

from exporter import engines
from exporter.engines.base import Catalogue, EngineSchema
from exporter.reader import ReadSession
from exporter.reader.errors import DatabaseUnavailable, Problem
from exporter.reader.pgsession import connect, read_password, secrets_of, to_psycopg
from exporter.reader.sql import Rows
from exporter.redact import MASK, redact_text, redact_url

if TYPE_CHECKING:
    import psycopg

APPLICATION_NAME = "state-exporter"

# Every table of the current schema with its columns, from pg_catalog rather than
# information_schema: information_schema hides tables the role may not read, which would read as
# "no such table" instead of the real reason (a missing GRANT), reported when a query reads it.
_CATALOGUE_SQL = """
SELECT c.relname, a.attname
  FROM pg_catalog.pg_class c
  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
  JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid
 WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
   AND a.attnum > 0 AND NOT a.attisdropped
"""
# The database's identity (a restore into a new database of the same name changes its oid) and its
# size on disk, for the DB-size gauge.
_IDENTITY_SQL = (
    "SELECT oid::bigint, pg_database_size(oid) FROM pg_catalog.pg_database WHERE datname = current_database()"
)


class PostgresConnection:
    """The subset of ``sqlite3.Connection`` that the engines' queries use, over psycopg: they are
    written with ``?`` placeholders (never a ``?`` or ``%`` inside a literal: every fragment comes from
    fixed names), which become psycopg's ``%s``."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self._conn = conn

    def execute(self, sql: str, parameters: Sequence[Any] = (), /) -> Rows:
        # Always with a parameter tuple, so that psycopg always reads "%%" as "%".
        return self._conn.execute(to_psycopg(sql), tuple(parameters))


class PostgresReader:
    """Opens a fresh connection for every session: one short read-only transaction, then close.
    ``path`` is what messages call the database: its URL without userinfo or query values."""

    def __init__(
        self,
        url: str,
        *,
        password_file: Path | None = None,
        engine: str = "auto",
        query_timeout: float = 10.0,
        halt: threading.Event | None = None,
    ) -> None:
        self.url = url
        self.path = redact_url(url)
        self.engine = engine
        self.password_file = password_file
        self.query_timeout = query_timeout
        self.halt = halt or threading.Event()
        # Bumped when another database answers at the URL (a restore, a failover to a copy): the
        # finished-run cursor's run ids and windows of the old one mean nothing for it.
        self.generation = 0
        self._identity: int | None = None
        self._size = 0
        self._idle: psycopg.Connection[Any] | None = None  # the last session's connection, kept for the next
        self._idle_lock = threading.Lock()

    @contextmanager
    def session(self) -> Iterator[ReadSession]:
        import psycopg

        conn, schema = self._start()
        healthy = False
        try:
            try:
                yield ReadSession(PostgresConnection(conn), schema, UTC)
                healthy = True
            except psycopg.Error as exc:
                raise self._classify(exc, None) from None
        finally:
            self._end(conn, keep=healthy)

    def _start(self) -> tuple[psycopg.Connection[Any], EngineSchema]:
        """The idle connection of the last session when there is one (a connection costs a TCP and
        SCRAM handshake, more than a whole refresh tier's queries), else a new one; a kept connection
        that broke while idle (a server restart) is replaced at once."""
        import psycopg

        with self._idle_lock:
            conn, self._idle = self._idle, None
        if conn is not None:
            try:
                return conn, self._read_schema(conn)
            except psycopg.OperationalError:
                _close(conn)
            except psycopg.Error as exc:
                _close(conn)
                raise self._classify(exc, None) from None
        password = self._password()
        try:
            conn = self._connect(password)
        except psycopg.Error as exc:
            raise self._classify(exc, password) from None
        try:
            return conn, self._read_schema(conn)
        except psycopg.Error as exc:
            _close(conn)
            raise self._classify(exc, password) from None

    def _end(self, conn: psycopg.Connection[Any], *, keep: bool) -> None:
        """End the read transaction; keep the connection for the next session when it is healthy and no
        other is kept (two sessions at once, e.g. the first readiness probe, each use their own)."""
        import psycopg

        if keep and not conn.closed:
            try:
                conn.rollback()
            except psycopg.Error:
                keep = False
        if keep:
            with self._idle_lock:
                if self._idle is None:
                    self._idle = conn
                    return
        _close(conn)

    def close(self) -> None:
        """Close the kept connection (the daemon's stop, a reload that replaces this reader)."""
        with self._idle_lock:
            conn, self._idle = self._idle, None
        if conn is not None:
            _close(conn)

    def schema(self) -> EngineSchema:
        with self.session() as s:
            return s.schema

    def file_sizes(self) -> tuple[int, int]:
        """The database's size at the last session (``pg_database_size``); Postgres has no -wal file
        of its own to report."""
        return self._size, 0

    # -- one session ------------------------------------------------------------------------------

    def _password(self) -> str | None:
        try:
            return read_password(self.password_file)
        except OSError as exc:
            raise DatabaseUnavailable(
                Problem.AUTH_FAILED, f"{self.path}: cannot read db.password_file {self.password_file}: {exc.strerror}"
            ) from None

    def _connect(self, password: str | None) -> psycopg.Connection[Any]:
        import psycopg

        conn = connect(
            self.url,
            password=password,
            application_name=APPLICATION_NAME,
            statement_timeout=self.query_timeout,
            read_only=True,
        )
        try:
            # Both apply to every transaction psycopg starts on this connection: the session's one.
            conn.read_only = True
            conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        except BaseException:
            conn.close()
            raise
        return conn

    def read_schema(self, conn: psycopg.Connection[Any]) -> EngineSchema:
        """The engine schema read on a connection opened elsewhere (the write jobs' own sessions)."""
        return self._read_schema(conn)

    def _read_schema(self, conn: psycopg.Connection[Any]) -> EngineSchema:
        """Recognised afresh every session (two catalogue queries, well under a millisecond): a
        migration, a new table or a GRANT shows at once."""
        identity, size = conn.execute(_IDENTITY_SQL).fetchone() or (None, 0)
        self._size = int(size or 0)
        if self._identity is not None and identity != self._identity:
            self.generation += 1
        self._identity = identity
        catalogue: dict[str, set[str]] = {}
        for table, column in conn.execute(_CATALOGUE_SQL):
            catalogue.setdefault(str(table), set()).add(str(column))
        return self._recognise(PostgresConnection(conn), {t: frozenset(c) for t, c in catalogue.items()})

    def _recognise(self, conn: PostgresConnection, catalogue: Catalogue) -> EngineSchema:
        candidates = engines.engines() if self.engine == engines.AUTO else (engines.engine(self.engine),)
        reasons = []
        for candidate in candidates:
            if candidate.recognise_postgres is None:
                if self.engine != engines.AUTO:
                    reasons.append(f"{candidate.title} has no Postgres backend")
                continue
            found = candidate.recognise_postgres(conn, catalogue)
            if not isinstance(found, str):
                return found
            reasons.append(f"not {candidate.title}: {found}")
        raise DatabaseUnavailable(
            Problem.UNKNOWN_LAYOUT, f"{self.path}: no engine's tables recognised ({'; '.join(reasons)})"
        )

    def _classify(self, exc: Exception, password: str | None) -> DatabaseUnavailable:
        if password is None:  # an error inside a session: scrub the file's password too, if it reads
            try:
                password = read_password(self.password_file)
            except OSError:
                password = None
        return classify_error(exc, self.path, secrets=secrets_of(self.url, password))


def _close(conn: psycopg.Connection[Any]) -> None:
    """Roll back and close; a broken connection (server gone) closes without a word."""
    import psycopg

    try:
        if not conn.closed:
            conn.rollback()
    except psycopg.Error:
        pass
    finally:
        conn.close()


# SQLSTATE classes and codes -> reason (https://www.postgresql.org/docs/15/errcodes-appendix.html).
_BY_SQLSTATE = {
    "28P01": Problem.AUTH_FAILED,  # invalid_password
    "28000": Problem.AUTH_FAILED,  # invalid_authorization_specification (pg_hba rejects)
    "3D000": Problem.MISSING,  # invalid_catalog_name: no such database
    "42501": Problem.UNREADABLE,  # insufficient_privilege: a table without GRANT SELECT
    "57014": Problem.TIMEOUT,  # query_canceled: statement_timeout
    "25P03": Problem.TIMEOUT,  # idle_in_transaction_session_timeout
    "53300": Problem.UNREACHABLE,  # too_many_connections
    "57P01": Problem.UNREACHABLE,  # admin_shutdown
    "57P02": Problem.UNREACHABLE,  # crash_shutdown
    "57P03": Problem.UNREACHABLE,  # cannot_connect_now (starting up, recovery)
    "08000": Problem.UNREACHABLE,
    "08003": Problem.UNREACHABLE,
    "08006": Problem.UNREACHABLE,
    "08001": Problem.UNREACHABLE,
    "08004": Problem.UNREACHABLE,
}
_HINTS = {
    Problem.AUTH_FAILED: "check the role and its password (db.password_file, PGPASSFILE or PGPASSWORD)",
    Problem.UNREADABLE: "the exporter's role needs SELECT on the engine's tables (README: least-privilege role)",
    Problem.UNREACHABLE: "is the server running and reachable at this host and port?",
    Problem.TIMEOUT: "a query ran past db.query_timeout (statement_timeout)",
}


def classify_error(exc: Exception, where: str, *, secrets: Sequence[str] = ()) -> DatabaseUnavailable:
    """A bounded reason for a psycopg error (its SQLSTATE, libpq's words for errors before one), with
    a message naming the database by its redacted URL and holding no secret."""
    state = str(getattr(exc, "sqlstate", "") or "")
    text = str(exc).strip() or type(exc).__name__
    problem = _BY_SQLSTATE.get(state) or _by_message(text.lower())
    for secret in secrets:
        text = text.replace(secret, MASK)
    text = redact_text(text).replace("\n", " ")
    hint = _HINTS.get(problem)
    return DatabaseUnavailable(problem, f"{where}: {text}" + (f" ({hint})" if hint else ""))


def _by_message(lowered: str) -> Problem:
    # Auth and privilege first: libpq prefixes every connect error with "connection to server at …".
    if "password authentication failed" in lowered or "no password supplied" in lowered:
        return Problem.AUTH_FAILED
    if "no pg_hba.conf entry" in lowered:
        return Problem.AUTH_FAILED
    if "permission denied" in lowered:
        return Problem.UNREADABLE
    if "does not exist" in lowered and "database" in lowered:
        return Problem.MISSING
    if any(words in lowered for words in ("connection to server", "connection refused", "could not connect")):
        return Problem.UNREACHABLE
    if "server closed the connection" in lowered or "connection is lost" in lowered:
        return Problem.UNREACHABLE
    if "timeout" in lowered or "canceling statement" in lowered:
        return Problem.TIMEOUT
    return Problem.QUERY_ERROR
