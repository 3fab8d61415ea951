"""Thin OTLP clients (gRPC ``TraceService/Export`` and HTTP/protobuf ``POST /v1/traces``).

They send an already-encoded ``ExportTraceServiceRequest`` once and say what happened; retries,
backoff and splitting belong to :mod:`exporter.traces.delivery`.  Classification (OTLP spec, plus
"never drop data the DB still holds"):

* success (gRPC OK, HTTP 2xx), possibly a *partial success* with a count of rejected spans;
* ``MALFORMED``: gRPC INVALID_ARGUMENT, HTTP 400 -> the batch is split to isolate the bad span;
* ``TOO_LARGE``: HTTP 413, gRPC RESOURCE_EXHAUSTED "larger than max" -> split as well;
* ``RETRY``: everything else (UNAVAILABLE, DEADLINE_EXCEEDED, 429, 502-504, connection errors, but also
  auth or server errors: they are logged and retried, so fixing the collector loses nothing).
"""

from __future__ import annotations

import contextlib
import email.utils
import gzip
import http.client
import math
import socket
import ssl
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from typing import Protocol

import grpc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from exporter import __version__
from exporter.redact import redact_text, redact_url
from exporter.traces.config import Endpoint, TracesConfig, resolve_endpoint

EXPORT_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
USER_AGENT = f"flujo-state-exporter/{__version__}"
_POLL_S = 0.2
_HTTP_REASONS = frozenset((400, 401, 403, 404, 408, 413, 429, 500, 502, 503, 504))


class Stopped(Exception):
    """The export was interrupted because the component is stopping (nothing is committed)."""


class Kind(Enum):
    OK = "ok"
    RETRY = "retry"
    MALFORMED = "malformed"
    TOO_LARGE = "too_large"


@dataclass(frozen=True)
class Outcome:
    kind: Kind
    reason: str  # bounded: a gRPC code name, http_<status>, connection, timeout
    detail: str = ""
    rejected: int = 0  # partial success: spans the collector refused
    retry_after: float | None = None


OK = Outcome(Kind.OK, "ok")


class Transport(Protocol):
    description: str

    def send(self, payload: bytes, halt: threading.Event) -> Outcome: ...

    def abort(self) -> None: ...

    def close(self) -> None: ...


def make_transport(config: TracesConfig) -> Transport:
    endpoint = resolve_endpoint(config)
    if endpoint.protocol == "grpc":
        return GrpcTransport(endpoint, config)
    return HttpTransport(endpoint, config)


def _read(path: object) -> bytes | None:
    if path is None:
        return None
    with open(str(path), "rb") as handle:
        return handle.read()


def _partial(body: bytes) -> tuple[int, str]:
    if not body:
        return 0, ""
    try:
        response = ExportTraceServiceResponse.FromString(body)
    except Exception:  # a 2xx with a body we cannot parse is still a success
        return 0, ""
    if not response.HasField("partial_success"):
        return 0, ""
    return int(response.partial_success.rejected_spans), response.partial_success.error_message


class GrpcTransport:
    def __init__(self, endpoint: Endpoint, config: TracesConfig) -> None:
        self.description = f"grpc {'https' if endpoint.secure else 'http'}://{redact_url(endpoint.target)}"
        reconnect_ms = int(min(config.retry.max_backoff.total_seconds(), 2.0) * 1000)
        options: Sequence[tuple[str, int | str]] = [
            ("grpc.max_send_message_length", -1),
            ("grpc.max_receive_message_length", 16 * 1024 * 1024),
            ("grpc.enable_retries", 0),
            ("grpc.initial_reconnect_backoff_ms", min(200, reconnect_ms)),
            ("grpc.min_reconnect_backoff_ms", min(200, reconnect_ms)),
            ("grpc.max_reconnect_backoff_ms", reconnect_ms),
            ("grpc.primary_user_agent", USER_AGENT),
        ]
        self._compression = grpc.Compression.Gzip if config.compression == "gzip" else grpc.Compression.NoCompression
        if endpoint.secure:
            credentials = grpc.ssl_channel_credentials(
                root_certificates=_read(config.tls.ca_file),
                private_key=_read(config.tls.key_file),
                certificate_chain=_read(config.tls.cert_file),
            )
            self._channel = grpc.secure_channel(endpoint.target, credentials, options)
        else:
            self._channel = grpc.insecure_channel(endpoint.target, options)
        self._export: grpc.UnaryUnaryMultiCallable[bytes, bytes] = self._channel.unary_unary(EXPORT_METHOD)
        self._metadata = tuple((name.lower(), value) for name, value in config.headers.items())
        self._timeout = config.timeout.total_seconds()
        self._future: grpc.Future[bytes] | None = None

    def send(self, payload: bytes, halt: threading.Event) -> Outcome:
        future = self._export.future(
            payload, timeout=self._timeout, metadata=self._metadata, compression=self._compression
        )
        self._future = future
        try:
            while True:
                try:
                    body = future.result(timeout=_POLL_S)
                    break
                except grpc.FutureTimeoutError:
                    if halt.is_set():
                        future.cancel()
                        raise Stopped() from None
                except grpc.FutureCancelledError:
                    raise Stopped() from None
                except grpc.RpcError as error:
                    return self._classify(error)
        finally:
            self._future = None
        rejected, message = _partial(body)
        return Outcome(Kind.OK, "ok", message, rejected) if rejected or message else OK

    @staticmethod
    def _classify(error: grpc.RpcError) -> Outcome:
        code = error.code() if callable(getattr(error, "code", None)) else grpc.StatusCode.UNKNOWN
        details = redact_text((error.details() if callable(getattr(error, "details", None)) else None) or str(error))
        reason = code.name.lower() if code is not None else "unknown"
        if code == grpc.StatusCode.INVALID_ARGUMENT:
            return Outcome(Kind.MALFORMED, reason, details)
        if code == grpc.StatusCode.RESOURCE_EXHAUSTED and "larger than max" in details.lower():
            return Outcome(Kind.TOO_LARGE, reason, details)
        return Outcome(Kind.RETRY, reason, details)

    def abort(self) -> None:
        future = self._future
        if future is not None:
            future.cancel()

    def close(self) -> None:
        self._channel.close()


class HttpTransport:
    def __init__(self, endpoint: Endpoint, config: TracesConfig) -> None:
        self.description = f"http/protobuf {redact_url(endpoint.target)}"
        self._endpoint = endpoint
        self._timeout = config.timeout.total_seconds()
        self._gzip = config.compression == "gzip"
        self._headers = {"Content-Type": "application/x-protobuf", "User-Agent": USER_AGENT, **config.headers}
        if self._gzip:
            self._headers["Content-Encoding"] = "gzip"
        self._ssl: ssl.SSLContext | None = None
        if endpoint.secure:
            context = ssl.create_default_context(cafile=str(config.tls.ca_file) if config.tls.ca_file else None)
            if config.tls.cert_file is not None and config.tls.key_file is not None:
                context.load_cert_chain(str(config.tls.cert_file), str(config.tls.key_file))
            self._ssl = context
        self._conn: http.client.HTTPConnection | None = None
        self._lock = threading.Lock()

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            if self._ssl is not None:
                self._conn = http.client.HTTPSConnection(
                    self._endpoint.host, self._endpoint.port, timeout=self._timeout, context=self._ssl
                )
            else:
                self._conn = http.client.HTTPConnection(self._endpoint.host, self._endpoint.port, timeout=self._timeout)
        return self._conn

    def send(self, payload: bytes, halt: threading.Event) -> Outcome:
        body = gzip.compress(payload, compresslevel=6) if self._gzip else payload
        try:
            with self._lock:
                conn = self._connection()
            conn.request("POST", self._endpoint.path, body, self._headers)
            response = conn.getresponse()
            data = response.read()
        except TimeoutError as exc:
            self._drop()
            if halt.is_set():
                raise Stopped() from None
            return Outcome(Kind.RETRY, "timeout", redact_text(str(exc)) or "request timed out")
        except (OSError, http.client.HTTPException) as exc:
            self._drop()
            if halt.is_set():
                raise Stopped() from None
            return Outcome(Kind.RETRY, "connection", redact_text(f"{type(exc).__name__}: {exc}"))
        if response.will_close:
            self._drop()
        status = response.status
        if 200 <= status < 300:
            rejected, message = _partial(data)
            return Outcome(Kind.OK, "ok", message, rejected) if rejected or message else OK
        reason = f"http_{status}" if status in _HTTP_REASONS else f"http_{status // 100}xx"
        detail = redact_text(data[:500].decode("utf-8", "replace"))
        if status == 400:
            return Outcome(Kind.MALFORMED, reason, detail)
        if status == 413:
            return Outcome(Kind.TOO_LARGE, reason, detail)
        return Outcome(Kind.RETRY, reason, detail, retry_after=_retry_after(response.getheader("Retry-After")))

    def _drop(self) -> None:
        with self._lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def abort(self) -> None:
        with self._lock:
            conn = self._conn
        sock = getattr(conn, "sock", None) if conn is not None else None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._drop()


def _retry_after(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delay-seconds or an HTTP date); the caller caps it."""
    if value is None:
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - datetime.now(UTC)).total_seconds()
        return max(seconds, 0.0)
    return seconds if seconds >= 0 and math.isfinite(seconds) else None
