"""The last checks: the stdio stream the host drains from the start, and a graceful stop."""

from __future__ import annotations

import asyncio

from host.conformance.checks.registry import Code, Stage, check
from host.conformance.report import CheckFailed, CheckSkipped
from host.conformance.session import Phase, Session
from host.supervisor.diagnose import describe_exit


@check(
    "stdio",
    "plugin.GRPCStdio/StreamStdio opens, when served (the host drains it from the start)",
    needs=Phase.CONNECTED,
)
async def stdio(session: Session) -> str:
    drain = session.stdio
    assert drain is not None
    try:
        async with asyncio.timeout(session.options.quiet_period):
            await drain.settled.wait()
    except TimeoutError:
        return "open (no output yet)"
    if drain.code == Code.UNIMPLEMENTED:
        raise CheckSkipped(
            "plugin.GRPCStdio is not served (UNIMPLEMENTED): stderr is read directly"
        )
    if drain.code is not None and drain.code != Code.OK:
        raise CheckFailed(f"StreamStdio failed: {drain.code.name}: {drain.details}")
    return "open" if drain.code is None else "opened, and ended with OK"


@check(
    "shutdown",
    "GRPCController.Shutdown (SIGTERM without it): exit status 0 within the grace",
    stage=Stage.SHUTDOWN,
    needs=Phase.CONNECTED,
)
async def shutdown(session: Session) -> str:
    already = session.exited()
    if already:
        raise CheckFailed(f"before the Shutdown request, {already}")
    how, status, seconds = await session.stop_as_asked()
    grace = session.options.shutdown_grace
    if status is None:
        raise CheckFailed(f"still running {grace:g} s after {how}")
    if status != 0:
        raise CheckFailed(f"{describe_exit(status)} after {how}; expected exit status 0")
    process = session.process
    assert process is not None
    if not await process.wait_group_gone(max(0.0, grace - seconds)):
        raise CheckFailed(f"exited 0 after {how}, but left processes of its group running")
    return f"exit 0 {seconds:.1f} s after {how}"
