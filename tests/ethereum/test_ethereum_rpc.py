"""The Ethereum adaptor's JSON-RPC client (adaptors/ethereum/eth_rpc.py) on a real anvil node:
while it follows new blocks over the WebSocket, its calls and batches go over that connection
(the HTTP endpoint it is given here answers nothing), whatever the follower of the blocks does
meanwhile, and over HTTP again once it closes."""

from __future__ import annotations

import asyncio
import socket
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "adaptors" / "ethereum"))

import pytest
from eth_rpc import JsonRpc, NodeUnavailable, RpcError

from host.demo.anvil import Anvil
from tests.ethereum.harness import until
from tests.ethereum.test_ethereum_adaptor import node, run_async, workdir

__all__ = ["node", "workdir"]  # fixtures


def _closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@run_async
async def test_calls_go_over_the_websocket_while_it_is_open_and_over_http_after(
    node: Anvil,
) -> None:
    rpc = JsonRpc(f"http://127.0.0.1:{_closed_port()}", timeout=5)
    with pytest.raises(NodeUnavailable):
        await rpc.block_number()  # over HTTP: nothing answers
    heads: list[dict[str, Any]] = []
    resume = asyncio.Event()

    async def follow() -> None:
        async for header in rpc.new_heads(node.url.replace("http://", "ws://")):
            heads.append(header)
            await resume.wait()  # busy with a header: the calls are answered all the same

    following = asyncio.create_task(follow())
    try:

        async def answers() -> bool:
            try:
                return await rpc.block_number() == 0
            except NodeUnavailable:
                return False  # the WebSocket is not open yet

        await until(answers, "a call answered over the WebSocket")
        # A batch, an error within it, and many calls at once, each matched to its reply.
        chain_id, refused = await rpc.batch(("eth_chainId", ()), ("eth_noSuchMethod", ()))
        assert chain_id == hex(31337) and isinstance(refused, RpcError)
        node.call("evm_mine")
        await until(lambda: _true(bool(heads)), "the mined block announced")
        assert int(heads[0]["number"], 16) == 1
        heights = await asyncio.gather(*(rpc.block_number() for _ in range(50)))
        assert heights == [1] * 50
        resume.set()
        node.call("evm_mine")
        await until(lambda: _true(len(heads) == 2), "the next block announced")
    finally:
        following.cancel()
        await asyncio.gather(following, return_exceptions=True)
    with pytest.raises(NodeUnavailable):
        await rpc.block_number()  # the WebSocket closed: over HTTP again
    await rpc.close()


async def _true(value: bool) -> bool:
    return value
