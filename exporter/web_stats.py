"""Counters of the HTTP layer's defences: malformed requests, dropped connections, refused logins.

Every label has a fixed set of values, all present from the start at 0. The counts change on the event
loop and are read by a scrape in a worker thread: prometheus_client metrics (:mod:`exporter.selfmetrics`).
"""

from __future__ import annotations

from enum import StrEnum

from exporter.selfmetrics import SelfMetrics


class BadRequest(StrEnum):
    """Why a request could not be parsed (aiohttp answered 400)."""

    TOO_LARGE = "too_large"  # request line or a header line over the size limit
    BAD_REQUEST_LINE = "bad_request_line"  # not HTTP at all: garbage, TLS to the plain port
    MALFORMED = "malformed"  # anything else: too many headers, bad chunked encoding, TE + CL


class Dropped(StrEnum):
    """Why the server closed a connection on its own."""

    HEADER_TIMEOUT = "header_timeout"  # the request's headers did not arrive in web.header_timeout
    CONNECTION_LIMIT = "connection_limit"  # closed to make room, or refused: web.max_connections


class AuthFailure(StrEnum):
    INVALID = "invalid"  # missing, malformed or wrong credentials: 401
    THROTTLED = "throttled"  # too many checks pending: 429


class HttpStats(SelfMetrics):
    """A prometheus_client collector; register it on a registry rendered at every scrape."""

    def __init__(self) -> None:
        super().__init__()
        self._bad_requests = self.counter(
            "state_exporter_http_bad_requests",
            "Malformed HTTP requests answered 400, by reason",
            ["reason"],
            [(reason.value,) for reason in BadRequest],
        )
        self._dropped = self.counter(
            "state_exporter_http_connections_dropped",
            "Connections the server closed: headers too slow (header_timeout) or too many open (connection_limit)",
            ["reason"],
            [(reason.value,) for reason in Dropped],
        )
        self._auth_failures = self.counter(
            "state_exporter_http_auth_failures",
            "Requests refused by basic auth: invalid credentials (401) or too many checks pending (429)",
            ["reason"],
            [(reason.value,) for reason in AuthFailure],
        )
        self._open_connections = self.gauge("state_exporter_http_open_connections", "Open HTTP connections")

    def bad_request(self, reason: BadRequest) -> None:
        self._bad_requests.labels(reason.value).inc()

    def drop(self, reason: Dropped) -> None:
        self._dropped.labels(reason.value).inc()

    def auth_failure(self, reason: AuthFailure) -> None:
        self._auth_failures.labels(reason.value).inc()

    def open_connections(self, count: int) -> None:
        self._open_connections.set(count)
