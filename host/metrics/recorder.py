"""The engine's observer: settlement changes into the settlement families.

(The connector's packet observer is host.metrics.packets: that path is hotter.)
"""

from __future__ import annotations

from host.engine.model import Direction as SettlementDirection
from host.engine.model import Settlement, SettlementState
from host.metrics.families import Families

_OUT = SettlementDirection.OUTGOING


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
