"""The Ethereum adaptor when things break, on a real anvil node: the adaptor SIGKILLed between
signing and broadcast and between broadcast and receipt, the node SIGKILLed and restarted from
its state file, a reverted ERC-20 transfer, and a reorganisation that drops an unconfirmed
payment. Every settlement is paid exactly once; nothing unconfirmed reaches the engine."""

from __future__ import annotations

import asyncio
import shutil
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from eth_account import Account
from eth_utils import keccak

from host.demo.anvil import CHAIN_ID, DEV_KEYS, Anvil, address_of_key
from sdk import failpoints
from sdk.pb.ilphost.adaptor.v1 import adaptor_pb2 as apb
from sdk.pb.ilphost.types.v1 import types_pb2
from tests.ethereum.harness import ADDRESSES, KEYS, adaptor_env, pair, until
from tests.ethereum.test_ethereum_adaptor import run_async
from tests.grpc_status import failure

Code = grpc.StatusCode
READY = types_pb2.CONNECTIVITY_STATE_READY
TRANSIENT_FAILURE = types_pb2.CONNECTIVITY_STATE_TRANSIENT_FAILURE
ETHER = 10**18


@pytest.fixture
def workdir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="ileth"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def nonce(node: Anvil, side: str) -> int:
    return int(node.call("eth_getTransactionCount", ADDRESSES[side], "latest"), 16)


@run_async
async def test_sigkill_of_the_adaptor_mid_payment_pays_exactly_once(workdir: Path) -> None:
    """Killed after storing the signed transaction (not broadcast), then, on another payment,
    after broadcasting it (receipt not looked at): each key pays once, one nonce each."""
    node = Anvil.start(workdir / "anvil.log")
    try:
        once = workdir / "once"
        once.mkdir()
        kill_points = (failpoints.ADAPTOR_ETH_AFTER_SIGN, failpoints.ADAPTOR_ETH_AFTER_BROADCAST)
        alice = adaptor_env(
            node,
            workdir,
            "alice",
            ILP_FAILPOINTS=",".join(kill_points),
            ILP_FAILPOINTS_ONCE_DIR=str(once),
        )
        async with pair(alice, adaptor_env(node, workdir, "bob")) as p:
            await p.setup_accounts()
            bob_before, nonce_before = node.balance(ADDRESSES["bob"]), nonce(node, "alice")
            paid = []
            for index, failpoint in enumerate(kill_points):
                key = f"crash-{index}"
                await failure(p["alice"].send(key, 3 * ETHER, 18))
                assert (once / failpoint).exists(), f"{failpoint} did not fire"
                await p.stop("alice")
                await p.start("alice")
                paid.append(
                    await until(lambda k=key: _completed(p["alice"], k, 3 * ETHER), key)  # type: ignore[misc]
                )
            assert node.balance(ADDRESSES["bob"]) - bob_before == 6 * ETHER
            assert nonce(node, "alice") == nonce_before + 2  # one transaction per key
            for sent in paid:
                await until(
                    lambda i=sent.settlement_id: _reported(p["bob"], i),  # type: ignore[misc]
                    "bob reports it",
                )
            assert sorted(i.settlement_id for i in p["bob"].incoming) == sorted(
                s.settlement_id for s in paid
            )
    finally:
        node.stop()


async def _completed(side: object, key: str, value: int) -> apb.SendMoneyResponse | None:
    try:
        reply = await side.send(key, value, 18)  # type: ignore[attr-defined]
    except grpc.aio.AioRpcError as exc:
        if exc.code() in (Code.UNAVAILABLE, Code.FAILED_PRECONDITION):
            return None
        raise
    return reply if reply.status == apb.SETTLEMENT_STATUS_COMPLETED else None


async def _reported(side: object, settlement_id: str) -> bool:
    return any(i.settlement_id == settlement_id for i in side.incoming)  # type: ignore[attr-defined]


@pytest.mark.parametrize("announced", [False, True], ids=["http", "websocket"])
@run_async
async def test_node_killed_and_restarted_from_its_state_pays_exactly_once(
    workdir: Path, announced: bool
) -> None:
    node = Anvil.start(workdir / "anvil.log", state=workdir / "chain.json")
    # With the WebSocket, calls go over it while it is open, and over HTTP once it is cut.
    ws = {"ILP_ETHEREUM_WS_URL": node.url.replace("http://", "ws://")} if announced else {}
    try:
        async with pair(
            adaptor_env(node, workdir, "alice", **ws), adaptor_env(node, workdir, "bob", **ws)
        ) as p:
            await p.setup_accounts()
            bob_before = node.balance(ADDRESSES["bob"])
            await asyncio.sleep(1.5)  # one state dump holds the funded accounts
            first = await p["alice"].send("before-kill", ETHER, 18)
            assert first.status == apb.SETTLEMENT_STATUS_COMPLETED
            node.stop(signal.SIGKILL)  # the last payment may not be in the state file
            probe = await until(lambda: _probe(p["alice"], TRANSIENT_FAILURE), "node down")
            assert probe.last_error, "a connection down says why"
            down = await failure(p["alice"].send("during-outage", ETHER, 18))
            assert down.code == Code.UNAVAILABLE
            node.restart()
            await until(lambda: _probe(p["alice"], READY), "node back")
            # A stored transaction the chain lost is broadcast again: paid once.
            await until(lambda: _completed(p["alice"], "before-kill", ETHER), "first paid")
            await until(lambda: _completed(p["alice"], "during-outage", ETHER), "second paid")
            # Whether or not the state file had the first payment, the chain has it now, once.
            assert node.call("eth_getTransactionReceipt", first.settlement_id) is not None
            assert node.balance(ADDRESSES["bob"]) - bob_before == 2 * ETHER
    finally:
        node.stop()


async def _probe(side: object, state: int) -> types_pb2.Connection | None:
    probe = await side.adaptor.Probe(apb.ProbeRequest(), timeout=10)  # type: ignore[attr-defined]
    (ledger,) = probe.connections
    return ledger if ledger.state == state else None


def balance_slot(owner: str) -> str:
    """The storage slot of DemoToken.balanceOf[owner] (mapping at slot 1)."""
    return "0x" + keccak(bytes(12) + bytes.fromhex(owner[2:]) + (1).to_bytes(32, "big")).hex()


@run_async
async def test_a_reverted_erc20_transfer_fails_with_its_reason_and_pays_nothing(
    workdir: Path,
) -> None:
    node = Anvil.start(workdir / "anvil.log")
    try:
        token = node.deploy_token(DEV_KEYS[0], 6, 10**15)
        node.transfer_token(DEV_KEYS[0], token, ADDRESSES["alice"], 10**9)
        env = {"token": token, "ILP_ETHEREUM_SEND_WAIT": "0.3"}
        async with pair(
            adaptor_env(node, workdir, "alice", **env), adaptor_env(node, workdir, "bob", **env)
        ) as p:
            await p.setup_accounts()
            node.call("evm_setAutomine", False)
            pending = await p["alice"].send("revert-1", 5_000_000, 6)
            assert pending.status == apb.SETTLEMENT_STATUS_PENDING
            # The balance goes away between the estimate and the block: the transfer reverts.
            node.call(
                "anvil_setStorageAt", token, balance_slot(ADDRESSES["alice"]), "0x" + "00" * 32
            )
            node.mine()

            async def failed() -> str | None:
                try:
                    await p["alice"].send("revert-1", 5_000_000, 6)
                except grpc.aio.AioRpcError as exc:
                    if exc.code() == Code.FAILED_PRECONDITION and "paid nothing" in exc.details():
                        return exc.details()
                return None

            reason = await until(failed, "the revert is reported")
            assert "exceeds balance" in reason and "paid nothing" in reason
            assert node.token_balance(token, ADDRESSES["bob"]) == 0
            # Funded again, the retry of the key makes a new attempt and pays once.
            node.call("evm_setAutomine", True)
            node.transfer_token(DEV_KEYS[0], token, ADDRESSES["alice"], 10**9)
            await until(lambda: _completed_token(p["alice"], "revert-1", 5_000_000), "retry paid")
            assert node.token_balance(token, ADDRESSES["bob"]) == 5_000_000
    finally:
        node.stop()


async def _completed_token(side: object, key: str, value: int) -> bool:
    try:
        reply = await side.send(key, value, 6)  # type: ignore[attr-defined]
    except grpc.aio.AioRpcError as exc:
        if exc.code() == Code.FAILED_PRECONDITION:
            return False
        raise
    return reply.status == apb.SETTLEMENT_STATUS_COMPLETED


@pytest.mark.parametrize("announced", [False, True], ids=["polling", "announced"])
@run_async
async def test_a_reorganisation_drops_an_unconfirmed_payment_before_the_engine_sees_it(
    workdir: Path, announced: bool
) -> None:
    node = Anvil.start(workdir / "anvil.log")
    try:
        # Announced: bob reads each announced block with the height in the same request.
        ws = {"ILP_ETHEREUM_WS_URL": node.url.replace("http://", "ws://")} if announced else {}
        bob = adaptor_env(
            node,
            workdir,
            "bob",
            ILP_ETHEREUM_CONFIRMATIONS="3",
            ILP_ETHEREUM_PEERS=f"alice={ADDRESSES['alice']}",
            **ws,
        )
        async with pair(adaptor_env(node, workdir, "alice"), bob) as p:
            await p.stop("alice")  # payments come from alice's key, sent by the test
            await p["bob"].adaptor.SetupAccount(
                apb.SetupAccountRequest(account_id="alice"), timeout=30
            )
            snapshot = node.call("evm_snapshot")
            dropped = node.send(KEYS["alice"], ADDRESSES["bob"], 7 * ETHER)
            node.mine(1)  # two blocks on it: one short of bob's three confirmations
            await asyncio.sleep(1.0)  # bob polls every 50 ms: ample time to (wrongly) report
            node.call("evm_revert", snapshot)
            assert node.call("eth_getTransactionReceipt", dropped["transactionHash"]) is None
            node.mine(5)
            kept = node.send(KEYS["alice"], ADDRESSES["bob"], 2 * ETHER)
            node.mine(2)
            await until(lambda: _reported(p["bob"], kept["transactionHash"]), "kept reported")
            reported = [(i.settlement_id, i.amount.value) for i in p["bob"].incoming]
            assert reported == [(kept["transactionHash"], str(2 * ETHER))]
    finally:
        node.stop()


@run_async
async def test_a_pending_transaction_is_replaced_with_higher_fees_and_pays_once(
    workdir: Path,
) -> None:
    node = Anvil.start(workdir / "anvil.log")
    try:
        env = {"ILP_ETHEREUM_SEND_WAIT": "0.2", "ILP_ETHEREUM_BUMP_AFTER": "0.3"}
        async with pair(
            adaptor_env(node, workdir, "alice", **env), adaptor_env(node, workdir, "bob")
        ) as p:
            await p.setup_accounts()
            bob_before, nonce_before = node.balance(ADDRESSES["bob"]), nonce(node, "alice")
            node.call("evm_setAutomine", False)  # nothing is mined: the transaction waits
            first = await p["alice"].send("bump-1", ETHER, 18)
            assert first.status == apb.SETTLEMENT_STATUS_PENDING

            async def replaced() -> bool:
                reply = await p["alice"].send("bump-1", ETHER, 18)
                return reply.settlement_id != first.settlement_id

            await until(replaced, "a fee-bumped version is signed and broadcast")
            pool = node.call("eth_getTransactionByHash", first.settlement_id)
            node.call("evm_setAutomine", True)
            node.mine()
            done = await until(lambda: _completed(p["alice"], "bump-1", ETHER), "paid")
            assert done.settlement_id != first.settlement_id  # a later version was mined
            assert node.balance(ADDRESSES["bob"]) - bob_before == ETHER
            assert nonce(node, "alice") == nonce_before + 1
            mined = node.call("eth_getTransactionByHash", done.settlement_id)
            assert pool is None or int(mined["maxFeePerGas"], 16) > int(pool["maxFeePerGas"], 16)
    finally:
        node.stop()


@run_async
async def test_a_nonce_taken_by_another_signer_fails_the_payment_and_the_retry_pays_once(
    workdir: Path,
) -> None:
    """Another transaction signed with alice's key (a configuration mistake) replaces her
    pending payment's transaction in the pool and is mined: the payment fails, saying so, and
    paid nothing; the engine's retry of the key makes a new attempt that pays once."""
    node = Anvil.start(workdir / "anvil.log")
    try:
        env = {"ILP_ETHEREUM_SEND_WAIT": "0.2"}
        async with pair(
            adaptor_env(node, workdir, "alice", **env), adaptor_env(node, workdir, "bob")
        ) as p:
            await p.setup_accounts()
            bob_before = node.balance(ADDRESSES["bob"])
            node.call("evm_setAutomine", False)
            pending = await p["alice"].send("taken-1", ETHER, 18)
            assert pending.status == apb.SETTLEMENT_STATUS_PENDING
            taken = nonce(node, "alice")
            other = Account.sign_transaction(
                {
                    "type": 2,
                    "chainId": CHAIN_ID,
                    "nonce": taken,
                    "to": address_of_key(DEV_KEYS[3]),
                    "value": 1,
                    "gas": 21_000,
                    "maxFeePerGas": 1000 * 10**9,
                    "maxPriorityFeePerGas": 100 * 10**9,
                },
                KEYS["alice"],
            )
            node.call("eth_sendRawTransaction", "0x" + bytes(other.raw_transaction).hex())
            node.call("evm_setAutomine", True)
            node.mine()
            assert nonce(node, "alice") == taken + 1
            assert node.call("eth_getTransactionReceipt", pending.settlement_id) is None

            # The verdict may come from a SendMoney or from the adaptor's own look at the
            # chain (then the next SendMoney already retries): its log line says it either way.
            process = p["alice"].process
            assert process is not None
            async with asyncio.timeout(60):
                await process.wait_for_output("settlement displaced", stream="stderr")
            assert b"did not sign" in process.stderr
            assert node.balance(ADDRESSES["bob"]) == bob_before
            done = await until(lambda: _completed(p["alice"], "taken-1", ETHER), "retry paid")
            assert done.settlement_id != pending.settlement_id
            assert node.balance(ADDRESSES["bob"]) - bob_before == ETHER
            assert nonce(node, "alice") == taken + 2
    finally:
        node.stop()
