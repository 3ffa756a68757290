"""The metrics' parts on their own: the config's rules, the exposition's names, the recorders'
counting (over a real engine and SQLite store), the listener's TLS and token, JSON logs."""

from __future__ import annotations

import asyncio
import functools
import io
import json
import logging
import re
import ssl
import urllib.error
import urllib.request
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from host.config import ConfigError, for_role, load_config
from host.engine import Policy
from host.ilp import Fulfill, Reject
from host.logformat import JsonFormatter
from host.metrics import HostMetrics, MetricsServer, MetricsTls
from host.supervisor import logs
from sdk.mtls import generate_certificate
from tests.engine.engine_fakes import FakeClock, FakeLedger, add_account, open_engine

BASE = Path("/srv/ilp")


def sync(test: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """Run an async test in its own event loop (the suite has no asyncio plugin)."""

    @functools.wraps(test)
    def run(*args: Any, **kwargs: Any) -> None:
        asyncio.run(test(*args, **kwargs))

    return run


ACCOUNTS = """
[[adaptor]]
name = "sim"
command = ["python", "adaptor.py"]

[[account]]
id = "bob"
adaptor = "sim"
asset_code = "USD"
asset_scale = 6
settle_threshold = -1000
min_balance = -5000
"""


def _config(metrics: str) -> str:
    return metrics + ACCOUNTS


# -- config ---------------------------------------------------------------------------------


def test_metrics_are_off_unless_configured() -> None:
    config = load_config(ACCOUNTS, BASE)
    assert config.metrics.listen is None


def test_loopback_listen_and_the_engine_on_the_next_port() -> None:
    config = load_config(_config('[metrics]\nlisten = "127.0.0.1:9464"\n'), BASE)
    assert config.metrics.listen == ("127.0.0.1", 9464)
    assert for_role(config, "engine").metrics.listen == ("127.0.0.1", 9465)


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('listen = "0.0.0.0:9464"', r"metrics\.listen: 0\.0\.0\.0 is not a loopback address"),
        (
            'listen = "127.0.0.1:9464"\nengine_listen = "10.0.0.1:9465"',
            r"metrics\.engine_listen: 10\.0\.0\.1 is not a loopback",
        ),
        ('listen = "0.0.0.0:9464"\ntls_cert = "c.pem"', r"metrics\.tls_key: required"),
        ('token_file = "t"', r"metrics\.token_file: only applies with metrics\.listen"),
        ('listen = "127.0.0.1"', r"metrics\.listen: must be \"HOST:PORT\""),
        ("port = 9464", r"metrics\.port: unknown key"),
    ],
)
def test_refused_metrics_tables_name_the_key(table: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(_config(f"[metrics]\n{table}\n"), BASE)


def test_any_address_with_tls_and_a_token() -> None:
    table = '[metrics]\nlisten = "0.0.0.0:9464"\ntls_cert = "c.pem"\ntls_key = "k.pem"\n'
    config = load_config(_config(table + 'token_file = "t"\n'), BASE)
    assert config.metrics.token_file == BASE / "t"


# -- exposition and recorders ----------------------------------------------------------------


def _families(text: bytes) -> dict[str, list[tuple[str, dict[str, str], float]]]:
    found: dict[str, list[tuple[str, dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text.decode()):
        for sample in family.samples:
            found.setdefault(sample.name, []).append((family.type, sample.labels, sample.value))
    return found


def _metrics() -> HostMetrics:
    return HostMetrics(load_config(ACCOUNTS, BASE).accounts)


@sync
async def test_packets_under_ilp_connectors_names_and_labels() -> None:
    metrics = _metrics()
    metrics.export_packets()
    recorder = metrics.packets
    recorder.incoming("bob", 500, Fulfill(b"\0" * 32), 0.002)
    recorder.incoming("bob", 700, Reject("T04", "test.us"), 0.001)
    recorder.outgoing("bob", 300, None)
    recorder.settlement_message("bob", "outgoing", True)
    text = await metrics.scrape()
    # The exposition names the counters as prom-client does: no _total, no *_created series.
    lines = text.decode().splitlines()
    assert [line for line in lines if line.startswith("ilp_connector_incoming_ilp_packets{")]
    assert "# TYPE ilp_connector_incoming_ilp_packets counter" in lines
    assert not [line for line in lines if line.startswith("ilp_connector_") and "_total" in line]
    assert not [line for line in lines if "_created" in line]
    # (Prometheus' Python parser puts the _total back on: it follows OpenMetrics.)
    found = _families(text)
    incoming = {
        (labels["result"], labels["code"]): value
        for _type, labels, value in found["ilp_connector_incoming_ilp_packets_total"]
    }
    assert incoming == {("fulfilled", ""): 1, ("rejected", "T04"): 1}
    (_type, labels, _value), *_ = found["ilp_connector_incoming_ilp_packets_total"]
    assert {k: labels[k] for k in ("account", "asset", "scale")} == {
        "account": "bob",
        "asset": "USD",
        "scale": "6",
    }
    values = {
        labels["result"]: value
        for _type, labels, value in found["ilp_connector_incoming_ilp_packet_value_total"]
    }
    assert values == {"fulfilled": 500, "rejected": 700}
    outgoing = {
        labels["result"]: value
        for _type, labels, value in found["ilp_connector_outgoing_ilp_packets_total"]
    }
    assert outgoing == {"fulfilled": 0, "failed": 1}
    assert found["ilp_host_packet_forward_seconds_count"][0][2] == 2
    assert found["ilp_host_settlement_messages_total"][0][2] == 1


@sync
async def test_settlements_counted_over_a_real_engine(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ledger = FakeLedger()
    clock = FakeClock()
    store, engine = await open_engine(tmp_path / "e.db", {"sim": ledger}, clock)
    try:
        metrics = _metrics()
        metrics.attach(engine=engine, store=store)
        await add_account(engine, "bob", policy=Policy(-1000, 0, -5000, 5000))
        ledger.script.extend(["transient", "ok"])
        with caplog.at_level(logging.INFO, logger="host.engine.settlements"):
            await engine.apply_balance_change("bob", -1500, "k1")
            await engine.apply_balance_change("bob", -1500, "k1")  # replayed
            found = _families(await metrics.scrape())
            assert found["ilp_host_outbox_depth"][0][2] == 1
            await engine.outbox.run_once()  # transient: retried
            clock.advance(120)
            await engine.outbox.run_once()  # paid
            await engine.receive_settlement("ledger-tx-1", "bob", 300)
        found = _families(await metrics.scrape())
    finally:
        await store.close()

    def counter(name: str) -> float:
        return sum(v for _t, labels, v in found[f"ilp_host_settlements_{name}_total"])

    assert {n: counter(n) for n in ("requested", "sent", "completed", "retried", "credited")} == {
        "requested": 1,
        "sent": 1,
        "completed": 2,  # the outgoing one paid, the incoming one acknowledged
        "retried": 1,
        "credited": 1,
    }
    assert counter("failed") == 0
    assert found["ilp_host_send_money_seconds_count"][0][2] == 2
    assert found["ilp_host_settlement_seconds_count"][0][2] == 1
    assert found["ilp_host_settlement_seconds_sum"][0][2] == 120  # the clock moved 120 s
    assert found["ilp_host_outbox_depth"][0][2] == 0
    replays = {labels["scope"]: v for _t, labels, v in found["ilp_host_idempotent_replays_total"]}
    assert replays == {"balance": 1, "settle": 0}
    # Settled down to 0, then the peer's payment of 300 lowered what it owes us (scale 2).
    assert found["ilp_host_clearing_balance"][0][2] == -3.0
    changes = [r for r in caplog.records if r.name == "host.engine.settlements"]
    assert [(r.previous_state, r.state) for r in changes] == [  # type: ignore[attr-defined]
        ("new", "pending"),
        ("pending", "completed"),
        ("new", "credited"),
        ("credited", "completed"),
    ]
    assert all(r.settlement_id and r.account == "bob" for r in changes)  # type: ignore[attr-defined]


# -- the listener ------------------------------------------------------------------------------


async def _get(url: str, context: ssl.SSLContext | None, token: str | None) -> tuple[int, str]:
    def call() -> tuple[int, str]:
        request = urllib.request.Request(url)
        if token is not None:
            request.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(request, timeout=10, context=context) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    return await asyncio.to_thread(call)


@sync
async def test_plain_http_on_loopback() -> None:
    metrics = _metrics()
    server = MetricsServer(metrics.scrape, "127.0.0.1", 0)
    await server.start()
    try:
        status, body = await _get(server.url, None, None)
    finally:
        await server.stop()
    assert status == 200 and "ilp_host_settlements_requested_total" in body


@sync
async def test_tls_listener_wants_the_token(tmp_path: Path) -> None:
    certificate = generate_certificate()
    (tmp_path / "cert.pem").write_bytes(certificate.cert_pem)
    (tmp_path / "key.pem").write_bytes(certificate.key_pem)
    tls = MetricsTls(tmp_path / "cert.pem", tmp_path / "key.pem", "s3cret-token")
    server = MetricsServer(_metrics().scrape, "127.0.0.1", 0, tls)
    await server.start()
    context = ssl.create_default_context(cadata=certificate.cert_pem.decode())
    context.check_hostname = False
    try:
        assert server.url.startswith("https://")
        assert (await _get(server.url, context, None))[0] == 401
        assert (await _get(server.url, context, "wrong"))[0] == 401
        status, body = await _get(server.url, context, "s3cret-token")
    finally:
        await server.stop()
    assert status == 200 and "# TYPE ilp_host_settlements_requested_total counter" in body


# -- JSON logs ---------------------------------------------------------------------------------


def test_json_lines_keep_the_adaptors_fields() -> None:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("ilp_host.adaptor.test-json")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        line = '{"@level":"warn","@message":"paid","@module":"simledger","account":"bob","n":2}'
        logs.emit(logger, "sim", "stderr", logs.LineParser().parse(line))
        logger.info("plain %s", "text", extra={"settlement_id": "s1"})
        try:
            raise ValueError("boom")
        except ValueError:
            logger.exception("failed")
    finally:
        logger.removeHandler(handler)
    first, second, third = (json.loads(text) for text in out.getvalue().splitlines())
    assert first["@message"] == "paid" and first["@level"] == "warn"
    assert (first["@module"], first["account"], first["n"]) == ("simledger", "bob", 2)
    assert (first["adaptor"], first["stream"]) == ("sim", "stderr")
    assert second["@message"] == "plain text" and second["settlement_id"] == "s1"
    assert "ValueError: boom" in third["exception"]


# -- the documented names ------------------------------------------------------------------------


def test_docs_list_every_metric_and_nothing_else() -> None:
    text = (Path(__file__).resolve().parents[2] / "docs" / "observability.md").read_text()
    documented = {
        name.removesuffix("_total")
        for name in re.findall(r"^\| `((?:ilp_connector|ilp_host)_\w+)` \|", text, re.MULTILINE)
    }
    metrics = _metrics()
    metrics.export_packets()
    exposition = asyncio.run(metrics.scrape()).decode()
    exported = {family.name for family in text_string_to_metric_families(exposition)}
    assert documented == exported
