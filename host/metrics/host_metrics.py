"""One host's metrics: the families, the recorders the hot paths call, and the figures read
when Prometheus scrapes (balances, outbox, adaptors, links), from whichever parts this role runs.

A part is attached once it exists (:meth:`HostMetrics.attach`); what a role does not run is
simply not exported. The scrape-time figures are read by :meth:`HostMetrics.refresh`, from the
parts' own views (the engine's accounts, the connector's clearing file, the supervisor's
snapshots), so nothing has to keep them up to date between scrapes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from prometheus_client import disable_created_metrics, generate_latest

from host.config import AccountSpec
from host.engine import EngineError
from host.lifecycle import ProcessState
from host.metrics.families import COMPAT_COUNTERS, Families
from host.metrics.packets import AccountLabels, PacketRecorder
from host.metrics.recorder import SettlementRecorder
from host.store import StoreError

if TYPE_CHECKING:  # the parts observed; importing them here would make an import cycle
    from host.connector.connector import Connector
    from host.connector.durable_clearing import DurableClearing
    from host.connector.reconciliation import Outcome, Reconciler
    from host.engine import Engine
    from host.pb.ilphost.admin.v1 import admin_pb2
    from host.remote_connector import RemoteConnector
    from host.supervisor import Supervisor

log = logging.getLogger("ilp_host.metrics")

# The *_created series prom-client does not have would double every counter's series.
disable_created_metrics()  # type: ignore[no-untyped-call]

#: The bare names prom-client gives ilp-connector's counters (see host.metrics.families).
_RENAMES = tuple((f"{name}_total".encode(), name.encode()) for name in COMPAT_COUNTERS)


@runtime_checkable
class OutboxSummary(Protocol):
    """A store that can say how much work its outbox holds (both of host.store do)."""

    async def outbox_summary(self) -> tuple[int, float | None]:
        """The rows with work left and the creation time of the oldest (None: empty)."""


class HostMetrics:
    """The metrics of one host process (see the module docstring)."""

    def __init__(self, accounts: Iterable[AccountSpec]) -> None:
        self.families = Families()
        self.accounts = {
            spec.id: AccountLabels(spec.id, spec.asset_code, spec.asset_scale) for spec in accounts
        }
        self.packets = PacketRecorder(self.accounts, self.families.settlement_messages)
        self._packets_exported = False
        self.settlements = SettlementRecorder(self.families)
        self._engine: Engine | None = None
        self._store: OutboxSummary | None = None
        self._connector: Connector | None = None
        self._clearing: DurableClearing | None = None
        self._engine_link: Callable[[], admin_pb2.EngineLink] | None = None
        self._link: RemoteConnector | None = None
        self._supervisor: Supervisor | None = None
        self._refreshing = asyncio.Lock()
        self._dropped: set[int] = set()

    def attach(
        self,
        *,
        engine: Engine | None = None,
        store: object = None,
        connector: Connector | None = None,
        clearing: DurableClearing | None = None,
        engine_link: Callable[[], admin_pb2.EngineLink] | None = None,
        link: RemoteConnector | None = None,
        supervisor: Supervisor | None = None,
        reconciler: Reconciler | None = None,
    ) -> None:
        """Observe the parts this role runs: the recorders are installed on the hot paths."""
        if engine is not None:
            self._engine = engine
            engine.observer = self.settlements
            # Each account's and scope's series exist from 0, so that increase() sees the first.
            for account in self.accounts:
                for counter in self.families.settlements.values():
                    counter.labels(account)
            for scope in ("balance", "settle"):
                self.families.idempotent_replays.labels(scope)
        if isinstance(store, OutboxSummary):
            self._store = store
        if connector is not None:
            self._connector = connector
            connector.observer = self.packets
            self.export_packets()
        self._clearing = clearing or self._clearing
        self._engine_link = engine_link or self._engine_link
        self._link = link or self._link
        if supervisor is not None:
            self._supervisor = supervisor
            for snapshot in supervisor.snapshots():  # the counters exist from 0
                self.families.adaptor_restarts.labels(snapshot.name)
                self.families.handshake_failures.labels(snapshot.name)
        if reconciler is not None:
            reconciler.observer = self
        self._unexport_absent()

    def reconciled(self, outcome: Outcome) -> None:
        """The latest reconciliation with a peer (host.connector.reconciliation observer)."""
        from host.connector.reconciliation import STATUSES  # at run time: an import cycle

        f = self.families
        for status in STATUSES:
            f.reconciliation_status.labels(outcome.peer_id, status).set(
                1 if status == outcome.status else 0
            )
        for kind, value in (
            ("clearing", outcome.clearing_difference),
            ("to_peer", outcome.to_peer_in_transit),
            ("from_peer", outcome.from_peer_in_transit),
        ):
            f.reconciliation_difference.labels(outcome.peer_id, kind).set(value)

    def export_packets(self) -> None:
        """Export the packet families (where a connector runs; attach does it)."""
        if not self._packets_exported:
            self.packets.bind()
            self.families.registry.register(self.packets)
            self._packets_exported = True

    def _unexport_absent(self) -> None:
        """Unlabelled metrics always show (0); drop those of parts this role does not run,
        so that a split host's two processes do not both claim a figure."""
        f = self.families
        absent = {
            f.outbox_depth: self._store is None,
            f.outbox_oldest_age: self._store is None,
            f.engine_connected: self._engine_link is None,
            f.events_unacknowledged: self._engine_link is None,
            f.link_connected: self._link is None,
            f.link_applied: self._link is None,
            f.link_lag: self._link is None,
        }
        for family, drop in absent.items():
            if drop and id(family) not in self._dropped:
                f.registry.unregister(family)
                self._dropped.add(id(family))

    # -- scrape ---------------------------------------------------------------------------

    async def scrape(self) -> bytes:
        """The exposition in Prometheus' text format, the scrape-time figures read now."""
        async with self._refreshing:
            await self.refresh()
            text = generate_latest(self.families.registry)
        for old, new in _RENAMES:
            text = text.replace(old, new)
        return text

    async def refresh(self) -> None:
        """Read the scrape-time figures. A part that cannot answer now keeps its last values
        (logged once per scrape), so that one slow part does not blank the others."""
        try:
            await self._balances()
            await self._outbox()
        except (EngineError, StoreError) as exc:
            log.warning("metrics: balances or outbox not read this time: %s", exc)
        self._adaptors()
        self._links()

    async def _balances(self) -> None:
        f = self.families
        if self._engine is not None:
            for view in await self._engine.list_accounts():
                account = view.account
                labels = self.accounts.get(account.id) or AccountLabels(
                    account.id, account.asset_code, account.asset_scale
                )
                values = (labels.account, labels.asset, str(labels.scale))
                unit = 10.0**account.asset_scale
                f.clearing_balance.labels(*values).set(account.balance / unit)
                if self._connector is not None and self._clearing is None:
                    f.balance.labels(*values).set(account.balance)  # run: the engine's books
                f.pending_settlement.labels(*values).set(view.pending_settlement / unit)
                f.leftover.labels(*values, "outgoing").set(account.outgoing_leftover / unit)
                f.leftover.labels(*values, "incoming").set(account.incoming_leftover / unit)
                if account.liquidity is not None:
                    f.liquidity.labels(*values).set(account.liquidity / 10.0**account.ledger_scale)
        if self._clearing is not None:
            for labels in self.accounts.values():
                values = (labels.account, labels.asset, str(labels.scale))
                balance = await self._clearing.balance(labels.account)
                f.balance.labels(*values).set(balance)
                f.clearing_balance.labels(*values).set(balance / 10.0**labels.scale)
        if self._engine_link is not None:
            link = self._engine_link()
            f.engine_connected.set(1 if link.connected else 0)
            f.events_unacknowledged.set(link.unacknowledged)

    async def _outbox(self) -> None:
        if self._store is not None:
            depth, oldest = await self._store.outbox_summary()
            self.families.outbox_depth.set(depth)
            age = 0.0 if oldest is None else max(0.0, time.time() - oldest)
            self.families.outbox_oldest_age.set(age)
        if self._link is not None:
            link = await self._link.status_message()
            self.families.link_connected.set(1 if link.connected else 0)
            self.families.link_applied.set(link.applied_cursor)
            self.families.link_lag.set(link.effects_waiting)

    def _adaptors(self) -> None:
        if self._supervisor is None:
            return
        f = self.families
        f.adaptor_state.clear()
        f.adaptor_connection.clear()
        for snapshot in self._supervisor.snapshots():
            f.adaptor_up.labels(snapshot.name).set(
                1 if snapshot.state is ProcessState.SERVING else 0
            )
            f.adaptor_state.labels(snapshot.name, snapshot.state.name.lower()).set(1)
            for connection in snapshot.connections:
                f.adaptor_connection.labels(
                    snapshot.name, connection.name, connection.state.name.lower()
                ).set(1)

    def _links(self) -> None:
        if self._connector is None:
            return
        self.families.peer_link.clear()
        for link in self._connector.link_states():
            account = link.name.removeprefix("peer:")
            self.families.peer_link.labels(account, link.state.name.lower()).set(1)
        inflight = self._connector.inflight
        waiting: dict[str, int] = dict.fromkeys(self._connector.peer_ids(), 0)
        for entry in inflight.waiting():
            target = entry.packet.target or ""
            waiting[target] = waiting.get(target, 0) + 1
        for account, count in waiting.items():
            self.families.unresolved_packets.labels(account).set(count)
            self.families.outcome_unsupported.labels(account).set(
                inflight.unsupported.get(account, 0)
            )

    # -- adaptor history --------------------------------------------------------------------

    async def follow_adaptors(self, supervisor: Supervisor) -> None:
        """Count restarts and failed handshakes from the supervisor's changes (run as a task
        until cancelled): the snapshots show only the present."""
        last: dict[str, ProcessState] = {}
        started: set[str] = set()
        async for snapshot in supervisor.watch():
            before = last.get(snapshot.name)
            state = snapshot.state
            last[snapshot.name] = state
            if before is state:
                continue
            if state is ProcessState.STARTING:
                if snapshot.name in started:
                    self.families.adaptor_restarts.labels(snapshot.name).inc()
                started.add(snapshot.name)
            if state is ProcessState.CRASHED and before in (
                ProcessState.STARTING,
                ProcessState.HANDSHAKING,
            ):
                self.families.handshake_failures.labels(snapshot.name).inc()
