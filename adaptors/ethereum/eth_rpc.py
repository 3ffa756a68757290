"""A small asynchronous Ethereum JSON-RPC client over HTTP and, while one is open, over the
node's WebSocket (aiohttp).

While ``new_heads`` follows the node's blocks over a WebSocket, every call goes over that same
connection (requests matched to replies by id): a request there costs a tenth of an HTTP
request's (no request and response headers to build and parse, no pooled connection to take
and give back), and a settlement's broadcast and the payee's read of its block are each one.
When the WebSocket closes, calls go over HTTP again (a call the closing cut off is sent again
over HTTP: every call the adaptor makes is a read or a re-sendable signed transaction).

Two failure kinds, translated here once: ``NodeUnavailable`` (no answer: connection refused,
timeout, a 5xx, a body that is not JSON-RPC; the outcome of a write is unknown) and
``RpcError`` (the node answered with a JSON-RPC error: a definite refusal, with its code,
message and revert data).
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import AsyncIterator
from typing import Any, Final

import aiohttp
from eth_chain import from_quantity

#: Seconds one call may take; a node slower than that is "unavailable" for now.
CALL_TIMEOUT: Final = 10.0


class NodeUnavailable(ConnectionError):
    """The node did not answer (or not in JSON-RPC); retry later."""


class _SocketLost(ConnectionError):
    """The WebSocket closed before the reply came: the call goes over HTTP instead."""


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
        self._seconds = timeout
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._ids = itertools.count(1)
        self._session: aiohttp.ClientSession | None = None
        #: The WebSocket ``new_heads`` holds open, while it is open: calls go over it.
        self._socket: aiohttp.ClientWebSocketResponse | None = None
        #: Calls sent over the WebSocket, by request id (every id of a batch), awaiting replies.
        self._waiting: dict[int, asyncio.Future[Any]] = {}

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
        """Send a request (or batch); the decoded reply, or NodeUnavailable."""
        socket = self._socket
        if socket is not None and not socket.closed:
            try:
                return await self._over_socket(what, body, socket)
            except _SocketLost:
                pass  # over HTTP, below
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        try:
            async with self._session.post(self.url, json=body) as response:
                if response.status >= 500:
                    raise NodeUnavailable(f"{what}: HTTP {response.status} from the node")
                return await response.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise NodeUnavailable(f"{what}: {type(exc).__name__}: {exc}") from exc

    async def _over_socket(
        self, what: str, body: Any, socket: aiohttp.ClientWebSocketResponse
    ) -> Any:
        """The reply to a request sent over the WebSocket (``new_heads`` reads it and hands
        it over); _SocketLost if the socket closes first; NodeUnavailable after the timeout."""
        ids = [request["id"] for request in body] if isinstance(body, list) else [body["id"]]
        reply: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        for request_id in ids:
            self._waiting[request_id] = reply
        try:
            try:
                await socket.send_str(json.dumps(body))
            except (aiohttp.ClientError, ConnectionError) as exc:
                raise _SocketLost(str(exc)) from exc
            try:
                async with asyncio.timeout(self._seconds):
                    return await reply
            except TimeoutError as exc:
                raise NodeUnavailable(f"{what}: no answer in {self._seconds:g} s") from exc
        finally:
            for request_id in ids:
                self._waiting.pop(request_id, None)

    def _replied(self, body: Any) -> None:
        """Hand a reply read from the WebSocket to the call that waits for it."""
        replies = body if isinstance(body, list) else [body]
        for one in replies:
            request_id = one.get("id") if isinstance(one, dict) else None
            waiting = self._waiting.get(request_id) if isinstance(request_id, int) else None
            if waiting is not None:
                if not waiting.done():
                    waiting.set_result(body)
                return

    async def new_heads(self, ws_url: str) -> AsyncIterator[dict[str, Any]]:
        """The header of each new block the node announces (``eth_subscribe`` "newHeads" over a
        WebSocket: number, hash, parent hash, base fee), until the connection ends;
        NodeUnavailable if it cannot be opened. Meanwhile this client's calls go over it: a
        task of its own reads the socket, so that replies come whatever the caller does
        between two headers."""
        async with aiohttp.ClientSession() as session:
            try:
                # No size limit: a batch of blocks with their transactions may be large, and
                # HTTP replies have none either.
                socket = await session.ws_connect(ws_url, heartbeat=30, max_msg_size=0)
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                raise NodeUnavailable(f"{ws_url}: {type(exc).__name__}: {exc}") from exc
            async with socket:
                await socket.send_json(
                    {
                        "jsonrpc": "2.0",
                        "id": next(self._ids),
                        "method": "eth_subscribe",
                        "params": ["newHeads"],
                    }
                )
                headers: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
                reader = asyncio.get_running_loop().create_task(self._read(socket, headers))
                self._socket = socket
                try:
                    while (header := await headers.get()) is not None:
                        yield header
                    await reader  # how the socket ended, if it failed
                finally:
                    if self._socket is socket:
                        self._socket = None
                    reader.cancel()
                    await asyncio.gather(reader, return_exceptions=True)
                    for waiting in self._waiting.values():
                        if not waiting.done():
                            waiting.set_exception(_SocketLost("the WebSocket closed"))

    async def _read(
        self,
        socket: aiohttp.ClientWebSocketResponse,
        headers: asyncio.Queue[dict[str, Any] | None],
    ) -> None:
        """Hand each reply to its call and each announced header to ``headers``; None there
        when the socket ends."""
        try:
            async for message in socket:
                if message.type != aiohttp.WSMsgType.TEXT:
                    break
                body = json.loads(message.data)
                if isinstance(body, list) or (
                    isinstance(body, dict) and body.get("id") is not None
                ):
                    self._replied(body)
                    continue
                params = body.get("params") if isinstance(body, dict) else None
                result = params.get("result") if isinstance(params, dict) else None
                if isinstance(result, dict) and "number" in result:
                    headers.put_nowait(result)
        finally:
            headers.put_nowait(None)

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
