"""HTTP basic auth against bcrypt hashes, without a user-name oracle and with bounded bcrypt work.

* Unknown users are checked against a dummy hash of the same cost as the configured ones (the highest
  cost if they differ), so a wrong user name takes as long as a wrong password.
* Successful checks are cached per (user, sha256(password)): a scraper pays bcrypt once.
* bcrypt runs in a small thread pool. At most :data:`MAX_PENDING` checks wait or run at once, and at
  most :data:`MAX_PENDING_PER_CLIENT` per client address; beyond that a request is refused at once (429
  with Retry-After) instead of queueing, so a password-guessing flood costs the CPU of one worker and
  a valid client waits for a few checks, not for the whole flood.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import secrets
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from enum import Enum

import bcrypt

WORKERS = 1  # bcrypt threads: one core at most, whatever the flood
MAX_PENDING = 8  # checks waiting or running; at cost 12 (~0.2 s) a valid client waits 2 s at worst
MAX_PENDING_PER_CLIENT = 2  # per client address, so one flooding host cannot fill the queue alone
RETRY_AFTER_S = 1


class Verdict(Enum):
    ALLOWED = "allowed"
    DENIED = "denied"  # 401
    THROTTLED = "throttled"  # 429: too many checks pending, retry later


def bcrypt_cost(hashed: str) -> int:
    """The cost of a ``$2b$12$...`` hash (the config only accepts that shape)."""
    return int(hashed.split("$")[2])


class BasicAuth:
    def __init__(
        self,
        users: dict[str, str],
        *,
        max_pending: int = MAX_PENDING,
        max_pending_per_client: int = MAX_PENDING_PER_CLIENT,
    ) -> None:
        """Raises ValueError for a user name with ':' (basic auth could not send it)."""
        for user in users:
            if ":" in user:
                raise ValueError(f"basic_auth_users: user name {user!r} must not contain ':'")
        self._users = [(user.encode(), hashed.encode()) for user, hashed in users.items()]
        self.dummy_cost = max((bcrypt_cost(hashed) for hashed in users.values()), default=12)
        # A random password nobody knows, hashed at the configured cost: checked for unknown users.
        self._dummy = bcrypt.hashpw(secrets.token_bytes(16), bcrypt.gensalt(rounds=self.dummy_cost))
        self._verified: set[tuple[bytes, bytes]] = set()
        self._max_pending = max_pending
        self._max_per_client = max_pending_per_client
        self._pending: Counter[str] = Counter()
        self._executor = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="bcrypt")

    async def check(self, header: str | None, client: str) -> Verdict:
        """``header``: the Authorization header; ``client``: the peer's address (for fairness only)."""
        credentials = _parse_basic(header)
        if credentials is None:
            return Verdict.DENIED
        user, password = credentials
        hashed, known = self._dummy, False
        for name, candidate in self._users:  # no early exit: do not reveal which name matched
            if hmac.compare_digest(name, user):
                hashed, known = candidate, True
        key = (user, hashlib.sha256(password).digest())
        if known and key in self._verified:
            return Verdict.ALLOWED
        # The same limits for known and unknown users: refusing differently would be an oracle too.
        if self._pending.total() >= self._max_pending or self._pending[client] >= self._max_per_client:
            return Verdict.THROTTLED
        self._pending[client] += 1
        try:
            ok = await asyncio.get_running_loop().run_in_executor(self._executor, _checkpw, password, hashed)
        finally:
            self._pending[client] -= 1
            if self._pending[client] <= 0:
                del self._pending[client]
        if ok and known:
            self._verified.add(key)
            return Verdict.ALLOWED
        return Verdict.DENIED

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


def _parse_basic(header: str | None) -> tuple[bytes, bytes] | None:
    if not header:
        return None
    scheme, _, encoded = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    user, sep, password = decoded.partition(b":")
    return (user, password) if sep else None


def _checkpw(password: bytes, hashed: bytes) -> bool:
    try:
        return bcrypt.checkpw(password, hashed)
    except ValueError:  # e.g. a password over bcrypt's 72-byte limit
        return False
