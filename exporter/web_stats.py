"""Counters of the HTTP layer's defences: malformed requests, dropped connections, refused logins.

Every label has a fixed set of values, all present from the start at 0. The counts change on the event
loop and are read by a scrape in a worker thread: each is a single int, replaced atomically.
"""

from __future__ import annotations

from collections.abc import Iterator
from enum import StrEnum

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric


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


class HttpStats:
    """A prometheus_client collector; register it on a registry rendered at every scrape."""

    def __init__(self) -> None:
        self.bad_requests = dict.fromkeys(BadRequest, 0)
        self.dropped = dict.fromkeys(Dropped, 0)
        self.auth_failures = dict.fromkeys(AuthFailure, 0)
        self.open_connections = 0

    def bad_request(self, reason: BadRequest) -> None:
        self.bad_requests[reason] += 1

    def drop(self, reason: Dropped) -> None:
        self.dropped[reason] += 1

    def auth_failure(self, reason: AuthFailure) -> None:
        self.auth_failures[reason] += 1

    def collect(self) -> Iterator[Metric]:
        bad = CounterMetricFamily(
            "state_exporter_http_bad_requests",
            "Malformed HTTP requests answered 400, by reason",
            labels=["reason"],
        )
        for reason, count in self.bad_requests.items():
            bad.add_metric([reason.value], count)
        yield bad
        dropped = CounterMetricFamily(
            "state_exporter_http_connections_dropped",
            "Connections the server closed: headers too slow (header_timeout) or too many open (connection_limit)",
            labels=["reason"],
        )
        for dropped_reason, count in self.dropped.items():
            dropped.add_metric([dropped_reason.value], count)
        yield dropped
        auth = CounterMetricFamily(
            "state_exporter_http_auth_failures",
            "Requests refused by basic auth: invalid credentials (401) or too many checks pending (429)",
            labels=["reason"],
        )
        for auth_reason, count in self.auth_failures.items():
            auth.add_metric([auth_reason.value], count)
        yield auth
        yield GaugeMetricFamily(
            "state_exporter_http_open_connections", "Open HTTP connections", value=self.open_connections
        )
