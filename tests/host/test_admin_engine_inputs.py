"""Bad input through the admin API, and an adaptor that answers nonsense, against real hosts.

Each host is an ``ilp-host run`` subprocess with one account "bob" and no connector:

- with the memory adaptor, which reports an incoming 5.00 from bob at start, so that we owe
  bob 5.000000 and Settle has something to pay. Every malformed, impossible or conflicting
  request must get its own gRPC status with a message, and leave the books exactly as they
  were (accounts and settlements identical before and after);
- with tests/fixtures/adaptors/nonsense.py, which reports malformed incoming settlements and
  answers SendMoney without a settlement id. The host must keep running, credit nothing
  malformed, and say so in its log.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import grpc
import pytest

from host.demo.twohost import stop_process, wait_until_listening
from host.pb.ilphost.admin.v1 import admin_pb2, admin_pb2_grpc
from sdk.pb.ilphost.types.v1 import types_pb2
from tests.polling import wait_until

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
MEMORY_ADAPTOR = REPO / "adaptors" / "memory-python" / "adaptor.py"
NONSENSE_ADAPTOR = REPO / "tests" / "fixtures" / "adaptors" / "nonsense.py"
DEADLINE = 60.0
SCALE = 6  # the account's scale; both adaptors' ledgers count at scale 2
OWED_AT_START = 5_000_000  # the memory adaptor's incoming 5.00 from bob
COMPLETED = admin_pb2.SETTLEMENT_STATE_COMPLETED
OUTGOING = admin_pb2.SETTLEMENT_DIRECTION_OUTGOING
INCOMING = admin_pb2.SETTLEMENT_DIRECTION_INCOMING
Code = grpc.StatusCode
_T = TypeVar("_T")


def _given(value: object) -> bool:
    return value is not None


@dataclass
class RunningHost:
    """An ``ilp-host run`` subprocess and a client of its admin API."""

    directory: Path
    process: subprocess.Popen[bytes]
    channel: grpc.Channel
    admin: admin_pb2_grpc.HostAdminStub

    def log(self) -> str:
        return (self.directory / "host.log").read_text(errors="replace")

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    def wait_for(self, what: str, check: Callable[[], _T | None]) -> _T:
        """Poll ``check`` until it returns a value; gRPC errors count as "not yet". Fails at
        once if the host exits, and at the deadline with the end of its log."""

        def live_check() -> _T | None:
            assert self.process.poll() is None, (
                f"the host exited ({self.process.returncode}) waiting for {what}:\n"
                f"{self.log_tail()}"
            )
            return check()

        try:
            return wait_until(
                live_check, what, timeout=DEADLINE, done=_given, ignore=(grpc.RpcError,)
            )
        except AssertionError as failed:
            raise AssertionError(f"{failed}:\n{self.log_tail()}") from None

    def account(self) -> admin_pb2.Account:
        request = admin_pb2.GetAccountRequest(account_id="bob")
        return self.admin.GetAccount(request, timeout=10).account

    def balance(self) -> int:
        return int(self.account().clearing_balance.value)

    def settlements(self) -> list[admin_pb2.Settlement]:
        request = admin_pb2.ListSettlementsRequest(limit=10_000)
        return list(self.admin.ListSettlements(request, timeout=10).settlements)

    def books(self) -> tuple[admin_pb2.ListAccountsResponse, admin_pb2.ListSettlementsResponse]:
        """Every account and settlement as the admin API shows them, once all are final.

        The adaptor's liquidity is left out: the host polls it on its own schedule.
        """
        self.wait_for(
            "every settlement to be final",
            lambda: True if all(s.state == COMPLETED for s in self.settlements()) else None,
        )
        accounts = self.admin.ListAccounts(admin_pb2.ListAccountsRequest(), timeout=10)
        for account in accounts.accounts:
            account.ClearField("settlement_liquidity")
        request = admin_pb2.ListSettlementsRequest(limit=10_000)
        return accounts, self.admin.ListSettlements(request, timeout=10)


_CONFIG = """\
[host]
state_dir = {state_dir}

[[adaptor]]
name = "{adaptor}"
command = {command}
env = {{ {env} }}

[[account]]
id = "bob"
adaptor = "{adaptor}"
asset_code = "USD"
asset_scale = {scale}
settle_threshold = -1000000000
settle_to = 0
min_balance = -1000000000
max_balance = 1000000000
"""


@contextlib.contextmanager
def running_host(
    adaptor: str, script: Path, env: dict[str, str], directory: Path | None = None
) -> Iterator[RunningHost]:
    """``ilp-host run`` with one adaptor and the account bob, in ``directory`` (default: a new
    temporary one); SIGTERM on exit, then the directory is removed."""
    if directory is None:
        directory = Path(tempfile.mkdtemp(prefix="ilpin"))  # short: unix socket paths
    state_dir = directory / "state"
    config = directory / "host.toml"
    config.write_text(
        _CONFIG.format(
            state_dir=json.dumps(str(state_dir)),  # a JSON string is a TOML basic string
            adaptor=adaptor,
            command=json.dumps([sys.executable, str(script)]),
            env=", ".join(f"{key} = {json.dumps(value)}" for key, value in env.items()),
            scale=SCALE,
        )
    )
    with (directory / "host.log").open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "host.cli", "run", "-c", str(config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=directory,
        )
    wait_until_listening(state_dir / "admin.sock", process)
    channel = grpc.insecure_channel(f"unix:{state_dir / 'admin.sock'}")
    try:
        yield RunningHost(directory, process, channel, admin_pb2_grpc.HostAdminStub(channel))
    finally:
        channel.close()
        stop_process(process)
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="module")
def memory_host() -> Iterator[RunningHost]:
    env = {"ILP_ADAPTOR_ASSET_SCALE": "2", "ILP_ADAPTOR_INCOMING": "bob:500"}
    with running_host("memory", MEMORY_ADAPTOR, env) as host:
        host.wait_for(
            "the incoming 5.00 from bob to be credited and acknowledged",
            lambda: (
                True
                if host.balance() == -OWED_AT_START
                and [s.state for s in host.settlements()] == [COMPLETED]
                else None
            ),
        )
        yield host


def amount(value: str, scale: int = SCALE) -> types_pb2.Amount:
    return types_pb2.Amount(value=value, scale=scale)


def settle(value: str, scale: int = SCALE, **fields: str) -> admin_pb2.SettleRequest:
    request = admin_pb2.SettleRequest(account_id="bob", amount=amount(value, scale))
    for name, field_value in fields.items():
        setattr(request, name, field_value)
    return request


def refused(call: Callable[[], object]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value


# (request, or how to make it from what we owe now; status; a fragment of the message)
BAD_SETTLES: dict[str, tuple[Callable[[int], admin_pb2.SettleRequest], Code, str]] = {
    "negative": (lambda owed: settle("-5"), Code.INVALID_ARGUMENT, "must not be negative"),
    "fractional": (lambda owed: settle("1.5"), Code.INVALID_ARGUMENT, "base-10 integer"),
    "exponent": (lambda owed: settle("1e6"), Code.INVALID_ARGUMENT, "base-10 integer"),
    "leading zeros": (lambda owed: settle("0100"), Code.INVALID_ARGUMENT, "leading zeros"),
    "empty": (lambda owed: settle(""), Code.INVALID_ARGUMENT, "empty"),
    "zero": (lambda owed: settle("0"), Code.INVALID_ARGUMENT, "positive"),
    "79 digits": (lambda owed: settle("1" * 79), Code.INVALID_ARGUMENT, "79 digits"),
    "78 nines, more than owed": (
        lambda owed: settle("9" * 78),
        Code.FAILED_PRECONDITION,
        "more than what we owe",
    ),
    "one unit more than owed": (
        lambda owed: settle(str(owed + 1)),
        Code.FAILED_PRECONDITION,
        "more than what we owe",
    ),
    "below one ledger unit": (
        lambda owed: settle("1"),
        Code.FAILED_PRECONDITION,
        "less than one unit",
    ),
    "the ledger's scale, not the account's": (
        lambda owed: settle("100", scale=2),
        Code.INVALID_ARGUMENT,
        "scale",
    ),
    "scale beyond any": (lambda owed: settle("100", scale=256), Code.INVALID_ARGUMENT, "scale"),
    "unknown account": (
        lambda owed: settle("10000", account_id="nobody"),
        Code.NOT_FOUND,
        "nobody does not exist",
    ),
    "malformed account": (
        lambda owed: settle("10000", account_id="bob/../x"),
        Code.INVALID_ARGUMENT,
        "account id",
    ),
    "over-long idempotency key": (
        lambda owed: settle("10000", idempotency_key="k" * 129),
        Code.INVALID_ARGUMENT,
        "idempotency key",
    ),
    "control character in the key": (
        lambda owed: settle("10000", idempotency_key="key\twith tab"),
        Code.INVALID_ARGUMENT,
        "idempotency key",
    ),
}


@pytest.mark.parametrize("case", list(BAD_SETTLES))
def test_bad_settle_gets_its_status_and_changes_nothing(
    memory_host: RunningHost, case: str
) -> None:
    make, code, fragment = BAD_SETTLES[case]
    before = memory_host.books()
    request = make(-memory_host.balance())
    error = refused(lambda: memory_host.admin.Settle(request, timeout=10))
    assert (error.code(), fragment in (error.details() or "")) == (code, True), (
        f"{case}: {error.code().name}: {error.details()}"
    )
    assert memory_host.books() == before, f"{case} changed the books"
    assert memory_host.process.poll() is None


def test_reused_idempotency_key_with_other_content_is_already_exists(
    memory_host: RunningHost,
) -> None:
    first = memory_host.admin.Settle(settle("10000", idempotency_key="reuse-1"), timeout=10)
    again = memory_host.admin.Settle(settle("10000", idempotency_key="reuse-1"), timeout=10)
    assert again.settlement.id == first.settlement.id  # replayed, not debited twice
    before = memory_host.books()
    for request in (
        settle("20000", idempotency_key="reuse-1"),
        admin_pb2.SettleRequest(account_id="bob", idempotency_key="reuse-1"),  # "all owed"
    ):
        error = refused(lambda request=request: memory_host.admin.Settle(request, timeout=10))
        assert error.code() == Code.ALREADY_EXISTS, error.details()
        assert "reuse-1" in (error.details() or "")
    assert memory_host.books() == before
    outgoing = [s for s in before[1].settlements if s.direction == OUTGOING]
    assert [s.id for s in outgoing].count(first.settlement.id) == 1


@pytest.mark.parametrize("settlement_id", ["no-such-settlement", "", "x" * 10_000])
def test_retry_of_an_unknown_settlement_is_not_found(
    memory_host: RunningHost, settlement_id: str
) -> None:
    before = memory_host.books()
    request = admin_pb2.RetrySettlementRequest(settlement_id=settlement_id)
    error = refused(lambda: memory_host.admin.RetrySettlement(request, timeout=10))
    assert error.code() == Code.NOT_FOUND, error.details()
    assert "does not exist" in (error.details() or "")
    assert len(error.details() or "") < 300  # the id is quoted shortened, not echoed whole
    assert memory_host.books() == before


def test_retry_of_a_completed_settlement_changes_nothing(memory_host: RunningHost) -> None:
    paid = memory_host.admin.Settle(settle("10000"), timeout=10).settlement
    before = memory_host.books()
    request = admin_pb2.RetrySettlementRequest(settlement_id=paid.id)
    reply = memory_host.admin.RetrySettlement(request, timeout=10)
    assert reply.settlement.state == COMPLETED
    assert memory_host.books() == before


# -- an adaptor that answers nonsense --------------------------------------------------------

#: What the nonsense adaptor reports, in this order, on every event stream until acknowledged:
#: [settlement id, account, value, scale]. Only "good-1" is a valid settlement; "ghost-1" names
#: an account this host does not have, which makes the host reopen the stream (so that an
#: account created late still gets its settlement): it comes last, or it would hide the rest.
NONSENSE_INCOMING = [
    ["neg-1", "bob", "-1", 2],
    ["frac-1", "bob", "1.5", 2],
    ["long-1", "bob", "1" * 79, 2],
    ["zero-1", "bob", "0", 2],
    ["", "bob", "100", 2],
    ["bad id", "bob", "100", 2],
    ["good-1", "bob", "100", 2],
    ["ghost-1", "nobody", "100", 2],
]
#: What the host logs for each malformed one (AmountError / InvalidArgument messages).
NONSENSE_LOGGED = [
    "amount.value must not be negative, got '-1'",
    "amount.value must be a base-10 integer without sign or leading zeros, got '1.5'",
    "amount.value has 79 digits, at most 78 allowed",
    "amount must be greater than zero, got 0",
    "settlement id '' is invalid",
    "settlement id 'bad id' is invalid",
    "account nobody does not exist",
]


@pytest.fixture(scope="module")
def nonsense_host() -> Iterator[RunningHost]:
    directory = Path(tempfile.mkdtemp(prefix="ilpin"))
    env = {
        "FIXTURE_INCOMING": json.dumps(NONSENSE_INCOMING),
        "FIXTURE_MARKER": str(directory / "marker"),
    }
    with running_host("nonsense", NONSENSE_ADAPTOR, env, directory) as host:
        yield host


def marks(host: RunningHost) -> list[str]:
    """What the nonsense adaptor recorded (see its docstring)."""
    path = host.directory / "marker"
    return path.read_text().splitlines() if path.exists() else []


def test_malformed_incoming_settlements_are_logged_and_never_credited(
    nonsense_host: RunningHost,
) -> None:
    host = nonsense_host
    # The credit of "ghost-1" (an account the host does not have) is retried, the good one
    # before it was handled.
    retried = "incoming settlement ghost-1 not credited yet (account nobody does not exist)"
    host.wait_for(
        "good-1 acknowledged and ghost-1 retried",
        lambda: True if "ack good-1" in marks(host) and host.log().count(retried) >= 2 else None,
    )
    (credited,) = host.settlements()
    assert (credited.id, credited.direction, credited.state) == (
        "in:nonsense:good-1",
        INCOMING,
        COMPLETED,
    )
    assert int(credited.amount.value) == 1_000_000  # 1.00 at the account's scale, once
    assert host.balance() == -1_000_000
    assert [m for m in marks(host) if m.startswith("ack ")] == ["ack good-1"]
    log = host.log()
    missing = [text for text in NONSENSE_LOGGED if text not in log]
    assert not missing, f"not in the host's log: {missing}\n{host.log_tail()}"
    # Malformed reports are refused with one line each; the unknown account, whose credit is
    # retried (with backoff), too: no traceback.
    assert "Traceback" not in log
    assert host.process.poll() is None


def test_send_money_without_a_settlement_id_completes_once(nonsense_host: RunningHost) -> None:
    """The adaptor says COMPLETED but gives no ledger id: the host records the payment as
    completed (refusing it would only make the engine pay again under the same key) with an
    empty ledger id, and debits it once."""
    host = nonsense_host
    host.wait_for("good-1 credited", lambda: True if host.balance() == -1_000_000 else None)
    paid = host.admin.Settle(settle("100000", idempotency_key="no-id-1"), timeout=10).settlement
    row = host.wait_for(
        "the settlement to be final",
        lambda: next(
            (s for s in host.settlements() if s.id == paid.id and s.state == COMPLETED), None
        ),
    )
    assert row.ledger_settlement_id == ""
    assert row.attempts == 1
    assert host.balance() == -1_000_000 + 100_000
    assert [m for m in marks(host) if m.startswith("send ")] == [f"send {paid.id}"]
    assert host.process.poll() is None


def test_incoming_settlement_at_another_scale_than_the_ledgers_is_not_taken_at_face_value() -> None:
    """An adaptor of a scale-2 ledger reports 100 at scale 5 (0.00100 USD), then 1 cent."""
    incoming = [["odd-scale-1", "bob", "100", 5], ["good-2", "bob", "1", 2]]
    env = {"FIXTURE_INCOMING": json.dumps(incoming)}
    with running_host("nonsense", NONSENSE_ADAPTOR, env) as host:
        host.wait_for(
            "good-2 credited",
            lambda: next((s for s in host.settlements() if s.id == "in:nonsense:good-2"), None),
        )
        # Refused: only the good cent is credited, never 100 cents (1_000_000 micro-dollars).
        assert host.balance() + 10_000 == 0, (
            f"balance {host.balance()}: {[(s.id, s.amount.value) for s in host.settlements()]}"
        )


def test_settlements_of_an_unknown_account_are_not_found_like_the_account(
    memory_host: RunningHost,
) -> None:
    for call in (
        lambda: memory_host.admin.GetAccount(
            admin_pb2.GetAccountRequest(account_id="nobody"), timeout=10
        ),
        lambda: memory_host.admin.ListSettlements(
            admin_pb2.ListSettlementsRequest(account_id="nobody"), timeout=10
        ),
    ):
        error = refused(call)
        assert error.code() == Code.NOT_FOUND, error.details()
        assert "nobody does not exist" in (error.details() or "")
    malformed = admin_pb2.ListSettlementsRequest(account_id="bob/../x")
    error = refused(lambda: memory_host.admin.ListSettlements(malformed, timeout=10))
    assert error.code() == Code.INVALID_ARGUMENT
