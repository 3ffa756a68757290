"""Waiting in tests, one way everywhere: poll until something holds or a deadline passes.

``wait_until(check, what, timeout=..., interval=...)`` calls ``check()`` every ``interval``
seconds until it returns something true, and returns that; with ``done``, until
``done(value)`` holds of what it returned (the value may then be anything: a count, a reply).
When ``timeout`` seconds have passed it fails the test (AssertionError) saying what it waited
for and the last value, or the last exception the check raised if that is one of ``ignore``
(others propagate at once: an assertion in the check fails the wait immediately). The check
always runs once more after the deadline, so a machine that was merely slow still passes.
``wait_until_async`` is the same in a coroutine; its check may be a coroutine function.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")

#: The default deadline: generous, the machine is shared by parallel jobs (a passing wait
#: ends as soon as its check holds; only a failing one takes this long).
TIMEOUT = 60.0
#: The default pause between two checks.
INTERVAL = 0.05


class _Wait:
    """One wait: its deadline, what ends it, and the last outcome for the failure message."""

    def __init__(
        self,
        what: str,
        timeout: float,
        done: Callable[[Any], object] | None,
        ignore: tuple[type[BaseException], ...],
    ) -> None:
        self.what = what
        self.timeout = timeout
        self.limit = time.monotonic() + timeout
        self.done = done or bool
        self.ignore = ignore
        self.last = "the check never answered"

    def over(self) -> bool:
        return time.monotonic() >= self.limit

    def ends(self, value: object) -> bool:
        if self.done(value):
            return True
        self.last = f"last value: {value!r}"
        return False

    def failed(self, error: Exception) -> None:
        if not isinstance(error, self.ignore):
            raise error
        self.last = f"last error: {type(error).__name__}: {error}"

    def failure(self) -> AssertionError:
        return AssertionError(
            f"gave up after {self.timeout:g} s waiting for {self.what} ({self.last})"
        )


def wait_until(
    check: Callable[[], T],
    what: str,
    *,
    timeout: float = TIMEOUT,
    interval: float = INTERVAL,
    done: Callable[[T], object] | None = None,
    ignore: tuple[type[BaseException], ...] = (),
) -> T:
    """The first value of ``check()`` that ends the wait (see the module docstring)."""
    wait = _Wait(what, timeout, done, ignore)
    while True:
        over = wait.over()
        try:
            value = check()
        except Exception as error:
            wait.failed(error)
        else:
            if wait.ends(value):
                return value
        if over:
            raise wait.failure()
        time.sleep(interval)


async def wait_until_async(
    check: Callable[[], T] | Callable[[], Awaitable[T]],
    what: str,
    *,
    # Not asyncio.timeout: a check is never cut short, and it runs once more at the deadline.
    timeout: float = TIMEOUT,  # noqa: ASYNC109
    interval: float = INTERVAL,
    done: Callable[[T], object] | None = None,
    ignore: tuple[type[BaseException], ...] = (),
) -> T:
    """:func:`wait_until` in a coroutine: the event loop runs between checks."""
    wait = _Wait(what, timeout, done, ignore)
    while True:
        over = wait.over()
        try:
            value = check()
            if inspect.isawaitable(value):
                value = await value
        except Exception as error:
            wait.failed(error)
        else:
            if wait.ends(value):
                return value  # type: ignore[return-value]
        if over:
            raise wait.failure()
        await asyncio.sleep(interval)
