"""The Connector API (proposal 2) served on a real unix socket over a real clearing file: every
RPC, its error statuses, resuming the event stream, take-over, and peer messages through the
relay."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from connector_harness import ServedApi, with_served_api

from host.connector.api import ConnectorApi, EngineRelay, check_api_address, serve_connector_api
from host.connector.durable_clearing import AccountLimits, DurableClearing
from host.connector.ports import MessageRefused, PeerRefused, PeerUnreachable
from host.credentials import ServerTls
from host.pb.ilphost.connector.v1 import connector_pb2 as pb
from host.pb.ilphost.connector.v1 import connector_pb2_grpc
from host.remote_connector import channel_to
from sdk.mtls import generate_certificate
from sdk.pb.ilphost.types.v1 import types_pb2
from tests.grpc_status import failure
from tests.polling import wait_until_async

Stub = Any  # connector_pb2_grpc.ConnectorAsyncStub exists for type checkers only


class Messenger:
    """The connector's side of SendData, answering by the data: b"down", b"refuse", else echo."""

    async def send_settlement_message(self, account_id: str, data: bytes) -> bytes:
        if data == b"down":
            raise PeerUnreachable("bob: connection refused")
        if data == b"refuse":
            raise PeerRefused("bob refused it", "F99")
        return b"echo:" + data


def run(scenario: Callable[[Stub, EngineRelay, DurableClearing], Awaitable[None]]) -> None:
    async def with_stub(api: ServedApi) -> None:
        async with grpc.aio.insecure_channel(api.address) as channel:
            await scenario(connector_pb2_grpc.ConnectorStub(channel), api.relay, api.clearing)

    with_served_api(with_stub, Messenger(), {"bob": AccountLimits(6, -1000, 1000)})


def delta(
    value: int, key: str, scale: int = 6, account: str = "bob"
) -> pb.ApplyBalanceDeltaRequest:
    return pb.ApplyBalanceDeltaRequest(
        account_id=account,
        delta=types_pb2.SignedAmount(value=str(value), scale=scale),
        idempotency_key=key,
    )


def test_balances_and_idempotent_deltas() -> None:
    async def scenario(stub: Stub, relay: EngineRelay, clearing: DurableClearing) -> None:
        reply = await stub.ApplyBalanceDelta(delta(-250, "d1"))
        assert (reply.balance.value, reply.balance.scale) == ("-250", 6)
        # Past the credit limit: deltas are settlements, not packets.
        assert (await stub.ApplyBalanceDelta(delta(-2000, "d2"))).balance.value == "-2250"
        assert (await stub.ApplyBalanceDelta(delta(-250, "d1"))).balance.value == "-250"
        got = await stub.GetBalance(pb.GetBalanceRequest(account_id="bob"))
        assert got.balance.value == "-2250"
        code = grpc.StatusCode
        assert (
            await failure(stub.ApplyBalanceDelta(delta(-251, "d1")))
        ).code == code.ALREADY_EXISTS
        assert (await failure(stub.ApplyBalanceDelta(delta(1, "d3", scale=2)))).code == (
            code.INVALID_ARGUMENT
        )
        assert (await failure(stub.ApplyBalanceDelta(delta(1, "")))).code == code.INVALID_ARGUMENT
        bad = delta(1, "d4")
        bad.delta.value = "01"
        assert (await failure(stub.ApplyBalanceDelta(bad))).code == code.INVALID_ARGUMENT
        assert (await failure(stub.ApplyBalanceDelta(delta(1, "d5", account="carol")))).code == (
            code.NOT_FOUND
        )
        assert (await failure(stub.GetBalance(pb.GetBalanceRequest(account_id="carol")))).code == (
            code.NOT_FOUND
        )
        for malformed in ("", "no spaces", "x" * 129):
            call = stub.GetBalance(pb.GetBalanceRequest(account_id=malformed))
            assert (await failure(call)).code == code.INVALID_ARGUMENT
            call = stub.ApplyBalanceDelta(delta(1, "d6", account=malformed))
            assert (await failure(call)).code == code.INVALID_ARGUMENT
        assert await clearing.balance("bob") == -2250  # the refusals changed nothing
        assert clearing.last_cursor == 2

    run(scenario)


def test_send_data_maps_the_peers_answers() -> None:
    async def scenario(stub: Stub, relay: EngineRelay, clearing: DurableClearing) -> None:
        reply = await stub.SendData(pb.SendDataRequest(account_id="bob", data=b"hi"))
        assert reply.data == b"echo:hi"
        code = grpc.StatusCode
        for data, expected in [(b"down", code.UNAVAILABLE), (b"refuse", code.FAILED_PRECONDITION)]:
            call = stub.SendData(pb.SendDataRequest(account_id="bob", data=data))
            assert (await failure(call)).code == expected
        call = stub.SendData(pb.SendDataRequest(account_id="carol", data=b"x"))
        assert (await failure(call)).code == code.NOT_FOUND
        call = stub.SendData(pb.SendDataRequest(account_id="bob", data=b"x" * 40_000))
        assert (await failure(call)).code == code.INVALID_ARGUMENT

    run(scenario)


async def take(
    stream: grpc.aio.UnaryStreamCall[pb.WatchEventsRequest, pb.WatchEventsResponse], count: int
) -> list[pb.WatchEventsResponse]:
    events = []
    while len(events) < count:
        events.append(await asyncio.wait_for(stream.read(), 10))
    return events


def test_events_resume_after_the_acknowledged_cursor_or_a_given_one() -> None:
    async def scenario(stub: Stub, relay: EngineRelay, clearing: DurableClearing) -> None:
        for n in range(3):
            await clearing.apply_balance_change("bob", -10, f"p{n}")
        stream = stub.WatchEvents(pb.WatchEventsRequest())
        events = await take(stream, 3)
        assert [e.cursor for e in events] == [1, 2, 3]
        change = events[2].balance_changed
        assert (change.account_id, change.delta.value, change.balance.value) == (
            "bob",
            "-10",
            "-30",
        )
        assert change.idempotency_key == "p2"
        # Live: a new change arrives on the open stream.
        await clearing.apply_balance_change("bob", 5, "p3")
        assert [e.cursor for e in await take(stream, 1)] == [4]
        stream.cancel()

        await stub.AcknowledgeEvents(pb.AcknowledgeEventsRequest(cursor=2))
        assert (
            await failure(stub.AcknowledgeEvents(pb.AcknowledgeEventsRequest(cursor=9)))
        ).code == (grpc.StatusCode.OUT_OF_RANGE)
        again = stub.WatchEvents(pb.WatchEventsRequest())  # from the oldest unacknowledged
        assert [e.cursor for e in await take(again, 2)] == [3, 4]
        again.cancel()
        later = stub.WatchEvents(pb.WatchEventsRequest(after_cursor=3))
        assert [e.cursor for e in await take(later, 1)] == [4]
        later.cancel()
        ahead = stub.WatchEvents(pb.WatchEventsRequest(after_cursor=99))
        assert (await failure(ahead.read())).code == grpc.StatusCode.OUT_OF_RANGE

    run(scenario)


def test_a_new_stream_replaces_the_open_one() -> None:
    async def scenario(stub: Stub, relay: EngineRelay, clearing: DurableClearing) -> None:
        first = stub.WatchEvents(pb.WatchEventsRequest())
        await clearing.apply_balance_change("bob", -1, "p0")
        await take(first, 1)
        assert relay.connected
        second = stub.WatchEvents(pb.WatchEventsRequest(after_cursor=1))
        await clearing.apply_balance_change("bob", -1, "p1")
        assert [e.cursor for e in await take(second, 1)] == [2]

        async def read_to_the_end() -> None:
            while True:
                await asyncio.wait_for(first.read(), 10)

        assert (await failure(read_to_the_end())).code == grpc.StatusCode.ABORTED
        assert relay.connected
        second.cancel()

        await wait_until_async(lambda: not relay.connected, "the relay to see the engine gone")

    run(scenario)


def test_peer_messages_go_to_the_engine_and_its_answer_back() -> None:
    async def scenario(stub: Stub, relay: EngineRelay, clearing: DurableClearing) -> None:
        with pytest.raises(MessageRefused) as refused:
            await relay.receive("bob", b"nobody listens")
        assert refused.value.code == "T00"

        stream = stub.WatchEvents(pb.WatchEventsRequest())
        await wait_until_async(lambda: relay.connected, "the relay to see the engine")
        waiting = asyncio.create_task(relay.receive("bob", b"claim"))
        (event,) = await take(stream, 1)
        assert event.cursor == 0
        message = event.peer_message
        assert (message.account_id, message.data) == ("bob", b"claim")
        await stub.RespondToPeerMessage(
            pb.RespondToPeerMessageRequest(message_id=message.message_id, data=b"ok")
        )
        assert await asyncio.wait_for(waiting, 10) == b"ok"
        # Answered already: nobody waits any more.
        call = stub.RespondToPeerMessage(
            pb.RespondToPeerMessageRequest(message_id=message.message_id)
        )
        assert (await failure(call)).code == grpc.StatusCode.NOT_FOUND

        refusing = asyncio.create_task(relay.receive("bob", b"bad"))
        (event,) = await take(stream, 1)
        await stub.RespondToPeerMessage(
            pb.RespondToPeerMessageRequest(
                message_id=event.peer_message.message_id, error="unknown channel"
            )
        )
        with pytest.raises(MessageRefused, match="unknown channel") as refused:
            await asyncio.wait_for(refusing, 10)
        assert refused.value.code == "F99"
        stream.cancel()

    run(scenario)


def test_tcp_needs_tls_and_a_token() -> None:
    check_api_address("unix:/run/c.sock")
    for tcp in ("127.0.0.1:7771", "[::1]:7771", "localhost:7771", "10.1.2.3:7771"):
        with pytest.raises(ValueError, match="needs TLS and a bearer token"):
            check_api_address(tcp)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def test_on_tcp_only_the_engine_with_the_token_moves_balances(tmp_path: Path) -> None:
    """Loopback is no protection: any local user reaches the port. Without the token,
    ApplyBalanceDelta and WatchEvents (the engine's stream) are UNAUTHENTICATED and change
    nothing; with it, the engine's channel (host.remote_connector.channel_to) works."""
    certificate = generate_certificate()
    tls = ServerTls(certificate.cert_pem, certificate.key_pem, "engine-s3cret")
    address = f"localhost:{free_port()}"

    async def main() -> None:
        clearing = await DurableClearing.open(tmp_path / "c.db", {"bob": AccountLimits(6, -10, 10)})
        relay = EngineRelay(timeout=5)
        server = await serve_connector_api(ConnectorApi(clearing, relay, Messenger()), address, tls)
        try:
            for token in (None, "wrong-token"):
                credentials = grpc.ssl_channel_credentials(certificate.cert_pem)
                if token is not None:
                    credentials = grpc.composite_channel_credentials(
                        credentials, grpc.access_token_call_credentials(token)
                    )
                async with grpc.aio.secure_channel(address, credentials) as channel:
                    stub = connector_pb2_grpc.ConnectorStub(channel)
                    refused = await failure(stub.ApplyBalanceDelta(delta(-5, "k1"), timeout=10))
                    assert refused.code == grpc.StatusCode.UNAUTHENTICATED
                    stream = stub.WatchEvents(pb.WatchEventsRequest())
                    refused = await failure(stream.read())
                    assert refused.code == grpc.StatusCode.UNAUTHENTICATED
                    assert not relay.connected
            assert await clearing.balance("bob") == 0
            # Plain text is not accepted at all on the TLS port.
            async with grpc.aio.insecure_channel(address) as channel:
                await failure(
                    connector_pb2_grpc.ConnectorStub(channel).GetBalance(
                        pb.GetBalanceRequest(account_id="bob"), timeout=5
                    )
                )
            engine = channel_to(address, ServerTls(certificate.cert_pem, token="engine-s3cret"))
            async with engine:
                stub = connector_pb2_grpc.ConnectorStub(engine)
                reply = await stub.ApplyBalanceDelta(delta(-5, "k1"), timeout=10)
                assert reply.balance.value == "-5"
        finally:
            await server.stop(None)
            await clearing.close()

    asyncio.run(main())
