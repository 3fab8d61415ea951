"""Malformed requests: a 400 with a fixed body, one debug line without traceback, a counted reason."""

from __future__ import annotations

import asyncio
import logging

import aiohttp
import pytest
from support import parse_exposition, sample
from web_support import Serve, raw_exchange

from exporter.web_stats import BadRequest

MALFORMED = {
    "100 KB header": b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n",
    "100 KB URL": b"GET /" + b"a" * 100_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    "10k headers": b"GET /metrics HTTP/1.1\r\nHost: x\r\n"
    + b"".join(b"X-%d: v\r\n" % i for i in range(10_000))
    + b"\r\n",
    "garbage": bytes(range(256)) * 4,
    "bad chunked encoding": (
        b"POST /metrics HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n"
    ),
    "Transfer-Encoding and Content-Length": (
        b"POST /metrics HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n"
    ),
}
EXPECTED_REASON = {"100 KB header": BadRequest.TOO_LARGE, "100 KB URL": BadRequest.TOO_LARGE}


async def counts(base: str) -> dict[str, float]:
    async with aiohttp.ClientSession() as client, client.get(f"{base}/metrics") as response:
        samples = parse_exposition(await response.text())
    return {
        reason.value: sample(samples, "state_exporter_http_bad_requests_total", reason=reason) for reason in BadRequest
    }


@pytest.mark.parametrize("kind", MALFORMED)
async def test_malformed_request_is_a_quiet_counted_400(
    serve: Serve, caplog: pytest.LogCaptureFixture, kind: str
) -> None:
    served = await serve()
    before = await counts(served.base)
    assert set(before.values()) == {0}  # every reason is present from the start
    caplog.clear()
    with caplog.at_level(logging.DEBUG):
        answer = await asyncio.to_thread(raw_exchange, served.port, MALFORMED[kind])
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.split(b"\r\n", 1)[0].endswith(b" 400 Bad Request")
    assert body == b"400 Bad Request\n"  # nothing of what the client sent is echoed
    http_records = [r for r in caplog.records if r.name.startswith(("aiohttp", "exporter.web"))]
    assert [r.levelno for r in http_records] == [logging.DEBUG], [r.getMessage() for r in http_records]
    assert http_records[0].exc_info is None and "\n" not in http_records[0].getMessage()
    after = await counts(served.base)
    increments = {reason: after[reason] - before[reason] for reason in after}
    assert sum(increments.values()) == 1
    if kind in EXPECTED_REASON:
        assert increments[EXPECTED_REASON[kind].value] == 1


async def test_malformed_requests_are_silent_at_info_level(serve: Serve, caplog: pytest.LogCaptureFixture) -> None:
    served = await serve()
    with caplog.at_level(logging.INFO):
        for data in MALFORMED.values():
            await asyncio.to_thread(raw_exchange, served.port, data)
    assert [r.getMessage() for r in caplog.records if r.name.startswith(("aiohttp", "exporter"))] == []
    assert sum((await counts(served.base)).values()) == len(MALFORMED)


async def test_a_failing_handler_is_still_an_error_with_traceback(
    serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    """Only malformed requests are quiet: a bug in a handler keeps its ERROR and traceback."""

    def broken() -> object:
        raise RuntimeError("boom")

    served = await serve(readiness=broken)  # type: ignore[arg-type]
    with caplog.at_level(logging.ERROR):
        answer = await asyncio.to_thread(raw_exchange, served.port, b"GET /readyz HTTP/1.0\r\n\r\n")
    assert answer.startswith(b"HTTP/1.0 503")
    assert any(r.levelno == logging.ERROR and r.exc_info for r in caplog.records)
