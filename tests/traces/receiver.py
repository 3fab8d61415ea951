"""A real OTLP trace receiver for the tests: gRPC ``TraceService`` and HTTP ``POST /v1/traces`` on 127.0.0.1.

Every span of every accepted request is decoded with the official generated classes and recorded.
The receiver can be stopped and started again on the same ports (collector outage), can fail the next
requests on purpose, and refuses any request containing a span named ``reject_name`` ("poison") as
malformed (gRPC INVALID_ARGUMENT / HTTP 400), like a collector refusing invalid data, and any request
containing a span named ``too_large_name`` as too large (gRPC RESOURCE_EXHAUSTED "larger than max" /
HTTP 413), like a collector's message size limit.
"""

from __future__ import annotations

import contextlib
import gzip
import socket
import ssl
import threading
import time
from collections import Counter
from concurrent import futures
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTracePartialSuccess,
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from support import wait_for


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def any_value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [any_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: any_value(kv.value) for kv in value.kvlist_value.values}
    return getattr(value, kind)


@dataclass(frozen=True)
class ReceivedEvent:
    time_ns: int
    name: str
    attributes: dict[str, Any]


@dataclass(frozen=True)
class ReceivedSpan:
    transport: str
    trace_id: str  # hex
    span_id: str
    parent_span_id: str  # "" for a root
    name: str
    kind: int
    start_ns: int
    end_ns: int
    status_code: int
    status_message: str
    attributes: dict[str, Any]
    dropped_attributes: int
    resource: dict[str, Any]
    scope_name: str
    scope_version: str
    events: tuple[ReceivedEvent, ...] = ()
    dropped_events: int = 0


@dataclass
class TLSFiles:
    cert: Path
    key: Path
    client_ca: Path | None = None  # require client certificates signed by this CA


@dataclass
class Receiver:
    reject_name: str = "poison"
    too_large_name: str = "huge"
    tls: TLSFiles | None = None
    delay_s: float = 0.0  # processing time per request (slows a replay down for the crash test)
    record_details: bool = True
    grpc_port: int = field(default_factory=free_port)
    http_port: int = field(default_factory=free_port)

    def __post_init__(self) -> None:
        self.lock = threading.Lock()
        self.spans: list[ReceivedSpan] = []
        self.keys: Counter[tuple[str, str]] = Counter()  # (trace_id, span_id) -> times received
        self.requests = 0
        self.rejected_requests = 0
        self.headers: list[dict[str, str]] = []
        self.failures_to_inject = 0
        self.fail_code = grpc.StatusCode.UNAVAILABLE
        self.fail_http_status = 503
        self.fail_retry_after = "0"  # HTTP Retry-After sent with an injected failure
        self.request_times: list[float] = []  # time.monotonic() of every request, refused ones included
        self.partial_reject = 0  # report this many rejected spans in each successful response
        self._grpc: grpc.Server | None = None
        self._http: ThreadingHTTPServer | None = None
        self._http_thread: threading.Thread | None = None
        self._http_bound_once = False
        self.http_connections: set[socket.socket] = set()

    # --- addresses ---------------------------------------------------------------------------
    @property
    def grpc_endpoint(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.grpc_port}"

    @property
    def http_endpoint(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.http_port}/v1/traces"

    # --- lifecycle ---------------------------------------------------------------------------
    def start(self) -> Receiver:
        self._start_grpc()
        self._start_http()
        return self

    def stop(self) -> None:
        if self._grpc is not None:
            self._grpc.stop(0).wait()
            self._grpc = None
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None
            with self.lock:  # keep-alive connections would go on being served: cut them
                connections, self.http_connections = set(self.http_connections), set()
            for connection in connections:
                with contextlib.suppress(OSError):
                    connection.shutdown(socket.SHUT_RDWR)

    def restart(self) -> None:
        self.stop()
        self.start()

    def __enter__(self) -> Receiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _start_grpc(self) -> None:
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(_Servicer(self), server)
        address = f"127.0.0.1:{self.grpc_port}"
        if self.tls is None:
            bound = server.add_insecure_port(address)
        else:
            credentials = grpc.ssl_server_credentials(
                [(self.tls.key.read_bytes(), self.tls.cert.read_bytes())],
                root_certificates=self.tls.client_ca.read_bytes() if self.tls.client_ca else None,
                require_client_auth=self.tls.client_ca is not None,
            )
            bound = server.add_secure_port(address, credentials)
        if bound == 0:
            raise OSError(f"cannot bind gRPC receiver to {address}")
        server.start()
        self._grpc = server

    def _start_http(self) -> None:
        receiver = self

        class Handler(_HttpHandler):
            owner = receiver

        deadline = time.monotonic() + 10
        while True:
            try:
                server = ThreadingHTTPServer(("127.0.0.1", self.http_port), Handler)
                break
            except OSError:
                if not self._http_bound_once and time.monotonic() < deadline:
                    # free_port() only found a port free a moment ago: another process may have taken it
                    # since.  Nothing points at this receiver yet, so any free port will do.
                    self.http_port = free_port()
                    continue
                if time.monotonic() > deadline:  # a restart must come back on its port: wait for it
                    raise
                time.sleep(0.05)
        self._http_bound_once = True
        server.daemon_threads = True
        if self.tls is not None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(str(self.tls.cert), str(self.tls.key))
            if self.tls.client_ca is not None:
                context.load_verify_locations(str(self.tls.client_ca))
                context.verify_mode = ssl.CERT_REQUIRED
            server.socket = context.wrap_socket(server.socket, server_side=True)
        self._http = server
        self._http_thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._http_thread.start()

    # --- recording ---------------------------------------------------------------------------
    def handle(self, request: ExportTraceServiceRequest, transport: str, headers: dict[str, str]) -> str | None:
        """Record the request's spans; returns an error kind ("fail", "poison") instead when refused."""
        if self.delay_s:
            time.sleep(self.delay_s)
        with self.lock:
            self.requests += 1
            self.request_times.append(time.monotonic())
            self.headers.append(headers)
            if self.failures_to_inject > 0:
                self.failures_to_inject -= 1
                return "fail"
        names = {s.name for rs in request.resource_spans for ss in rs.scope_spans for s in ss.spans}
        for name, verdict in ((self.reject_name, "poison"), (self.too_large_name, "too_large")):
            if name in names:
                with self.lock:
                    self.rejected_requests += 1
                return verdict
        received = []
        keys = []
        for rs in request.resource_spans:
            resource = {kv.key: any_value(kv.value) for kv in rs.resource.attributes} if self.record_details else {}
            for ss in rs.scope_spans:
                for s in ss.spans:
                    keys.append((s.trace_id.hex(), s.span_id.hex()))
                    if self.record_details:
                        received.append(
                            ReceivedSpan(
                                transport=transport,
                                trace_id=s.trace_id.hex(),
                                span_id=s.span_id.hex(),
                                parent_span_id=s.parent_span_id.hex(),
                                name=s.name,
                                kind=s.kind,
                                start_ns=s.start_time_unix_nano,
                                end_ns=s.end_time_unix_nano,
                                status_code=s.status.code,
                                status_message=s.status.message,
                                attributes={kv.key: any_value(kv.value) for kv in s.attributes},
                                dropped_attributes=s.dropped_attributes_count,
                                resource=resource,
                                scope_name=ss.scope.name,
                                scope_version=ss.scope.version,
                                events=tuple(
                                    ReceivedEvent(
                                        e.time_unix_nano, e.name, {kv.key: any_value(kv.value) for kv in e.attributes}
                                    )
                                    for e in s.events
                                ),
                                dropped_events=s.dropped_events_count,
                            )
                        )
        with self.lock:
            self.spans.extend(received)
            self.keys.update(keys)
        return None

    def response(self) -> ExportTraceServiceResponse:
        if self.partial_reject:
            return ExportTraceServiceResponse(
                partial_success=ExportTracePartialSuccess(rejected_spans=self.partial_reject, error_message="test")
            )
        return ExportTraceServiceResponse()

    def received(self) -> int:
        with self.lock:
            return sum(self.keys.values())

    def wait_for(self, count: int, timeout: float = 20.0) -> None:
        wait_for(
            lambda: self.received() >= count,
            timeout,
            lambda: f"{count} spans (received {self.received()})",
            interval=0.02,
        )

    def by_key(self) -> dict[tuple[str, str], ReceivedSpan]:
        with self.lock:
            return {(s.trace_id, s.span_id): s for s in self.spans}

    def clear(self) -> None:
        with self.lock:
            self.spans.clear()
            self.keys.clear()
            self.requests = 0
            self.request_times.clear()
            self.rejected_requests = 0
            self.headers.clear()


class _Servicer(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, owner: Receiver) -> None:
        self.owner = owner

    def Export(self, request: ExportTraceServiceRequest, context: grpc.ServicerContext) -> ExportTraceServiceResponse:
        headers = {k: v for k, v in context.invocation_metadata() if isinstance(v, str)}
        verdict = self.owner.handle(request, "grpc", headers)
        if verdict == "fail":
            context.abort(self.owner.fail_code, "injected failure")
        if verdict == "poison":
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "span named poison refused")
        if verdict == "too_large":
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "Received message larger than max (5000000 vs. 4194304)")
        return self.owner.response()


class _HttpHandler(BaseHTTPRequestHandler):
    owner: Receiver
    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        super().setup()
        with self.owner.lock:
            self.owner.http_connections.add(self.connection)

    def finish(self) -> None:
        with self.owner.lock:
            self.owner.http_connections.discard(self.connection)
        with contextlib.suppress(OSError):
            super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length)
        if self.path != "/v1/traces":
            self._reply(404, b"not found")
            return
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        if self.headers.get("Content-Type") != "application/x-protobuf":
            self._reply(415, b"unsupported content type")
            return
        try:
            request = ExportTraceServiceRequest.FromString(body)
        except Exception:
            self._reply(400, b"cannot parse")
            return
        headers = {k.lower(): v for k, v in self.headers.items()}
        verdict = self.owner.handle(request, "http", headers)
        if verdict == "fail":
            self._reply(self.owner.fail_http_status, b"injected failure", retry_after=self.owner.fail_retry_after)
        elif verdict == "poison":
            self._reply(400, b"span named poison refused")
        elif verdict == "too_large":
            self._reply(413, b"request entity too large")
        else:
            self._reply(200, self.owner.response().SerializeToString())

    def _reply(self, status: int, body: bytes, retry_after: str | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(body)))
        if retry_after is not None:
            self.send_header("Retry-After", retry_after)
        self.end_headers()
        self.wfile.write(body)
