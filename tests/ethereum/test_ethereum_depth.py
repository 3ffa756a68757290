"""How deep a block must be before the Ethereum adaptor counts it, on a real anvil node:
``ILP_ETHEREUM_CONFIRMATIONS=finalized`` (anvil's finalized block is latest - 64), and a
reorganisation deeper than the confirmations after a payment was reported (docs/ethereum.md,
"Confirmations": logged as an error, the incoming cursor steps back and reads the new branch;
what was reported stays reported, and nothing is reported twice)."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from host.demo.anvil import Anvil
from sdk.pb.ilphost.adaptor.v1 import adaptor_pb2 as apb
from tests.ethereum.harness import ADDRESSES, KEYS, Side, adaptor_env, pair, until
from tests.ethereum.test_ethereum_adaptor import run_async

ETHER = 10**18
#: anvil's finalized block trails the latest by this many blocks.
FINALITY_DEPTH = 64


@pytest.fixture
def workdir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="ileth"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def reported(side: Side) -> list[tuple[str, str]]:
    return [(i.settlement_id, i.amount.value) for i in side.incoming]


@run_async
async def test_finalized_counts_a_payment_only_once_its_block_is_finalized(
    workdir: Path,
) -> None:
    """Both sides wait for the finalized block: SendMoney stays PENDING and Bob reports nothing
    while the payment's block is one short of it; one block more and both see it."""
    node = Anvil.start(workdir / "anvil.log")
    try:
        env = {"ILP_ETHEREUM_CONFIRMATIONS": "finalized", "ILP_ETHEREUM_SEND_WAIT": "0.2"}
        async with pair(
            adaptor_env(node, workdir, "alice", **env), adaptor_env(node, workdir, "bob", **env)
        ) as p:
            await p.setup_accounts()
            first = await p["alice"].send("final-1", 3 * ETHER, 18)
            assert first.status == apb.SETTLEMENT_STATUS_PENDING
            receipt = node.call("eth_getTransactionReceipt", first.settlement_id)
            mined = int(receipt["blockNumber"], 16)
            # The latest block one short of making the payment's block finalized.
            node.mine(mined + FINALITY_DEPTH - 1 - node.block_number())
            assert int(node.call("eth_getBlockByNumber", "finalized", False)["number"], 16) == (
                mined - 1
            )
            await asyncio.sleep(1.0)  # both poll every 50 ms: ample time to (wrongly) count it
            again = await p["alice"].send("final-1", 3 * ETHER, 18)
            assert again.status == apb.SETTLEMENT_STATUS_PENDING
            assert again.settlement_id == first.settlement_id
            assert reported(p["bob"]) == []

            node.mine(1)

            async def completed() -> apb.SendMoneyResponse | None:
                reply = await p["alice"].send("final-1", 3 * ETHER, 18)
                return reply if reply.status == apb.SETTLEMENT_STATUS_COMPLETED else None

            done = await until(completed, "alice's payment is finalized")
            assert done.settlement_id == first.settlement_id
            await until(lambda: _reported_soon(p["bob"]), "bob reports the payment")
            assert reported(p["bob"]) == [(first.settlement_id, str(3 * ETHER))]
    finally:
        node.stop()


async def _reported_soon(side: Side) -> bool:
    return bool(side.incoming)


@run_async
async def test_a_reorganisation_deeper_than_the_confirmations_is_logged_and_read_again(
    workdir: Path,
) -> None:
    """Bob reported (and the engine acknowledged) a payment with its two confirmations; then
    the chain drops its block and mines another payment in its place (the same nonce of
    alice's). Bob logs the deep reorganisation, steps back, reports the new payment, and
    reports neither twice."""
    node = Anvil.start(workdir / "anvil.log")
    try:
        bob = adaptor_env(
            node,
            workdir,
            "bob",
            ILP_ETHEREUM_CONFIRMATIONS="2",
            ILP_ETHEREUM_PEERS=f"alice={ADDRESSES['alice']}",
        )
        async with pair(adaptor_env(node, workdir, "alice"), bob) as p:
            await p.stop("alice")  # payments come from alice's key, sent by the test
            await p["bob"].adaptor.SetupAccount(
                apb.SetupAccountRequest(account_id="alice"), timeout=30
            )
            earlier = node.send(KEYS["alice"], ADDRESSES["bob"], 1 * ETHER)
            snapshot = node.call("evm_snapshot")
            dropped = node.send(KEYS["alice"], ADDRESSES["bob"], 7 * ETHER)
            node.mine(1)  # the second confirmation
            await until(lambda: _reported_count(p["bob"], 2), "bob reports both payments")
            assert reported(p["bob"]) == [
                (earlier["transactionHash"], str(1 * ETHER)),
                (dropped["transactionHash"], str(7 * ETHER)),
            ]
            for settlement in p["bob"].incoming:
                await p["bob"].adaptor.ReceiveMoney(
                    apb.ReceiveMoneyRequest(settlement_id=settlement.settlement_id), timeout=10
                )

            node.call("evm_revert", snapshot)
            assert node.call("eth_getTransactionReceipt", dropped["transactionHash"]) is None
            replacement = node.send(KEYS["alice"], ADDRESSES["bob"], 5 * ETHER)
            assert replacement["transactionHash"] != dropped["transactionHash"]
            node.mine(3)  # the new branch is longer than the old one

            process = p["bob"].process
            assert process is not None
            async with asyncio.timeout(60):
                await process.wait_for_output(
                    "reorganisation deeper than the confirmations", stream="stderr"
                )
            await until(lambda: _reported_count(p["bob"], 3), "bob reports the new payment")
            await asyncio.sleep(1.0)  # bob polls every 50 ms: time to (wrongly) report again
            assert reported(p["bob"]) == [
                (earlier["transactionHash"], str(1 * ETHER)),
                (dropped["transactionHash"], str(7 * ETHER)),
                (replacement["transactionHash"], str(5 * ETHER)),
            ]
    finally:
        node.stop()


async def _reported_count(side: Side, count: int) -> bool:
    return len(side.incoming) >= count
