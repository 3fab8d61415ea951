"""A real daemon process over a pynenc file that a simulated pynenc app keeps writing: the finished
counters only grow and end equal to the history's final transitions, the gauges equal the file."""

from __future__ import annotations

import asyncio
import itertools
import math
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from engines.pynenc.helpers import Samples, current_statuses, final_transitions, nonzero, query
from processes import Process, http_get, running_daemon
from support import parse_exposition, wait_for

from exporter.engines.pynenc.layout import table_prefix
from exporter.engines.pynenc.simulator import PynencWriter, Simulator
from exporter.engines.pynenc.statuses import PHASES

APP = "live-orders"
PREFIX = table_prefix(APP)
FAST = "metrics:\n  refresh_interval: 1s\n  counts_interval: 1s\n  aggregate_interval: 1s\n"
COUNTERS = ("pynenc_invocations_finished_total", "pynenc_runs_finished_total", "workflow_runs_finished_total")
ROUNDS = 8
CALLS_PER_ROUND = 25


def scrape(daemon: Process) -> Samples:
    status, body = http_get(daemon.url + "/metrics")
    assert status == 200, body
    return parse_exposition(body)


def scrape_when(daemon: Process, ready: Callable[[Samples], bool], what: str) -> Samples:
    def attempt() -> Samples | None:
        samples = scrape(daemon)
        return samples if ready(samples) else None

    return wait_for(attempt, 30, what)


def keyed(samples: Samples, name: str, *labels: str, **match: str) -> dict[tuple[str, ...], float]:
    """Non-zero samples of ``name`` (whose labels include ``match``) keyed by ``labels``."""
    found: Counter[tuple[str, ...]] = Counter()
    for (sample, pairs), value in samples.items():
        as_dict = dict(pairs)
        if sample == name and all(as_dict.get(k) == v for k, v in match.items()):
            found[tuple(as_dict[label] for label in labels)] += value
    return nonzero(found)


def counters(samples: Samples) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        key: value
        for key, value in samples.items()
        if key[0] in COUNTERS and (key[0] != "workflow_runs_finished_total" or ("engine", "pynenc") in key[1])
    }


def finished(samples: Samples) -> float:
    return sum(keyed(samples, "pynenc_invocations_finished_total", "status", app=APP).values())


def truth(db: Path) -> dict[str, object]:
    """What the metrics must show, from the file with plain SQL."""
    top_level = final_transitions(db, PREFIX, top_level=True)
    runs: Counter[str] = Counter()
    phases: Counter[tuple[str, ...]] = Counter()
    for (_task, status), n in top_level.items():
        runs[status] += n
        phase = PHASES.phase_of(status)
        assert phase is not None
        phases[(phase.value,)] += n
    [(queued,)] = query(db, f'SELECT COUNT(*) FROM "{PREFIX}broker_message_queue"')
    [(runners,)] = query(db, f'SELECT COUNT(*) FROM "{PREFIX}orchestrator_runner_heartbeats"')
    [(pending,)] = query(db, f"SELECT COUNT(*) FROM \"{PREFIX}orchestrator_invocations\" WHERE status = 'pending'")
    top_status = query(
        db,
        f'SELECT o.status, COUNT(*) FROM "{PREFIX}orchestrator_invocations" o '
        f'JOIN "{PREFIX}state_backend_invocations" i USING (invocation_id) '
        "WHERE i.parent_invocation_id IS NULL GROUP BY 1",
    )
    return {
        "invocations_finished": nonzero(final_transitions(db, PREFIX)),
        "runs_finished": nonzero(runs),
        "workflow_runs_finished": nonzero(phases),
        "invocations": nonzero(current_statuses(db, PREFIX)),
        "runs": nonzero({(status,): float(n) for status, n in top_status}),
        "queue": nonzero({("default",): float(queued)}),
        "runners": nonzero({("alive",): float(runners)}),  # every heartbeat is minutes younger than 10
        "stuck": nonzero({("pending_timeout",): float(pending)}),  # max_pending_seconds is 0
    }


def shown(samples: Samples) -> dict[str, object]:
    runs_finished = keyed(samples, "pynenc_runs_finished_total", "status", app=APP)
    return {
        "invocations_finished": keyed(samples, "pynenc_invocations_finished_total", "task", "status", app=APP),
        "runs_finished": {status: n for (status,), n in runs_finished.items()},
        "workflow_runs_finished": keyed(samples, "workflow_runs_finished_total", "phase", engine="pynenc"),
        "invocations": keyed(samples, "pynenc_invocations", "task", "status", app=APP),
        "runs": keyed(samples, "pynenc_runs", "status", app=APP),
        "queue": keyed(samples, "pynenc_broker_queue_depth", "queue", app=APP),
        "runners": keyed(samples, "pynenc_runners", "state", app=APP),
        "stuck": keyed(samples, "pynenc_invocations_stuck", "reason", app=APP),
    }


def test_a_live_pynenc_app_through_a_real_daemon(tmp_path: Path) -> None:
    db = tmp_path / "pynenc.db"
    # max_pending_seconds 0: every pending invocation is stuck at once, so the gauge has one right value.
    simulator = Simulator(PynencWriter(db, APP, config_values={"max_pending_seconds": 0.0}), seed=12, speed=math.inf)

    async def calls(n: int) -> None:
        for _ in range(n):
            await simulator.run_one()

    asyncio.run(calls(CALLS_PER_ROUND))  # the app has rows before the daemon starts: they seed the counters
    seen: list[Samples] = []
    with running_daemon(tmp_path, "--db", str(db), config=FAST, wait_path="/readyz") as daemon:
        seen.append(scrape_when(daemon, lambda s: finished(s) > 0, "the seeded counters"))
        for _ in range(ROUNDS):
            asyncio.run(calls(CALLS_PER_ROUND))  # written while the daemon reads
            simulator.heartbeat()
            before = finished(seen[-1])
            seen.append(scrape_when(daemon, lambda s, before=before: finished(s) > before, "new finishes"))
        for i in range(3):  # routed with no runner to take them: they wait in the broker queue
            simulator.writer.route("demo_tasks.add", {"x": i, "y": 0})
        expected = truth(db)
        last: list[dict[str, object]] = []

        def settled() -> Samples | None:
            samples = scrape(daemon)
            last[:] = [shown(samples)]
            return samples if last[0] == expected else None

        seen.append(wait_for(settled, 30, lambda: f"the metrics to equal the file:\n{last}\n!=\n{expected}"))
        assert "Traceback" not in daemon.output(), daemon.output()

    simulator.writer.close()
    assert finished(seen[-1]) > finished(seen[0])
    assert sum(1 for a, b in itertools.pairwise(seen) if finished(b) > finished(a)) >= ROUNDS
    for earlier, later in itertools.pairwise(seen):
        before, after = counters(earlier), counters(later)
        assert before.keys() <= after.keys()
        assert all(after[key] >= value for key, value in before.items()), [
            (key, value, after[key]) for key, value in before.items() if after[key] < value
        ]
    # Both final statuses, queued messages and stuck invocations happened: the comparison covers them.
    assert {status for _, status in final_transitions(db, PREFIX)} == {"success", "failed"}
    assert expected["queue"] == {("default",): 3.0}
    assert expected["stuck"]
    assert (expected["stuck"] and expected["queue"]) or expected["stuck"]
