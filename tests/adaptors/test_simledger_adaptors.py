"""Every in-tree simledger adaptor (Python, Node.js, Go, Rust) as the host runs it, one scenario
at a time over each: real ledger process, real adaptor processes (cookie, versions, handshake),
fake engines that carry SendData to the other adaptor. What only one language's adaptor does
(go-plugin's process contract, mutual TLS, hclog, the Python adaptor's state file) is tested
beside this module, in test_simledger_<language>.py."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest

from host.pb.ilphost.simledger.v1 import simledger_pb2 as lpb
from host.pb.ilphost.simledger.v1 import simledger_pb2_grpc
from host.simledger import peer_messages as simledger
from host.simledger.process import LedgerProcess, start_ledger
from sdk import contract
from sdk.pb.ilphost.adaptor.v1 import adaptor_pb2 as apb
from sdk.pb.ilphost.engine.v1 import engine_pb2
from sdk.pb.ilphost.types.v1 import types_pb2
from sdk.testing import (
    AdaptorClient,
    AdaptorProcess,
    Refuse,
    adaptor_environ,
    fake_engine,
    run_adaptor,
)
from tests.adaptors import simledger_builds
from tests.grpc_status import failure

Code = grpc.StatusCode
READY = types_pb2.CONNECTIVITY_STATE_READY
TRANSIENT_FAILURE = types_pb2.CONNECTIVITY_STATE_TRANSIENT_FAILURE
#: Generous: the machine is shared; every wait polls a condition until this deadline.
DEADLINE = 60.0


def usd(value: str, scale: int = 2) -> types_pb2.Amount:
    return types_pb2.Amount(value=value, scale=scale)


def ledger_account(side: str) -> str:
    return f"ledger:{side}"


@pytest.fixture(params=simledger_builds.LANGUAGES)
def language(request: pytest.FixtureRequest) -> str:
    """The language of the adaptor under test: every test here runs once per adaptor."""
    return str(request.param)


@pytest.fixture
def command(language: str) -> tuple[str, ...]:
    return simledger_builds.command(language)


@pytest.fixture
def socket_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="ilp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def ledger(tmp_path: Path, socket_dir: Path) -> Iterator[LedgerProcess]:
    with start_ledger(tmp_path / "ledger.db", f"unix:{socket_dir}/ledger.sock") as process:
        yield process


@asynccontextmanager
async def ledger_client(target: str) -> AsyncIterator[Any]:
    async with grpc.aio.insecure_channel(target) as channel:
        yield simledger_pb2_grpc.SimLedgerStub(channel)


async def until(check: Callable[[], Awaitable[bool]], what: str) -> None:
    """Poll ``check`` until it holds; fail naming ``what`` after DEADLINE."""
    try:
        async with asyncio.timeout(DEADLINE):
            # Polling: the condition lives in another process, nothing here can signal it.
            while True:
                if await check():
                    return
                await asyncio.sleep(0.05)
    except TimeoutError:
        pytest.fail(f"gave up after {DEADLINE} s waiting until {what}")


async def ledger_state(client: AdaptorClient) -> tuple[bool, int]:
    """(Probe's ready, the "ledger" connection's state)."""
    probe = await client.adaptor.Probe(apb.ProbeRequest())
    (connection,) = [c for c in probe.connections if c.name == "ledger"]
    return probe.ready.value, connection.state


async def until_ready(client: AdaptorClient) -> None:
    async def ready() -> bool:
        return await ledger_state(client) == (True, READY)

    await until(ready, "the ledger connection is READY")


def worded(language: str, words: str, details: str) -> bool:
    """Whether a refusal's text says ``words``: the contract fixes the status code, not the
    wording, so the words checked here are the Python adaptor's; the others pass on the code."""
    return language != "python" or words in details


async def next_event(stream: Any, kind: str) -> Any:
    """The next event of ``kind`` ("incoming_settlement" or "connection_changed")."""
    async with asyncio.timeout(DEADLINE):
        while True:
            reply = await stream.read()
            assert reply is not grpc.aio.EOF, "WatchEvents ended"
            if reply.WhichOneof("event") == kind:
                return getattr(reply, kind)


async def next_incoming_id(stream: Any) -> str:
    return str((await next_event(stream, "incoming_settlement")).settlement_id)


async def until_connection(stream: Any, state: int) -> types_pb2.Connection:
    while True:
        connection = await next_event(stream, "connection_changed")
        if connection.name == "ledger" and connection.state == state:
            return connection


def send(account_id: str, value: str, key: str, scale: int = 2) -> apb.SendMoneyRequest:
    return apb.SendMoneyRequest(
        account_id=account_id, amount=usd(value, scale), idempotency_key=key
    )


@dataclass
class Peering:
    """Two hosts' worth of fakes: each side's engine carries SendData to the other adaptor."""

    command: tuple[str, ...]
    ledger_target: str
    state_dir: Path
    stack: AsyncExitStack
    running: dict[str, AdaptorProcess] = field(default_factory=dict)
    engines: dict[str, Any] = field(default_factory=dict)
    #: While False, an engine answers SendData with UNAVAILABLE (the peer is unreachable).
    reachable: bool = True

    def _carry_to(self, peer: str, sender: str) -> Callable[[Any], Awaitable[bytes]]:
        async def reply(request: engine_pb2.SendDataRequest) -> bytes:
            if request.account_id != peer:
                raise Refuse(Code.NOT_FOUND, f"no account {request.account_id!r}")
            target = self.running.get(peer)
            if not self.reachable or target is None:
                raise Refuse(Code.UNAVAILABLE, f"peer {peer} cannot be reached")
            try:
                answer = await target.client.adaptor.ReceiveData(
                    apb.ReceiveDataRequest(account_id=sender, data=request.data), timeout=10
                )
            except grpc.aio.AioRpcError as exc:
                raise Refuse(Code.FAILED_PRECONDITION, exc.details() or "") from exc
            return bytes(answer.data)

        return reply

    async def start_engines(self) -> None:
        for side, peer in (("alice", "bob"), ("bob", "alice")):
            self.engines[side] = await self.stack.enter_async_context(
                fake_engine(self._carry_to(peer, side), set_environ=False)
            )

    def environ(self, side: str) -> dict[str, str]:
        return {
            "ILP_SIMLEDGER_ADDR": self.ledger_target,
            "ILP_SIMLEDGER_ACCOUNT": ledger_account(side),
            "ILP_ADAPTOR_STATE_DB": str(self.state_dir / f"{side}.db"),
            contract.ENV_ENGINE_ADDR: self.engines[side].address,
        }

    @asynccontextmanager
    async def adaptor(self, side: str, *, killed: bool = False) -> AsyncIterator[AdaptorClient]:
        """Run ``side``'s adaptor for the duration; its state file outlives it. ``killed``: the
        test kills it (``kill``), so it need not have stopped cleanly."""
        async with run_adaptor(self.command, env=self.environ(side)) as running:
            self.running[side] = running
            try:
                yield running.client
            finally:
                del self.running[side]
        if not killed:
            assert running.process.returncode == 0, bytes(running.stderr).decode(errors="replace")

    async def kill(self, side: str) -> None:
        """SIGKILL ``side``'s adaptor, as a crash would, and wait until it is gone."""
        running = self.running[side]
        running.process.kill()
        async with asyncio.timeout(DEADLINE):
            await running.wait()


@asynccontextmanager
async def peering(
    command: tuple[str, ...], ledger: LedgerProcess, state_dir: Path
) -> AsyncIterator[Peering]:
    async with AsyncExitStack() as stack:
        world = Peering(command, ledger.target, state_dir, stack)
        await world.start_engines()
        yield world


async def fund(ledger_target: str, side: str, value: str) -> None:
    async with ledger_client(ledger_target) as ledger:
        await ledger.CreateAccount(lpb.CreateAccountRequest(account_id=ledger_account(side)))
        await ledger.Mint(
            lpb.MintRequest(
                transfer_id=f"fund-{side}-{value}",
                account_id=ledger_account(side),
                amount=usd(value),
            )
        )


async def ledger_balance(ledger_target: str, side: str, *, opened: bool = True) -> str:
    """``side``'s balance on the ledger; with ``opened=False`` an account its adaptor has not
    opened yet (it does so in the background after SetupAccount) counts as holding 0."""
    async with ledger_client(ledger_target) as ledger:
        try:
            reply = await ledger.GetAccount(lpb.GetAccountRequest(account_id=ledger_account(side)))
        except grpc.aio.AioRpcError as exc:
            if opened or exc.code() is not Code.NOT_FOUND:
                raise
            return "0"
        return str(reply.account.balance.value)


def exchanges_with(world: Peering, side: str, peer: str) -> int:
    """How many SendData calls ``side``'s adaptor has made to ``peer`` (ledger-account
    exchanges), whether or not they reached it."""
    return sum(1 for call in world.engines[side].calls if call.account_id == peer)


async def set_up_both(alice: AdaptorClient, bob: AdaptorClient) -> None:
    await bob.adaptor.SetupAccount(apb.SetupAccountRequest(account_id="alice"))
    await alice.adaptor.SetupAccount(apb.SetupAccountRequest(account_id="bob"))


def test_accounts_exchange_then_send_money_pays_once(
    command: tuple[str, ...], language: str, ledger: LedgerProcess, tmp_path: Path
) -> None:
    async def scenario() -> None:
        await fund(ledger.target, "alice", "1000")
        async with peering(command, ledger, tmp_path) as world:
            paid = await pay_through_the_exchange(world, language)
            # A restarted adaptor remembers its keys and its peers: the same answer, no second
            # payment, and nothing to exchange again.
            async with world.adaptor("alice") as alice:
                await until_ready(alice)
                exchanges = exchanges_with(world, "alice", "bob")
                assert await alice.adaptor.SendMoney(send("bob", "500", "k1")) == paid
                code, _ = await failure(alice.adaptor.SendMoney(send("bob", "999", "k1")))
                assert code is Code.ALREADY_EXISTS
                await alice.adaptor.SetupAccount(apb.SetupAccountRequest(account_id="bob"))
                assert exchanges_with(world, "alice", "bob") == exchanges
                assert await ledger_balance(ledger.target, "bob") == "301"

    asyncio.run(scenario())


async def pay_through_the_exchange(world: Peering, language: str) -> apb.SendMoneyResponse:
    """The first part of the test above: alice's and bob's adaptors learn each other's ledger
    accounts (after an outage) and pay; returns alice's first payment."""
    ledger_target = world.ledger_target
    async with world.adaptor("alice") as alice, world.adaptor("bob") as bob:
        await until_ready(alice)
        info = await alice.adaptor.GetInfo(apb.GetInfoRequest())
        assert (info.name, info.ledger, info.asset_code, info.asset_scale) == (
            f"simledger-{language}",
            "simledger",
            "USD",
            2,
        )
        assert set(info.capabilities) == {
            "send_money",
            "receive_money",
            "data",
            "balance",
            "accounts",
        }
        assert list(info.contract_versions) == [1]

        # The peers cannot reach each other yet: set-up succeeds, payment must wait.
        world.reachable = False
        await set_up_both(alice, bob)
        await alice.adaptor.SetupAccount(apb.SetupAccountRequest(account_id="bob"))
        code, details = await failure(alice.adaptor.SendMoney(send("bob", "500", "k1")))
        assert (code, worded(language, "not known yet", details)) == (
            Code.FAILED_PRECONDITION,
            True,
        )
        assert await ledger_balance(ledger_target, "bob", opened=False) == "0"

        # Reachable again: the background exchange completes on its own.
        world.reachable = True
        paid: list[apb.SendMoneyResponse] = []

        async def payment_goes_through() -> bool:
            try:
                paid.append(await alice.adaptor.SendMoney(send("bob", "500", "k1")))
            except grpc.aio.AioRpcError as exc:
                assert exc.code() is Code.FAILED_PRECONDITION, exc.details()
                return False
            return True

        await until(payment_goes_through, "alice learned bob's ledger account")
        assert paid[0].settlement_id == "ledger:alice:k1"
        assert paid[0].status == apb.SETTLEMENT_STATUS_COMPLETED
        # One ledger transfer, its memo naming the payer's ledger account.
        async with ledger_client(ledger_target) as book:
            transfer = (
                await book.GetTransfer(lpb.GetTransferRequest(transfer_id="ledger:alice:k1"))
            ).transfer
        assert (transfer.from_account_id, transfer.to_account_id, transfer.memo) == (
            "ledger:alice",
            "ledger:bob",
            "ledger:alice",
        )
        # alice's exchanges (the engine carried them to bob) named her own ledger account.
        exchanges = {
            (c.account_id, simledger.parse_ledger_account_request(c.data))
            for c in world.engines["alice"].calls
        }
        assert exchanges == {("bob", "ledger:alice")}

        again = await alice.adaptor.SendMoney(send("bob", "500", "k1"))
        assert again == paid[0]
        assert await ledger_balance(ledger_target, "bob") == "500"
        balance = await alice.adaptor.GetBalance(apb.GetBalanceRequest())
        assert balance.balance == usd("500")

        # carol's peer never answers: her ledger account stays unknown.
        await alice.adaptor.SetupAccount(apb.SetupAccountRequest(account_id="carol"))
        code, _ = await failure(alice.adaptor.SendMoney(send("carol", "5", "c1")))
        assert code is Code.FAILED_PRECONDITION
        for other in (send("bob", "501", "k1"), send("carol", "500", "k1")):
            code, details = await failure(alice.adaptor.SendMoney(other))
            assert (code, worded(language, "'k1'", details)) == (Code.ALREADY_EXISTS, True)

        code, details = await failure(alice.adaptor.SendMoney(send("bob", "501", "k2")))
        assert (code, worded(language, "holds 500", details)) == (
            Code.FAILED_PRECONDITION,
            True,
        )
        assert await ledger_balance(ledger_target, "bob") == "500"
        # Whether that refusal binds k2 differs (Python and Node.js: yes; Go and Rust: no).
        assert (await alice.adaptor.SendMoney(send("bob", "1", "k3"))).settlement_id == (
            "ledger:alice:k3"
        )

        # bob learned alice's account too and can pay back.
        back = await bob.adaptor.SendMoney(send("alice", "200", "b1"))
        assert back.settlement_id == "ledger:bob:b1"
        assert await ledger_balance(ledger_target, "alice") == "699"
        return paid[0]


def test_ledger_faults_answer_unavailable_and_a_retry_with_the_key_pays_once(
    command: tuple[str, ...], language: str, ledger: LedgerProcess, tmp_path: Path
) -> None:
    async def scenario() -> None:
        await fund(ledger.target, "alice", "1000")
        async with (
            peering(command, ledger, tmp_path) as world,
            world.adaptor("alice") as alice,
            world.adaptor("bob") as bob,
            ledger_client(ledger.target) as book,
        ):
            await until_ready(alice)
            await set_up_both(alice, bob)
            # Refused before commit: nothing paid, the engine retries.
            await book.SetFaults(lpb.SetFaultsRequest(faults=lpb.Faults(error_per_mille=1000)))
            code, details = await failure(alice.adaptor.SendMoney(send("bob", "100", "k1")))
            assert (code, worded(language, "same key", details)) == (Code.UNAVAILABLE, True)
            assert await ledger_balance(ledger.target, "bob") == "0"
            # Committed, reply lost: the adaptor cannot know, says UNAVAILABLE ...
            faults = lpb.Faults(fail_after_commit_per_mille=1000)
            await book.SetFaults(lpb.SetFaultsRequest(faults=faults))
            assert (await failure(alice.adaptor.SendMoney(send("bob", "100", "k1"))))[
                0
            ] is Code.UNAVAILABLE
            assert await ledger_balance(ledger.target, "bob") == "100"
            # ... and the retry with the same key returns the committed transfer.
            await book.SetFaults(lpb.SetFaultsRequest(faults=lpb.Faults()))
            paid = await alice.adaptor.SendMoney(send("bob", "100", "k1"))
            assert paid.settlement_id == "ledger:alice:k1"
            assert await ledger_balance(ledger.target, "bob") == "100"
            assert await ledger_balance(ledger.target, "alice") == "900"
            # The ledger unreachable: UNAVAILABLE, and the same key pays once when it is back.
            await book.SetFaults(lpb.SetFaultsRequest(faults=lpb.Faults(offline=True)))
            code, _ = await failure(alice.adaptor.SendMoney(send("bob", "50", "k2")))
            assert code is Code.UNAVAILABLE
            await book.SetFaults(lpb.SetFaultsRequest(faults=lpb.Faults()))
            await until_ready(alice)
            paid = await alice.adaptor.SendMoney(send("bob", "50", "k2"))
            assert paid.settlement_id == "ledger:alice:k2"
            assert await ledger_balance(ledger.target, "bob") == "150"

    asyncio.run(scenario())


#: Each refused with its status and (the Python adaptor's) words; none may use up its key.
BAD_REQUESTS = [
    (send("bob", "0", "k"), Code.INVALID_ARGUMENT, "greater than zero"),
    (send("bob", "-5", "k"), Code.INVALID_ARGUMENT, "negative"),
    (send("bob", "1.5", "k"), Code.INVALID_ARGUMENT, "base-10"),
    (send("bob", "007", "k"), Code.INVALID_ARGUMENT, "leading zero"),
    (apb.SendMoneyRequest(account_id="bob", idempotency_key="k"), Code.INVALID_ARGUMENT, "amount"),
    (send("bob", "", "k"), Code.INVALID_ARGUMENT, "empty"),
    (send("bob", "9" * 79, "k"), Code.INVALID_ARGUMENT, "79 digits"),
    (send("bob", "5", "k", scale=9), Code.INVALID_ARGUMENT, "scale 2"),
    (send("bob", "5", ""), Code.INVALID_ARGUMENT, "idempotency_key"),
    (send("bob", "5", "k" * 129), Code.INVALID_ARGUMENT, "idempotency_key"),
    (send("bob", "5", "tab\tkey"), Code.INVALID_ARGUMENT, "idempotency_key"),
    (send("bob", "5", "line\nbreak"), Code.INVALID_ARGUMENT, "idempotency_key"),
    (send("", "5", "k"), Code.INVALID_ARGUMENT, "account_id"),
    (send("bob/x", "5", "k"), Code.INVALID_ARGUMENT, "account_id"),
    (send("dave", "5", "k"), Code.NOT_FOUND, "'dave'"),
]


def test_send_money_refuses_bad_requests_without_paying(
    command: tuple[str, ...], language: str, ledger: LedgerProcess, tmp_path: Path
) -> None:
    async def scenario() -> None:
        await fund(ledger.target, "alice", "1000")
        async with (
            peering(command, ledger, tmp_path) as world,
            world.adaptor("alice") as alice,
            world.adaptor("bob") as bob,
        ):
            await until_ready(alice)
            await set_up_both(alice, bob)
            refusals = [
                (request, *await failure(alice.adaptor.SendMoney(request)))
                for request, _, _ in BAD_REQUESTS
            ]
            wrong = [
                (str(request).replace("\n", " "), got, details)
                for (request, got, details), (_, code, complaint) in zip(
                    refusals, BAD_REQUESTS, strict=True
                )
                if got is not code or not worded(language, complaint, details)
            ]
            assert wrong == []
            assert await ledger_balance(ledger.target, "bob") == "0"
            # The key was not used up by the refusals.
            ok = await alice.adaptor.SendMoney(send("bob", "5", "k"))
            assert ok.settlement_id == "ledger:alice:k"
            assert await ledger_balance(ledger.target, "bob") == "5"

    asyncio.run(scenario())


def test_incoming_settlements_are_redelivered_until_acknowledged_and_after_restart(
    command: tuple[str, ...], ledger: LedgerProcess, tmp_path: Path
) -> None:
    async def scenario() -> None:
        await fund(ledger.target, "alice", "1000")
        async with peering(command, ledger, tmp_path) as world, world.adaptor("alice") as alice:
            async with world.adaptor("bob") as bob:
                await until_ready(bob)
                await set_up_both(alice, bob)
                first = bob.adaptor.WatchEvents(apb.WatchEventsRequest())
                await alice.adaptor.SendMoney(send("bob", "300", "k1"))
                settlement = await next_event(first, "incoming_settlement")
                assert settlement == apb.IncomingSettlement(
                    settlement_id="ledger:alice:k1", account_id="alice", amount=usd("300")
                )
                first.cancel()

                # A new stream re-delivers it: not acknowledged yet.
                second = bob.adaptor.WatchEvents(apb.WatchEventsRequest())
                assert await next_incoming_id(second) == "ledger:alice:k1"
                await bob.adaptor.ReceiveMoney(
                    apb.ReceiveMoneyRequest(settlement_id="ledger:alice:k1")
                )
                await bob.adaptor.ReceiveMoney(
                    apb.ReceiveMoneyRequest(settlement_id="ledger:alice:k1")
                )
                unknown = apb.ReceiveMoneyRequest(settlement_id="ledger:alice:never")
                assert (await failure(bob.adaptor.ReceiveMoney(unknown)))[0] is Code.NOT_FOUND
                await alice.adaptor.SendMoney(send("bob", "20", "k2"))
                assert await next_incoming_id(second) == "ledger:alice:k2"
                second.cancel()

                # Acknowledged k1 is not re-delivered; k2 is.
                third = bob.adaptor.WatchEvents(apb.WatchEventsRequest())
                assert await next_incoming_id(third) == "ledger:alice:k2"
                third.cancel()

            # bob is down; alice pays again. After the restart bob re-delivers exactly the
            # unacknowledged k2, then catches up on k3 from its cursor.
            await alice.adaptor.SendMoney(send("bob", "7", "k3"))
            async with world.adaptor("bob", killed=True) as bob:
                stream = bob.adaptor.WatchEvents(apb.WatchEventsRequest())
                assert await next_incoming_id(stream) == "ledger:alice:k2"
                assert await next_incoming_id(stream) == "ledger:alice:k3"
                for settlement_id in ("ledger:alice:k1", "ledger:alice:k2", "ledger:alice:k3"):
                    await bob.adaptor.ReceiveMoney(
                        apb.ReceiveMoneyRequest(settlement_id=settlement_id)
                    )
                await alice.adaptor.SendMoney(send("bob", "1", "k4"))
                assert await next_incoming_id(stream) == "ledger:alice:k4"
                stream.cancel()
                # A crash right after the acknowledgements: they must have been on disk.
                await world.kill("bob")

            # Funding bob (a mint) is not a settlement; nothing acknowledged comes back.
            await fund(ledger.target, "bob", "5")
            async with world.adaptor("bob") as bob:
                stream = bob.adaptor.WatchEvents(apb.WatchEventsRequest())
                await alice.adaptor.SendMoney(send("bob", "2", "k5"))
                assert await next_incoming_id(stream) == "ledger:alice:k4"
                assert await next_incoming_id(stream) == "ledger:alice:k5"
                stream.cancel()
                minted = apb.ReceiveMoneyRequest(settlement_id="fund-bob-5")
                assert (await failure(bob.adaptor.ReceiveMoney(minted)))[0] is Code.NOT_FOUND

    asyncio.run(scenario())


def test_a_payment_from_an_unknown_payer_waits_for_its_account(
    command: tuple[str, ...], ledger: LedgerProcess, tmp_path: Path
) -> None:
    async def scenario() -> None:
        await fund(ledger.target, "carol", "100")
        async with peering(command, ledger, tmp_path) as world, world.adaptor("bob") as bob:
            await until_ready(bob)
            stream = bob.adaptor.WatchEvents(apb.WatchEventsRequest())
            async with ledger_client(ledger.target) as book:
                await book.Transfer(
                    lpb.TransferRequest(
                        transfer_id="carol-pays",
                        from_account_id=ledger_account("carol"),
                        to_account_id=ledger_account("bob"),
                        amount=usd("40"),
                    )
                )
            await bob.adaptor.SetupAccount(apb.SetupAccountRequest(account_id="carol"))
            unknown = apb.ReceiveMoneyRequest(settlement_id="carol-pays")
            assert (await failure(bob.adaptor.ReceiveMoney(unknown)))[0] is Code.NOT_FOUND
            # carol's adaptor introduces itself (the test plays it).
            reply = await bob.adaptor.ReceiveData(
                apb.ReceiveDataRequest(
                    account_id="carol",
                    data=simledger.ledger_account_request("ledger:carol"),
                )
            )
            assert simledger.parse_ledger_account_reply(reply.data) == "ledger:bob"
            settlement = await next_event(stream, "incoming_settlement")
            assert (settlement.settlement_id, settlement.account_id) == ("carol-pays", "carol")
            stream.cancel()
            await bob.adaptor.ReceiveMoney(unknown)

    asyncio.run(scenario())


def test_receive_data_and_account_statuses(
    command: tuple[str, ...], ledger: LedgerProcess, tmp_path: Path
) -> None:
    async def scenario() -> None:
        async with peering(command, ledger, tmp_path) as world, world.adaptor("bob") as bob:
            hello = simledger.ledger_account_request("ledger:erin")
            for account_id, code in (("erin", Code.NOT_FOUND), ("", Code.INVALID_ARGUMENT)):
                request = apb.ReceiveDataRequest(account_id=account_id, data=hello)
                assert (await failure(bob.adaptor.ReceiveData(request)))[0] is code
            bad = apb.SetupAccountRequest(account_id="a b")
            assert (await failure(bob.adaptor.SetupAccount(bad)))[0] is Code.INVALID_ARGUMENT
            await bob.adaptor.SetupAccount(apb.SetupAccountRequest(account_id="erin"))
            # Malformed data for a known account (for an unknown one, which of NOT_FOUND and
            # INVALID_ARGUMENT wins is the adaptor's choice).
            malformed = simledger.ledger_account_request("a b")
            for data in (b"not protobuf", b"", malformed):  # b"": a PeerRequest of no kind
                request = apb.ReceiveDataRequest(account_id="erin", data=data)
                assert (await failure(bob.adaptor.ReceiveData(request)))[0] is Code.INVALID_ARGUMENT
            await bob.adaptor.ReceiveData(apb.ReceiveDataRequest(account_id="erin", data=hello))
            for _ in range(2):
                await bob.adaptor.DeleteAccount(apb.DeleteAccountRequest(account_id="erin"))
            gone = bob.adaptor.SendMoney(send("erin", "1", "k"))
            assert (await failure(gone))[0] is Code.NOT_FOUND
            empty = apb.ReceiveMoneyRequest(settlement_id="")
            assert (await failure(bob.adaptor.ReceiveMoney(empty)))[0] is Code.INVALID_ARGUMENT

    asyncio.run(scenario())


def test_ledger_offline_shows_in_probe_and_events_and_recovers(
    command: tuple[str, ...], ledger: LedgerProcess, tmp_path: Path
) -> None:
    async def scenario() -> None:
        async with (
            peering(command, ledger, tmp_path) as world,
            world.adaptor("alice") as alice,
            ledger_client(ledger.target) as book,
        ):
            await until_ready(alice)
            events = alice.adaptor.WatchEvents(apb.WatchEventsRequest())
            await book.SetFaults(lpb.SetFaultsRequest(faults=lpb.Faults(offline=True)))
            failed = await until_connection(events, TRANSIENT_FAILURE)
            assert "offline" in failed.last_error
            assert failed.attempts >= 1
            assert failed.kind == "settlement-system"
            ready, state = await ledger_state(alice)
            assert ready is False
            assert state != READY
            code, _ = await failure(alice.adaptor.GetBalance(apb.GetBalanceRequest()))
            assert code is Code.UNAVAILABLE
            # The asset was learned while the ledger answered: GetInfo still works.
            await alice.adaptor.GetInfo(apb.GetInfoRequest())

            await book.SetFaults(lpb.SetFaultsRequest(faults=lpb.Faults()))
            back = await until_connection(events, READY)
            assert (back.last_error, back.attempts) == ("", 0)
            await until_ready(alice)
            await alice.adaptor.GetBalance(apb.GetBalanceRequest())
            events.cancel()

    asyncio.run(scenario())


def test_adaptor_serves_while_the_ledger_is_down_and_connects_when_it_comes(
    command: tuple[str, ...], language: str, tmp_path: Path, socket_dir: Path
) -> None:
    listen = f"unix:{socket_dir}/late-ledger.sock"

    async def scenario() -> None:
        async with AsyncExitStack() as stack:
            world = Peering(command, listen, tmp_path, stack)
            await world.start_engines()
            async with world.adaptor("alice") as alice:

                async def failing() -> bool:
                    return (await ledger_state(alice))[1] == TRANSIENT_FAILURE

                await until(failing, "the ledger connection failed")
                assert (await ledger_state(alice))[0] is False
                code, details = await failure(alice.adaptor.GetInfo(apb.GetInfoRequest()))
                assert (code, worded(language, "not known", details)) == (Code.UNAVAILABLE, True)
                with start_ledger(tmp_path / "late.db", listen) as late:
                    await until_ready(alice)
                    info = await alice.adaptor.GetInfo(apb.GetInfoRequest())
                    assert info.asset_code == "USD"
                    # The adaptor opened its ledger account on connecting.
                    assert await ledger_balance(late.target, "alice") == "0"
                    await asyncio.to_thread(late.kill)

                    async def lost() -> bool:
                        return (await ledger_state(alice))[1] == TRANSIENT_FAILURE

                    await until(lost, "the ledger connection failed after a crash")
                with start_ledger(tmp_path / "late.db", listen):
                    await until_ready(alice)

    asyncio.run(scenario())


@pytest.mark.parametrize("drop", ["ILP_ADAPTOR_STATE_DB", "ILP_SIMLEDGER_ADDR"])
def test_missing_configuration_exits_1_naming_it(
    command: tuple[str, ...], tmp_path: Path, drop: str
) -> None:
    env = adaptor_environ(
        {
            "ILP_SIMLEDGER_ADDR": "unix:/nonexistent/ledger.sock",
            "ILP_SIMLEDGER_ACCOUNT": "ledger:alice",
            "ILP_ADAPTOR_STATE_DB": str(tmp_path / "state.db"),
            contract.ENV_ENGINE_ADDR: "unix:/nonexistent/engine.sock",
        }
    )
    del env[drop]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert done.stdout == ""
    assert drop in done.stderr
