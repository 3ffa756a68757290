"""Every metric a host exports, defined once: names, help texts, labels and buckets.

The packet metrics keep the names and labels of ilp-connector (prom-client; the Java
connector exports the same), so that dashboards made for it chart this host too:
``ilp_connector_incoming_ilp_packets{result,code,account,asset,scale}`` and its siblings.
prom-client names a counter without the ``_total`` suffix that Prometheus' Python client always
adds; :data:`COMPAT_COUNTERS` lists the counters whose suffix the exposition removes again
(host.metrics.host_metrics). Everything else is this host's own, under ``ilp_host_``.

Amounts: ``ilp_connector_*`` count in the account's base units, as ilp-connector does (divide
by ``10^scale`` for the asset); the ``ilp_host_*`` gauges of money are in asset units already.
"""

from __future__ import annotations

from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

#: The labels ilp-connector puts on every per-account metric.
ACCOUNT_LABELS: Final = ("account", "asset", "scale")
#: ilp-connector's packet labels: ``result`` is fulfilled, rejected or failed (no reply: the
#: link failed), ``code`` the ILP error code of a Reject ("" otherwise).
PACKET_LABELS: Final = ("result", "code", *ACCOUNT_LABELS)

INCOMING_PACKETS: Final = "ilp_connector_incoming_ilp_packets"
OUTGOING_PACKETS: Final = "ilp_connector_outgoing_ilp_packets"
INCOMING_VALUE: Final = "ilp_connector_incoming_ilp_packet_value"
OUTGOING_VALUE: Final = "ilp_connector_outgoing_ilp_packet_value"
BALANCE: Final = "ilp_connector_balance"
#: Counters exported under their bare name, as prom-client does.
COMPAT_COUNTERS: Final = (INCOMING_PACKETS, OUTGOING_PACKETS, INCOMING_VALUE, OUTGOING_VALUE)

#: Forwarding latency and SendMoney: sub-millisecond to seconds.
FAST_BUCKETS: Final = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
#: A settlement from its debit to the ledger's confirmation: up to minutes.
SLOW_BUCKETS: Final = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900)


class Families:
    """The metric objects of one host, in a registry of their own (not the process-global one,
    so that tests and benchmarks can make several)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        # -- packets (ilp-connector's names): host.metrics.packets collects the counters
        self.balance = Gauge(
            BALANCE,
            "Clearing balance of the account in its base units (positive: the peer owes us)",
            ACCOUNT_LABELS,
            registry=r,
        )
        self.settlement_messages = Counter(
            "ilp_host_settlement_messages",
            "peer.settle messages between the settlement engines (not in the packet counts)",
            ("account", "direction", "result"),
            registry=r,
        )
        # -- balances ----------------------------------------------------------------------
        self.clearing_balance = Gauge(
            "ilp_host_clearing_balance",
            "Clearing balance in asset units (positive: the peer owes us)",
            ACCOUNT_LABELS,
            registry=r,
        )
        self.liquidity = Gauge(
            "ilp_host_settlement_liquidity",
            "Liquidity of the account's settlement account as its adaptor last reported, "
            "in asset units",
            ACCOUNT_LABELS,
            registry=r,
        )
        self.leftover = Gauge(
            "ilp_host_leftover",
            "Amounts below one ledger unit kept for later settlements, in asset units",
            (*ACCOUNT_LABELS, "direction"),
            registry=r,
        )
        self.pending_settlement = Gauge(
            "ilp_host_pending_settlement",
            "Debited but not yet completed outgoing settlements, in asset units",
            ACCOUNT_LABELS,
            registry=r,
        )
        # -- settlements -------------------------------------------------------------------
        settlement_counters = {
            "requested": "Outgoing settlements debited and queued",
            "sent": "SendMoney calls the adaptor accepted (submitted or completed)",
            "completed": "Settlements completed (outgoing paid, incoming acknowledged)",
            "failed": "Outgoing settlements the adaptor refused for good (parked as failed)",
            "retried": "Settlement attempts that failed transiently and were rescheduled, "
            "and failed settlements an operator retried",
            "credited": "Incoming settlements credited to the clearing balance",
        }
        self.settlements = {
            name: Counter(f"ilp_host_settlements_{name}", text, ("account",), registry=r)
            for name, text in settlement_counters.items()
        }
        self.send_money_seconds = Histogram(
            "ilp_host_send_money_seconds",
            "Duration of one SendMoney call to the adaptor",
            ("account",),
            buckets=FAST_BUCKETS,
            registry=r,
        )
        self.settlement_seconds = Histogram(
            "ilp_host_settlement_seconds",
            "From an outgoing settlement's debit to its completion on the ledger",
            ("account",),
            buckets=SLOW_BUCKETS,
            registry=r,
        )
        self.outbox_depth = Gauge(
            "ilp_host_outbox_depth", "Settlements with work left in the outbox", registry=r
        )
        self.outbox_oldest_age = Gauge(
            "ilp_host_outbox_oldest_age_seconds",
            "Age of the oldest settlement with work left (0 when the outbox is empty)",
            registry=r,
        )
        self.idempotent_replays = Counter(
            "ilp_host_idempotent_replays",
            "Requests answered from an idempotency record instead of being applied again",
            ("scope",),
            registry=r,
        )
        # -- adaptors and links --------------------------------------------------------------
        self.adaptor_up = Gauge(
            "ilp_host_adaptor_up", "1 while the adaptor serves, else 0", ("adaptor",), registry=r
        )
        self.adaptor_state = Gauge(
            "ilp_host_adaptor_process_state",
            "1 for the adaptor's current process state",
            ("adaptor", "state"),
            registry=r,
        )
        self.adaptor_restarts = Counter(
            "ilp_host_adaptor_restarts",
            "Adaptor processes started again after the first",
            ("adaptor",),
            registry=r,
        )
        self.handshake_failures = Counter(
            "ilp_host_adaptor_handshake_failures",
            "Adaptor starts that crashed before serving (no or a bad handshake)",
            ("adaptor",),
            registry=r,
        )
        self.adaptor_connection = Gauge(
            "ilp_host_adaptor_connection_state",
            "1 for the current state of each of an adaptor's connections",
            ("adaptor", "connection", "state"),
            registry=r,
        )
        self.peer_link = Gauge(
            "ilp_host_peer_link_state",
            "1 for the current state of the ILP-over-HTTP link to each peer",
            ("account", "state"),
            registry=r,
        )
        # -- the in-flight journal (host.connector.inflight) ---------------------------------
        self.unresolved_packets = Gauge(
            "ilp_host_clearing_unresolved_packets",
            "Packets forwarded to the peer whose outcome is not known yet (asking the peer, or "
            "a debit waiting to be recorded)",
            ("account",),
            registry=r,
        )
        self.outcome_unsupported = Gauge(
            "ilp_host_clearing_outcome_unsupported_packets",
            "Packets released since start without an answer to peer.outcome: the peer does not "
            "speak it (ilp-connector), so its books may differ by them",
            ("account",),
            registry=r,
        )
        # -- reconciliation with the peers (host.connector.reconciliation) -----------------
        self.reconciliation_status = Gauge(
            "ilp_host_reconciliation_status",
            "1 for the outcome of the last reconciliation with the peer (agree, settling, "
            "differ, busy, unsupported, failed)",
            ("account", "status"),
            registry=r,
        )
        self.reconciliation_difference = Gauge(
            "ilp_host_reconciliation_difference",
            "Last reconciliation with the peer, in base units: clearing (the two books' nets of "
            "fulfilled packets added: 0 when they agree), to_peer and from_peer (settlements "
            "paid and not yet credited)",
            ("account", "kind"),
            registry=r,
        )
        # -- proposal 2: the connector and its engine ---------------------------------------
        self.engine_connected = Gauge(
            "ilp_host_engine_connected",
            "Connector side: 1 while an engine follows the connector's events",
            registry=r,
        )
        self.events_unacknowledged = Gauge(
            "ilp_host_engine_events_unacknowledged",
            "Connector side: balance events written but not yet acknowledged by the engine",
            registry=r,
        )
        self.link_connected = Gauge(
            "ilp_host_connector_link_connected",
            "Engine side: 1 while the link to the connector's event stream is up",
            registry=r,
        )
        self.link_applied = Gauge(
            "ilp_host_connector_link_applied_cursor",
            "Engine side: the last of the connector's events applied",
            registry=r,
        )
        self.link_lag = Gauge(
            "ilp_host_connector_link_effects_waiting",
            "Engine side: settlement effects on balances not yet pushed to the connector",
            registry=r,
        )
