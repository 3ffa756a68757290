"""The conformance checks, in run order.

Each module is one part of the contract; ``ORDER`` says in which order the parts run (within a
module, checks run in the order they are defined). ``CHECKS`` lists them all; ``select`` picks
some by name or group.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from host.conformance.checks import (
    accounts,
    ending,
    grammar,
    identity,
    incoming,
    late_peer,
    messages,
    outgoing,
    peer_messages,
    registry,
    startup,
)
from host.conformance.checks.registry import ACCOUNTS, Check, Stage

#: The parts of the contract in run order: the process at start, identity, accounts (and a peer
#: not reachable yet), outgoing and incoming settlements, the grammar of keys and ids, messages
#: from and to the peer, and the end (stdio, graceful stop).
ORDER: Final = (
    startup,
    identity,
    accounts,
    late_peer,
    outgoing,
    incoming,
    grammar,
    messages,
    peer_messages,
    ending,
)
_RANK: Final = {module.__name__: rank for rank, module in enumerate(ORDER)}

#: Every check, in run order (a stable sort keeps each module's own order).
CHECKS: Final = tuple(sorted(registry.REGISTERED, key=lambda c: _RANK[c.body.__module__]))


def select(names: Iterable[str]) -> list[Check]:
    """The checks ``names`` name (a group such as "send_money" names every "send_money.*"), in
    run order; all of them when ``names`` is empty. ValueError naming what matches nothing."""
    return registry.select(names, CHECKS)


__all__ = ["ACCOUNTS", "CHECKS", "ORDER", "Check", "Stage", "select"]
