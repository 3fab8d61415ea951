"""The write jobs on a Postgres database (Flujo's ``PostgresBackend``): their own role, short
transactions bounded on the server, and one advisory lock per job so that two exporters on one
database (an HA pair) run each job once.

* **Credentials.**  The exporter's read role (``db.url``) is ``SELECT``-only by design, so the jobs
  connect with ``jobs.postgres.url`` (+ ``jobs.postgres.password_file``, read at every connect so it
  can be rotated): a role with the grants of the README's write role (``WRITE_GRANTS``).
  A dry run only reads and may use ``db.url`` instead.  Passwords never reach a log line: messages
  name the database by its URL without userinfo, and server text is scrubbed of the password.
* **Bounded waits.**  Every session sets ``statement_timeout`` (``jobs.postgres.statement_timeout``)
  and ``lock_timeout`` (``jobs.write_busy_timeout``, the same "how long may a job wait for the
  application" as SQLite's busy timeout), and ``idle_in_transaction_session_timeout``, so a job
  never holds the application up for long and a vanished job never pins a transaction.  Rows the
  application is writing at that moment are skipped (``FOR UPDATE SKIP LOCKED``), not waited for.
* **One runner per job and database** (:class:`AdvisoryLease`): a session-level
  ``pg_try_advisory_lock`` on a connection of its own, *kept* between runs.  A lock taken per run
  (or per transaction) would be free again as soon as one exporter's run ended, so the other
  exporter's run, due a few seconds later, would do the same work again; keeping it makes the
  holder the job's runner for as long as its session lives, and the other exporter skips every run
  (``state_exporter_job_lock_skipped_total``).  When the holder stops, crashes or loses its
  connection, the server drops the lock and the other one takes over at its next run.  Advisory
  locks are scoped to the database by the server, so the key only names the job.
"""

from __future__ import annotations

import logging
import threading
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from exporter.engines.base import EngineSchema
from exporter.engines.flujo.jobs.config import WRITE_GRANTS
from exporter.jobs.db import JobConn, WriteRows
from exporter.jobs.scheduler import JobError
from exporter.reader.errors import DatabaseUnavailable, Problem
from exporter.reader.pgsession import connect, read_password, secrets_of, to_psycopg
from exporter.reader.postgres import PostgresReader, classify_error
from exporter.redact import MASK, redact_text, redact_url

if TYPE_CHECKING:
    import psycopg

log = logging.getLogger(__name__)

APPLICATION_NAME = "state-exporter-jobs"  # tells the jobs' sessions from the reader's in pg_stat_activity
# The first half of every advisory lock key: "this is state-exporter's", so that the application's
# own advisory locks (a different classid) never collide with ours.
LOCK_CLASS = zlib.crc32(b"state-exporter") - (1 << 31)


def lock_key(job: str) -> tuple[int, int]:
    """The two int4 halves of ``job``'s advisory lock: stable across processes, versions and hosts
    (a CRC, not Python's salted ``hash``), shown in ``pg_locks`` as ``classid``/``objid``."""
    return LOCK_CLASS, zlib.crc32(job.encode()) - (1 << 31)


def _instant_or_text_loader() -> type:
    """A ``timestamptz`` loader giving the server's text for the values Python's datetime cannot hold
    (``infinity``, ``-infinity``, years past 9999), where psycopg's raises and would fail the whole
    page: the jobs then skip and count that row as a bad value, like unparsable text on SQLite, and
    the text goes back as a parameter unchanged (the server casts it) for the keyset cursor."""
    import psycopg
    from psycopg.types.datetime import TimestamptzLoader

    class InstantOrText(TimestamptzLoader):
        def load(self, data: Any) -> Any:
            try:
                return super().load(data)
            except psycopg.DataError:
                return bytes(data).decode()

    return InstantOrText


class PostgresJobConnection:
    """A psycopg connection in autocommit mode with ``sqlite3``'s ``execute`` and ``?`` placeholders
    (every fragment is built from fixed names: there is never a ``?`` or ``%`` inside a literal).
    The jobs' ``BEGIN``/``COMMIT`` are their own statements, as on SQLite."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.raw = conn

    def execute(self, sql: str, parameters: Sequence[Any] = (), /) -> WriteRows:
        return self.raw.execute(to_psycopg(sql), tuple(parameters))

    @property
    def in_transaction(self) -> bool:
        import psycopg

        return self.raw.info.transaction_status != psycopg.pq.TransactionStatus.IDLE

    def close(self) -> None:
        self.raw.close()


@dataclass(frozen=True)
class PostgresTarget:
    """The write jobs' view of a Postgres database: ``url`` (with ``password_file``) is the role they
    connect as; ``lock_timeout`` and ``statement_timeout`` are in seconds."""

    url: str = field(repr=False)  # may hold a password: a repr in a log line or traceback must not show it
    password_file: Path | None
    lock_timeout: float
    statement_timeout: float

    @property
    def path(self) -> str:
        return redact_url(self.url)

    def _password(self) -> str | None:
        try:
            return read_password(self.password_file)
        except OSError as exc:
            raise JobError(
                f"{self.path}: cannot read jobs.postgres.password_file {self.password_file}: {exc.strerror}"
            ) from None

    def _secrets(self) -> list[str]:
        try:
            password = self._password()
        except JobError:
            password = None
        return secrets_of(self.url, password)

    def open_session(self, *, write: bool) -> psycopg.Connection[Any]:
        import psycopg

        password = self._password()
        try:
            conn = connect(
                self.url,
                password=password,
                application_name=APPLICATION_NAME,
                statement_timeout=self.statement_timeout,
                lock_timeout=self.lock_timeout,
                read_only=not write,  # a dry run: the server refuses writes whatever the role may do
                autocommit=True,
            )
        except psycopg.Error as exc:
            raise self.job_error(exc) from None
        conn.adapters.register_loader("timestamptz", _instant_or_text_loader())
        return conn

    def open_job(self, job: str, *, write: bool) -> tuple[JobConn, bool]:
        return PostgresJobConnection(self.open_session(write=write)), False

    @contextmanager
    def connect(self, job: str, *, write: bool) -> Iterator[JobConn]:
        conn = PostgresJobConnection(self.open_session(write=write))
        try:
            yield conn
        except Exception as exc:
            failure = self.failure(exc, job, write=write)
            if failure is None:
                raise
            raise failure from None
        finally:
            conn.close()

    def schema(self, conn: JobConn, engine: str) -> EngineSchema:
        """Recognised by the reader's own code on the job's connection: the same layout, the same
        Postgres dialect as the metrics."""
        assert isinstance(conn, PostgresJobConnection)
        reader = PostgresReader(self.url, engine=engine)
        try:
            return reader.read_schema(conn.raw)
        except DatabaseUnavailable as exc:
            raise JobError(exc.message) from None

    def failure(self, exc: Exception, job: str, *, write: bool) -> JobError | None:
        import psycopg

        if isinstance(exc, psycopg.Error):
            return self.job_error(exc)
        return None

    def job_error(self, exc: Exception) -> JobError:
        """One line naming the database by its redacted URL, the server's words scrubbed of the
        password, and what to do for the errors a job's set-up causes."""
        state = str(getattr(exc, "sqlstate", "") or "")
        text = str(exc).strip() or type(exc).__name__
        for secret in self._secrets():
            text = text.replace(secret, MASK)
        message = f"{self.path}: {redact_text(text)}".replace("\n", " ")
        hint = _HINTS.get(state)
        if hint is None and classify_error(exc, self.path).problem is Problem.TIMEOUT:
            hint = _HINTS["57014"]
        return JobError(f"{message} ({hint})" if hint else message)


_HINTS = {
    "55P03": "the application held a row or table lock longer than jobs.write_busy_timeout (lock_timeout)",
    "57014": "a statement ran past jobs.postgres.statement_timeout",
    "42501": f"jobs.postgres.url needs a role with {WRITE_GRANTS}: see the README's write role",
    "25006": "jobs.postgres.url needs a role that may write (this session is read-only): see the README's write role",
    "28P01": "check the write role and its password (jobs.postgres.password_file, PGPASSFILE or PGPASSWORD)",
}


class AdvisoryLease:
    """This exporter's claim to run one job on one database: a session-level advisory lock on a
    connection of its own, kept between runs (see the module docstring for why).  Used from worker
    threads; ``acquire`` and ``release`` are serialised."""

    def __init__(self, target: PostgresTarget, job: str) -> None:
        self.target = target
        self.job = job
        self.key = lock_key(job)
        self._conn: psycopg.Connection[Any] | None = None
        self._lock = threading.Lock()
        self._skipping = False  # one log line when another exporter starts running the job, not one per run

    @property
    def held(self) -> bool:
        return self._conn is not None

    def acquire(self) -> bool:
        """True when this exporter holds the job's lock (taken now, or still held: its session is
        alive); False when another session holds it."""
        import psycopg

        with self._lock:
            if self._conn is not None:
                try:
                    self._conn.execute("SELECT 1")
                    return True
                except psycopg.Error:
                    # The session is gone (server restart, failover, killed backend): so is the lock.
                    log.warning(
                        "job %s: lost the Postgres session holding its advisory lock; taking it again", self.job
                    )
                    self._drop()
            conn = self.target.open_session(write=False)
            try:
                row = conn.execute("SELECT pg_try_advisory_lock(%s, %s)", self.key).fetchone()
            except psycopg.Error as exc:
                conn.close()
                raise self.target.job_error(exc) from None
            if row is None or not row[0]:
                conn.close()
                if not self._skipping:
                    self._skipping = True
                    log.info(
                        "job %s: another exporter holds its advisory lock on %s and runs it; this one skips it",
                        self.job,
                        self.target.path,
                    )
                return False
            self._skipping = False
            self._conn = conn
            log.info(
                "job %s: took its advisory lock on %s: this exporter runs it (others skip it)",
                self.job,
                self.target.path,
            )
            return True

    def release(self) -> None:
        """Closing the session releases the lock (no explicit unlock: it would need a healthy session)."""
        with self._lock:
            if self._conn is not None:
                log.info("job %s: released its advisory lock on %s", self.job, self.target.path)
                self._drop()

    def _drop(self) -> None:
        assert self._conn is not None
        try:
            self._conn.close()
        finally:
            self._conn = None
