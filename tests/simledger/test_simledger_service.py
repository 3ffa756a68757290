"""The simulated ledger as a real process: every status, idempotency, live streams, each fault
knob, and a book that survives restarts."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest

from host.pb.ilphost.simledger.v1 import simledger_pb2 as pb
from host.pb.ilphost.simledger.v1 import simledger_pb2_grpc
from host.simledger.process import LedgerProcess, LedgerStartError, start_ledger
from sdk.pb.ilphost.types.v1 import types_pb2
from tests.grpc_status import failure

Code = grpc.StatusCode
Stub = simledger_pb2_grpc.SimLedgerStub
Scenario = Callable[[Any], Awaitable[None]]


@pytest.fixture
def socket_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="ilp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def ledger(tmp_path: Path, socket_dir: Path) -> Iterator[LedgerProcess]:
    with start_ledger(tmp_path / "book.db", f"unix:{socket_dir}/ledger.sock") as process:
        yield process


@asynccontextmanager
async def connect(target: str) -> AsyncIterator[Any]:
    async with grpc.aio.insecure_channel(target) as channel:
        yield simledger_pb2_grpc.SimLedgerStub(channel)


def run(target: str, scenario: Scenario) -> None:
    async def main() -> None:
        async with connect(target) as stub:
            await scenario(stub)

    asyncio.run(main())


def usd(value: str, scale: int = 2) -> types_pb2.Amount:
    return types_pb2.Amount(value=value, scale=scale)


async def balance(stub: Any, account_id: str) -> str:
    reply = await stub.GetAccount(pb.GetAccountRequest(account_id=account_id))
    return str(reply.account.balance.value)


async def open_funded(stub: Any, amount: str = "1000") -> None:
    """Accounts alice (funded with ``amount``) and bob (empty)."""
    for account_id in ("alice", "bob"):
        await stub.CreateAccount(pb.CreateAccountRequest(account_id=account_id))
    await stub.Mint(pb.MintRequest(transfer_id="fund", account_id="alice", amount=usd(amount)))


def pay(transfer_id: str, value: str, payee: str = "bob", memo: str = "") -> pb.TransferRequest:
    return pb.TransferRequest(
        transfer_id=transfer_id,
        from_account_id="alice",
        to_account_id=payee,
        amount=usd(value),
        memo=memo,
    )


async def set_faults(stub: Any, **knobs: Any) -> pb.Faults:
    reply = await stub.SetFaults(pb.SetFaultsRequest(faults=pb.Faults(**knobs)))
    return reply.faults


def test_ledger_info_and_accounts(ledger: LedgerProcess) -> None:
    async def scenario(stub: Any) -> None:
        info = await stub.GetLedgerInfo(pb.GetLedgerInfoRequest())
        assert (info.asset_code, info.asset_scale) == ("USD", 2)
        created = await stub.CreateAccount(pb.CreateAccountRequest(account_id="peer:a.b~c-1_2"))
        assert created.account.balance == usd("0")
        await stub.Mint(
            pb.MintRequest(transfer_id="m", account_id="peer:a.b~c-1_2", amount=usd("7"))
        )
        again = await stub.CreateAccount(pb.CreateAccountRequest(account_id="peer:a.b~c-1_2"))
        assert again.account.balance == usd("7")
        for bad in ("", "a" * 129, "a b", "é", "a/b"):
            code, details = await failure(
                stub.CreateAccount(pb.CreateAccountRequest(account_id=bad))
            )
            assert code is Code.INVALID_ARGUMENT
            assert "account_id" in details
        code, details = await failure(stub.GetAccount(pb.GetAccountRequest(account_id="nobody")))
        assert (code, "'nobody'" in details) == (Code.NOT_FOUND, True)

    run(ledger.target, scenario)


@pytest.mark.parametrize(
    ("request_fields", "field"),
    [
        ({"amount": usd("0")}, "greater than zero"),
        ({"amount": usd("-5")}, "negative"),
        ({"amount": usd("05")}, "leading zeros"),
        ({"amount": usd("1.5")}, "base-10 integer"),
        ({"amount": usd("")}, "empty"),
        ({"amount": usd("1" * 79)}, "79 digits"),
        ({"amount": usd("5", scale=3)}, "ledger's scale 2"),
        ({"amount": None}, "amount.value is empty"),
        ({"transfer_id": ""}, "transfer_id"),
        ({"transfer_id": "x" * 513}, "transfer_id"),
        ({"transfer_id": "tab\there"}, "transfer_id"),
        ({"from_account_id": ""}, "from_account_id"),
        ({"to_account_id": "bad account"}, "to_account_id"),
        ({"to_account_id": "alice"}, "both 'alice'"),
        ({"memo": "m" * 1025}, "memo"),
    ],
)
def test_malformed_transfers_are_refused_and_change_nothing(
    ledger: LedgerProcess, request_fields: dict[str, Any], field: str
) -> None:
    async def scenario(stub: Any) -> None:
        await open_funded(stub)
        request = pay("t1", "5")
        for name, value in request_fields.items():
            if value is None:
                request.ClearField(name)  # type: ignore[arg-type]
            elif isinstance(value, types_pb2.Amount):
                getattr(request, name).CopyFrom(value)
            else:
                setattr(request, name, value)
        code, details = await failure(stub.Transfer(request))
        assert code is Code.INVALID_ARGUMENT
        assert field in details
        assert (await balance(stub, "alice"), await balance(stub, "bob")) == ("1000", "0")

    run(ledger.target, scenario)


def test_mint_validates_like_transfer(ledger: LedgerProcess) -> None:
    async def scenario(stub: Any) -> None:
        await open_funded(stub)
        for request in (
            pb.MintRequest(transfer_id="m", account_id="alice", amount=usd("0")),
            pb.MintRequest(transfer_id="m", account_id="alice", amount=usd("1", scale=0)),
            pb.MintRequest(transfer_id="", account_id="alice", amount=usd("1")),
            pb.MintRequest(transfer_id="m", account_id="", amount=usd("1")),
        ):
            assert (await failure(stub.Mint(request)))[0] is Code.INVALID_ARGUMENT
        unknown = pb.MintRequest(transfer_id="m", account_id="carol", amount=usd("1"))
        assert (await failure(stub.Mint(unknown)))[0] is Code.NOT_FOUND
        assert await balance(stub, "alice") == "1000"

    run(ledger.target, scenario)


def test_refusals_by_the_book(ledger: LedgerProcess) -> None:
    async def scenario(stub: Any) -> None:
        await open_funded(stub)
        code, details = await failure(stub.Transfer(pay("t1", "1001")))
        assert code is Code.FAILED_PRECONDITION
        assert "holds 1000" in details
        assert (await failure(stub.Transfer(pay("t2", "1", payee="carol"))))[0] is Code.NOT_FOUND
        reverse = pb.TransferRequest(
            transfer_id="t3", from_account_id="carol", to_account_id="bob", amount=usd("1")
        )
        assert (await failure(stub.Transfer(reverse)))[0] is Code.NOT_FOUND
        missing = stub.GetTransfer(pb.GetTransferRequest(transfer_id="t1"))
        assert (await failure(missing))[0] is Code.NOT_FOUND
        bad_id = stub.GetTransfer(pb.GetTransferRequest(transfer_id=""))
        assert (await failure(bad_id))[0] is Code.INVALID_ARGUMENT
        assert (await balance(stub, "alice"), await balance(stub, "bob")) == ("1000", "0")

    run(ledger.target, scenario)


def test_transfer_is_idempotent_by_id(ledger: LedgerProcess) -> None:
    async def scenario(stub: Any) -> None:
        await open_funded(stub)
        first = (await stub.Transfer(pay("t1", "300", memo="m"))).transfer
        assert (first.from_account_id, first.to_account_id, first.amount) == (
            "alice",
            "bob",
            usd("300"),
        )
        replay = (await stub.Transfer(pay("t1", "300", memo="m"))).transfer
        assert replay == first
        for other in (pay("t1", "301", memo="m"), pay("t1", "300", memo="x")):
            code, details = await failure(stub.Transfer(other))
            assert code is Code.ALREADY_EXISTS
            assert "'t1'" in details
        mint_reuse = pb.MintRequest(transfer_id="t1", account_id="bob", amount=usd("300"))
        assert (await failure(stub.Mint(mint_reuse)))[0] is Code.ALREADY_EXISTS
        fund_replay = pb.MintRequest(transfer_id="fund", account_id="alice", amount=usd("1000"))
        assert (await stub.Mint(fund_replay)).transfer.sequence == 1
        assert (await balance(stub, "alice"), await balance(stub, "bob")) == ("700", "300")
        got = await stub.GetTransfer(pb.GetTransferRequest(transfer_id="t1"))
        assert got.transfer == first

    run(ledger.target, scenario)


def test_concurrent_transfers_never_overdraw(ledger: LedgerProcess) -> None:
    async def scenario(stub: Any) -> None:
        await open_funded(stub, "100")
        calls = [stub.Transfer(pay(f"t{i}", "10")) for i in range(25)]
        results = await asyncio.gather(*calls, return_exceptions=True)
        refused = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
        assert len(results) - len(refused) == 10
        assert {r.code() for r in refused} == {Code.FAILED_PRECONDITION}
        assert (await balance(stub, "alice"), await balance(stub, "bob")) == ("0", "100")

    run(ledger.target, scenario)


async def next_transfer(stream: Any) -> pb.LedgerTransfer:
    reply = await asyncio.wait_for(stream.read(), timeout=30)
    assert reply is not grpc.aio.EOF
    return reply.transfer


def test_watch_catches_up_then_follows_live(ledger: LedgerProcess) -> None:
    async def scenario(stub: Any) -> None:
        await open_funded(stub)
        await stub.CreateAccount(pb.CreateAccountRequest(account_id="carol"))
        await stub.Transfer(pay("t1", "1"))
        await stub.Transfer(pay("to-carol", "1", payee="carol"))
        await stub.Transfer(pay("t2", "2"))

        stream = stub.WatchTransfers(pb.WatchTransfersRequest(account_id="bob"))
        caught_up = [await next_transfer(stream), await next_transfer(stream)]
        assert [t.transfer_id for t in caught_up] == ["t1", "t2"]
        assert caught_up[0].sequence < caught_up[1].sequence
        await stub.Transfer(pay("to-carol-2", "1", payee="carol"))
        await stub.Mint(pb.MintRequest(transfer_id="gift", account_id="bob", amount=usd("9")))
        live = await next_transfer(stream)
        assert (live.transfer_id, live.from_account_id, live.amount) == ("gift", "", usd("9"))
        stream.cancel()

        resumed = stub.WatchTransfers(
            pb.WatchTransfersRequest(account_id="bob", after_sequence=caught_up[0].sequence)
        )
        assert (await next_transfer(resumed)).transfer_id == "t2"
        assert (await next_transfer(resumed)).transfer_id == "gift"
        resumed.cancel()

        unknown = stub.WatchTransfers(pb.WatchTransfersRequest(account_id="nobody"))
        assert (await failure(unknown.read()))[0] is Code.NOT_FOUND
        malformed = stub.WatchTransfers(pb.WatchTransfersRequest(account_id=""))
        assert (await failure(malformed.read()))[0] is Code.INVALID_ARGUMENT

    run(ledger.target, scenario)


def test_watch_sends_its_headers_before_any_transfer(ledger: LedgerProcess) -> None:
    """A client that waits for the response headers (tonic) sees an idle stream open."""

    async def scenario(stub: Any) -> None:
        await open_funded(stub)
        stream = stub.WatchTransfers(pb.WatchTransfersRequest(account_id="bob"))
        # Nothing was paid to bob: only the headers can end this wait.
        async with asyncio.timeout(30):
            assert await stream.initial_metadata() is not None
        await stub.Transfer(pay("after-headers", "1"))
        assert (await next_transfer(stream)).transfer_id == "after-headers"
        stream.cancel()

    run(ledger.target, scenario)


def test_refused_before_commit_fault(ledger: LedgerProcess) -> None:
    async def scenario(stub: Any) -> None:
        await open_funded(stub)
        await set_faults(stub, error_per_mille=1000)
        code, details = await failure(stub.Transfer(pay("t1", "5")))
        assert (code, "before commit" in details) == (Code.UNAVAILABLE, True)
        minted = pb.MintRequest(transfer_id="m2", account_id="bob", amount=usd("5"))
        assert (await failure(stub.Mint(minted)))[0] is Code.UNAVAILABLE
        # Reads are not subject to the per-mille knobs.
        assert (await balance(stub, "alice"), await balance(stub, "bob")) == ("1000", "0")
        missing = stub.GetTransfer(pb.GetTransferRequest(transfer_id="t1"))
        assert (await failure(missing))[0] is Code.NOT_FOUND
        await set_faults(stub)
        await stub.Transfer(pay("t1", "5"))
        assert await balance(stub, "bob") == "5"

    run(ledger.target, scenario)


def test_lost_reply_fault_commits_once_and_a_retry_returns_the_transfer(
    ledger: LedgerProcess,
) -> None:
    async def scenario(stub: Any) -> None:
        await open_funded(stub)
        watch = stub.WatchTransfers(pb.WatchTransfersRequest(account_id="bob"))
        await set_faults(stub, fail_after_commit_per_mille=1000)
        code, details = await failure(stub.Transfer(pay("t1", "5")))
        assert (code, "reply was lost" in details) == (Code.UNAVAILABLE, True)
        assert (await balance(stub, "alice"), await balance(stub, "bob")) == ("995", "5")
        # The committed transfer is visible to watchers although its payer never heard of it.
        assert (await next_transfer(watch)).transfer_id == "t1"
        watch.cancel()
        # A replay can lose its reply too; still nothing moves twice.
        assert (await failure(stub.Transfer(pay("t1", "5"))))[0] is Code.UNAVAILABLE
        await set_faults(stub)
        retried = (await stub.Transfer(pay("t1", "5"))).transfer
        committed = (await stub.GetTransfer(pb.GetTransferRequest(transfer_id="t1"))).transfer
        assert retried == committed
        assert (await balance(stub, "alice"), await balance(stub, "bob")) == ("995", "5")

    run(ledger.target, scenario)


def test_latency_fault_delays_transfers(ledger: LedgerProcess) -> None:
    async def scenario(stub: Any) -> None:
        await open_funded(stub)
        knobs = await set_faults(stub, latency_ms=400)
        assert knobs == pb.Faults(latency_ms=400)
        started = time.monotonic()
        await stub.Transfer(pay("t1", "5"))
        # A lower bound only: a slow machine makes the call slower, never faster.
        assert time.monotonic() - started >= 0.4
        assert await balance(stub, "bob") == "5"

    run(ledger.target, scenario)


def test_offline_refuses_everything_but_set_faults_and_ends_streams(
    ledger: LedgerProcess,
) -> None:
    async def scenario(stub: Any) -> None:
        await open_funded(stub)
        await stub.Transfer(pay("t1", "1"))
        watch = stub.WatchTransfers(pb.WatchTransfersRequest(account_id="bob"))
        first = await next_transfer(watch)
        await set_faults(stub, offline=True)
        code, details = await failure(asyncio.wait_for(watch.read(), timeout=30))
        assert (code, "offline" in details) == (Code.UNAVAILABLE, True)
        calls = [
            stub.GetLedgerInfo(pb.GetLedgerInfoRequest()),
            stub.CreateAccount(pb.CreateAccountRequest(account_id="carol")),
            stub.GetAccount(pb.GetAccountRequest(account_id="alice")),
            stub.Mint(pb.MintRequest(transfer_id="m", account_id="bob", amount=usd("1"))),
            stub.Transfer(pay("t2", "1")),
            stub.GetTransfer(pb.GetTransferRequest(transfer_id="t1")),
            stub.WatchTransfers(pb.WatchTransfersRequest(account_id="bob")).read(),
        ]
        for call in calls:
            assert (await failure(call))[0] is Code.UNAVAILABLE
        await set_faults(stub, offline=False)
        await stub.Transfer(pay("t2", "2"))
        resumed = stub.WatchTransfers(
            pb.WatchTransfersRequest(account_id="bob", after_sequence=first.sequence)
        )
        assert (await next_transfer(resumed)).transfer_id == "t2"
        resumed.cancel()
        assert (await balance(stub, "alice"), await balance(stub, "bob")) == ("997", "3")

    run(ledger.target, scenario)


def test_set_faults_refuses_out_of_range_knobs_and_keeps_the_old_ones(
    ledger: LedgerProcess,
) -> None:
    async def scenario(stub: Any) -> None:
        bad = pb.SetFaultsRequest(faults=pb.Faults(error_per_mille=1001, offline=True))
        code, details = await failure(stub.SetFaults(bad))
        assert (code, "error_per_mille" in details) == (Code.INVALID_ARGUMENT, True)
        # offline was part of the refused request: the ledger stays online.
        await stub.GetLedgerInfo(pb.GetLedgerInfoRequest())

    run(ledger.target, scenario)


def outcomes_of_twenty_mints(target: str) -> list[str]:
    outcomes: list[str] = []

    async def scenario(stub: Any) -> None:
        await stub.CreateAccount(pb.CreateAccountRequest(account_id="alice"))
        for i in range(20):
            mint = pb.MintRequest(transfer_id=f"m{i}", account_id="alice", amount=usd("1"))
            try:
                await stub.Mint(mint)
                outcomes.append("ok")
            except grpc.aio.AioRpcError as exc:
                assert exc.code() is Code.UNAVAILABLE
                outcomes.append("lost" if "lost" in (exc.details() or "") else "refused")

    run(target, scenario)
    return outcomes


def test_faults_from_flags_are_deterministic_by_seed(tmp_path: Path, socket_dir: Path) -> None:
    flags = ["--seed", "42", "--error-per-mille", "300", "--fail-after-commit-per-mille", "300"]
    runs = []
    for name in ("one", "two"):
        with start_ledger(tmp_path / f"{name}.db", f"unix:{socket_dir}/{name}.sock", flags) as lg:
            runs.append(outcomes_of_twenty_mints(lg.target))
    assert runs[0] == runs[1]
    assert set(runs[0]) == {"ok", "lost", "refused"}


def test_started_offline_by_flag(tmp_path: Path, socket_dir: Path) -> None:
    async def scenario(stub: Any) -> None:
        assert (await failure(stub.GetLedgerInfo(pb.GetLedgerInfoRequest())))[0] is Code.UNAVAILABLE
        assert (await set_faults(stub)).offline is False
        await stub.GetLedgerInfo(pb.GetLedgerInfoRequest())

    with start_ledger(tmp_path / "b.db", f"unix:{socket_dir}/l.sock", ["--offline"]) as lg:
        run(lg.target, scenario)


def test_the_book_survives_stop_and_kill(tmp_path: Path, socket_dir: Path) -> None:
    db, listen = tmp_path / "book.db", f"unix:{socket_dir}/ledger.sock"
    first_transfer: list[pb.LedgerTransfer] = []

    async def before(stub: Any) -> None:
        await open_funded(stub)
        first_transfer.append((await stub.Transfer(pay("t1", "300"))).transfer)

    async def after_stop(stub: Any) -> None:
        info = await stub.GetLedgerInfo(pb.GetLedgerInfoRequest())
        assert (info.asset_code, info.asset_scale) == ("USD", 2)
        assert (await balance(stub, "alice"), await balance(stub, "bob")) == ("700", "300")
        assert (await stub.Transfer(pay("t1", "300"))).transfer == first_transfer[0]
        assert (await stub.Transfer(pay("t2", "1"))).transfer.sequence == 3

    async def after_kill(stub: Any) -> None:
        assert (await balance(stub, "alice"), await balance(stub, "bob")) == ("699", "301")
        watch = stub.WatchTransfers(pb.WatchTransfersRequest(account_id="bob"))
        assert [(await next_transfer(watch)).transfer_id for _ in range(2)] == ["t1", "t2"]
        watch.cancel()

    with start_ledger(db, listen) as lg:
        run(lg.target, before)
        assert lg.stop() == 0
    with start_ledger(db, listen) as lg:
        run(lg.target, after_stop)
        lg.kill()
    with start_ledger(db, listen) as lg:
        run(lg.target, after_kill)


def test_stop_signal_ends_open_streams_and_exits_zero(ledger: LedgerProcess) -> None:
    async def scenario(stub: Any) -> None:
        await open_funded(stub)
        watch = stub.WatchTransfers(pb.WatchTransfersRequest(account_id="bob"))
        await stub.Transfer(pay("t1", "1"))
        await next_transfer(watch)
        exit_status = await asyncio.to_thread(ledger.stop)
        assert exit_status == 0
        assert (await failure(watch.read()))[0] is Code.UNAVAILABLE

    run(ledger.target, scenario)


@pytest.mark.parametrize(
    ("flags", "complaint"),
    [
        (["--asset-code", "EUR"], "exited with status 2"),
        (["--error-per-mille", "2000"], "exited with status 2"),
        (["--asset-scale", "256"], "exited with status 2"),
    ],
)
def test_bad_configuration_exits_2(
    tmp_path: Path,
    socket_dir: Path,
    capfd: pytest.CaptureFixture[str],
    flags: list[str],
    complaint: str,
) -> None:
    db = tmp_path / "book.db"
    with start_ledger(db, f"unix:{socket_dir}/a.sock") as lg:
        lg.stop()
    with pytest.raises(LedgerStartError, match=complaint):
        start_ledger(db, f"unix:{socket_dir}/b.sock", flags)
    assert "simledger:" in capfd.readouterr().err


def test_an_address_it_cannot_listen_on_exits_2(tmp_path: Path) -> None:
    with pytest.raises(LedgerStartError, match="status 2"):
        start_ledger(tmp_path / "book.db", "unix:/nonexistent-dir-for-ilp/x.sock")


def test_watches_get_every_transfer_into_their_account_once_in_order(
    tmp_path: Path, socket_dir: Path
) -> None:
    """Concurrent transfers to two payees, a watch per payee from the start and one opened
    midway (it catches up from the book, then follows new commits from memory); again after
    a restart, whose watch starts from the middle of the book."""
    target = f"unix:{socket_dir}/ledger.sock"

    async def collect(stream: Any, count: int) -> list[int]:
        return [(await next_transfer(stream)).sequence for _ in range(count)]

    async def transfers_to(stub: Any, payee: str, first: int, count: int) -> None:
        for i in range(first, first + count):
            await stub.Transfer(pay(f"{payee}-{i}", "1", payee=payee))

    async def first_run(stub: Any) -> None:
        await open_funded(stub)
        await stub.CreateAccount(pb.CreateAccountRequest(account_id="carol"))
        early = {
            payee: stub.WatchTransfers(pb.WatchTransfersRequest(account_id=payee))
            for payee in ("bob", "carol")
        }
        reading = {payee: asyncio.create_task(collect(s, 40)) for payee, s in early.items()}
        await asyncio.gather(transfers_to(stub, "bob", 0, 20), transfers_to(stub, "carol", 0, 20))
        late = stub.WatchTransfers(pb.WatchTransfersRequest(account_id="bob"))
        late_reading = asyncio.create_task(collect(late, 40))
        await asyncio.gather(transfers_to(stub, "bob", 20, 20), transfers_to(stub, "carol", 20, 20))
        seen = {payee: await task for payee, task in reading.items()}
        assert await late_reading == seen["bob"]
        for stream in (*early.values(), late):
            stream.cancel()
        listed = await stub.ListTransfers(pb.ListTransfersRequest(limit=1000))
        for payee in ("bob", "carol"):
            into = [t.sequence for t in listed.transfers if t.to_account_id == payee]
            assert seen[payee] == into  # each once, in order, nothing from another account

    with start_ledger(tmp_path / "book.db", target) as process:
        run(process.target, first_run)

    async def second_run(stub: Any) -> None:
        listed = await stub.ListTransfers(pb.ListTransfersRequest(account_id="bob", limit=1000))
        into = [t.sequence for t in listed.transfers if t.to_account_id == "bob"]
        stream = stub.WatchTransfers(
            pb.WatchTransfersRequest(account_id="bob", after_sequence=into[29])
        )
        assert await collect(stream, 10) == into[30:]
        await transfers_to(stub, "bob", 40, 3)
        news = await collect(stream, 3)
        stream.cancel()
        assert news[0] > into[-1] and news == sorted(news)

    with start_ledger(tmp_path / "book.db", target) as process:
        run(process.target, second_run)
