"""Run the suite: build the world, start the adaptor, run the checks, clean up, report.

``run_suite`` is the library entry (the CLI and the tests call it). Every check runs guarded: a
check that raises something unexpected, or takes longer than CHECK_TIMEOUT, is a FAIL of that
check and the run goes on. Whatever happens, the accounts the run set up are deleted (newest
first), the adaptor is stopped (Shutdown, SIGTERM, SIGKILL of its group), and the ledger, the
fake Engine and the temporary directory are removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Final

import grpc

from host.conformance import launch
from host.conformance.checks import ACCOUNTS, Check, Stage, select
from host.conformance.report import CheckFailed, CheckResult, CheckSkipped, Outcome, SuiteResult
from host.conformance.session import Phase, Session, SuiteOptions
from host.conformance.world import build_world
from host.simledger.process import LedgerStartError

#: Longest a single check may take before it is failed (each of its waits is shorter).
CHECK_TIMEOUT: Final = 120.0

_log = logging.getLogger("ilp_host.conformance")


class SuiteError(RuntimeError):
    """The suite could not build its world (the simulated ledger or the fake Engine)."""


async def run_suite(
    options: SuiteOptions, on_result: Callable[[CheckResult], None] | None = None
) -> SuiteResult:
    """Run the checks ``options`` select against ``options.command``; ``on_result`` is called
    with each verdict as it comes. ValueError for an unknown check name or a command or
    variable the host would refuse; SuiteError if the world cannot be built."""
    checks = select(options.only)
    launch.validate(options.command, options.env)
    started_at, started = datetime.now(UTC), time.monotonic()
    results: list[CheckResult] = []
    notes: list[str] = []

    def record(result: CheckResult) -> None:
        results.append(result)
        if on_result is not None:
            on_result(result)

    async with contextlib.AsyncExitStack() as stack:
        try:
            world = await stack.enter_async_context(
                build_world(
                    with_ledger=not options.use_adaptor_config,
                    accounts=ACCOUNTS,
                    temp_root=options.temp_root,
                )
            )
        except (LedgerStartError, grpc.aio.AioRpcError, OSError) as exc:
            raise SuiteError(f"the suite could not build its world: {exc}") from exc
        session = Session(options, world)
        stack.push_async_callback(session.close)
        await session.start()
        shown = {check.name for check in checks}
        for check in _staged(checks, Stage.RUNNING):
            record(await _run(check, session, shown))
        if session.phase is Phase.READY and not session.exited():
            notes.extend(await session.delete_accounts())
        for check in _staged(checks, Stage.SHUTDOWN):
            record(await _run(check, session, shown))
    stderr = tuple(session.process.stderr_tail) if session.process else ()
    return SuiteResult(
        command=options.command,
        results=tuple(results),
        adaptor=_describe_adaptor(session),
        notes=tuple(notes),
        stderr_tail=stderr,
        started_at=started_at,
        seconds=time.monotonic() - started,
    )


def _staged(checks: list[Check], stage: Stage) -> list[Check]:
    return [check for check in checks if check.stage is stage]


def _describe_adaptor(session: Session) -> str:
    info = session.info
    if not info.name:
        return ""
    return (
        f"{info.name} {info.version} (ledger {info.ledger}, {info.asset_code} at scale "
        f"{info.asset_scale}; capabilities: {' '.join(info.capabilities) or 'none'})"
    )


_PHASE_WORDS: Final = {
    Phase.SPAWNED: "started",
    Phase.CONNECTED: "connected",
    Phase.READY: "ready",
}


async def _run(check: Check, session: Session, shown: set[str]) -> CheckResult:
    """One check, guarded: its verdict whatever it does. ``shown`` are the checks of the run
    (a check that cannot run points to the one that shows why)."""
    if session.phase < check.needs:
        if check.name == session.failure_check or session.failure_check not in shown:
            return CheckResult(check.name, Outcome.FAIL, session.failure)
        return CheckResult(
            check.name,
            Outcome.FAIL,
            f"the adaptor is not {_PHASE_WORDS[check.needs]} (see {session.failure_check})",
        )
    missing = [word for word in check.requires if word not in session.capabilities]
    if missing:
        return CheckResult(
            check.name, Outcome.SKIP, f"capability not declared: {', '.join(missing)}"
        )
    started = time.monotonic()
    try:
        async with asyncio.timeout(CHECK_TIMEOUT):
            seen = await check.body(session)
        outcome, reason = Outcome.PASS, seen
    except CheckFailed as exc:
        outcome, reason = Outcome.FAIL, str(exc)
    except CheckSkipped as exc:
        outcome, reason = Outcome.SKIP, str(exc)
    except TimeoutError:
        outcome, reason = Outcome.FAIL, f"did not finish within {CHECK_TIMEOUT:g} s"
    except grpc.aio.AioRpcError as exc:
        outcome, reason = Outcome.FAIL, f"{exc.code().name}: {exc.details()}"
    except Exception as exc:
        _log.exception("conformance check %s failed unexpectedly", check.name)
        outcome, reason = Outcome.FAIL, f"the check itself broke (a bug in the suite?): {exc!r}"
    # An adaptor that died under a check explains every later failure: say so.
    ended = session.exited()
    if outcome is Outcome.FAIL and check.stage is Stage.RUNNING and ended and ended not in reason:
        reason += f" ({ended})"
    return CheckResult(check.name, outcome, reason, time.monotonic() - started)
