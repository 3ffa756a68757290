"""The registry of conformance checks: what a check is, how checks are named and selected,
and what they share (the accounts the suite uses, the helpers that collect problems).

A check is an async function of a Session that returns what it saw (the PASS line), raises
CheckFailed saying how the adaptor broke the contract, or CheckSkipped saying why it cannot run
here. ``@check`` registers it with its name, the capabilities it needs (it is skipped when the
adaptor does not declare them, as csi-sanity skips by capability) and how far the adaptor's
start must have got. The package orders them (host/conformance/checks/__init__.py).
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Final

import grpc

from host.conformance.report import CheckFailed
from host.conformance.session import Phase, Session

Code = grpc.StatusCode
Body = Callable[[Session], Awaitable[str]]

#: The host accounts the suite uses: it settles with PEER, uses OTHER for a key reused across
#: accounts, sets up and deletes FORGOTTEN, sets up LATE while its peer cannot be reached, and
#: never sets up NEVER. The fake Engine plays the peers of ACCOUNTS.
PEER: Final = "conformance-peer"
OTHER: Final = "conformance-other"
FORGOTTEN: Final = "conformance-forgotten"
LATE: Final = "conformance-late"
NEVER: Final = "conformance-never-set-up"
ACCOUNTS: Final = (PEER, OTHER, FORGOTTEN, LATE)


class Stage(enum.Enum):
    """When a check runs."""

    RUNNING = "while the adaptor under test runs"
    #: After the accounts were deleted: stops the adaptor under test.
    SHUTDOWN = "at the end"


@dataclass(frozen=True)
class Check:
    """One named check."""

    name: str
    summary: str
    body: Body
    stage: Stage
    needs: Phase
    requires: tuple[str, ...]


#: Every check, in the order their modules registered them.
REGISTERED: list[Check] = []


def check(
    name: str,
    summary: str,
    *,
    stage: Stage = Stage.RUNNING,
    needs: Phase = Phase.READY,
    requires: tuple[str, ...] = (),
) -> Callable[[Body], Body]:
    """Register the decorated function as the check ``name``."""

    def register(body: Body) -> Body:
        REGISTERED.append(Check(name, summary, body, stage, needs, requires))
        return body

    return register


def select(names: Iterable[str], among: Sequence[Check]) -> list[Check]:
    """The checks of ``among`` that ``names`` name, in the order of ``among``; all of them when
    ``names`` is empty. A name is a check's, or else a group's: "send_money" names every
    "send_money.*" (and "handshake" only the check "handshake"). ValueError naming what matches
    nothing."""
    wanted = [name.strip() for name in names if name.strip()]
    if not wanted:
        return list(among)
    exact = {check.name for check in among}

    def named(check: Check, name: str) -> bool:
        if name in exact:
            return check.name == name
        return check.name.startswith(name + ".")

    unknown = [name for name in wanted if not any(named(c, name) for c in among)]
    if unknown:
        raise ValueError(
            f"no check named {', '.join(map(repr, unknown))}; the checks are: "
            + ", ".join(c.name for c in among)
        )
    return [c for c in among if any(named(c, name) for name in wanted)]


def expect(got: tuple[Code, str], expected: Code, what: str, problems: list[str]) -> None:
    """Add to ``problems`` unless the status ``got`` is ``expected``."""
    code, details = got
    if code != expected:
        shown = code.name + (f" ({details})" if details else "")
        problems.append(f"{what}: {shown}, expected {expected.name}")


def fail_if(problems: list[str]) -> None:
    """CheckFailed listing ``problems``, if there are any."""
    if problems:
        raise CheckFailed("; ".join(problems))
