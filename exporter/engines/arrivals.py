"""What every simulated engine app does in the demo: start work at random (Poisson) times until told
to stop, then cancel what is still running."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Callable, Coroutine
from typing import Any


async def arrive_until(
    stop: asyncio.Event, per_second: float, rng: random.Random, start: Callable[[], Coroutine[Any, Any, Any]]
) -> None:
    """``start()`` as a task at exponentially distributed intervals (``per_second`` on average)."""
    tasks: set[asyncio.Task[Any]] = set()
    while not stop.is_set():
        task = asyncio.create_task(start())
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), rng.expovariate(per_second))
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
