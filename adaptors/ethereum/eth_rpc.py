"""A small asynchronous Ethereum JSON-RPC client over HTTP (aiohttp).

Two failure kinds, translated here once: ``NodeUnavailable`` (no answer: connection refused,
timeout, a 5xx, a body that is not JSON-RPC; the outcome of a write is unknown) and
``RpcError`` (the node answered with a JSON-RPC error: a definite refusal, with its code,
message and revert data).
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from typing import Any, Final

import aiohttp
from eth_chain import from_quantity

#: Seconds one call may take; a node slower than that is "unavailable" for now.
CALL_TIMEOUT: Final = 10.0


class NodeUnavailable(ConnectionError):
    """The node did not answer (or not in JSON-RPC); retry later."""


class RpcError(RuntimeError):
    """The node refused the call; ``code``, ``message`` and ``data`` as it sent them."""

    def __init__(self, method: str, code: int, message: str, data: Any) -> None:
        super().__init__(f"{method}: {message} (code {code})")
        self.code = code
        self.message = message
        self.data = data

    @property
    def revert_data(self) -> str | None:
        """The revert's return data, when the refusal is an execution revert."""
        data = self.data
        if isinstance(data, dict):
            data = data.get("data")
        return data if isinstance(data, str) and data.startswith("0x") else None


class JsonRpc:
    """One node, reached at ``url`` (http:// or https://)."""

    def __init__(self, url: str, timeout: float = CALL_TIMEOUT) -> None:
        self.url = url
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._ids = itertools.count(1)
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        """Close the HTTP session."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def call(self, method: str, *params: Any) -> Any:
        """Call ``method``; its result, RpcError or NodeUnavailable."""
        reply = await self._post(method, self._body(method, params))
        result = _result(method, reply)
        if isinstance(result, RpcError):
            raise result
        return result

    async def batch(self, *calls: tuple[str, tuple[Any, ...]]) -> list[Any]:
        """Several calls in one request (a JSON-RPC batch: one round trip instead of one each):
        each call's result, or its RpcError as a value; NodeUnavailable for them all."""
        what = "+".join(method for method, _ in calls)
        bodies = [self._body(method, params) for method, params in calls]
        replies = await self._post(what, bodies)
        if not isinstance(replies, list):
            raise NodeUnavailable(f"{what}: the node answered {str(replies)[:80]!r}")
        by_id = {r.get("id"): r for r in replies if isinstance(r, dict)}
        results = []
        for body, (method, _) in zip(bodies, calls, strict=True):
            if body["id"] not in by_id:
                raise NodeUnavailable(f"{what}: no answer to {method}")
            results.append(_result(method, by_id[body["id"]]))
        return results

    def _body(self, method: str, params: tuple[Any, ...]) -> dict[str, Any]:
        return {"jsonrpc": "2.0", "id": next(self._ids), "method": method, "params": list(params)}

    async def _post(self, what: str, body: Any) -> Any:
        """POST a request (or batch); the decoded reply, or NodeUnavailable."""
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        try:
            async with self._session.post(self.url, json=body) as response:
                if response.status >= 500:
                    raise NodeUnavailable(f"{what}: HTTP {response.status} from the node")
                return await response.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise NodeUnavailable(f"{what}: {type(exc).__name__}: {exc}") from exc

    # -- the calls the adaptor makes, typed --------------------------------------------------

    async def chain_id(self) -> int:
        return from_quantity(await self.call("eth_chainId"))

    async def block_number(self) -> int:
        return from_quantity(await self.call("eth_blockNumber"))

    async def block(self, tag: int | str, full: bool = False) -> dict[str, Any] | None:
        """A block by number or tag ("latest", "finalized"); None if there is none."""
        ref = hex(tag) if isinstance(tag, int) else tag
        result = await self.call("eth_getBlockByNumber", ref, full)
        return result if isinstance(result, dict) else None

    async def balance(self, address: str, tag: str = "latest") -> int:
        return from_quantity(await self.call("eth_getBalance", address, tag))

    async def nonce(self, address: str, tag: str = "pending") -> int:
        return from_quantity(await self.call("eth_getTransactionCount", address, tag))

    async def eth_call(self, tx: dict[str, Any], tag: int | str = "latest") -> str:
        ref = hex(tag) if isinstance(tag, int) else tag
        return str(await self.call("eth_call", tx, ref))

    async def tip(self) -> int:
        return from_quantity(await self.call("eth_maxPriorityFeePerGas"))

    async def send_raw(self, raw: bytes) -> str:
        return str(await self.call("eth_sendRawTransaction", "0x" + raw.hex()))

    async def receipt(self, tx_hash: str) -> dict[str, Any] | None:
        result = await self.call("eth_getTransactionReceipt", tx_hash)
        return result if isinstance(result, dict) else None

    async def logs(self, query: dict[str, Any]) -> list[dict[str, Any]]:
        result = await self.call("eth_getLogs", query)
        return list(result or [])


def _result(method: str, reply: Any) -> Any:
    """The result of one JSON-RPC reply; its error as an RpcError value; NodeUnavailable if
    the reply is not JSON-RPC."""
    if not isinstance(reply, dict):
        raise NodeUnavailable(f"{method}: the node answered {str(reply)[:80]!r}")
    error = reply.get("error")
    if error is None:
        return reply.get("result")
    if not isinstance(error, dict):
        raise NodeUnavailable(f"{method}: malformed error {str(error)[:80]!r}")
    return RpcError(
        method, int(error.get("code", 0)), str(error.get("message", "")), error.get("data")
    )


async def new_heads(ws_url: str) -> AsyncIterator[dict[str, Any]]:
    """The header of each new block the node announces (``eth_subscribe`` "newHeads" over a
    WebSocket: number, hash, parent hash, base fee), until the connection ends;
    NodeUnavailable if it cannot be opened."""
    async with aiohttp.ClientSession() as session:
        try:
            socket = await session.ws_connect(ws_url, heartbeat=30)
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise NodeUnavailable(f"{ws_url}: {type(exc).__name__}: {exc}") from exc
        async with socket:
            await socket.send_json(
                {"jsonrpc": "2.0", "id": 1, "method": "eth_subscribe", "params": ["newHeads"]}
            )
            async for message in socket:
                if message.type != aiohttp.WSMsgType.TEXT:
                    break
                body = message.json()
                result = (
                    (body.get("params") or {}).get("result") if isinstance(body, dict) else None
                )
                if isinstance(result, dict) and "number" in result:
                    yield result
