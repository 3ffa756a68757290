"""The connector's seams: what it needs from the settlement engine, and the errors that cross.

The connector never imports the engine. It sees two Protocols, which the host binds to the
engine (and the tests to the in-memory :class:`InMemoryClearing`):

- :class:`ClearingPort`: credit checks and durable, idempotent clearing-balance changes;
- :class:`SettlementMessagesPort`: ``peer.settle`` messages from a peer's engine to ours;

and one local seam, :class:`LocalHandler`, for packets addressed to this host.

A ClearingPort that is also a :class:`ClearingJournal` (the engine's store, the connector's own
ledger) keeps the in-flight journal: every forwarded Prepare is recorded durably
(:class:`InFlight`) before it goes out, and resolved (:class:`Resolution`) in the same
transaction as the balance changes it causes (host.connector.inflight).

Sign convention (the one of the whole host): a clearing balance is what the peer owes us.
Packets the peer sends us that we fulfill raise it; packets we forward to the peer that it
fulfills lower it.

Errors::

    ConnectorError               something the connector could not do; nothing was applied
    ├── UnknownPeer              no peer has that account id (the engine: NOT_FOUND)
    ├── PeerUnreachable          the link failed or the peer did not answer in time (UNAVAILABLE)
    └── PeerRefused              the peer answered with a Reject (FAILED_PRECONDITION)

    MessageRefused               raised by a SettlementMessagesPort to refuse a peer's message
                                 with a chosen ILP error code
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from host.clearing_records import STATUS_OF_RESOLUTION, BalanceChange, InFlight, Resolution
from host.ilp import Prepare, Reply
from host.ilp.errors import ErrorCode
from host.ilp.outcome import Outcome, Status


class ClearingPort(Protocol):
    """The clearing balances of the peer accounts, as the balance middleware sees them."""

    async def check_credit(self, account_id: str, delta: int) -> bool:
        """Whether changing the balance by ``delta`` would stay within the credit limits.

        :class:`AccountNotReady` if the account cannot take packets yet.
        """
        ...

    async def apply_balance_change(self, account_id: str, delta: int, idempotency_key: str) -> int:
        """Change the balance by ``delta``, durably; the new balance.

        Idempotent by key: a repeated key changes nothing and returns the first result.
        """
        ...


@runtime_checkable
class ClearingJournal(Protocol):
    """The in-flight journal, kept by the store that keeps the clearing balances."""

    async def journal_packet(self, packet: InFlight) -> None:
        """Record ``packet`` as pending, durably (a replay of its key changes nothing)."""
        ...

    async def resolve_packet(
        self,
        packet: InFlight,
        resolution: Resolution,
        fulfillment: bytes,
        changes: Sequence[BalanceChange],
    ) -> Resolution:
        """In one transaction: apply ``changes`` (each idempotent by its key) and record how
        the packet ended (recording it if it was not journaled); ``resolution``. A resolved
        packet stays resolved: resolving it again changes nothing and returns the resolution
        it has (a replayed Prepare finds its FULFILLED)."""
        ...

    async def unresolved_packets(self) -> list[InFlight]:
        """Every journaled packet not resolved yet, oldest first."""
        ...

    async def packet_outcome(self, source: str, source_id: bytes) -> Outcome:
        """What to tell peer ``source`` of its packet ``source_id`` (UNKNOWN if never seen)."""
        ...


class SettlementMessagesPort(Protocol):
    """Where ``peer.settle`` messages from a peer's engine go (our engine, then its adaptor)."""

    async def receive(self, account_id: str, data: bytes) -> bytes:
        """Handle ``data`` from the engine of peer ``account_id``; the reply for it.

        Raise :class:`MessageRefused` to answer with a chosen ILP error code; any other
        exception is answered with F99.
        """
        ...


class LocalHandler(Protocol):
    """Receives the Prepares addressed to this host's own address (and below)."""

    async def handle(self, prepare: Prepare) -> Reply:
        """Fulfill or reject ``prepare``."""
        ...


class ConnectorError(Exception):
    """Something the connector could not do; the message says what, to whom, and why."""


class UnknownPeer(ConnectorError):
    """No peer is configured with that account id."""


class AccountNotReady(ConnectorError):
    """The peer is configured, but its clearing account is not there yet (its settlement
    adaptor has not started): the packet gets a T00 Reject, the sender may retry."""


class PeerUnreachable(ConnectorError):
    """The link to the peer failed (connection, HTTP status) or the peer did not answer in time."""


class PeerRefused(ConnectorError):
    """The peer answered with a Reject: ``code``, its ``message`` and ``data``."""

    def __init__(self, text: str, code: str, data: bytes = b"") -> None:
        super().__init__(text)
        self.code = code
        self.data = data


#: The gRPC status of each error where it crosses a process boundary (SendData of the Engine
#: API and of the Connector API), and back.
STATUS_OF_ERROR: dict[type[ConnectorError], str] = {
    UnknownPeer: "NOT_FOUND",
    PeerUnreachable: "UNAVAILABLE",
    PeerRefused: "FAILED_PRECONDITION",
}


class MessageRefused(Exception):
    """A :class:`SettlementMessagesPort` refuses a peer's message: the peer gets this Reject."""

    def __init__(self, message: str, code: str = ErrorCode.F99_APPLICATION_ERROR) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class WithoutJournal:
    """Only the ClearingPort of a clearing port, hiding its in-flight journal: a connector over
    it works as connectors did before the journal (for tests and benchmarks that compare, or
    play a peer that does not answer ``peer.outcome``)."""

    def __init__(self, clearing: ClearingPort) -> None:
        self._clearing = clearing

    async def check_credit(self, account_id: str, delta: int) -> bool:
        return await self._clearing.check_credit(account_id, delta)

    async def apply_balance_change(self, account_id: str, delta: int, idempotency_key: str) -> int:
        return await self._clearing.apply_balance_change(account_id, delta, idempotency_key)


class InMemoryClearing:
    """A :class:`ClearingPort` in memory: balances, limits and idempotency keys in dicts.

    For tests and benchmarks (nothing survives the process). ``limits`` maps an account to
    its ``(min_balance, max_balance)``; an account without limits accepts any change.
    """

    def __init__(self, limits: dict[str, tuple[int, int]] | None = None) -> None:
        self.balances: dict[str, int] = {}
        self.limits: dict[str, tuple[int, int]] = dict(limits or {})
        self.keys: dict[str, tuple[str, int, int]] = {}
        #: Every change applied (not replays), in order: (account, delta, key).
        self.applied: list[tuple[str, int, str]] = []
        #: The in-flight journal: packet key -> (packet, resolution (None: pending), fulfillment).
        self.journal: dict[str, tuple[InFlight, Resolution | None, bytes]] = {}

    def balance(self, account_id: str) -> int:
        """The clearing balance of an account (0 if never changed)."""
        return self.balances.get(account_id, 0)

    async def check_credit(self, account_id: str, delta: int) -> bool:
        """Whether the change stays within the account's limits (moving back towards them is
        always allowed, as the engine does)."""
        limits = self.limits.get(account_id)
        if limits is None:
            return True
        low, high = limits
        new = self.balance(account_id) + delta
        if delta > 0:
            return new <= high
        if delta < 0:
            return new >= low
        return True

    async def apply_balance_change(self, account_id: str, delta: int, idempotency_key: str) -> int:
        """Apply once per key; a replay with other content is a bug and raises ValueError."""
        seen = self.keys.get(idempotency_key)
        if seen is not None:
            if seen[:2] != (account_id, delta):
                raise ValueError(f"idempotency key {idempotency_key!r} reused with other content")
            return seen[2]
        balance = self.balance(account_id) + delta
        self.balances[account_id] = balance
        self.keys[idempotency_key] = (account_id, delta, balance)
        self.applied.append((account_id, delta, idempotency_key))
        return balance

    # -- the in-flight journal (ClearingJournal) ------------------------------------------

    async def journal_packet(self, packet: InFlight) -> None:
        self.journal.setdefault(packet.key, (packet, None, b""))

    async def resolve_packet(
        self,
        packet: InFlight,
        resolution: Resolution,
        fulfillment: bytes,
        changes: Sequence[BalanceChange],
    ) -> Resolution:
        seen = self.journal.get(packet.key)
        if seen is not None and seen[1] is not None:
            return seen[1]
        for change in changes:
            await self.apply_balance_change(change.account_id, change.delta, change.idempotency_key)
        self.journal[packet.key] = (packet, resolution, fulfillment)
        return resolution

    async def unresolved_packets(self) -> list[InFlight]:
        return [packet for packet, resolution, _ in self.journal.values() if resolution is None]

    async def packet_outcome(self, source: str, source_id: bytes) -> Outcome:
        for packet, resolution, fulfillment in self.journal.values():
            if packet.source == source and packet.source_id == source_id:
                if resolution is None:
                    return Outcome(Status.PENDING)
                status = STATUS_OF_RESOLUTION[resolution]
                return Outcome(status, fulfillment if status == Status.FULFILLED else b"")
        return Outcome(Status.UNKNOWN)
