"""The packet metrics: counted with plain integers on the packet path, exported at scrape time.

The connector calls :class:`PacketRecorder` on every packet (host.connector.observer), so it
does the least it can: two dictionary look-ups and three integer additions for a packet, and a
bucket found by bisection for the forwarding latency. No label is formatted, nothing is locked
and nothing is allocated per packet; the per-account label sets are made once, at the first
packet of each (account, result, code). Prometheus' client library would take a lock and check
its state on each increment, several times per packet (see bench/bench_metrics.py); here its
families are built from these integers only when Prometheus scrapes (:meth:`collect`).

The names and labels are ilp-connector's (host.metrics.families).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from prometheus_client import Counter
from prometheus_client.metrics_core import HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from host.connector.observer import Direction
from host.ilp import Fulfill, Reply
from host.metrics import families as names

#: The ``code`` under which a packet's outcome is kept: "" fulfilled, "failed" no reply, else
#: the ILP error code of the Reject.
_FULFILLED = ""
_FAILED = "failed"


@dataclass(frozen=True, slots=True)
class AccountLabels:
    """What ilp-connector labels each account's metrics with."""

    account: str
    asset: str
    scale: int


class _Counts:
    """Packets and their value, per account and outcome: ``cells[account][code] = [n, value]``."""

    def __init__(self) -> None:
        self.cells: dict[str, dict[str, list[int]]] = {}

    def record(self, account: str, code: str, amount: int) -> None:
        codes = self.cells.get(account)
        if codes is None:
            codes = self.cells[account] = {}
        cell = codes.get(code)
        if cell is None:
            cell = codes[code] = [0, 0]
        cell[0] += 1
        cell[1] += amount


class _Latency:
    """A histogram's buckets as plain counts (cumulated only when exported)."""

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last: above every bound (+Inf only)
        self.sum = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, seconds)] += 1
        self.sum += seconds


class PacketRecorder(Collector):
    """The connector's PacketObserver, and the collector of the packet families."""

    def __init__(self, accounts: Mapping[str, AccountLabels], messages: Counter) -> None:
        self._accounts = accounts
        self._messages = messages
        self._incoming = _Counts()
        self._outgoing = _Counts()
        self._forward = _Latency(names.FAST_BUCKETS)
        self._labels: dict[tuple[str, str], dict[str, str]] = {}

    def bind(self) -> None:
        """Each peer's fulfilled series exist from 0, before its first packet."""
        for counts in (self._incoming, self._outgoing):
            for account in self._accounts:
                counts.record(account, _FULFILLED, 0)
                counts.cells[account][_FULFILLED][0] = 0

    # -- the packet path (host.connector.observer.PacketObserver) -----------------------------

    def incoming(self, account: str, amount: int, reply: Reply, seconds: float) -> None:
        self._incoming.record(
            account, _FULFILLED if isinstance(reply, Fulfill) else reply.code, amount
        )
        self._forward.observe(seconds)

    def outgoing(self, account: str, amount: int, reply: Reply | None) -> None:
        if reply is None:
            code = _FAILED
        else:
            code = _FULFILLED if isinstance(reply, Fulfill) else reply.code
        self._outgoing.record(account, code, amount)

    def settlement_message(self, account: str, direction: Direction, answered: bool) -> None:
        self._messages.labels(account, direction, "fulfilled" if answered else "rejected").inc()

    # -- scrape -------------------------------------------------------------------------------

    def collect(self) -> Iterator[Metric]:
        pairs = (
            (names.INCOMING_PACKETS, "Total number of incoming ILP packets", self._incoming, 0),
            (names.OUTGOING_PACKETS, "Total number of outgoing ILP packets", self._outgoing, 0),
            (names.INCOMING_VALUE, "Total value of incoming ILP packets", self._incoming, 1),
            (names.OUTGOING_VALUE, "Total value of outgoing ILP packets", self._outgoing, 1),
        )
        for name, text, counts, index in pairs:
            family = Metric(name, text, "counter")
            for account, codes in list(counts.cells.items()):
                for code, cell in list(codes.items()):
                    family.add_sample(name, self._labels_of(account, code), cell[index])
            yield family
        latency = self._forward
        cumulative, buckets = 0, []
        for bound, count in zip((*latency.bounds, float("inf")), latency.counts, strict=True):
            cumulative += count
            buckets.append(("+Inf" if bound == float("inf") else repr(float(bound)), cumulative))
        yield HistogramMetricFamily(
            "ilp_host_packet_forward_seconds",
            "Time from a peer's Prepare arriving to its reply leaving",
            buckets=buckets,
            sum_value=latency.sum,
        )

    def _labels_of(self, account: str, code: str) -> dict[str, str]:
        labels = self._labels.get((account, code))
        if labels is None:
            account_labels = self._accounts.get(account) or AccountLabels(account, "", 0)
            result = (
                "fulfilled" if code == _FULFILLED else "failed" if code == _FAILED else "rejected"
            )
            labels = {
                "result": result,
                "code": "" if code in (_FULFILLED, _FAILED) else code,
                "account": account_labels.account,
                "asset": account_labels.asset,
                "scale": str(account_labels.scale),
            }
            self._labels[(account, code)] = labels
        return labels
