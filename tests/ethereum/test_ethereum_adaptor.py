"""The Ethereum adaptor on a real anvil node: two adaptor processes exchange settlement accounts
over (fake) engines, pay in ETH beyond 64 bits, and report what the chain did; an asset mismatch
refuses the account; concurrent payments never spend one balance twice; a node without
``eth_getBlockReceipts`` (anvil behind a proxy that refuses it) still has its payments found.
(The ERC-20 path: the conformance test and the demo test.)"""

from __future__ import annotations

import asyncio
import functools
import json
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
from aiohttp import web

from host.demo.anvil import DEV_KEYS, Anvil
from sdk.pb.ilphost.adaptor.v1 import adaptor_pb2 as apb
from sdk.pb.ilphost.types.v1 import types_pb2
from tests.ethereum.harness import ADDRESSES, adaptor_env, pair, until
from tests.grpc_status import failure

READY = types_pb2.CONNECTIVITY_STATE_READY
Code = grpc.StatusCode
ETHER = 10**18


def run_async(test: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """Run an async test body with asyncio.run (the suite uses no async plugin)."""

    @functools.wraps(test)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        asyncio.run(test(*args, **kwargs))

    return wrapper


@pytest.fixture
def workdir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="ileth"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def node(workdir: Path) -> Iterator[Anvil]:
    anvil = Anvil.start(workdir / "anvil.log")
    yield anvil
    anvil.stop()


@run_async
async def test_eth_settlement_beyond_64_bits_paid_once_and_reported_once(
    node: Anvil, workdir: Path
) -> None:
    async with pair(adaptor_env(node, workdir, "alice"), adaptor_env(node, workdir, "bob")) as p:
        info = await p["alice"].adaptor.GetInfo(apb.GetInfoRequest(), timeout=10)
        assert (info.ledger, info.asset_code, info.asset_scale) == ("ethereum", "ETH", 18)
        await p.setup_accounts()
        bob_before = node.balance(ADDRESSES["bob"])
        value = 20 * ETHER  # 2e19 wei: more than 2**64
        assert value > 2**64
        first = await p["alice"].send("settle-1", value, 18)
        assert first.status == apb.SETTLEMENT_STATUS_COMPLETED
        again = await p["alice"].send("settle-1", value, 18)
        assert again.settlement_id == first.settlement_id
        assert node.balance(ADDRESSES["bob"]) - bob_before == value
        await until(lambda: _has(p["bob"].incoming, first.settlement_id), "bob reports it")
        (incoming,) = p["bob"].incoming
        assert (incoming.account_id, incoming.amount.value) == ("alice", str(value))
        # Not acknowledged: a new stream delivers it again; acknowledged: never again.
        await p["bob"].adaptor.ReceiveMoney(
            apb.ReceiveMoneyRequest(settlement_id=first.settlement_id), timeout=10
        )
        refused = await failure(p["alice"].send("settle-1", value + 1, 18))
        assert refused.code == Code.ALREADY_EXISTS
        # What alice can pay out: her balance less the most one transfer may burn in gas.
        balance = await p["alice"].adaptor.GetBalance(apb.GetBalanceRequest(), timeout=10)
        base = int(node.call("eth_getBlockByNumber", "latest", False)["baseFeePerGas"], 16)
        tip = int(node.call("eth_maxPriorityFeePerGas"), 16)
        gas_reserve = 21_000 * (2 * base + tip)
        assert int(balance.balance.value) == node.balance(ADDRESSES["alice"]) - gas_reserve

        # Bob moves to a token: the two sides no longer settle in the same asset, and each
        # refuses the other's account, naming both assets.
        token = node.deploy_token(DEV_KEYS[0], 6, 10**15)
        await p.stop("bob")
        p["bob"].env.update(ILP_ETHEREUM_TOKEN=token, ILP_ADAPTOR_STATE_DB=str(workdir / "b2.db"))
        await p.start("bob")
        refused = await failure(
            p["bob"].adaptor.SetupAccount(apb.SetupAccountRequest(account_id="alice"), timeout=30)
        )
        assert refused.code == Code.FAILED_PRECONDITION
        assert token in refused.details and "ETH" in refused.details
        # Alice, told by Bob's request, refuses Bob from now on too.
        refused = await failure(p["alice"].send("settle-2", 1, 18))
        assert refused.code == Code.FAILED_PRECONDITION
        assert token in refused.details


async def _has(incoming: list[apb.IncomingSettlement], settlement_id: str) -> bool:
    return any(i.settlement_id == settlement_id for i in incoming)


def _signed(stderr: bytearray) -> list[dict[str, Any]]:
    """The adaptor's "settlement signed" log lines (hclog JSON on stderr)."""
    lines = []
    for line in bytes(stderr).decode(errors="replace").splitlines():
        if '"settlement signed"' in line:
            lines.append(json.loads(line))
    return lines


@run_async
async def test_with_blocks_announced_eth_is_paid_without_a_question_and_never_beyond_the_balance(
    node: Anvil, workdir: Path
) -> None:
    ws = {"ILP_ETHEREUM_WS_URL": node.url.replace("http://", "ws://")}
    async with pair(
        adaptor_env(node, workdir, "alice", **ws), adaptor_env(node, workdir, "bob", **ws)
    ) as p:
        await p.setup_accounts()
        bob_before = node.balance(ADDRESSES["bob"])
        paid: dict[str, int] = {}

        async def pay(key: str, value: int) -> bool:
            reply = await p["alice"].send(key, value, 18)
            if reply.status == apb.SETTLEMENT_STATUS_COMPLETED:
                paid[reply.settlement_id] = value
            return reply.status == apb.SETTLEMENT_STATUS_COMPLETED

        async def signed_without_asking() -> bool:
            # The first payment asks (the payee's code is not known yet); once a block has
            # been announced and the headroom read, the next ones ask nothing.
            await until(lambda: pay(f"quick-{len(paid)}", ETHER + len(paid)), "a payment")
            assert p["alice"].process is not None
            return not _signed(p["alice"].process.stderr)[-1]["asked_node"]

        await until(signed_without_asking, "a payment signed without asking the node")
        # Several at once: each takes its own nonce and its own share of the headroom.
        count_before = int(node.call("eth_getTransactionCount", ADDRESSES["alice"], "latest"), 16)
        await asyncio.gather(
            *(until(lambda i=i: pay(f"together-{i}", ETHER + i), "a payment") for i in range(5))
        )
        count_after = int(node.call("eth_getTransactionCount", ADDRESSES["alice"], "latest"), 16)
        assert count_after == count_before + 5
        # More than the address holds: refused before anything is signed (the reckoning does
        # not cover it, the node is asked and decides) ...
        held = node.balance(ADDRESSES["alice"])
        refused = await failure(p["alice"].send("large", held + ETHER, 18))
        assert refused.code == Code.FAILED_PRECONDITION and "insufficient" in refused.details
        # ... so the next payment takes the next nonce and is mined at once behind the others.
        await until(lambda: pay("after-refusal", ETHER), "the payment after the refusal")
        # Money arrives that the last reading did not see: the reckoning falls short, the node
        # is asked, and the payment goes through.
        node.call("anvil_setBalance", ADDRESSES["alice"], hex(held + 3 * ETHER))
        await until(lambda: pay("large", held + ETHER), "the large payment once funded")
        assert node.balance(ADDRESSES["bob"]) - bob_before == sum(paid.values())
        # Bob, reading each announced block in one request, reports every one of them once.
        await until(
            lambda: _all(p["bob"].incoming, set(paid)), "bob reports every payment", deadline=60
        )
        reported = [i.settlement_id for i in p["bob"].incoming]
        assert sorted(reported) == sorted(paid)
        assert {i.settlement_id: int(i.amount.value) for i in p["bob"].incoming} == paid


async def _all(incoming: list[apb.IncomingSettlement], ids: set[str]) -> bool:
    return {i.settlement_id for i in incoming} >= ids


@run_async
async def test_concurrent_payments_asked_of_the_node_never_spend_the_same_balance_twice(
    node: Anvil, workdir: Path
) -> None:
    # No announced blocks: every payment asks the node for its balance before signing.
    async with pair(adaptor_env(node, workdir, "alice"), adaptor_env(node, workdir, "bob")) as p:
        await p.setup_accounts()
        node.call("anvil_setBalance", ADDRESSES["alice"], hex(10 * ETHER))
        bob_before = node.balance(ADDRESSES["bob"])
        # Two payments of 6 ether at once: both questions see 10 ether; only one may be paid.
        replies = await asyncio.gather(
            p["alice"].send("half-a", 6 * ETHER, 18),
            p["alice"].send("half-b", 6 * ETHER, 18),
            return_exceptions=True,
        )
        paid = [r for r in replies if isinstance(r, apb.SendMoneyResponse)]
        refused = [r for r in replies if isinstance(r, grpc.aio.AioRpcError)]
        assert len(paid) == 1 and len(refused) == 1, replies
        assert paid[0].status == apb.SETTLEMENT_STATUS_COMPLETED
        assert refused[0].code() == Code.FAILED_PRECONDITION
        assert "insufficient liquidity" in (refused[0].details() or "")
        assert node.balance(ADDRESSES["bob"]) - bob_before == 6 * ETHER
        # The refusal reserved nothing: what is left can still be paid.
        more = await p["alice"].send("rest", 3 * ETHER, 18)
        assert more.status == apb.SETTLEMENT_STATUS_COMPLETED
        assert node.balance(ADDRESSES["bob"]) - bob_before == 9 * ETHER


@asynccontextmanager
async def without_block_receipts(node: Anvil, refused: list[str]) -> AsyncIterator[str]:
    """An HTTP JSON-RPC endpoint in front of ``node`` that knows no ``eth_getBlockReceipts``
    (as nodes before it was standardised), noting each refusal in ``refused``: its URL."""
    upstream = aiohttp.ClientSession()

    async def handle(request: web.Request) -> web.Response:
        body = await request.json()
        calls = body if isinstance(body, list) else [body]
        unknown = [c for c in calls if c.get("method") == "eth_getBlockReceipts"]
        passed = [c for c in calls if c.get("method") != "eth_getBlockReceipts"]
        refused.extend(c["method"] for c in unknown)
        replies = [
            {"jsonrpc": "2.0", "id": c["id"], "error": {"code": -32601, "message": "no method"}}
            for c in unknown
        ]
        if passed:
            async with upstream.post(node.url, json=passed) as answer:
                replies += await answer.json()
        return web.json_response(replies if isinstance(body, list) else replies[0])

    app = web.Application()
    app.router.add_post("/", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()
        await upstream.close()


@run_async
async def test_a_node_without_block_receipts_still_has_its_payments_found(
    node: Anvil, workdir: Path
) -> None:
    refused: list[str] = []
    async with without_block_receipts(node, refused) as url:
        env = {"ILP_ETHEREUM_RPC_URL": url}
        async with pair(
            adaptor_env(node, workdir, "alice", **env), adaptor_env(node, workdir, "bob", **env)
        ) as p:
            await p.setup_accounts()
            paid = await p["alice"].send("old-node", 2 * ETHER, 18)
            assert paid.status == apb.SETTLEMENT_STATUS_COMPLETED
            await until(lambda: _has(p["bob"].incoming, paid.settlement_id), "bob reports it")
            (incoming,) = p["bob"].incoming
            assert (incoming.account_id, incoming.amount.value) == ("alice", str(2 * ETHER))
            assert refused, "the follower asked for block receipts and was refused"
