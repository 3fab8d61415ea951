"""Stuck-run alerts: one alert per stuck run, to metrics, Alertmanager's v2 API and a JSON webhook.

Every run reads a short read-only snapshot of the active runs (:func:`active_workflows`), judges them
with the same :func:`stuck_workflows` as the ``flujo_workflows_stuck`` metric, and keeps the firing
alerts in memory.

* Alertmanager: new alerts are posted at once, firing ones re-posted every ``resend_interval`` with
  ``endsAt = now + 4 x max(resend_interval, interval)`` (Alertmanager resolves them itself if the
  exporter goes away), and a resolved one (the run finished, was updated or disappeared) is posted
  once with ``endsAt = now``.
* Webhook: one payload ``{status: firing, alerts: [...]}`` when alerts start and one
  ``{status: resolved, ...}`` when they end (the shape of Alertmanager's webhook payload).

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
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp

from exporter.clock import Clock
from exporter.config_types import format_duration
from exporter.engines.flujo.layout import flujo_schema
from exporter.engines.flujo.stuck import StuckPolicy, stuck_workflows
from exporter.engines.flujo.workflows import ActiveWorkflow, active_workflows
from exporter.jobs.config import StuckAlertsConfig
from exporter.jobs.delivery import ALERTMANAGER, Receiver, deliver
from exporter.jobs.metrics import JobMetrics
from exporter.jobs.scheduler import JobError, Sleep
from exporter.reader import DatabaseUnavailable, StateReader

log = logging.getLogger(__name__)

JOB = "stuck_alerts"
ALERT_NAME = "FlujoRunStuck"
WEBHOOK_RECEIVER = "flujo-state-exporter"
ZERO_TIME = "0001-01-01T00:00:00Z"
MAX_ALERTS_PER_REQUEST = 500

Key = tuple[str, str]  # (run_id, status)


def rfc3339(instant: datetime) -> str:
    return instant.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(slots=True)
class Alert:
    """One stuck run's alert.  Labels and annotations are built when a request is (memory: a mass
    stall keeps tens of thousands of these)."""

    run_id: str
    pipeline: str
    status: str
    updated_at: datetime
    threshold: timedelta
    ends_at: datetime | None = None  # set once resolved
    sent: dict[str, datetime] | None = None  # receiver -> last delivered while firing
    resolved_sent: tuple[str, ...] = ()

    @property
    def starts_at(self) -> datetime:
        return self.updated_at + self.threshold

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
    def __init__(
        self,
        config: StuckAlertsConfig,
        reader: StateReader,
        clock: Clock,
        metrics: JobMetrics,
        *,
        sleep: Sleep = asyncio.sleep,
        session_factory: Callable[[], aiohttp.ClientSession] = aiohttp.ClientSession,
    ) -> None:
        self.config = config
        self.reader = reader
        self.clock = clock
        self.metrics = metrics
        self.sleep = sleep
        self.session_factory = session_factory
        self.policy = StuckPolicy(config.running_after, dict(config.per_pipeline), config.paused_after)
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
            active = await asyncio.to_thread(self._read)
        except DatabaseUnavailable as exc:
            raise JobError(exc.message) from exc
        self.update(stuck_workflows(active, now, self.policy), now)
        self.metrics.alerts_firing(Counter(alert.pipeline for alert in self.firing.values()))
        errors = await self.send(now)
        if errors:
            raise JobError("alert delivery failed: " + "; ".join(errors))

    def _read(self) -> list[ActiveWorkflow]:
        with self.reader.session() as s:
            return active_workflows(s.conn, flujo_schema(s.schema), s.naive_tz, [])

    # -- the alert book ---------------------------------------------------------------------------

    def update(self, stuck: list[ActiveWorkflow], now: datetime) -> None:
        current: dict[Key, ActiveWorkflow] = {(run.run_id, run.status): run for run in stuck}
        for key, run in current.items():
            alert = self.firing.get(key)
            threshold = self.policy.threshold(run)
            assert threshold is not None and run.updated_at is not None  # stuck_workflows guarantees both
            if alert is None:
                self.resolved.pop(key, None)  # stuck again after resolving: a new alert
                self.firing[key] = Alert(run.run_id, run.pipeline, run.status, run.updated_at, threshold)
                log.info("stuck_alerts: run %s of pipeline %s is stuck (%s)", run.run_id, run.pipeline, run.status)
            else:
                alert.updated_at, alert.threshold = run.updated_at, threshold
        for key in [k for k in self.firing if k not in current]:
            alert = self.firing.pop(key)
            alert.ends_at = now
            self.resolved[key] = alert
            log.info("stuck_alerts: run %s is no longer stuck (finished, updated or deleted)", key[0])
        for key, alert in list(self.resolved.items()):
            assert alert.ends_at is not None
            pending = [r.name for r in self.receivers if self._owes_resolution(alert, r.name)]
            if not pending:
                del self.resolved[key]
            elif now - alert.ends_at > self._hold:
                log.warning("stuck_alerts: giving up sending the resolution of run %s to %s", key[0], pending)
                del self.resolved[key]

    def _labels(self, alert: Alert) -> dict[str, str]:
        return {
            **self.config.labels,
            "alertname": ALERT_NAME,
            "pipeline": alert.pipeline,
            "severity": self.config.severity,
            "status": alert.status,
            "run_id": alert.run_id,
        }

    @staticmethod
    def _annotations(alert: Alert) -> dict[str, str]:
        since = rfc3339(alert.updated_at)
        limit = format_duration(alert.threshold)
        return {
            "run_id": alert.run_id,
            "since": since,
            "threshold": limit,
            "summary": f"Flujo run {alert.run_id} of pipeline {alert.pipeline} is {alert.status} without an update "
            f"since {since} (threshold {limit})",
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
        webhook (its payload has one status), at most MAX_ALERTS_PER_REQUEST each."""
        groups = [firing + resolved] if receiver == ALERTMANAGER else [firing, resolved]
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
            "groupKey": f'{{}}:{{alertname="{ALERT_NAME}"}}',
            "truncatedAlerts": 0,
            "status": status,
            "receiver": WEBHOOK_RECEIVER,
            "groupLabels": {"alertname": ALERT_NAME},
            "commonLabels": dict(common_labels or ()),
            "commonAnnotations": dict(common_annotations or ()),
            "externalURL": self.config.generator_url or "",
            "alerts": items,
        }
