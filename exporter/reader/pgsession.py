"""How the exporter opens a Postgres session, for its reader and its write jobs alike: the password
from a file read at every connect (so it can be rotated), server-side limits on every statement and on
an idle transaction, a name in ``pg_stat_activity``, and the secrets to scrub from any message.

psycopg is imported on first use only: it is an optional dependency (the ``postgres`` extra).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

if TYPE_CHECKING:
    import psycopg

# Ends a session left inside a transaction by a process that stopped answering (the server's side of
# "keep transactions short"); a healthy session is never idle inside one.
IDLE_IN_TRANSACTION_S = 60
MIN_CONNECT_TIMEOUT_S = 2  # libpq treats anything lower as 2


def read_password(path: Path | None) -> str | None:
    """The password in ``path`` (its last line break dropped); None without a file.  Raises OSError."""
    return None if path is None else path.read_text().rstrip("\r\n")


def url_password(url: str) -> str | None:
    try:
        password = urlsplit(url).password
    except ValueError:
        return None
    return unquote(password) if password else None


def secrets_of(url: str, password: str | None) -> list[str]:
    """Every password this session may have used, to scrub from a message (libpq never echoes one:
    defence in depth)."""
    candidates = (password, url_password(url), os.environ.get("PGPASSWORD"))
    return [secret for secret in candidates if secret]


def to_psycopg(sql: str) -> str:
    """SQL written with sqlite3's ``?`` placeholders, for psycopg (``%s``; a literal ``%`` doubled).
    The engines' fragments come from fixed names: never a ``?`` or ``%`` inside a literal."""
    return sql.replace("%", "%%").replace("?", "%s")


def connect(
    url: str,
    *,
    password: str | None,
    application_name: str,
    statement_timeout: float,
    read_only: bool,
    lock_timeout: float | None = None,
    autocommit: bool = False,
) -> psycopg.Connection[Any]:
    """A session with ``statement_timeout`` (seconds, enforced by the server even when this process is
    stuck), ``idle_in_transaction_session_timeout``, optionally ``lock_timeout`` and
    ``default_transaction_read_only``; connecting waits at most ``statement_timeout`` too."""
    import psycopg

    options = (
        f"-c statement_timeout={_ms(statement_timeout)}"
        f" -c idle_in_transaction_session_timeout={IDLE_IN_TRANSACTION_S * 1000}"
    )
    if lock_timeout is not None:
        options += f" -c lock_timeout={_ms(lock_timeout)}"
    if read_only:
        options += " -c default_transaction_read_only=on"
    extra: dict[str, Any] = {} if password is None else {"password": password}
    return psycopg.connect(
        url,
        application_name=application_name,
        options=options,
        connect_timeout=max(math.ceil(statement_timeout), MIN_CONNECT_TIMEOUT_S),
        autocommit=autocommit,
        **extra,
    )


def _ms(seconds: float) -> int:
    return max(int(seconds * 1000), 1)
