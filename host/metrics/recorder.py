"""The observers the connector and the engine call, recording into the metric families.

The packet path costs a dictionary look-up and two counter increments per packet: the label
children are bound once per (account, result, code) and kept, so that no labels are formatted
and no strings are made per packet.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from prometheus_client import Counter

from host.connector.observer import Direction
from host.engine.model import Direction as SettlementDirection
from host.engine.model import Settlement, SettlementState
from host.ilp import Fulfill, Reply
from host.metrics.families import Families

_FULFILLED = ""
_FAILED = "failed"
_OUT = SettlementDirection.OUTGOING


@dataclass(frozen=True, slots=True)
class AccountLabels:
    """What ilp-connector labels each account's metrics with."""

    account: str
    asset: str
    scale: int


class _PacketCounts:
    """One pair of counters (packets, value) with its children bound on first use."""

    def __init__(
        self, packets: Counter, value: Counter, accounts: Mapping[str, AccountLabels]
    ) -> None:
        self._packets = packets
        self._value = value
        self._accounts = accounts
        self._bound: dict[tuple[str, str], tuple[Counter, Counter]] = {}

    def record(self, account: str, code: str, amount: int) -> None:
        children = self._bound.get((account, code))
        if children is None:
            children = self._bind(account, code)
        children[0].inc()
        if amount:
            children[1].inc(amount)

    def bind_fulfilled(self) -> None:
        for account in self._accounts:
            self._bind(account, _FULFILLED)

    def _bind(self, account: str, code: str) -> tuple[Counter, Counter]:
        labels = self._accounts.get(account) or AccountLabels(account, "", 0)
        result = "fulfilled" if code == _FULFILLED else "failed" if code == _FAILED else "rejected"
        values = (
            result,
            "" if code in (_FULFILLED, _FAILED) else code,
            labels.account,
            labels.asset,
            str(labels.scale),
        )
        children = (self._packets.labels(*values), self._value.labels(*values))
        self._bound[(account, code)] = children
        return children


class PacketRecorder:
    """The connector's PacketObserver (host.connector.observer)."""

    def __init__(self, families: Families, accounts: Mapping[str, AccountLabels]) -> None:
        self._incoming = _PacketCounts(families.incoming_packets, families.incoming_value, accounts)
        self._outgoing = _PacketCounts(families.outgoing_packets, families.outgoing_value, accounts)
        self._forward = families.forward_seconds
        self._messages = families.settlement_messages

    def bind(self) -> None:
        """Bind each peer's common case now: its series exist from 0 and the first packet
        finds its children ready."""
        for counts in (self._incoming, self._outgoing):
            counts.bind_fulfilled()

    def incoming(self, account: str, amount: int, reply: Reply, seconds: float) -> None:
        self._incoming.record(account, _code(reply), amount)
        self._forward.observe(seconds)

    def outgoing(self, account: str, amount: int, reply: Reply | None) -> None:
        self._outgoing.record(account, _FAILED if reply is None else _code(reply), amount)

    def settlement_message(self, account: str, direction: Direction, answered: bool) -> None:
        self._messages.labels(account, direction, "fulfilled" if answered else "rejected").inc()


def _code(reply: Reply) -> str:
    return _FULFILLED if isinstance(reply, Fulfill) else reply.code


class SettlementRecorder:
    """The engine's SettlementObserver (host.engine.observer)."""

    def __init__(self, families: Families) -> None:
        self._families = families

    def changed(self, before: Settlement | None, after: Settlement) -> None:
        count = self._families.settlements
        account = after.account_id
        state = after.state
        if before is None:
            if after.direction is _OUT:
                count["requested"].labels(account).inc()
            elif state is SettlementState.CREDITED:
                count["credited"].labels(account).inc()
            return
        if (
            after.direction is _OUT
            and before.state is SettlementState.PENDING
            and state in (SettlementState.SUBMITTED, SettlementState.COMPLETED)
        ):
            count["sent"].labels(account).inc()  # the ledger accepted it
        if state is before.state:
            if after.last_error and after.attempts > before.attempts:
                count["retried"].labels(account).inc()  # a transient failure, rescheduled
            return
        if state is SettlementState.COMPLETED:
            count["completed"].labels(account).inc()
            if after.direction is _OUT:
                seconds = max(0.0, after.updated_at - after.created_at)
                self._families.settlement_seconds.labels(account).observe(seconds)
        elif state is SettlementState.FAILED:
            count["failed"].labels(account).inc()
        elif before.state is SettlementState.FAILED:
            count["retried"].labels(account).inc()  # an operator retried it

    def send_money(self, row: Settlement, seconds: float) -> None:
        self._families.send_money_seconds.labels(row.account_id).observe(seconds)

    def replayed(self, scope: str) -> None:
        self._families.idempotent_replays.labels(scope).inc()
