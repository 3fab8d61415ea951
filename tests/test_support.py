"""The shared polling helper the process and end-to-end tests wait with."""

from __future__ import annotations

import pytest
from support import wait_for


def test_returns_the_first_truthy_result() -> None:
    answers = iter([None, [], ["up"], ["later"]])
    assert wait_for(lambda: next(answers), 5, "a non-empty answer", interval=0) == ["up"]
    assert next(answers) == ["later"]  # polled no further once it held


def test_times_out_naming_what_it_waited_for() -> None:
    calls: list[int] = []
    with pytest.raises(TimeoutError, match=r"^timed out after 0s waiting for /readyz to answer 200$"):
        wait_for(lambda: calls.append(1), 0, "/readyz to answer 200")
    assert calls == [1]  # checked once even with no time left


def test_a_callable_description_is_built_at_failure() -> None:
    seen = {"spans": 0}

    def condition() -> bool:
        seen["spans"] += 1
        return False

    with pytest.raises(TimeoutError, match=r"waiting for 5 spans \(received 1\)"):
        wait_for(condition, 0, lambda: f"5 spans (received {seen['spans']})")


def test_an_exception_from_the_condition_ends_the_wait() -> None:
    def exited() -> bool:
        raise RuntimeError("process exited with 1")

    with pytest.raises(RuntimeError, match="exited with 1"):
        wait_for(exited, 60, "never")
