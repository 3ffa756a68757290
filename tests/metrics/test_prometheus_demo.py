"""A real Prometheus scrapes a running two-host demo: the series arrive under the names the
field uses, and PromQL over them answers with the numbers the demo reports.

Alice runs in one process (``ilp-host run``), Bob split in two (``ilp-host connector`` and
``ilp-host engine``), so every role's /metrics is scraped. Bob logs as JSON (``--log-format
json``): every line of his log parses, with ``jq`` too.
"""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from host.demo.scenario import PACKET_AMOUNT, Books, run_demo
from host.demo.twohost import Host, Side, free_ports
from tests.metrics.prometheus import Prometheus, prometheus

REPO = Path(__file__).resolve().parents[2]

#: The names ilp-connector's dashboards chart (its prom-client metrics, without _total).
ILP_CONNECTOR_NAMES = {
    "ilp_connector_incoming_ilp_packets",
    "ilp_connector_outgoing_ilp_packets",
    "ilp_connector_incoming_ilp_packet_value",
    "ilp_connector_outgoing_ilp_packet_value",
    "ilp_connector_balance",
}
#: This host's own: settlements, outbox, adaptors, links, the split host's link.
HOST_NAMES = {
    "ilp_host_packet_forward_seconds_bucket",
    "ilp_host_clearing_balance",
    "ilp_host_settlement_liquidity",
    "ilp_host_leftover",
    *(
        f"ilp_host_settlements_{name}_total"
        for name in ("requested", "sent", "completed", "failed", "retried", "credited")
    ),
    "ilp_host_send_money_seconds_bucket",
    "ilp_host_settlement_seconds_bucket",
    "ilp_host_outbox_depth",
    "ilp_host_outbox_oldest_age_seconds",
    "ilp_host_idempotent_replays_total",
    "ilp_host_adaptor_up",
    "ilp_host_adaptor_process_state",
    "ilp_host_adaptor_restarts_total",
    "ilp_host_adaptor_handshake_failures_total",
    "ilp_host_adaptor_connection_state",
    "ilp_host_peer_link_state",
    "ilp_host_clearing_unresolved_packets",
    "ilp_host_clearing_outcome_unsupported_packets",
    "ilp_host_engine_connected",
    "ilp_host_engine_events_unacknowledged",
    "ilp_host_connector_link_connected",
    "ilp_host_connector_link_effects_waiting",
}


@pytest.fixture
def workdir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="ilpmx"))  # short: unix socket paths
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _metrics_table(listen: int, engine_listen: int) -> str:
    return (
        f'[metrics]\nlisten = "127.0.0.1:{listen}"\nengine_listen = "127.0.0.1:{engine_listen}"\n'
    )


def _dashboard_queries() -> list[str]:
    """Every PromQL expression of the dashboards, Grafana's variables filled in."""
    queries = []
    for path in sorted((REPO / "docs" / "grafana").glob("*.json")):
        dashboard = json.loads(path.read_text())
        for panel in dashboard["panels"]:
            for target in panel.get("targets", []):
                expr = target["expr"]
                expr = expr.replace("$__rate_interval", "1m").replace("$__interval", "15s")
                queries.append(re.sub(r"\$\{?(\w+)\}?", ".*", expr))
    return queries


@pytest.mark.slow
def test_prometheus_scrapes_the_demo(workdir: Path) -> None:
    alice_port, alice_engine, bob_port, bob_engine, prometheus_port = free_ports(5)
    sides = (
        Side(extra=_metrics_table(alice_port, alice_engine)),
        Side(engine="external", extra=_metrics_table(bob_port, bob_engine)),
    )
    jobs = {
        "alice": [f"127.0.0.1:{alice_port}"],
        "bob": [f"127.0.0.1:{bob_port}", f"127.0.0.1:{bob_engine}"],
    }
    checked: dict[str, bool] = {}

    def scrape(alice: Host, bob: Host, books: Books) -> None:
        with prometheus(workdir, prometheus_port, jobs) as server:
            _check(server, books)
            checked["prometheus"] = True

    out = io.StringIO()
    _books, problems = run_demo(
        workdir,
        sides,
        min_settlements=2,
        out=out,
        log_format="json",
        inspect=scrape,
    )
    assert problems == [], out.getvalue()
    assert checked == {"prometheus": True}
    _check_json_log(workdir / "bob.log")


def _check(server: Prometheus, books: Books) -> None:
    fulfilled = books.sent // PACKET_AMOUNT
    completed = len(books.alice_completed)
    credited = len(books.bob_credited)
    # Every target is up and has been scraped since the books were read.
    server.wait_for('count(up{job=~"alice|bob"} == 1)', 3)
    server.wait_for('sum(ilp_connector_incoming_ilp_packets{result="fulfilled"})', fulfilled)
    server.wait_for('sum(ilp_host_settlements_credited_total{job="bob"})', credited)
    server.wait_for('sum(ilp_host_settlements_completed_total{job="alice"})', completed)
    # The demo's packets went from Alice to Bob: what Bob counts in, Alice counts out.
    assert server.value('sum(ilp_connector_incoming_ilp_packets{job="bob"})') == server.value(
        'sum(ilp_connector_outgoing_ilp_packets{job="alice",result!="failed"})'
    )
    assert server.value(
        'sum(ilp_connector_incoming_ilp_packet_value{job="bob",result="fulfilled"})'
    ) == float(books.sent)
    assert server.value('sum(ilp_connector_outgoing_ilp_packets{job="alice"})') >= fulfilled
    assert server.value('sum(ilp_host_settlements_requested_total{job="alice"})') == completed
    assert server.value('sum(ilp_host_settlements_sent_total{job="alice"})') == completed
    assert server.value("sum(ilp_host_settlements_failed_total)") == 0
    assert server.value('sum(ilp_host_settlements_completed_total{job="bob"})') == credited
    # The books as ilp-connector labels them: base units, asset and scale.
    balance = server.query('ilp_connector_balance{job="alice"}')
    assert [s["metric"]["account"] for s in balance] == ["bob"]
    assert balance[0]["metric"]["asset"] == "USD" and balance[0]["metric"]["scale"] == "6"
    assert float(balance[0]["value"][1]) == books.alice_balance
    assert server.value('ilp_host_outbox_depth{job="alice"}') == 0
    assert server.value('sum(ilp_host_adaptor_up{job="alice"})') == 1
    assert server.value('ilp_host_engine_connected{job="bob"}') == 1
    assert server.value('ilp_host_connector_link_connected{job="bob"}') == 1
    assert server.value('ilp_host_peer_link_state{job="alice",account="bob",state="ready"}') == 1
    assert server.value('ilp_host_clearing_unresolved_packets{job="alice",account="bob"}') == 0
    assert server.value("sum(ilp_host_clearing_outcome_unsupported_packets)") == 0
    assert server.value('ilp_host_send_money_seconds_count{job="alice"}') >= completed
    # The names: ilp-connector's and ours, all there.
    names = set(server.api("/api/v1/label/__name__/values"))
    assert names >= ILP_CONNECTOR_NAMES, ILP_CONNECTOR_NAMES - names
    assert names >= HOST_NAMES, HOST_NAMES - names
    assert not {n for n in names if n.startswith("ilp_connector_") and n.endswith("_total")}
    # The dashboard's queries parse and evaluate.
    queries = _dashboard_queries()
    assert len(queries) >= 10
    for query in queries:
        server.query(query)


def _check_json_log(log: Path) -> None:
    lines = log.read_text().splitlines()
    assert lines
    records = [json.loads(line) for line in lines]
    assert all({"@timestamp", "@level", "@message", "logger"} <= set(r) for r in records)
    adaptor = [r for r in records if r.get("adaptor") == "simledger"]
    # The adaptor's own structured fields are kept, its hclog @module among them.
    assert [r for r in adaptor if "@module" in r], adaptor[:3]
    changes = [r for r in records if r["logger"] == "host.engine.settlements"]
    assert changes and all(r["settlement_id"] and r["account"] == "alice" for r in changes)
    jq = shutil.which("jq")
    assert jq is not None, "no jq: `make setup` installs it"
    parsed = subprocess.run(
        [jq, "-c", "select(.settlement_id != null) | .settlement_id", str(log)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert len(parsed.stdout.splitlines()) == len(changes)
