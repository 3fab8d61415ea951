"""Stuck-run alerts: one alert per stuck run, to metrics, Alertmanager's v2 API and a JSON webhook.

Every run opens a short read-only session, asks the engine that wrote the file for its stuck runs
(:attr:`Engine.stuck_runs <exporter.engines.base.Engine.stuck_runs>`: the rule and the
``metrics.stuck`` settings behind its stuck metrics, so an alert and the metric never disagree),
and keeps the firing alerts in memory.  Nothing here knows an engine's tables or statuses.

* Alertmanager: new alerts are posted at once, firing ones re-posted every ``resend_interval`` with
  ``endsAt = now + 4 x max(resend_interval, interval)`` (Alertmanager resolves them itself if the
  exporter goes away), and a resolved one (the run finished, was updated or disappeared) is posted
  once with ``endsAt = now``.
* Webhook: one payload ``{status: firing, alerts: [...]}`` when alerts start and one
  ``{status: resolved, ...}`` when they end (the shape of Alertmanager's webhook payload).

Labels: ``alertname`` (the engine's, e.g. ``FlujoRunStuck``), ``engine``, ``pipeline`` (what the
engine groups runs by), ``status`` (the engine's raw status), ``reason`` (a canonical
:class:`~exporter.model.StuckReason`), ``severity``, ``run_id`` and the configured static labels.
Alertmanager identifies an alert by its label set, so ``run_id`` is an alert *label* (besides an
annotation): without it all stuck runs of a pipeline would merge into one alert, and one run
finishing would resolve the others.  Alerts are short-lived objects there, not time series; route
them with ``group_by: [alertname, pipeline]`` for one notification per pipeline.  The run id never
becomes a Prometheus metric label: the metric counts alerts per pipeline.

``startsAt`` is when the run became stuck (last update + threshold), so a restarted exporter sends
the same alert again rather than a new one.  Alerts that resolved while the exporter was down are
not sent as resolved; Alertmanager ends them at their last ``endsAt``.

Alerts go out in requests of at most :data:`MAX_ALERTS_PER_REQUEST` (a mass stall of 20 000 runs is
40 POSTs of about 230 KB, not one of 9 MB built in memory at once).  When a request fails, the
alerts of the following requests to that receiver stay due and go out at the next run.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import aiohttp

from exporter import engines
from exporter.clock import Clock
from exporter.config_types import format_duration
from exporter.jobs.config import StuckAlertsConfig
from exporter.jobs.delivery import ALERTMANAGER, Receiver, deliver
from exporter.jobs.metrics import JobMetrics
from exporter.jobs.scheduler import JobError, Sleep
from exporter.model import StuckRun
from exporter.reader import DatabaseUnavailable, Reader

if TYPE_CHECKING:
    from exporter.config import MetricsConfig
    from exporter.engines.base import Engine

log = logging.getLogger(__name__)

JOB = "stuck_alerts"
WEBHOOK_RECEIVER = "flujo-state-exporter"
ZERO_TIME = "0001-01-01T00:00:00Z"
MAX_ALERTS_PER_REQUEST = 500

# What tells one alert from another (the labels that vary): engine, pipeline, run_id, status, reason.
Key = tuple[str, str, str, str, str]


def rfc3339(instant: datetime) -> str:
    return instant.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def alert_key(engine: Engine, run: StuckRun) -> Key:
    return (engine.name, run.group, run.run_id, run.status, run.reason.value)


@dataclass(slots=True)
class Alert:
    """One stuck run's alert.  Labels and annotations are built when a request is (memory: a mass
    stall keeps tens of thousands of these)."""

    engine: Engine
    run: StuckRun  # as last judged: its update time and threshold may move while it stays stuck
    ends_at: datetime | None = None  # set once resolved
    sent: dict[str, datetime] | None = None  # receiver -> last delivered while firing
    resolved_sent: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return self.engine.stuck_alert_name

    @property
    def starts_at(self) -> datetime:
        return self.run.stuck_since

    def sent_to(self, receiver: str) -> datetime | None:
        return None if self.sent is None else self.sent.get(receiver)

    def mark_sent(self, receiver: str, now: datetime) -> None:
        if self.ends_at is not None:
            if receiver not in self.resolved_sent:
                self.resolved_sent = (*self.resolved_sent, receiver)
        elif self.sent is None:
            self.sent = {receiver: now}
        else:
            self.sent[receiver] = now


def fingerprint(labels: dict[str, str]) -> str:
    text = "\xff".join(f"{k}\xfe{v}" for k, v in sorted(labels.items()))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class StuckAlertsJob:
    """``settings`` gives the current ``metrics`` section: the stuck rule's thresholds
    (``metrics.stuck``) are read at every run, so after a reload the alerts follow the metric at once."""

    def __init__(
        self,
        config: StuckAlertsConfig,
        reader: Reader,
        clock: Clock,
        metrics: JobMetrics,
        settings: Callable[[], MetricsConfig],
        *,
        sleep: Sleep = asyncio.sleep,
        session_factory: Callable[[], aiohttp.ClientSession] = aiohttp.ClientSession,
    ) -> None:
        self.config = config
        self.reader = reader
        self.clock = clock
        self.metrics = metrics
        self.settings = settings
        self.sleep = sleep
        self.session_factory = session_factory
        self.receivers: list[Receiver] = []
        if config.alertmanager is not None:
            self.receivers.append(Receiver.alertmanager(config.alertmanager))
        if config.webhook is not None:
            self.receivers.append(Receiver.webhook(config.webhook))
        self.firing: dict[Key, Alert] = {}
        self.resolved: dict[Key, Alert] = {}
        hold = max(config.resend_interval, config.interval)
        self._hold = 4 * hold  # endsAt of a firing alert, and how long an undelivered resolution is retried

    async def __call__(self) -> None:
        now = self.clock()
        try:
            engine, stuck = await asyncio.to_thread(self._read, now)
        except DatabaseUnavailable as exc:
            raise JobError(exc.message) from exc
        self.update(engine, stuck, now)
        self.metrics.alerts_firing(Counter(alert.run.group for alert in self.firing.values()))
        errors = await self.send(now)
        if errors:
            raise JobError("alert delivery failed: " + "; ".join(errors))

    def _read(self, now: datetime) -> tuple[Engine, list[StuckRun]]:
        with self.reader.session() as s:
            engine = engines.engine(s.schema.engine)
            return engine, engine.stuck_runs(s, now, self.settings())

    # -- the alert book ---------------------------------------------------------------------------

    def update(self, engine: Engine, stuck: list[StuckRun], now: datetime) -> None:
        current = {alert_key(engine, run): run for run in stuck}
        for key, run in current.items():
            alert = self.firing.get(key)
            if alert is None:
                self.resolved.pop(key, None)  # stuck again after resolving: a new alert
                self.firing[key] = Alert(engine, run)
                log.info(
                    "stuck_alerts: %s run %s of pipeline %s is stuck (%s, %s)",
                    engine.title,
                    run.run_id,
                    run.group,
                    run.status,
                    run.reason.value,
                )
            else:
                alert.run = run
        for key in [k for k in self.firing if k not in current]:
            alert = self.firing.pop(key)
            alert.ends_at = now
            self.resolved[key] = alert
            log.info("stuck_alerts: run %s is no longer stuck (finished, updated or deleted)", alert.run.run_id)
        for key, alert in list(self.resolved.items()):
            assert alert.ends_at is not None
            pending = [r.name for r in self.receivers if self._owes_resolution(alert, r.name)]
            if not pending:
                del self.resolved[key]
            elif now - alert.ends_at > self._hold:
                log.warning("stuck_alerts: giving up sending the resolution of run %s to %s", alert.run.run_id, pending)
                del self.resolved[key]

    def _labels(self, alert: Alert) -> dict[str, str]:
        run = alert.run
        return {
            **self.config.labels,
            "alertname": alert.name,
            "engine": alert.engine.name,
            "pipeline": run.group,
            "severity": self.config.severity,
            "status": run.status,
            "reason": run.reason.value,
            "run_id": run.run_id,
        }

    @staticmethod
    def _annotations(alert: Alert) -> dict[str, str]:
        run = alert.run
        since = rfc3339(run.updated_at)
        limit = format_duration(run.threshold)
        return {
            "run_id": run.run_id,
            "since": since,
            "threshold": limit,
            "summary": f"{alert.engine.title} run {run.run_id} of pipeline {run.group} is {run.status} without an "
            f"update since {since} (threshold {limit}, reason {run.reason.value})",
        }

    @staticmethod
    def _owes_resolution(alert: Alert, receiver: str) -> bool:
        return alert.sent_to(receiver) is not None and receiver not in alert.resolved_sent

    # -- delivery ---------------------------------------------------------------------------------

    def _due(self, receiver: str, now: datetime) -> tuple[list[Alert], list[Alert]]:
        """(firing alerts to send, resolved alerts to send) for one receiver."""
        firing = []
        for alert in self.firing.values():
            last = alert.sent_to(receiver)
            if last is None or (receiver == ALERTMANAGER and now - last >= self.config.resend_interval):
                firing.append(alert)
        resolved = [a for a in self.resolved.values() if self._owes_resolution(a, receiver)]
        return firing, resolved

    async def send(self, now: datetime) -> list[str]:
        """Deliver what is due to every receiver; returns the errors (empty when all went through)."""
        due = {r.name: self._due(r.name, now) for r in self.receivers}
        if not any(f or r for f, r in due.values()):
            return []
        errors = []
        async with self.session_factory() as session:
            for receiver in self.receivers:
                firing, resolved = due[receiver.name]
                for alerts in self._requests(receiver.name, firing, resolved):
                    error = await deliver(
                        session,
                        receiver,
                        self._body(receiver.name, alerts, now),
                        attempts=self.config.attempts,
                        backoff=self.config.retry_backoff.total_seconds(),
                        sleep=self.sleep,
                        record=self.metrics.delivery,
                    )
                    if error is not None:
                        errors.append(f"{receiver.name}: {error}")
                        break  # the rest stays due: sent at the next run
                    for alert in alerts:
                        alert.mark_sent(receiver.name, now)
        for key in [k for k, a in self.resolved.items() if not self._pending(a)]:
            del self.resolved[key]
        return errors

    @staticmethod
    def _requests(receiver: str, firing: list[Alert], resolved: list[Alert]) -> Iterator[list[Alert]]:
        """The alerts of each request: firing and resolved together for Alertmanager, apart for the
        webhook (its payload has one status and one alert name: a file replaced by another engine's
        can leave alerts of both), at most MAX_ALERTS_PER_REQUEST each."""
        if receiver == ALERTMANAGER:
            groups = [firing + resolved]
        else:
            groups = []
            for alerts in (firing, resolved):
                by_name: dict[str, list[Alert]] = {}
                for alert in alerts:
                    by_name.setdefault(alert.name, []).append(alert)
                groups += by_name.values()
        for group in groups:
            for start in range(0, len(group), MAX_ALERTS_PER_REQUEST):
                yield group[start : start + MAX_ALERTS_PER_REQUEST]

    def _body(self, receiver: str, alerts: list[Alert], now: datetime) -> Any:
        if receiver == ALERTMANAGER:
            return self._alertmanager_body(alerts, now)
        return self._webhook_body("firing" if alerts[0].ends_at is None else "resolved", alerts)

    def _pending(self, alert: Alert) -> bool:
        return any(self._owes_resolution(alert, r.name) for r in self.receivers)

    def _alertmanager_body(self, alerts: list[Alert], now: datetime) -> list[dict[str, Any]]:
        body = []
        for alert in alerts:
            ends = alert.ends_at if alert.ends_at is not None else now + self._hold
            item: dict[str, Any] = {
                "labels": self._labels(alert),
                "annotations": self._annotations(alert),
                "startsAt": rfc3339(alert.starts_at),
                "endsAt": rfc3339(ends),
            }
            if self.config.generator_url:
                item["generatorURL"] = self.config.generator_url
            body.append(item)
        return body

    def _webhook_body(self, status: str, alerts: list[Alert]) -> dict[str, Any]:
        name = alerts[0].name  # one per request (see _requests)
        items: list[dict[str, Any]] = []
        common_labels: set[tuple[str, str]] | None = None
        common_annotations: set[tuple[str, str]] | None = None
        for a in alerts:
            labels, annotations = self._labels(a), self._annotations(a)
            common_labels = set(labels.items()) if common_labels is None else common_labels & labels.items()
            common_annotations = (
                set(annotations.items()) if common_annotations is None else common_annotations & annotations.items()
            )
            items.append(
                {
                    "status": status,
                    "labels": labels,
                    "annotations": annotations,
                    "startsAt": rfc3339(a.starts_at),
                    "endsAt": ZERO_TIME if a.ends_at is None else rfc3339(a.ends_at),
                    "generatorURL": self.config.generator_url or "",
                    "fingerprint": fingerprint(labels),
                }
            )
        return {
            "version": "4",
            "groupKey": f'{{}}:{{alertname="{name}"}}',
            "truncatedAlerts": 0,
            "status": status,
            "receiver": WEBHOOK_RECEIVER,
            "groupLabels": {"alertname": name},
            "commonLabels": dict(common_labels or ()),
            "commonAnnotations": dict(common_annotations or ()),
            "externalURL": self.config.generator_url or "",
            "alerts": items,
        }
