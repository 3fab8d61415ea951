"""What aiohttp's server does not bound by itself: how long a client may take to send its headers, how many
connections may be open, and what a malformed request costs (a 400 and a debug line, not a traceback).

Each accepted connection gets a :class:`GuardedConnection`, an asyncio protocol in front of aiohttp's
own :class:`~aiohttp.web_protocol.RequestHandler`. It keeps one deadline per connection:

* from the accept, or from the first byte after an idle pause, the request's headers must arrive within
  ``header_timeout`` (a slowloris client that sends a partial request line and waits is closed then);
* while the app handles a request there is no deadline (the handlers bound their own work);
* once the handler returned, the connection may stay idle for ``idle_timeout`` (keep-alive), which also
  bounds writing the response to a client that does not read it.

The app tells the guard when a request starts and ends (:func:`connection_of` finds it from a
request). A new connection beyond ``max_connections`` closes the oldest one that is not handling a
request, so half-open connections can never lock out a scraper; when every connection is busy, the new
one is refused. aiohttp itself drains an unread request body for at most ``body_timeout``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import BadStatusLine, HttpProcessingError, LineTooLong
from aiohttp.web_protocol import RequestHandler

from exporter.web_stats import BadRequest, Dropped, HttpStats

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ConnectionLimits:
    header_timeout: float
    body_timeout: float
    idle_timeout: float
    max_connections: int


class Phase(Enum):
    HEADERS = "headers"  # waiting for (the rest of) a request's headers
    ACTIVE = "active"  # the app is handling a request
    IDLE = "idle"  # between requests (keep-alive)


class QuietRequestHandler(RequestHandler):
    """aiohttp's handler, but a malformed request is answered 400 with a fixed body and counted, and
    logged as one debug line instead of an ERROR with a traceback (anyone can send garbage)."""

    def __init__(self, manager: web.Server, *, stats: HttpStats, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._stats = stats

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if status != 400 or not isinstance(exc, HttpProcessingError):
            return super().handle_error(request, status, exc, message)
        reason = _bad_request_reason(exc)
        self._stats.bad_request(reason)
        # Neither the message nor the request: they echo what the client sent.
        log.debug("malformed request from %s answered 400: %s (%s)", request.remote, reason, type(exc).__name__)
        if request.writer.output_size > 0:
            raise ConnectionError("malformed request after the response started: closing the connection")
        response = web.Response(status=400, text="400 Bad Request\n")
        response.force_close()
        return response


def _bad_request_reason(exc: HttpProcessingError) -> BadRequest:
    if isinstance(exc, LineTooLong):
        return BadRequest.TOO_LARGE
    if isinstance(exc, BadStatusLine):
        return BadRequest.BAD_REQUEST_LINE
    return BadRequest.MALFORMED


class ConnectionTable:
    """Open connections in the order they were accepted."""

    def __init__(self, limit: int, stats: HttpStats) -> None:
        self._limit = limit
        self._stats = stats
        self._open: dict[GuardedConnection, None] = {}  # a dict keeps insertion order

    def admit(self, connection: GuardedConnection) -> bool:
        """Make room for ``connection`` by closing the oldest one not handling a request; False when
        every open connection is busy (the caller refuses the new one)."""
        if len(self._open) >= self._limit:
            victim = next((other for other in self._open if other.phase is not Phase.ACTIVE), None)
            if victim is None:
                self._stats.drop(Dropped.CONNECTION_LIMIT)
                log.debug("connection limit reached and every connection busy: refusing a new one")
                return False
            victim.drop(Dropped.CONNECTION_LIMIT)
        self._open[connection] = None
        self._stats.open_connections(len(self._open))
        return True

    def remove(self, connection: GuardedConnection) -> None:
        self._open.pop(connection, None)
        self._stats.open_connections(len(self._open))


class GuardedConnection(asyncio.Protocol):
    """The transport's protocol: keeps the deadlines and passes everything on to aiohttp's handler."""

    def __init__(
        self,
        handler: RequestHandler,
        table: ConnectionTable,
        limits: ConnectionLimits,
        stats: HttpStats,
        *,
        probe_only: bool,
    ) -> None:
        self.probe_only = probe_only  # accepted on the probe listener: /healthz and /readyz only
        self.phase = Phase.HEADERS
        self._handler = handler
        self._table = table
        self._limits = limits
        self._stats = stats
        self._transport: asyncio.Transport | None = None
        self._admitted = False
        self._deadline: asyncio.TimerHandle | None = None
        self._input_while_active = False
        self._closed = False

    # asyncio.Protocol ------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        if not self._table.admit(self):
            transport.abort()
            return
        self._admitted = True
        self._arm(self._limits.header_timeout, Dropped.HEADER_TIMEOUT)
        self._handler.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self.phase is Phase.IDLE:  # the next request begins: its headers are due
            self.phase = Phase.HEADERS
            self._arm(self._limits.header_timeout, Dropped.HEADER_TIMEOUT)
        elif self.phase is Phase.ACTIVE:
            self._input_while_active = True  # a body, or a pipelined request
        self._handler.data_received(data)

    def eof_received(self) -> None:
        if self._admitted:
            self._handler.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._disarm()
        self._table.remove(self)
        if self._admitted:
            self._handler.connection_lost(exc)

    def pause_writing(self) -> None:
        if self._admitted:
            self._handler.pause_writing()

    def resume_writing(self) -> None:
        if self._admitted:
            self._handler.resume_writing()

    # called by the app ------------------------------------------------------------------------------

    def request_started(self) -> None:
        self.phase = Phase.ACTIVE
        self._input_while_active = False
        self._disarm()

    def request_finished(self) -> None:
        if self._input_while_active:  # bytes of a next request may already wait: its headers are due
            self.phase = Phase.HEADERS
            self._arm(self._limits.header_timeout, Dropped.HEADER_TIMEOUT)
        else:
            self.phase = Phase.IDLE
            self._arm(self._limits.idle_timeout, None)

    def drop(self, reason: Dropped) -> None:
        """Close the connection now, counting why."""
        self._stats.drop(reason)
        log.debug("closing a connection from %s: %s", self._peer(), reason.value)
        self._table.remove(self)
        self._disarm()
        if self._transport is not None:
            self._transport.abort()

    # deadlines --------------------------------------------------------------------------------------

    def _arm(self, seconds: float, reason: Dropped | None) -> None:
        self._disarm()
        if self._closed:  # a handler finishing after the connection went away
            return
        self._deadline = asyncio.get_running_loop().call_later(seconds, self._expire, reason)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expire(self, reason: Dropped | None) -> None:
        self._deadline = None
        if reason is not None:
            self.drop(reason)
        elif self._transport is not None:  # idle keep-alive, or a client not reading: not counted
            if self._transport.get_write_buffer_size() > 0:
                self._transport.abort()  # close() would wait for the client to read the rest
            else:
                self._transport.close()

    def _peer(self) -> str:
        peer = self._transport.get_extra_info("peername") if self._transport is not None else None
        return str(peer[0]) if isinstance(peer, tuple) else "?"


def connection_of(request: web.BaseRequest) -> GuardedConnection | None:
    """The guard of the connection ``request`` came on (None outside :func:`make_protocol_factory`)."""
    transport = request.transport
    protocol = transport.get_protocol() if transport is not None else None
    return protocol if isinstance(protocol, GuardedConnection) else None


def make_protocol_factory(
    server: web.Server,
    table: ConnectionTable,
    limits: ConnectionLimits,
    stats: HttpStats,
    *,
    probe_only: bool,
) -> Callable[[], asyncio.Protocol]:
    """The protocol factory for ``loop.create_server``: aiohttp's handler behind a guard."""
    loop = asyncio.get_running_loop()
    handler_args: dict[str, Any] = {
        "loop": loop,
        "stats": stats,
        "access_log": None,  # scrapes every 15 s would flood the logs
        "keepalive_timeout": limits.idle_timeout,
        "lingering_time": limits.body_timeout,
    }

    def factory() -> GuardedConnection:
        handler = QuietRequestHandler(server, **handler_args)
        return GuardedConnection(handler, table, limits, stats, probe_only=probe_only)

    return factory
