"""tests.polling: what a wait returns, and what its failure says."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from tests.polling import wait_until, wait_until_async


def test_a_wait_returns_the_first_true_value() -> None:
    values = iter([0, None, "", 3, 4])
    assert wait_until(lambda: next(values), "a number", interval=0) == 3


def test_done_decides_when_the_value_is_not_a_truth() -> None:
    counts = itertools.count()
    assert wait_until(lambda: next(counts), "two", interval=0, done=lambda n: n == 2) == 2
    assert wait_until(lambda: 0, "zero", done=lambda n: n == 0) == 0


def test_a_failed_wait_says_what_it_waited_for_and_the_last_value() -> None:
    counts = itertools.count()
    with pytest.raises(AssertionError) as failed:
        wait_until(
            lambda: -next(counts),
            "a positive count",
            timeout=0.05,
            interval=0.01,
            done=lambda n: n > 0,
        )
    message = str(failed.value)
    assert message.startswith("gave up after 0.05 s waiting for a positive count (last value: -")


def test_the_check_runs_once_more_after_the_deadline() -> None:
    calls = []
    with pytest.raises(AssertionError):
        wait_until(lambda: calls.append(1), "nothing", timeout=0)
    assert calls == [1]
    assert wait_until(lambda: "late", "a late answer", timeout=0) == "late"


def test_ignored_errors_are_not_yet_and_others_fail_at_once() -> None:
    answers = iter([ConnectionError("refused"), ConnectionError("refused"), "up"])

    def connect() -> str:
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    assert wait_until(connect, "a connection", interval=0, ignore=(ConnectionError,)) == "up"
    with pytest.raises(AssertionError) as failed:
        wait_until(connect_refused, "a connection", timeout=0.02, ignore=(ConnectionError,))
    assert "last error: ConnectionError: refused" in str(failed.value)
    calls = []

    def broken() -> bool:
        calls.append(1)
        raise KeyError("a bug in the check")

    with pytest.raises(KeyError):
        wait_until(broken, "anything", ignore=(ConnectionError,))
    assert calls == [1]


def connect_refused() -> str:
    raise ConnectionError("refused")


def test_the_async_wait_awaits_a_coroutine_check_and_takes_a_plain_one() -> None:
    async def main() -> None:
        counts = itertools.count()

        async def count() -> int:
            await asyncio.sleep(0)
            return next(counts)

        assert await wait_until_async(count, "three", interval=0, done=lambda n: n == 3) == 3
        assert await wait_until_async(lambda: "now", "a plain check") == "now"
        with pytest.raises(AssertionError) as failed:
            await wait_until_async(count, "never", timeout=0.02, done=lambda n: n < 0)
        assert "waiting for never (last value: " in str(failed.value)

    asyncio.run(main())
