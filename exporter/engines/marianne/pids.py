"""Is a writer's pid alive?  Marianne's ``CheckpointState.is_zombie`` asks ``os.kill(pid, 0)``; the
answer means something only on the writer's host and in its pid namespace, so the daemon asks only
when ``metrics.marianne.same_host_pid_check`` is on.

The probe is one module-level function so that tests can inject liveness (:func:`injected`)
instead of probing the test machine's pids.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager

PidProbe = Callable[[int], bool]


def os_pid_alive(pid: int) -> bool:
    """As ``is_zombie`` decides: only ``ProcessLookupError`` means dead.  A pid of 0 or below
    would address a process group, never one process: the caller rejects it before asking."""
    if pid <= 0:
        raise ValueError(f"not a process id: {pid}")
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        return True
    except OverflowError:  # beyond pid_t: no such process
        return False
    return True


_probe: PidProbe = os_pid_alive


def pid_alive(pid: int) -> bool:
    return _probe(pid)


@contextmanager
def injected(probe: PidProbe) -> Iterator[None]:
    """Answer every liveness question with ``probe`` while the block runs (tests)."""
    global _probe
    previous, _probe = _probe, probe
    try:
        yield
    finally:
        _probe = previous
