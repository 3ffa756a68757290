"""The status of a grpc.aio call that must fail, without keeping the call alive.

``with pytest.raises(AioRpcError) as caught: await call`` keeps the exception in ``caught``,
and the exception's traceback holds the frames it passed through, the call among their locals,
and the frame that holds ``caught``: a reference cycle. Only the garbage collector frees it,
whenever it runs, possibly after the test's event loop closed, and a grpc.aio call destroyed
then touches a loop that is gone (the rare "Fatal Python error: Segmentation fault" seen in
teardown under load). :func:`ended` and :func:`failure` copy the code and details and drop
the exception at once, so the call goes with the last plain reference to it, inside the loop.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import NamedTuple

import grpc


class Status(NamedTuple):
    """A failed call's status code and details ("" when it had none)."""

    code: grpc.StatusCode
    details: str


async def ended(call: Awaitable[object]) -> Status:
    """Await ``call`` (an RPC, a stream's ``read()``, or a coroutine that makes calls); the
    status it ended with, OK when it succeeded."""
    try:
        await call
    except grpc.aio.AioRpcError as error:
        # ``error`` is deleted when this clause ends: nothing refers to its traceback after.
        return Status(error.code(), error.details() or "")
    return Status(grpc.StatusCode.OK, "")


async def failure(call: Awaitable[object]) -> Status:
    """The status of a ``call`` that must fail (as :func:`ended`); AssertionError if it
    succeeds."""
    status = await ended(call)
    assert status.code is not grpc.StatusCode.OK, "the call succeeded; it was expected to fail"
    return status
