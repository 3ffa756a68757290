"""ilp-host peered with the JavaScript reference connector (npm ilp-connector 23.0.2 over
ilp-plugin-http 1.6.1), once per relation: our host as its parent, as its child, as its peer.

Each test runs the real JS connector as a subprocess (tests/interop/js_connector.js) with a
leaf (an ILP endpoint) behind it, and our connector core in this process with its real
ILP-over-HTTP server, all on loopback. Neither side has a static route: the addresses come by
ILDCP and the routes by CCP. Packets go both ways and both books agree.
"""

from __future__ import annotations

import asyncio
import hashlib
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from host.clearing_records import InFlight
from host.clearing_rules import ClearingBook
from host.connector import Connector, InMemoryClearing, PeerConfig
from host.connector.local import exercise_prepare
from host.connector.ports import PeerRefused
from host.connector.routing import Route
from host.credentials import https_server_context
from host.ilp import Fulfill, Prepare, Reject
from host.ilp.outcome import Status
from host.ilp.reconcile import NotSupported
from sdk.connectivity import Connectivity
from tests.certificates import TestCa
from tests.connector.connector_harness import RecordingMessages
from tests.interop.js_harness import (
    JsConnector,
    connector_options,
    free_ports,
    http_account,
)
from tests.polling import wait_until_async

#: How the JS connector sees our host -> how our host sees it.
OPPOSITE = {"parent": "child", "child": "parent", "peer": "peer"}
CREDIT = 1_000_000


@dataclass
class World:
    host: Connector
    clearing: InMemoryClearing
    js: JsConnector
    leaf_address: str


def _prepare(destination: str, amount: int, data: bytes = b"") -> Prepare:
    prepare = exercise_prepare(destination, amount, datetime.now(UTC) + timedelta(seconds=10))
    return Prepare(
        amount,
        prepare.expires_at,
        prepare.execution_condition,
        destination,
        prepare.data + data,
    )


@asynccontextmanager
async def world(
    js_sees_host_as: str,
    *,
    legacy_token: bool = False,
    https_files: Path | None = None,
    **account: bool,
) -> AsyncIterator[World]:
    """Our host and the JS connector, related as asked, each with no static route;
    ``account`` adds to the JS connector's account for us (sendRoutes, receiveRoutes).
    With ``https_files`` (a directory) our host serves HTTPS with a certificate of a CA made
    there, which the JS connector trusts by ``NODE_EXTRA_CA_CERTS``."""
    our_relation = OPPOSITE[js_sees_host_as]
    host_sock = socket.socket()
    host_sock.bind(("127.0.0.1", 0))
    scheme = "http" if https_files is None else "https"
    host_url = f"{scheme}://127.0.0.1:{host_sock.getsockname()[1]}/"
    server_tls = None
    js_env = {}
    if https_files is not None:
        ca = TestCa.make()
        cert, key = ca.write(https_files, "host", "127.0.0.1")
        (https_files / "ca.pem").write_bytes(ca.cert_pem)
        server_tls = https_server_context(cert, key, prefix="connector.")
        js_env["NODE_EXTRA_CA_CERTS"] = str(https_files / "ca.pem")
    js_port, leaf_port, leaf_account_port, admin_port = free_ports(4)
    host_address = None if our_relation == "parent" else "test.host"
    js_address = "test.js" if our_relation != "child" else None
    accounts = {
        "host": http_account(
            js_sees_host_as,
            js_port,
            host_url,
            "token-host-to-js",
            "token-js-to-host",
            legacy_token=legacy_token,
            **account,
        ),
        "leaf": http_account(
            "child", leaf_account_port, f"http://127.0.0.1:{leaf_port}/", "leaf-token", "leaf-token"
        ),
    }
    js = JsConnector(
        connector_options(accounts, address=js_address, admin_port=admin_port),
        [
            {
                "name": "leaf",
                "port": leaf_port,
                "url": f"http://127.0.0.1:{leaf_account_port}/",
                "token": "leaf-token",
            }
        ],
        env=js_env,
    )
    peer = PeerConfig(
        "js",
        f"http://127.0.0.1:{js_port}/",
        None,
        incoming_token="token-js-to-host",
        outgoing_token="token-host-to-js",
        relation=our_relation,  # type: ignore[arg-type]
        accept_bare_token=legacy_token,
    )
    clearing = InMemoryClearing({"js": (-CREDIT, CREDIT)})

    async def book(account_id: str) -> ClearingBook:
        return ClearingBook(6, clearing.balance(account_id), 0, 0)

    host = Connector(
        host_address,
        [peer],
        [],
        clearing,
        RecordingMessages(),
        sock=host_sock,
        assets={"js": ("USD", 6)},
        route_broadcast_interval=0.5,
        ildcp_timeout=30.0,
        books=book,
        server_tls=server_tls,
    )
    # Together: whichever is the child waits for its parent's ILDCP answer.
    started = await asyncio.gather(host.start(), js.start(), return_exceptions=True)
    try:
        for outcome in started:
            if isinstance(outcome, BaseException):
                raise AssertionError(f"start failed: {outcome!r}\n{js.log()}") from outcome
        js_own = await js.address()
        yield World(host, clearing, js, f"{js_own}.leaf")
    finally:
        await asyncio.gather(host.stop(), js.stop(), return_exceptions=True)


async def _exchange_packets_both_ways(w: World) -> None:
    # JS learns our routes (CCP) and we learn its (CCP, or the parent's default route).
    async def js_reaches_us() -> bool:
        return (await w.js.send("leaf", w.host.address, 0))["type"] == "fulfill"

    await wait_until_async(js_reaches_us, "the JS connector to route to us", interval=0.1)
    await wait_until_async(
        lambda: w.host.routing.resolve(w.leaf_address) is not None, "a route to the leaf"
    )
    reply = await w.host.handle_prepare(None, _prepare(w.leaf_address, 700))
    assert isinstance(reply, Fulfill), (reply, w.js.log())
    answer = await w.js.send("leaf", f"{w.host.address}.wallet", 250)
    assert answer == {"type": "fulfill"}, answer
    assert (await w.js.request(op="received", leaf="leaf"))["amount"] == 700
    # Both books: we owe the JS connector 700 - 250; it holds the mirror image.
    assert w.clearing.balance("js") == -450
    assert await w.js.balance("host") == 450


async def _per_packet_refusals_leave_the_link(w: World) -> None:
    # ilp-plugin-http refuses bodies over 32767 bytes with 413: this Prepare only.
    reply = await w.host.handle_prepare(None, _prepare(w.leaf_address, 1, bytes(32700)))
    assert isinstance(reply, Reject) and reply.code == "F08", reply
    assert "413" in reply.message
    assert w.host.links.state("js").state == Connectivity.READY
    # ilp-connector settles in its plugins: it refuses peer.settle as an unknown peer protocol.
    with pytest.raises(PeerRefused) as refused:
        await w.host.send_settlement_message("js", b"a settlement engine message")
    assert refused.value.code == "F01"
    assert w.host.links.state("js").state == Connectivity.READY
    # The host says so, and does not ask again at once (no blind retries).
    assert "no settlement engine behind the peer" in w.host.settlement_messages("js")
    with pytest.raises(PeerRefused, match="not asked again"):
        await w.host.send_settlement_message("js", b"another message")
    # Nor does it speak peer.reconcile ("unknown peer protocol"): not supported, not an error.
    with pytest.raises(NotSupported, match="unknown peer protocol"):
        await w.host.ask_reconcile("js")
    assert w.host.links.state("js").state == Connectivity.READY
    assert w.clearing.balance("js") == -450
    # Nor does it answer peer.outcome: a packet left unresolved with it (as a crash leaves
    # one) is released once expired, as before the journal, and counted.
    lost = InFlight(
        "ab" * 32,
        None,
        b"",
        "js",
        hashlib.sha256(b"never sent").digest(),
        9,
        time.time() - 60,
        hashlib.sha256(b"x").digest(),
    )
    assert (await w.host._ask_outcome("js", lost)).status == Status.UNSUPPORTED
    await w.clearing.journal_packet(lost)
    assert await w.host.inflight.load() == 1
    await wait_until_async(lambda: not w.host.inflight.waiting(), "the packet to be released")
    assert w.host.inflight.unsupported == {"js": 1}
    assert w.clearing.balance("js") == -450


def test_our_host_as_the_js_connectors_parent() -> None:
    async def run() -> None:
        async with world("parent") as w:
            # ILDCP: the JS connector took its address from us (ours + its account id).
            assert await w.js.address() == "test.host.js"
            assert w.host.address_source == "config"
            await _exchange_packets_both_ways(w)
            # The JS connector learned our address by CCP; we know it under our own.
            assert (await w.js.routes())["test.host"] == "host"
            await _per_packet_refusals_leave_the_link(w)

    asyncio.run(run())


def test_our_host_as_the_js_connectors_child() -> None:
    async def run() -> None:
        # ilp-connector exchanges no routes with a child unless its account says so.
        async with world("child", sendRoutes=True, receiveRoutes=True) as w:
            # ILDCP: we took our address from the JS connector, our parent.
            assert (w.host.address, w.host.address_source) == ("test.js.host", "ildcp:js")
            await _exchange_packets_both_ways(w)
            # We route by the parent (the default route, then its learned address), it by our
            # child address; the routes went both ways by CCP: its address to us, ours to it.
            assert (await w.js.routes())["test.js.host"] == "host"
            await wait_until_async(
                lambda: bool(w.host.routing.learned("js")), "routes from the parent"
            )
            assert [(r.prefix, r.path) for r in w.host.routing.learned("js")] == [
                ("test.js", ("test.js",))
            ]
            route = w.host.routing.resolve(w.leaf_address)
            assert route is not None and (route.prefix, route.peer_id) == ("test.js", "js")
            assert w.host.routing.resolve("test.elsewhere") == Route("", "js")
            status = await w.js.admin("/routing")
            assert status["peers"]["host"]["receive"]["epoch"] >= 1, status["peers"]
            await _per_packet_refusals_leave_the_link(w)

    asyncio.run(run())


def test_our_host_as_the_js_connectors_peer_with_a_legacy_bare_token() -> None:
    async def run() -> None:
        async with world("peer", legacy_token=True) as w:
            await _exchange_packets_both_ways(w)
            # Routes learned both ways by CCP, none configured on either side.
            route = w.host.routing.resolve(w.leaf_address)
            assert route is not None and (route.prefix, route.source) == ("test.js", "learned")
            assert route.path == ("test.js",)
            assert (await w.js.routes())["test.host"] == "host"
            await _per_packet_refusals_leave_the_link(w)

    asyncio.run(run())


def test_the_js_connector_reaches_our_host_over_https(tmp_path: Path) -> None:
    """ilp-plugin-http posts to our HTTPS server, trusting a private CA by NODE_EXTRA_CA_CERTS
    (our host reaches it over plain HTTP: its server has no TLS, and it is on loopback)."""

    async def run() -> None:
        async with world("parent", https_files=tmp_path) as w:
            assert w.host.url.startswith("https://")
            await _exchange_packets_both_ways(w)

    asyncio.run(run())
