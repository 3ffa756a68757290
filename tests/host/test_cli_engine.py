"""`ilp-host accounts`, `settlements`, `settle`, `retry`, `peers`, `send` and `status`'s peers.

The renderers of host.status are checked on hand-made messages; the commands run for real
against an `ilp-host run` subprocess with the memory adaptor and one account "bob". That host
has no connector, so `peers` and `send` meet FAILED_PRECONDITION; a second host without any
account has no engine, so `accounts` meets UNIMPLEMENTED. The memory adaptor reports an incoming
settlement of 5.00 from bob at start, so bob's balance becomes -5.000000 (we owe bob) and
`settle` has something to pay.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

import pytest

from host.cli import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, main
from host.pb.ilphost.admin.v1 import admin_pb2
from host.status import (
    format_amount,
    render_accounts,
    render_connector_link,
    render_peers,
    render_settlements,
    send_progress_line,
    send_summary,
    short_id,
)
from sdk.pb.ilphost.types.v1 import types_pb2
from tests.polling import wait_until

REPO = Path(__file__).resolve().parents[2]
MEMORY_ADAPTOR = REPO / "adaptors" / "memory-python" / "adaptor.py"
DEADLINE = 60.0
#: A ledger at scale 2 that reports an incoming 5.00 from bob at start.
MEMORY_ENV = (
    '{ ILP_ADAPTOR_ASSET_CODE = "USD", ILP_ADAPTOR_ASSET_SCALE = "2", '
    'ILP_ADAPTOR_INCOMING = "bob:500" }'
)
NOW = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)


# -- the renderers (pure) -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "scale", "code", "text"),
    [
        ("-24690", 6, "USD", "-0.024690 USD"),
        ("24690", 6, "", "0.024690"),
        ("0", 6, "", "0.000000"),
        ("123", 2, "EUR", "1.23 EUR"),
        ("5", 0, "XRP", "5 XRP"),
        ("-1000000", 6, "", "-1.000000"),
        ("", 2, "", "-"),
        ("1e5", 2, "", "1e5?"),
    ],
)
def test_format_amount(value: str, scale: int, code: str, text: str) -> None:
    assert format_amount(value, scale, code) == text


def test_short_id_keeps_ledger_ids_whole() -> None:
    assert short_id("0123456789abcdef0123456789abcdef") == "0123456789ab"
    assert short_id("in:memory:memory-in-1") == "in:memory:memory-in-1"


def signed(value: str, scale: int = 6) -> types_pb2.SignedAmount:
    return types_pb2.SignedAmount(value=value, scale=scale)


def unsigned(value: str, scale: int = 6) -> types_pb2.Amount:
    return types_pb2.Amount(value=value, scale=scale)


def test_render_accounts() -> None:
    account = admin_pb2.Account(
        account_id="bob",
        adaptor="simledger",
        asset_code="USD",
        asset_scale=6,
        clearing_balance=signed("-24690"),
        settle_threshold=signed("-100000"),
        settle_to=signed("0"),
        pending_settlement=unsigned("20000"),
        leftover=unsigned("4690"),
    )
    no_liquidity = render_accounts([account]).splitlines()
    assert no_liquidity[0].split()[:4] == ["ACCOUNT", "ADAPTOR", "ASSET", "BALANCE"]
    assert no_liquidity[1].split() == [
        *("bob", "simledger", "USD/6", "-0.024690", "USD", "-0.100000", "0.000000"),
        *("0.020000", "0.004690", "-"),
    ]
    account.settlement_liquidity.CopyFrom(unsigned("99950", 2))
    assert render_accounts([account]).splitlines()[1].endswith("999.50 USD")
    assert render_accounts([]) == "no accounts configured"


def settlement(
    settlement_id: str, state: int, created: datetime, error: str = ""
) -> admin_pb2.Settlement:
    message = admin_pb2.Settlement(
        id=settlement_id,
        account_id="bob",
        direction=admin_pb2.SETTLEMENT_DIRECTION_OUTGOING,
        state=state,
        amount=unsigned("120000"),
        ledger_amount=unsigned("12", 2),
        ledger_settlement_id="ledger-7",
        attempts=2,
        last_error=error,
    )
    message.created.FromDatetime(created)
    return message


def test_render_settlements() -> None:
    hex_id = "ab" * 16
    rows = [
        settlement(
            hex_id, admin_pb2.SETTLEMENT_STATE_FAILED, NOW - timedelta(seconds=75), "no\nfunds"
        ),
        settlement("in:x:1", admin_pb2.SETTLEMENT_STATE_COMPLETED, NOW - timedelta(seconds=3)),
    ]
    lines = render_settlements(rows, NOW).splitlines()
    assert lines[0].split() == [
        *("ID", "ACCOUNT", "DIRECTION", "STATE", "AMOUNT", "LEDGER", "AMOUNT"),
        *("LEDGER", "ID", "ATTEMPTS", "AGE", "LAST", "ERROR"),
    ]
    assert lines[1].split() == [
        *(hex_id[:12], "bob", "outgoing", "FAILED", "0.120000", "0.12", "ledger-7", "2"),
        *("1m15s", "no", "funds"),
    ]
    assert lines[2].split()[-1] == "-"
    assert render_settlements(rows, NOW, wide=True).splitlines()[1].startswith(hex_id)
    assert render_settlements([], NOW) == "no settlements"


def test_render_peers() -> None:
    link = types_pb2.Connection(
        name="peer:bob",
        kind="peer",
        state=types_pb2.CONNECTIVITY_STATE_TRANSIENT_FAILURE,
        attempts=3,
        last_error="connection refused",
    )
    link.since.FromDatetime(NOW - timedelta(seconds=12))
    listing = admin_pb2.ListPeersResponse(
        address="test.alice.b",
        address_source="ildcp:alice",
        peers=[
            admin_pb2.Peer(
                id="bob",
                address="test.bob",
                url="http://b/",
                link=link,
                relation="parent",
                routes=admin_pb2.RouteExchange(send_mode="SYNC", learned_routes=4),
            )
        ],
    )
    listing.peers[0].clearing_balance.value = "-1250"
    listing.peers[0].clearing_balance.scale = 2
    lines = render_peers(listing, NOW).splitlines()
    assert lines[0] == "address test.alice.b (from parent alice by ILDCP)"
    assert lines[1] == "engine in this process"
    assert lines[2].split() == [
        *("PEER", "RELATION", "ADDRESS", "URL", "BALANCE", "LINK", "SINCE", "ROUTES"),
        *("LAST", "ERROR"),
    ]
    assert lines[3].split() == [
        *("bob", "parent", "test.bob", "http://b/", "-12.50", "TRANSIENT_FAILURE", "12s"),
        *("send", "sync,", "learned", "4"),
        *("connection", "refused"),
    ]
    empty = admin_pb2.ListPeersResponse(address="test.alice")
    empty.engine.external = True
    empty.engine.unacknowledged = 7
    empty.engine.last_cursor = 40
    empty.engine.since.FromDatetime(NOW - timedelta(seconds=3))
    assert render_peers(empty, NOW).splitlines()[1:] == [
        "engine external, NOT connected for 3s; 7 balance change(s) not yet acknowledged "
        "(cursor 40)",
        "no peers configured",
    ]


def test_render_connector_link() -> None:
    link = admin_pb2.GetConnectorLinkResponse(
        address="unix:/srv/ilp/connector/connector.sock",
        applied_cursor=41,
        acknowledged_cursor=40,
        effects_pushed=3,
        effects_waiting=1,
    )
    assert render_connector_link(link) == (
        "connector unix:/srv/ilp/connector/connector.sock: NOT connected; applied cursor 41, "
        "acknowledged 40; settlement effects pushed 3, waiting 1"
    )


def test_send_lines() -> None:
    progress = admin_pb2.SendPacketsResponse(
        sent=120, fulfilled=118, rejected=2, rejected_by_code={"T04": 1, "F02": 1}
    )
    assert (
        send_progress_line(progress, 200)
        == "sent 120/200  fulfilled 118  rejected 2 (F02 1, T04 1)"
    )
    summary = admin_pb2.SendPacketsResponse(
        sent=200,
        fulfilled=198,
        rejected=2,
        rejected_by_code={"T04": 2},
        done=True,
        median_latency_ms=1.5,
        p99_latency_ms=12.25,
        last_reject="T04: insufficient liquidity",
    )
    text = send_summary(summary)
    assert "rejected   2 (T04 2)" in text
    assert "median 1.50 ms, p99 12.25 ms" in text
    assert text.splitlines()[-1] == "last reject  T04: insufficient liquidity"


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (
        ["send", "test.bob", "--amount", "-1", "--count", "1"],
        ["send", "test.bob", "--amount", "1"],
        ["send", "test.bob", "--amount", str(2**64), "--count", "1"],
        ["settlements", "--limit", "many"],
        ["settle"],
        ["retry"],
    ):
        with pytest.raises(SystemExit) as exited:
            main(argv)
        assert exited.value.code == EXIT_USAGE, argv
    assert "must be 0..18446744073709551615" in capsys.readouterr().err


def test_send_help_says_what_it_is_not(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["send", "--help"])
    assert "not a payment protocol" in " ".join(capsys.readouterr().out.split())


# -- against a running host -----------------------------------------------------------------

needs_adaptor = pytest.mark.skipif(
    not MEMORY_ADAPTOR.exists(), reason="the memory adaptor is not written yet"
)

BOB = """
[[account]]
id = "bob"
adaptor = "memory"
asset_code = "USD"
asset_scale = 6
settle_threshold = -100000000
settle_to = 0
min_balance = -100000000
max_balance = 1000000
"""


def ilp_host(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the CLI to completion in a subprocess."""
    return subprocess.run(
        [sys.executable, "-m", "host.cli", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=DEADLINE,
        check=False,
    )


class Host:
    """An `ilp-host run` subprocess with the memory adaptor and ``accounts`` in its config."""

    def __init__(self, accounts: str) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="ilp"))
        self.config = self.dir / "host.toml"
        command = json.dumps(["python", str(MEMORY_ADAPTOR)])
        self.config.write_text(
            f"""
[host]
state_dir = "state"
[[adaptor]]
name = "memory"
command = {command}
env = {MEMORY_ENV}
[adaptor.timeouts]
start = 30.0
{accounts}
""",
            encoding="utf-8",
        )
        self.log_path = self.dir / "host.log"
        self._log: IO[bytes] = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "host.cli", "run", "-c", str(self.config)],
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=self._log,
        )

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        """``ilp-host COMMAND -c this-host.toml ARGS...``."""
        if self.process.poll() is not None:
            log = self.log_path.read_text(errors="replace")
            raise AssertionError(f"ilp-host run exited {self.process.returncode}:\n{log}")
        command, *rest = args
        return ilp_host(command, "-c", str(self.config), *rest)

    def json(self, *args: str) -> Any:
        result = self.cli(*args, "--json")
        assert result.returncode == EXIT_OK, result.stderr
        return json.loads(result.stdout)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=DEADLINE)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def host() -> Iterator[Host]:
    """A host whose account bob was credited the memory adaptor's incoming 5.00."""
    running = Host(BOB)
    try:
        wait_until(lambda: running.cli("health").returncode == EXIT_OK, "the host to serve")
        wait_until(lambda: balance(running) == "-5000000", "bob's incoming settlement")
        yield running
    finally:
        running.close()


def balance(host: Host) -> str:
    result = host.cli("accounts", "--json")
    if result.returncode != EXIT_OK:
        return ""
    [bob] = json.loads(result.stdout)["accounts"]
    value: str = bob["clearing_balance"]["value"]
    return value


def settlements(host: Host) -> list[dict[str, Any]]:
    listing: list[dict[str, Any]] = host.json("settlements").get("settlements", [])
    return listing


@pytest.mark.slow
@needs_adaptor
def test_accounts_table(host: Host) -> None:
    result = host.cli("accounts")
    assert result.returncode == EXIT_OK, result.stderr
    header, row = result.stdout.splitlines()
    assert header.split()[:4] == ["ACCOUNT", "ADAPTOR", "ASSET", "BALANCE"]
    cells = row.split()
    assert cells[:5] == ["bob", "memory", "USD/6", "-5.000000", "USD"]
    assert cells[5:7] == ["-100.000000", "0.000000"]
    # The liquidity is the memory ledger's, at its scale 2.
    assert cells[-1] == "USD" and cells[-2].endswith(".00") and len(cells[-2].split(".")[1]) == 2


@pytest.mark.slow
@needs_adaptor
def test_bad_settle_requests_change_nothing(host: Host) -> None:
    before = (host.json("accounts"), settlements(host))
    refusals = {
        ("settle", "bob", "--amount", "-5"): "INVALID_ARGUMENT",
        ("settle", "bob", "--amount", "1.5"): "INVALID_ARGUMENT",
        ("settle", "bob", "--amount", "0"): "INVALID_ARGUMENT",
        # Below one unit of the ledger's scale 2: nothing can be paid.
        ("settle", "bob", "--amount", "5"): "FAILED_PRECONDITION",
        ("settle", "nobody", "--amount", "5"): "NOT_FOUND",
        ("settle", "nobody"): "NOT_FOUND",
        ("retry", "no-such-settlement"): "NOT_FOUND",
    }
    for args, code in refusals.items():
        result = host.cli(*args)
        assert result.returncode == EXIT_FAILURE, (args, result.stdout)
        assert f"{code}: " in result.stderr, (args, result.stderr)
        assert result.stdout == ""
    assert (host.json("accounts"), settlements(host)) == before


@pytest.mark.slow
@needs_adaptor
def test_settle_pays_once_per_key_and_retry_leaves_a_completed_one(host: Host) -> None:
    first = host.cli("settle", "bob", "--amount", "1230000", "--key", "operator-1")
    assert first.returncode == EXIT_OK, first.stderr
    header, row = first.stdout.splitlines()
    assert header.split()[:3] == ["ID", "ACCOUNT", "DIRECTION"]
    settlement_id, *cells = row.split()
    assert cells[:5] == ["bob", "outgoing", cells[2], "1.230000", "1.23"]

    again = host.json("settle", "bob", "--amount", "1230000", "--key", "operator-1")
    assert again["settlement"]["id"] == settlement_id
    reused = host.cli("settle", "bob", "--amount", "1", "--key", "operator-1")
    assert reused.returncode == EXIT_FAILURE and "ALREADY_EXISTS: " in reused.stderr
    # Debited once: the balance came up by 1.23 only.
    assert balance(host) == "-3770000"

    def completed() -> bool:
        rows = {row["id"]: row for row in settlements(host)}
        return rows[settlement_id]["state"] == "SETTLEMENT_STATE_COMPLETED"

    wait_until(completed, "the settlement to complete")
    retried = host.json("retry", settlement_id)["settlement"]
    assert (retried["id"], retried["state"]) == (settlement_id, "SETTLEMENT_STATE_COMPLETED")


@pytest.mark.slow
@needs_adaptor
def test_settlements_table_and_filters(host: Host) -> None:
    wait_until(lambda: len(settlements(host)) >= 1, "the incoming settlement")
    everything = settlements(host)
    result = host.cli("settlements", "--account", "bob", "--wide")
    assert result.returncode == EXIT_OK, result.stderr
    lines = result.stdout.splitlines()
    assert [line.split()[0] for line in lines[1:]] == [row["id"] for row in everything]
    incoming = next(line.split() for line in lines if line.startswith("in:"))
    assert incoming[1:6] == ["bob", "incoming", "COMPLETED", "5.000000", "5.00"]
    assert len(host.json("settlements", "--limit", "1")["settlements"]) == 1
    # An unknown account is NOT_FOUND, as for `accounts`/GetAccount (it was an empty list).
    unknown = host.cli("settlements", "--account", "nobody")
    assert unknown.returncode == EXIT_FAILURE
    assert "NOT_FOUND: account nobody does not exist" in unknown.stderr


@pytest.mark.slow
@needs_adaptor
def test_without_a_connector_peers_and_send_fail(host: Host) -> None:
    for args in (("peers",), ("send", "test.bob", "--amount", "1", "--count", "1")):
        result = host.cli(*args)
        assert result.returncode == EXIT_FAILURE, (args, result.stdout)
        assert "FAILED_PRECONDITION: " in result.stderr and "connector" in result.stderr, args
    # status shows no peer links then, and its JSON has no connector.
    status = host.cli("status")
    assert status.returncode == EXIT_OK, status.stderr
    assert "PEER" not in status.stdout
    assert "connector" not in host.json("status")


@pytest.mark.slow
@needs_adaptor
def test_without_an_engine_accounts_fail() -> None:
    running = Host(accounts="")
    try:
        wait_until(lambda: running.cli("health").returncode == EXIT_OK, "the host to serve")
        for args in (("accounts",), ("settlements",), ("settle", "bob"), ("retry", "x")):
            result = running.cli(*args)
            assert result.returncode == EXIT_FAILURE, (args, result.stdout)
            assert "UNIMPLEMENTED: " in result.stderr, (args, result.stderr)
    finally:
        running.close()


CONNECTOR = """
[connector]
address = "test.alice"
port = 0
[[peer]]
id = "bob"
# Nothing listens on the discard port: packets for bob are rejected.
url = "http://127.0.0.1:9/"
address = "test.bob"
incoming_token = "token-from-bob"
outgoing_token = "token-to-bob"
"""


@pytest.mark.slow
@needs_adaptor
def test_with_a_connector_peers_status_and_send() -> None:
    running = Host(BOB + CONNECTOR)
    try:
        wait_until(lambda: running.cli("health").returncode == EXIT_OK, "the host to serve")
        wait_until(lambda: balance(running) == "-5000000", "bob's incoming settlement")
        peers = running.cli("peers")
        assert peers.returncode == EXIT_OK, peers.stderr
        lines = peers.stdout.splitlines()
        assert lines[:2] == ["address test.alice (configured)", "engine in this process"]
        # The clearing balance as the connector sees it: the engine's, in this process.
        assert lines[3].split()[:5] == [
            *("bob", "peer", "test.bob", "http://127.0.0.1:9/", "-5.000000"),
        ]
        status = running.cli("status")
        assert status.returncode == EXIT_OK, status.stderr
        assert "\naddress test.alice (configured)\nengine in this process\nPEER " in status.stdout
        routes = running.cli("routes")
        assert routes.returncode == EXIT_OK, routes.stderr
        assert [line.split()[:3] for line in routes.stdout.splitlines()[1:3]] == [
            ["test.alice", "self", "local"],
            ["test.bob", "bob", "local"],
        ]
        assert "epoch" in routes.stdout.splitlines()[-1]
        assert running.json("status")["connector"]["peers"][0]["id"] == "bob"

        # The host's own test receiver fulfills; the unreachable peer makes rejections.
        local = running.cli("send", "test.alice.sink", "--amount", "10", "--count", "20")
        assert local.returncode == EXIT_OK, local.stderr
        assert "fulfilled  20" in local.stdout and "rejected   0" in local.stdout
        remote = running.cli("send", "test.bob", "--amount", "10", "--count", "3")
        assert remote.returncode == EXIT_FAILURE, remote.stdout
        assert "fulfilled  0" in remote.stdout and "rejected   3 (" in remote.stdout
        bad = running.cli("send", "not an address", "--amount", "1", "--count", "1")
        assert bad.returncode == EXIT_FAILURE and "INVALID_ARGUMENT: " in bad.stderr
        # Test packets to the local receiver do not touch bob's account.
        assert balance(running) == "-5000000"
    finally:
        running.close()
