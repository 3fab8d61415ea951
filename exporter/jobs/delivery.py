"""POST JSON to Alertmanager's v2 API or a webhook, with bounded retries and counted outcomes.

Per job run and receiver: up to ``attempts`` POSTs, waiting ``backoff``, ``2*backoff``, ... in
between (through the injected sleep).  2xx is success; network errors, timeouts, 429 and 5xx are
retried; other 4xx are not (the payload would be refused again) and count as a failure at once.
A failed delivery leaves the alerts due, so the next run sends them again.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from exporter.jobs.config import AlertmanagerConfig, WebhookConfig
from exporter.jobs.scheduler import Sleep
from exporter.redact import redact_text, redact_url

log = logging.getLogger(__name__)

ALERTMANAGER, WEBHOOK = "alertmanager", "webhook"
USER_AGENT = "flujo-state-exporter"


@dataclass(frozen=True)
class Receiver:
    name: str
    url: str = field(repr=False)  # may hold a token or user:password@: log redact_url(url)
    timeout: float
    headers: dict[str, str] = field(default_factory=dict, repr=False)
    auth: aiohttp.BasicAuth | None = field(default=None, repr=False)

    @classmethod
    def alertmanager(cls, config: AlertmanagerConfig) -> Receiver:
        headers = {}
        if config.bearer_token is not None:
            headers["Authorization"] = f"Bearer {config.bearer_token}"
        auth = None
        if config.basic_auth is not None:
            auth = aiohttp.BasicAuth(config.basic_auth.username, config.basic_auth.password)
        return cls(ALERTMANAGER, f"{config.url}/api/v2/alerts", config.timeout.total_seconds(), headers, auth)

    @classmethod
    def webhook(cls, config: WebhookConfig) -> Receiver:
        return cls(WEBHOOK, config.url, config.timeout.total_seconds(), dict(config.headers))


class DeliveryError(Exception):
    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


async def post_json(session: aiohttp.ClientSession, receiver: Receiver, body: Any) -> None:
    headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT, **receiver.headers}
    try:
        async with session.post(
            receiver.url,
            data=json.dumps(body),
            headers=headers,
            auth=receiver.auth,
            timeout=aiohttp.ClientTimeout(total=receiver.timeout),
        ) as response:
            if 200 <= response.status < 300:
                return
            text = redact_text((await response.text(errors="replace"))[:300])
            retryable = response.status == 429 or response.status >= 500
            raise DeliveryError(
                f"HTTP {response.status} from {redact_url(receiver.url)}: {text.strip()}", retryable=retryable
            )
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        # aiohttp's messages can embed the URL (InvalidURL, redirects): the cause is not chained,
        # so that a traceback of this error cannot show it either.
        reason = redact_text(str(exc)) or type(exc).__name__
        raise DeliveryError(f"cannot POST to {redact_url(receiver.url)}: {reason}", retryable=True) from None


async def deliver(
    session: aiohttp.ClientSession,
    receiver: Receiver,
    body: Any,
    *,
    attempts: int,
    backoff: float,
    sleep: Sleep = asyncio.sleep,
    record: Callable[[str, str], None],
) -> str | None:
    """Deliver ``body``; returns None on success, else the last error (outcomes go to ``record``)."""
    for attempt in range(1, attempts + 1):
        try:
            await post_json(session, receiver, body)
        except DeliveryError as exc:
            if exc.retryable and attempt < attempts:
                record(receiver.name, "retry")
                log.warning("%s delivery attempt %d/%d failed: %s", receiver.name, attempt, attempts, exc)
                await sleep(backoff * 2 ** (attempt - 1))
                continue
            record(receiver.name, "failure")
            return str(exc)
        record(receiver.name, "success")
        return None
    return "no attempt made"  # pragma: no cover - attempts >= 1
