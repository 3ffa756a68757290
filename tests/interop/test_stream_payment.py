"""A real payment protocol across our host: a STREAM payment (npm ilp-protocol-stream) from a
sender behind one JavaScript ilp-connector to a receiver behind another, routed through our
connector, which peers with both and has no static route (CCP teaches every hop its way).

    sender - JS connector A (test.jsa) - our host (test.host) - JS connector B (test.jsb) - receiver

STREAM's packets carry encrypted data and conditions only the receiver can fulfil; our host
forwards them untouched, and the money the receiver reports is the sender's to the unit
(one-to-one rates, no spread).
"""

from __future__ import annotations

import asyncio
import json
import os
import socket

from host.connector import Connector, InMemoryClearing, PeerConfig
from tests.connector.connector_harness import RecordingMessages
from tests.interop.js_harness import (
    HERE,
    JsConnector,
    connector_options,
    free_ports,
    http_account,
)
from tests.polling import wait_until_async

AMOUNT = 12_345
CREDIT = 1_000_000


def test_a_stream_payment_crosses_our_host() -> None:
    async def run() -> None:
        host_sock = socket.socket()
        host_sock.bind(("127.0.0.1", 0))
        host_url = f"http://127.0.0.1:{host_sock.getsockname()[1]}/"
        ports = iter(free_ports(8))
        sides = {}
        for name, leaf in (("jsa", "sender"), ("jsb", "receiver")):
            to_host, to_leaf, leaf_port, admin = next(ports), next(ports), next(ports), next(ports)
            accounts = {
                "host": http_account("peer", to_host, host_url, f"{name}-in", f"{name}-out"),
                leaf: http_account(
                    "child", to_leaf, f"http://127.0.0.1:{leaf_port}/", "leaf-tok", "leaf-tok"
                ),
            }
            options = connector_options(accounts, address=f"test.{name}", admin_port=admin)
            sides[name] = (
                JsConnector(options),
                PeerConfig(
                    name,
                    f"http://127.0.0.1:{to_host}/",
                    None,
                    incoming_token=f"{name}-out",
                    outgoing_token=f"{name}-in",
                ),
                {"port": leaf_port, "url": f"http://127.0.0.1:{to_leaf}/", "token": "leaf-tok"},
            )
        clearing = InMemoryClearing({name: (-CREDIT, CREDIT) for name in sides})
        host = Connector(
            "test.host",
            [peer for _, peer, _ in sides.values()],
            [],
            clearing,
            RecordingMessages(),
            sock=host_sock,
            route_broadcast_interval=0.5,
        )
        jsa, jsb = sides["jsa"][0], sides["jsb"][0]
        try:
            await asyncio.gather(host.start(), jsa.start(), jsb.start())
            # A learns test.jsb from us, which learned it from B (and B test.jsa likewise).

            async def routes() -> tuple[dict[str, str], dict[str, str]]:
                return await jsa.routes(), await jsb.routes()

            await wait_until_async(
                routes,
                "A to learn test.jsb and B test.jsa from us",
                interval=0.1,
                done=lambda ab: ab[0].get("test.jsb") == "host" and ab[1].get("test.jsa") == "host",
            )
            payment = await asyncio.create_subprocess_exec(
                "node",
                str(HERE / "stream_payment.js"),
                json.dumps(
                    {"amount": AMOUNT, "sender": sides["jsa"][2], "receiver": sides["jsb"][2]}
                ),
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                cwd=HERE,
                env={**os.environ, "DEBUG": os.environ.get("JS_DEBUG", "")},
            )
            async with asyncio.timeout(60):
                out, err = await payment.communicate()
            lines = out.decode().strip().splitlines()
            assert lines, (payment.returncode, err.decode()[-3000:])
            result = json.loads(lines[-1])
            if payment.returncode != 0:
                raise AssertionError(
                    f"the payment failed: {result}\n{err.decode()[-2000:]}\n"
                    f"A: {jsa.log()}\nB: {jsb.log()}"
                )
            assert result["destination"].startswith("test.jsb.receiver.")
            assert result["sent"] == result["delivered"] == result["received"] == AMOUNT
            # Every hop's books: A paid us, we paid B, to the unit.
            assert clearing.balances == {"jsa": AMOUNT, "jsb": -AMOUNT}
            assert await jsa.balance("host") == -AMOUNT
            assert await jsb.balance("host") == AMOUNT
        finally:
            await asyncio.gather(host.stop(), jsa.stop(), jsb.stop(), return_exceptions=True)

    asyncio.run(run())
