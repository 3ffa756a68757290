"""The Go simledger adaptor (adaptors/simledger-go, built on go-plugin's plugin.Serve) on a real
simulated ledger.

The ledger runs as ``python -m host.simledger``; the adaptor runs as the host runs it: under the
host's Supervisor, or as a raw child process through ``sdk.testing``'s ``run_adaptor``. The
engine side is ``sdk.testing``'s fake Engine answering as the peer's adaptor would.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from host.simledger.process import LedgerProcess, start_ledger
from host.supervisor import AdaptorSpec, ProcessState, Supervisor
from sdk.connectivity import Connectivity
from sdk.contract import ENV_ENGINE_ADDR
from sdk.pb.ilphost.adaptor.v1 import adaptor_pb2, adaptor_pb2_grpc
from sdk.pb.ilphost.engine.v1 import engine_pb2
from sdk.pb.ilphost.simledger.v1 import simledger_pb2, simledger_pb2_grpc
from sdk.pb.ilphost.types.v1 import types_pb2
from sdk.pb.plugin import grpc_controller_pb2
from sdk.testing import AdaptorClient, AdaptorProcess, fake_engine, run_adaptor

ADAPTOR_DIR = Path(__file__).resolve().parents[2] / "adaptors" / "simledger-go"
BINARY = ADAPTOR_DIR / "bin" / "simledger-go"
#: Generous: the machine is shared, and nothing here asserts on speed.
DEADLINE = 60.0
RPC_TIMEOUT = 20.0
Code = grpc.StatusCode
Amount = types_pb2.Amount
READY = types_pb2.CONNECTIVITY_STATE_READY


@pytest.fixture(scope="session")
def binary() -> Path:
    """The adaptor binary, built with ``go build`` if it is missing."""
    if BINARY.exists():
        return BINARY
    if shutil.which("go") is None:
        message = "go is not installed: cannot build adaptors/simledger-go (make setup)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    result = subprocess.run(
        ["go", "build", "-o", "bin/simledger-go", "."],
        cwd=ADAPTOR_DIR,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, f"go build failed:\n{result.stderr[-4000:]}"
    return BINARY


@pytest.fixture
def workdir() -> Iterator[Path]:
    """A short private directory (unix socket paths must stay under 100 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="ilp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def ledger(workdir: Path) -> Iterator[LedgerProcess]:
    with start_ledger(workdir / "ledger.db", f"unix:{workdir}/ledger.sock") as process:
        yield process


@contextlib.asynccontextmanager
async def ledger_client(target: str) -> AsyncIterator[simledger_pb2_grpc.SimLedgerStub]:
    async with grpc.aio.insecure_channel(target) as channel:
        yield simledger_pb2_grpc.SimLedgerStub(channel)


def adaptor_env(ledger: LedgerProcess, workdir: Path, engine: str = "") -> dict[str, str]:
    return {
        "ILP_SIMLEDGER_ADDR": ledger.target,
        "ILP_SIMLEDGER_ACCOUNT": "alice",
        "ILP_ADAPTOR_STATE_DB": str(workdir / "alice.json"),
        # Not inherited from this process: only what the test says.
        ENV_ENGINE_ADDR: engine,
    }


def peer_bob(request: engine_pb2.SendDataRequest) -> bytes:
    """The fake engine's answer: bob's adaptor tells its ledger account."""
    return json.dumps({"type": "ledger_account", "ledger_account": "bob"}).encode()


async def until(check: Callable[[], Awaitable[bool]], what: str) -> None:
    """Poll ``check`` until it holds; fail naming ``what`` after DEADLINE seconds."""
    deadline = time.monotonic() + DEADLINE
    while not await check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def mint(ledger: simledger_pb2_grpc.SimLedgerStub, account: str, value: int) -> None:
    await ledger.CreateAccount(
        simledger_pb2.CreateAccountRequest(account_id=account), timeout=RPC_TIMEOUT
    )
    await ledger.Mint(
        simledger_pb2.MintRequest(
            transfer_id=f"mint:{account}:{value}",
            account_id=account,
            amount=Amount(value=str(value), scale=2),
        ),
        timeout=RPC_TIMEOUT,
    )


async def balance_on_ledger(ledger: simledger_pb2_grpc.SimLedgerStub, account: str) -> int:
    reply = await ledger.GetAccount(
        simledger_pb2.GetAccountRequest(account_id=account), timeout=RPC_TIMEOUT
    )
    return int(reply.account.balance.value)


def send_money(
    adaptor: adaptor_pb2_grpc.LedgerAdaptorStub, value: str, key: str
) -> Awaitable[adaptor_pb2.SendMoneyResponse]:
    request = adaptor_pb2.SendMoneyRequest(
        account_id="bob-acct", amount=Amount(value=value, scale=2), idempotency_key=key
    )
    return adaptor.SendMoney(request, timeout=RPC_TIMEOUT)


async def status_of(call: Awaitable[object]) -> Code:
    try:
        await call
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return Code.OK


async def setup_bob(adaptor: adaptor_pb2_grpc.LedgerAdaptorStub) -> None:
    """SetupAccount, then wait until a payment to bob goes through (the exchange is done)."""
    await adaptor.SetupAccount(
        adaptor_pb2.SetupAccountRequest(account_id="bob-acct"), timeout=RPC_TIMEOUT
    )

    async def paid() -> bool:
        code = await status_of(send_money(adaptor, "100", "k1"))
        assert code in (Code.OK, Code.FAILED_PRECONDITION), code
        return code == Code.OK

    await until(paid, "the first payment to bob (after the ledger-account exchange)")


# --- Under the host's supervisor ------------------------------------------------------------


async def _under_supervisor(
    binary: Path, ledger: LedgerProcess, workdir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with ledger_client(ledger.target) as chain:
        await mint(chain, "alice", 1000)
        await chain.CreateAccount(simledger_pb2.CreateAccountRequest(account_id="bob"))
        async with fake_engine(peer_bob, set_environ=False) as engine:
            env = adaptor_env(ledger, workdir)
            del env[ENV_ENGINE_ADDR]  # the supervisor passes its own engine_addr
            spec = AdaptorSpec(name="alice", command=(str(binary),), env=env, start_timeout=30)
            async with Supervisor([spec], engine_addr=engine.address) as supervisor:
                snapshot = supervisor.snapshot("alice")
                assert snapshot.state == ProcessState.SERVING
                assert snapshot.contract_version == 1
                info = snapshot.info
                assert info is not None
                assert (info.name, info.ledger, info.asset_code, info.asset_scale) == (
                    "simledger-go",
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

                async def ledger_ready() -> bool:
                    links = supervisor.snapshot("alice").connections
                    found = [c for c in links if c.name == "ledger"]
                    return bool(found) and found[0].state == Connectivity.READY

                await until(ledger_ready, "the host to see the ledger connection READY")

                channel = supervisor.channel("alice")
                assert channel is not None
                adaptor = adaptor_pb2_grpc.LedgerAdaptorStub(channel)
                await setup_bob(adaptor)
                assert json.loads(engine.calls[0].data) == {
                    "type": "ledger_account",
                    "ledger_account": "alice",
                }
                # The same key again pays once; another amount under it is refused.
                again = await send_money(adaptor, "100", "k1")
                assert again.settlement_id == "alice:k1"
                assert again.status == adaptor_pb2.SETTLEMENT_STATUS_COMPLETED
                assert await status_of(send_money(adaptor, "200", "k1")) == Code.ALREADY_EXISTS
                assert await status_of(send_money(adaptor, "0", "k2")) == Code.INVALID_ARGUMENT
                assert await balance_on_ledger(chain, "bob") == 100
                transfer = await chain.GetTransfer(
                    simledger_pb2.GetTransferRequest(transfer_id="alice:k1"), timeout=RPC_TIMEOUT
                )
                assert transfer.transfer.memo == "alice"
                balance = await adaptor.GetBalance(
                    adaptor_pb2.GetBalanceRequest(), timeout=RPC_TIMEOUT
                )
                assert (balance.balance.value, balance.balance.scale) == ("900", 2)

                # The receipt goes to the adaptor's stdout, which only GRPCStdio carries.
                def receipt_logged() -> bool:
                    return any(
                        r.name == "ilp_host.adaptor.alice"
                        and getattr(r, "stream", "") == "stdout"
                        and "settlement sent" in r.getMessage()
                        for r in caplog.records
                    )

                async def receipt_seen() -> bool:
                    return receipt_logged()

                await until(receipt_seen, "the supervisor to log the receipt from GRPCStdio")
        final = supervisor.snapshot("alice")
        # Graceful: stopped on the Shutdown request, with no note of SIGTERM or SIGKILL.
        assert (final.state, final.last_error) == (ProcessState.STOPPED, "")


def test_serves_under_the_supervisor_and_pays_once_per_key(
    binary: Path, ledger: LedgerProcess, workdir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="ilp_host.adaptor.alice")
    asyncio.run(_under_supervisor(binary, ledger, workdir, caplog))


# --- Incoming settlements: re-delivered until ReceiveMoney, across restarts -----------------


async def next_incoming(stream: Any) -> adaptor_pb2.IncomingSettlement:
    async with asyncio.timeout(DEADLINE):
        while True:
            event = await stream.read()
            assert event is not grpc.aio.EOF, "WatchEvents ended"
            if event.WhichOneof("event") == "incoming_settlement":
                return event.incoming_settlement


async def stop(process: AdaptorProcess) -> None:
    """Shutdown through go-plugin's controller; the adaptor must exit 0."""
    shutdown = process.client.controller.Shutdown(grpc_controller_pb2.Empty(), timeout=RPC_TIMEOUT)
    # go-plugin's Shutdown stops its server inside the handler, so the answer is often lost.
    assert await status_of(shutdown) in (Code.OK, Code.UNAVAILABLE)
    async with asyncio.timeout(DEADLINE):
        assert await process.wait() == 0


async def wait_ready(client: AdaptorClient) -> None:
    async def ready() -> bool:
        probe = await client.adaptor.Probe(adaptor_pb2.ProbeRequest(), timeout=RPC_TIMEOUT)
        links = [c for c in probe.connections if c.name == "ledger"]
        return bool(links) and links[0].state == READY and probe.ready.value

    await until(ready, "the ledger connection READY")


async def _redelivery(binary: Path, ledger: LedgerProcess, workdir: Path) -> None:
    async with (
        ledger_client(ledger.target) as chain,
        fake_engine(peer_bob, set_environ=False) as engine,
    ):
        env = adaptor_env(ledger, workdir, engine.address)
        await mint(chain, "bob", 1000)
        async with run_adaptor([str(binary)], env=env) as process:
            client = process.client
            await wait_ready(client)
            await client.adaptor.SetupAccount(
                adaptor_pb2.SetupAccountRequest(account_id="bob-acct"), timeout=RPC_TIMEOUT
            )
            stream = client.adaptor.WatchEvents(adaptor_pb2.WatchEventsRequest())
            for n, value in ((1, 30), (2, 40)):
                # As bob's adaptor pays: memo = the payer's ledger account.
                await chain.Transfer(
                    simledger_pb2.TransferRequest(
                        transfer_id=f"bob:s{n}",
                        from_account_id="bob",
                        to_account_id="alice",
                        amount=Amount(value=str(value), scale=2),
                        memo="bob",
                    ),
                    timeout=RPC_TIMEOUT,
                )
            first, second = await next_incoming(stream), await next_incoming(stream)
            assert (first.settlement_id, first.account_id, first.amount.value) == (
                "bob:s1",
                "bob-acct",
                "30",
            )
            assert second.settlement_id == "bob:s2"
            stream.cancel()
            receive = adaptor_pb2.ReceiveMoneyRequest
            await client.adaptor.ReceiveMoney(receive(settlement_id="bob:s1"), timeout=RPC_TIMEOUT)
            # Idempotent; an id never reported is NOT_FOUND.
            await client.adaptor.ReceiveMoney(receive(settlement_id="bob:s1"), timeout=RPC_TIMEOUT)
            unknown = client.adaptor.ReceiveMoney(
                receive(settlement_id="nope"), timeout=RPC_TIMEOUT
            )
            assert await status_of(unknown) == Code.NOT_FOUND
            await stop(process)

        # A new process and a new stream: only the unacknowledged settlement comes again.
        async with run_adaptor([str(binary)], env=env) as process:
            client = process.client
            stream = client.adaptor.WatchEvents(adaptor_pb2.WatchEventsRequest())
            assert (await next_incoming(stream)).settlement_id == "bob:s2"
            stream.cancel()
            await client.adaptor.ReceiveMoney(
                adaptor_pb2.ReceiveMoneyRequest(settlement_id="bob:s2"), timeout=RPC_TIMEOUT
            )
            # A third transfer after every ack: the next stream starts with it, nothing older.
            await chain.Transfer(
                simledger_pb2.TransferRequest(
                    transfer_id="bob:s3",
                    from_account_id="bob",
                    to_account_id="alice",
                    amount=Amount(value="5", scale=2),
                    memo="bob",
                ),
                timeout=RPC_TIMEOUT,
            )
            stream = client.adaptor.WatchEvents(adaptor_pb2.WatchEventsRequest())
            assert (await next_incoming(stream)).settlement_id == "bob:s3"
            stream.cancel()
            await stop(process)


def test_incoming_settlements_are_redelivered_until_received(
    binary: Path, ledger: LedgerProcess, workdir: Path
) -> None:
    asyncio.run(_redelivery(binary, ledger, workdir))
