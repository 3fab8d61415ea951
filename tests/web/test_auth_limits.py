"""Basic auth: no user-name timing oracle, and bounded bcrypt work so a guessing flood starves nobody.

Hashes of cost 7-10 keep the tests fast; bounds are relative to a single check measured on the spot."""

from __future__ import annotations

import asyncio
import base64
import statistics
import time

import aiohttp
import bcrypt
import pytest
from support import parse_exposition, sample
from web_support import Serve, local

from exporter.web_auth import MAX_PENDING, MAX_PENDING_PER_CLIENT, BasicAuth

PASSWORD = "s3cret-Pa55"


def hashed(password: str, cost: int) -> str:
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=cost)).decode()


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def client_from(address: str) -> aiohttp.ClientSession:
    """A client whose connections come from ``address`` (any 127.0.0.0/8 address is local on Linux)."""
    connector = aiohttp.TCPConnector(local_addr=(address, 0), force_close=True, limit=0)
    return aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30))


async def timed(client: aiohttp.ClientSession, url: str, headers: dict[str, str]) -> tuple[int, float]:
    started = time.perf_counter()
    async with client.get(url, headers=headers) as response:
        await response.read()
        return response.status, time.perf_counter() - started


def test_dummy_hash_follows_the_configured_cost() -> None:
    assert BasicAuth({"a": hashed("x", 5)}).dummy_cost == 5
    assert BasicAuth({"a": hashed("x", 4), "b": hashed("y", 6)}).dummy_cost == 6  # the highest


@pytest.mark.parametrize("cost", [7, 9])
async def test_unknown_user_takes_as_long_as_a_wrong_password(serve: Serve, cost: int) -> None:
    """A fixed dummy cost (10 before the fix) made unknown users 2-8x slower or faster than known ones."""
    served = await serve(local(basic_auth_users={"alice": hashed(PASSWORD, cost)}))
    url = f"{served.base}/metrics"
    known, unknown = [], []
    async with client_from("127.0.0.1") as client:
        for attempt in range(9):  # interleaved, so load on the machine hits both alike
            status, seconds = await timed(client, url, basic("alice", f"wrong-{attempt}"))
            assert status == 401
            known.append(seconds)
            status, seconds = await timed(client, url, basic(f"mallory-{attempt}", PASSWORD))
            assert status == 401
            unknown.append(seconds)
    ratio = statistics.median(unknown) / statistics.median(known)
    assert 1 / 1.5 < ratio < 1.5, (statistics.median(known), statistics.median(unknown))


async def test_excess_checks_are_refused_at_once_with_retry_after(serve: Serve) -> None:
    """More concurrent uncached logins than MAX_PENDING, from several hosts: the excess gets a quick 429."""
    # Cost 11 (~0.1 s a check): all requests arrive while the first checks still run.
    served = await serve(local(basic_auth_users={"alice": hashed(PASSWORD, 11)}))
    url = f"{served.base}/metrics"
    hosts = [f"127.0.0.{n}" for n in range(1, 9)]  # 8 hosts x 2 allowed each = 16 > MAX_PENDING
    clients = [client_from(host) for host in hosts]
    try:

        async def attempt(client: aiohttp.ClientSession, n: int) -> tuple[int, float, str | None]:
            started = time.perf_counter()
            async with client.get(url, headers=basic("alice", f"guess-{n}")) as response:
                await response.read()
                return response.status, time.perf_counter() - started, response.headers.get("Retry-After")

        results = await asyncio.gather(*(attempt(c, n) for n, c in enumerate(clients * MAX_PENDING_PER_CLIENT)))
    finally:
        for client in clients:
            await client.close()
    refused = [r for r in results if r[0] == 429]
    checked = [r for r in results if r[0] == 401]
    assert len(checked) <= MAX_PENDING and len(refused) >= len(results) - MAX_PENDING
    assert {r[2] for r in refused} == {"1"}
    # Refused without waiting for bcrypt: faster than the slowest check that ran.
    assert max(r[1] for r in refused) < max(r[1] for r in checked)
    async with aiohttp.ClientSession() as client, client.get(f"{served.base}/healthz") as response:
        assert response.status == 200
    async with client_from("127.0.0.99") as client:
        status, _ = await timed(client, url, basic("alice", PASSWORD))
        assert status == 200
        async with client.get(url, headers=basic("alice", PASSWORD)) as response:
            samples = parse_exposition(await response.text())
    assert sample(samples, "state_exporter_http_auth_failures_total", reason="throttled") == len(refused)
    assert sample(samples, "state_exporter_http_auth_failures_total", reason="invalid") == len(checked)


async def test_valid_login_is_not_starved_by_a_guessing_flood(serve: Serve) -> None:
    """40 clients guessing passwords from one host used to queue every check ahead of a valid login
    (9.2 s at cost 12).  Now the flooding host holds at most MAX_PENDING_PER_CLIENT checks, so a valid,
    uncached login from another host waits for a few checks, not for the flood."""
    users = {"alice": hashed(PASSWORD, 10), "bob": hashed(PASSWORD, 10)}
    served = await serve(local(basic_auth_users=users))
    url = f"{served.base}/metrics"
    async with client_from("127.0.0.2") as scraper:
        status, single = await timed(scraper, url, basic("bob", PASSWORD))  # one uncached check, unloaded
        assert status == 200
        stop = asyncio.Event()
        statuses: list[int] = []

        async def guesser(client: aiohttp.ClientSession, n: int) -> None:
            while not stop.is_set():
                async with client.get(url, headers=basic("alice", f"guess-{n}")) as response:
                    await response.read()
                    statuses.append(response.status)
                if response.status == 429:
                    await asyncio.sleep(0.01)

        async with client_from("127.0.0.1") as flood:
            guessers = [asyncio.create_task(guesser(flood, n)) for n in range(40)]
            try:
                await asyncio.sleep(5 * single)  # the flood is under way
                status, waited = await timed(scraper, url, basic("alice", PASSWORD))
            finally:
                stop.set()
                await asyncio.gather(*guessers)
    assert status == 200
    assert 401 in statuses and 429 in statuses
    # The flood's pending checks (2) plus our own, with room for a busy machine; the flood ran 40 at once.
    assert waited < (MAX_PENDING_PER_CLIENT + 1) * single * 3 + 0.2, (waited, single)
