"""What the engine tells an observer (metrics) about settlements, and the log line of each
settlement's state change.

The engine calls :func:`changed` on every recorded change of a settlement row: it logs one
line with the settlement's id, account and states (structured fields ``settlement_id``,
``account``, ``direction``, ``state`` for JSON logs) and tells the observer. An observer must be
cheap and must not raise.
"""

from __future__ import annotations

import logging
from typing import Protocol

from host.engine.model import Settlement

log = logging.getLogger("host.engine.settlements")


class SettlementObserver(Protocol):
    def changed(self, before: Settlement | None, after: Settlement) -> None:
        """A settlement row was recorded: new (``before`` None) or changed."""

    def send_money(self, row: Settlement, seconds: float) -> None:
        """One SendMoney call for ``row`` returned or failed after ``seconds``."""

    def replayed(self, scope: str) -> None:
        """A request was answered from its idempotency record (``scope``: balance, settle)."""


class NoObserver:
    """The default: nothing is observed."""

    def changed(self, before: Settlement | None, after: Settlement) -> None:
        pass

    def send_money(self, row: Settlement, seconds: float) -> None:
        pass

    def replayed(self, scope: str) -> None:
        pass


def changed(observer: SettlementObserver, before: Settlement | None, after: Settlement) -> None:
    """Log the change of one settlement and tell ``observer``."""
    was = "new" if before is None else before.state.value
    # A transient failure keeps the state: the outbox logs it as a warning already.
    if before is None or before.state is not after.state:
        log.info(
            "settlement %s (%s, account %s): %s -> %s%s",
            after.id,
            after.direction.value,
            after.account_id,
            was,
            after.state.value,
            f" ({after.last_error})" if after.last_error else "",
            extra={
                "settlement_id": after.id,
                "account": after.account_id,
                "direction": after.direction.value,
                "state": after.state.value,
                "previous_state": was,
                "attempts": after.attempts,
            },
        )
    observer.changed(before, after)
