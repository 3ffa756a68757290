"""The JavaScript reference connector as a subprocess (js_connector.js), for tests/interop.

:class:`JsConnector` starts ``node js_connector.js`` with ilp-connector's options, waits for its
READY line, and talks to it: ``send`` makes one of its leaves send an exercise packet, ``admin``
reads ilp-connector's admin API (loopback). Every port is a free loopback port.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
from pathlib import Path
from typing import Any

import aiohttp

from tests.polling import wait_until_async

HERE = Path(__file__).resolve().parent
NODE_MODULES = HERE / "node_modules"
#: How long the JS connector may take to start (Node start, ILDCP from its parent).
START_TIMEOUT = 30.0


def free_ports(count: int) -> list[int]:
    """``count`` distinct free loopback ports (all held open until all are chosen, so the
    kernel cannot hand out one twice; a Node listener takes each over afterwards)."""
    socks = []
    try:
        for _ in range(count):
            sock = socket.socket()
            socks.append(sock)
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def http_account(
    relation: str,
    port: int,
    url: str,
    incoming_token: str,
    outgoing_token: str,
    *,
    legacy_token: bool = False,
    **info: Any,
) -> dict[str, Any]:
    """An ilp-connector account over ilp-plugin-http (USD at scale 6, credit of 1 USD).

    ``legacy_token`` sends the outgoing token bare (ilp-plugin-http's ``secretToken``)."""
    outgoing: dict[str, Any] = {"url": url}
    outgoing["secretToken" if legacy_token else "staticToken"] = outgoing_token
    return {
        "relation": relation,
        "assetCode": "USD",
        "assetScale": 6,
        "plugin": "ilp-plugin-http",
        "options": {
            "incoming": {"port": port, "staticToken": incoming_token},
            "outgoing": outgoing,
        },
        "balance": {"minimum": "-1000000", "maximum": "1000000"},
        **info,
    }


def connector_options(
    accounts: dict[str, dict[str, Any]], *, address: str | None, admin_port: int
) -> dict[str, Any]:
    """ilp-connector's options: test network, one-to-one rates, no spread, fast broadcasts."""
    options: dict[str, Any] = {
        "env": "test",
        "backend": "one-to-one",
        "spread": 0,
        "store": "memory",
        "accounts": accounts,
        "routeBroadcastInterval": 500,
        "routeExpiry": 5000,
        "adminApi": True,
        "adminApiHost": "127.0.0.1",
        "adminApiPort": admin_port,
        "initialConnectTimeout": 20000,
    }
    if address is not None:
        options["ilpAddress"] = address
    return options


class JsConnector:
    """One ``node js_connector.js`` process; ``env`` adds to its environment (e.g.
    ``NODE_EXTRA_CA_CERTS``, the CAs Node.js trusts besides its own)."""

    def __init__(
        self,
        options: dict[str, Any],
        leaves: list[dict[str, Any]] = (),  # type: ignore[assignment]
        env: dict[str, str] | None = None,
    ) -> None:
        self.options = options
        self.env = dict(env or {})
        self.leaves = list(leaves)
        self.admin_port = int(options["adminApiPort"])
        self._process: asyncio.subprocess.Process | None = None
        self._stderr: list[bytes] = []
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        if not (NODE_MODULES / "ilp-connector").is_dir():
            raise AssertionError(f"{NODE_MODULES} lacks ilp-connector: run `make setup`")
        env = {**os.environ, "DEBUG": os.environ.get("JS_DEBUG", ""), **self.env}
        self._process = await asyncio.create_subprocess_exec(
            "node",
            str(HERE / "js_connector.js"),
            json.dumps({"connector": self.options, "leaves": self.leaves}),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=HERE,
            env=env,
        )
        self._drain = asyncio.create_task(self._read_stderr())
        try:
            async with asyncio.timeout(START_TIMEOUT):
                line = await self._readline()
        except TimeoutError:
            raise AssertionError(f"the JS connector did not start: {self.log()}") from None
        if not line.startswith("READY"):
            raise AssertionError(f"the JS connector failed: {line!r} {self.log()}")
        # ilp-connector starts its admin API without waiting for it to listen.
        await wait_until_async(
            lambda: self.admin("/accounts"),
            "the JS connector's admin API to listen",
            timeout=5,
            interval=0.05,
            done=lambda _: True,
            ignore=(aiohttp.ClientConnectionError,),
        )

    async def _read_stderr(self) -> None:
        assert self._process is not None and self._process.stderr is not None
        while chunk := await self._process.stderr.read(4096):
            self._stderr.append(chunk)

    def log(self) -> str:
        return b"".join(self._stderr).decode("utf-8", "replace")[-4000:]

    async def _readline(self) -> str:
        """The next line of the harness protocol; ilp-connector's own log lines (it logs to
        stdout) are kept with stderr's."""
        assert self._process is not None and self._process.stdout is not None
        while True:
            line = await self._process.stdout.readline()
            if not line:
                await asyncio.sleep(0.2)
                raise AssertionError(f"the JS connector exited: {self.log()}")
            if line.startswith((b"READY", b"{")):
                return line.decode().strip()
            self._stderr.append(line)

    async def request(self, **request: Any) -> dict[str, Any]:
        """One JSON request to the harness and its answer."""
        assert self._process is not None and self._process.stdin is not None
        async with self._lock:
            self._process.stdin.write(json.dumps(request).encode() + b"\n")
            await self._process.stdin.drain()
            async with asyncio.timeout(20):
                answer: dict[str, Any] = json.loads(await self._readline())
        return answer

    async def send(self, leaf: str, destination: str, amount: int) -> dict[str, Any]:
        return await self.request(op="send", leaf=leaf, destination=destination, amount=amount)

    async def admin(self, path: str) -> Any:
        """GET ilp-connector's admin API."""
        url = f"http://127.0.0.1:{self.admin_port}{path}"
        async with aiohttp.ClientSession() as http, http.get(url) as response:
            response.raise_for_status()
            return await response.json(content_type=None)

    async def address(self) -> str:
        status = await self.admin("/accounts")
        return str(status["address"])

    async def balance(self, account: str) -> int:
        status = await self.admin("/balance")
        return int(status["accounts"][account]["balance"])

    async def routes(self) -> dict[str, str]:
        """ilp-connector's local routing table: prefix -> next hop account."""
        status = await self.admin("/routing")
        return {prefix: route["nextHop"] for prefix, route in status["localRoutingTable"].items()}

    async def stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        if process.stdin is not None:
            process.stdin.close()
        try:
            async with asyncio.timeout(5):
                await process.wait()
        except TimeoutError:
            process.kill()
            await process.wait()
        await asyncio.gather(self._drain, return_exceptions=True)

    async def __aenter__(self) -> JsConnector:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
