"""The host's gRPC conversation with one adaptor after its handshake.

The channel (plain on a private unix socket, mutual TLS otherwise), the health check of service
"plugin", GetInfo and Probe, draining ``plugin.GRPCStdio``, following ``WatchEvents`` and the
channel's own connectivity, and the ``plugin.GRPCController/Shutdown`` request. Adaptors that
serve neither stdio nor the controller (plain gRPC servers) are accepted, as go-plugin does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random as _random
import ssl
import time
from collections.abc import Awaitable, Callable
from datetime import UTC

import grpc
from google.protobuf import empty_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from host.supervisor import tls_bridge
from host.supervisor.diagnose import StartFailure, StartProblem
from host.supervisor.logs import LineBuffer, LineParser, emit
from host.supervisor.tls_bridge import TlsBridge
from sdk import channels, mtls
from sdk.backoff import Backoff
from sdk.connectivity import ConnectionState, Connectivity, IllegalTransition
from sdk.contract import HEALTH_SERVICE
from sdk.handshake import Handshake
from sdk.pb.ilphost.adaptor.v1 import adaptor_pb2, adaptor_pb2_grpc
from sdk.pb.ilphost.types.v1 import types_pb2
from sdk.pb.plugin import (
    grpc_controller_pb2,
    grpc_controller_pb2_grpc,
    grpc_stdio_pb2,
    grpc_stdio_pb2_grpc,
)

#: Pauses before reopening a WatchEvents stream that ended.
EVENTS_BACKOFF = Backoff(initial=0.2, cap=5.0)
#: Pause between health checks while waiting for the first SERVING.
READY_POLL = 0.1

_log = logging.getLogger("ilp_host.supervisor")


#: The TLS bridges of open channels (by channel id), closed with their channel.
_bridges: dict[int, TlsBridge] = {}


def open_channel(handshake: Handshake, own: mtls.Certificate | None) -> grpc.aio.Channel:
    """The channel to the address of ``handshake``: mutual TLS iff the host offered its
    certificate (``own``), which the adaptor must then answer with its own. An adaptor
    certificate gRPC's TLS cannot verify (go-plugin's P-521) is reached through a TLS bridge
    (host/supervisor/tls_bridge.py). Call from a running event loop; close with
    ``close_channel``."""
    target = handshake.grpc_target()
    if own is None:
        if handshake.server_cert_der is not None:
            raise StartFailure(
                StartProblem.HANDSHAKE,
                "handshake line refused: it carries a certificate, but the host did not offer "
                "TLS (set auto_mtls, or make the adaptor leave the CERT field empty)",
            )
        return channels.aio_channel(target)
    if handshake.server_cert_der is None:
        raise StartFailure(
            StartProblem.HANDSHAKE,
            "handshake line refused: the host asked for mutual TLS (PLUGIN_CLIENT_CERT) but the "
            "CERT field is empty: the adaptor does not support automatic mTLS",
        )
    try:
        server_pem = mtls.der_to_pem(handshake.server_cert_der)
    except ValueError as exc:
        raise StartFailure(
            StartProblem.HANDSHAKE, f"handshake line refused: CERT is not a certificate: {exc}"
        ) from exc
    if tls_bridge.needs_bridge(server_pem):
        try:
            bridge = TlsBridge.open(handshake, own, server_pem)
        except (OSError, ssl.SSLError) as exc:
            raise StartFailure(
                StartProblem.HANDSHAKE,
                f"cannot carry TLS to the adaptor's {mtls.curve_of(server_pem)} certificate: {exc}",
            ) from exc
        _log.info(
            "adaptor certificate on %s, which gRPC's TLS cannot verify: TLS carried by the host "
            "(%s)",
            mtls.curve_of(server_pem),
            bridge.target,
        )
        channel = channels.aio_channel(bridge.target)
        _bridges[id(channel)] = bridge
        return channel
    credentials = mtls.channel_credentials(own, server_pem)
    return channels.aio_channel(target, credentials, mtls.CHANNEL_OPTIONS)


async def check_health(channel: grpc.aio.Channel, call_timeout: float) -> str | None:
    """None if the adaptor's health service "plugin" is SERVING, else what is wrong."""
    stub = health_pb2_grpc.HealthStub(channel)
    try:
        response = await stub.Check(
            health_pb2.HealthCheckRequest(service=HEALTH_SERVICE), timeout=call_timeout
        )
    except grpc.aio.AioRpcError as exc:
        if exc.code() == grpc.StatusCode.UNIMPLEMENTED:
            return "it does not serve grpc.health.v1.Health (UNIMPLEMENTED)"
        return f"health check failed: {exc.code().name}: {exc.details()}"
    if response.status == health_pb2.HealthCheckResponse.SERVING:
        return None
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
    return f"health service {HEALTH_SERVICE!r} is {status}"


async def wait_serving(channel: grpc.aio.Channel, within: float, call_timeout: float) -> None:
    """Poll health until SERVING; StartFailure after ``within`` seconds."""
    deadline = time.monotonic() + within
    while True:
        remaining = deadline - time.monotonic()
        problem = await check_health(channel, max(0.05, min(call_timeout, remaining)))
        if problem is None:
            return
        if "UNIMPLEMENTED" in problem or time.monotonic() + READY_POLL >= deadline:
            raise StartFailure(
                StartProblem.NOT_SERVING,
                f"not SERVING within {within:g} s of its handshake: {problem}",
            )
        await asyncio.sleep(READY_POLL)


async def get_info(
    channel: grpc.aio.Channel, within: float, call_timeout: float
) -> adaptor_pb2.GetInfoResponse:
    """GetInfo; a failure is a failed start (every adaptor must answer it once serving).

    UNAVAILABLE is asked again until ``within`` seconds have passed: an adaptor may not know
    its ledger's asset before its ledger first answers (docs/protocol.md).
    """
    stub = adaptor_pb2_grpc.LedgerAdaptorStub(channel)
    deadline = time.monotonic() + within
    while True:
        try:
            return await stub.GetInfo(adaptor_pb2.GetInfoRequest(), timeout=call_timeout)
        except grpc.aio.AioRpcError as exc:
            retry = exc.code() == grpc.StatusCode.UNAVAILABLE
            if not retry or time.monotonic() + READY_POLL >= deadline:
                if retry:  # the adaptor serves but never learned what it needs (its ledger)
                    hint = f" for {within:g} s, the start timeout (is its ledger reachable?)"
                elif exc.code() == grpc.StatusCode.UNIMPLEMENTED:
                    hint = " (is it a LedgerAdaptor?)"
                else:
                    hint = ""
                raise StartFailure(
                    StartProblem.NOT_SERVING,
                    f"GetInfo failed: {exc.code().name}: {exc.details()}{hint}",
                ) from exc
        await asyncio.sleep(READY_POLL)


async def probe(channel: grpc.aio.Channel, call_timeout: float) -> adaptor_pb2.ProbeResponse | None:
    """Probe, or None (logged) when it fails: the connections then come from events only."""
    stub = adaptor_pb2_grpc.LedgerAdaptorStub(channel)
    try:
        return await stub.Probe(adaptor_pb2.ProbeRequest(), timeout=call_timeout)
    except grpc.aio.AioRpcError as exc:
        _log.warning("Probe failed: %s: %s", exc.code().name, exc.details())
        return None


def connection_from_proto(message: types_pb2.Connection) -> ConnectionState | None:
    """An adaptor-reported connection, or None if it is malformed (no name, unknown state)."""
    if not message.name or message.state not in {int(c) for c in Connectivity}:
        return None
    since = message.since.ToDatetime(tzinfo=UTC) if message.HasField("since") else None
    return ConnectionState(
        name=message.name,
        kind=message.kind,
        state=Connectivity(message.state),
        since=since,
        last_error=message.last_error,
        attempts=message.attempts,
    )


def follow_channel(current: ConnectionState, observed: Connectivity) -> ConnectionState:
    """``current`` moved to the channel state gRPC reports. gRPC may pass through CONNECTING
    between two observations; it is filled in so the transition table holds."""
    try:
        return current.to(observed)
    except IllegalTransition:
        return current.to(Connectivity.CONNECTING).to(observed)


async def track_channel(channel: grpc.aio.Channel, update: Callable[[Connectivity], None]) -> None:
    """Report each connectivity state of ``channel`` until it is cancelled or shut down."""
    state = channel.get_state(try_to_connect=False)
    while True:
        observed = Connectivity[state.name]
        update(observed)
        if observed == Connectivity.SHUTDOWN:
            return
        await channel.wait_for_state_change(state)
        state = channel.get_state(try_to_connect=False)


async def drain_stdio(channel: grpc.aio.Channel, adaptor: str, logger: logging.Logger) -> None:
    """Read ``plugin.GRPCStdio/StreamStdio`` until it ends, each line a log record. A go-plugin
    plugin blocks while this stream is not read. UNIMPLEMENTED: no stdio, stderr only."""
    stub = grpc_stdio_pb2_grpc.GRPCStdioStub(channel)
    streams = {
        grpc_stdio_pb2.StdioData.STDOUT: ("stdout", LineBuffer(), LineParser()),
        grpc_stdio_pb2.StdioData.STDERR: ("stderr", LineBuffer(), LineParser()),
    }
    call = stub.StreamStdio(empty_pb2.Empty())
    try:
        async for chunk in call:
            if chunk.channel in streams:
                name, buffer, parser = streams[chunk.channel]
                for line in buffer.feed(chunk.data):
                    if line.strip():
                        emit(logger, adaptor, name, parser.parse(line))
    except grpc.aio.AioRpcError as exc:
        if exc.code() == grpc.StatusCode.UNIMPLEMENTED:
            _log.debug("adaptor %s does not serve GRPCStdio; its stderr is read directly", adaptor)
        elif exc.code() not in (grpc.StatusCode.CANCELLED, grpc.StatusCode.UNAVAILABLE):
            _log.warning("adaptor %s: stdio stream ended: %s", adaptor, exc.code().name)
    finally:
        call.cancel()
        for name, buffer, parser in streams.values():
            for line in buffer.flush():
                if line.strip():
                    emit(logger, adaptor, name, parser.parse(line))


async def follow_connections(
    channel: grpc.aio.Channel,
    adaptor: str,
    on_connection: Callable[[ConnectionState], None],
    without_stream: Callable[[], Awaitable[None]] | None = None,
    random: Callable[[], float] = _random.random,
) -> None:
    """Follow the connection changes on WatchEvents until cancelled, reopening the stream with
    backoff whenever it ends (each new stream starts with the current state of every
    connection). Incoming settlements on the same stream are the engine's business
    (host.binding follows its own stream). UNIMPLEMENTED ends it for good, after
    ``without_stream`` (if given) ran."""
    stub = adaptor_pb2_grpc.LedgerAdaptorStub(channel)
    reopened = 0
    while True:
        call = stub.WatchEvents(adaptor_pb2.WatchEventsRequest())
        opened = time.monotonic()
        try:
            async for event in call:
                if event.WhichOneof("event") != "connection_changed":
                    continue
                connection = connection_from_proto(event.connection_changed)
                if connection is None:
                    _log.warning(
                        "adaptor %s reported a malformed connection: %s",
                        adaptor,
                        event.connection_changed,
                    )
                else:
                    on_connection(connection)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.UNIMPLEMENTED:
                _log.info("adaptor %s does not serve WatchEvents", adaptor)
                if without_stream is not None:
                    await without_stream()
                return
            _log.debug("adaptor %s: WatchEvents ended: %s", adaptor, exc.code().name)
        finally:
            call.cancel()
        # A stream that stayed open a while was progress; one that keeps ending at once must
        # not make the host reopen it in a tight loop.
        reopened = 1 if time.monotonic() - opened > EVENTS_BACKOFF.cap else reopened + 1
        await asyncio.sleep(EVENTS_BACKOFF.delay(reopened, random))


async def request_shutdown(channel: grpc.aio.Channel, call_timeout: float) -> bool:
    """Ask the adaptor to stop with ``plugin.GRPCController/Shutdown``. Whether it may be
    stopping on its own (accepted, or gone already): then the host waits before signalling.
    False when it does not serve the controller: the host goes straight to signals."""
    stub = grpc_controller_pb2_grpc.GRPCControllerStub(channel)
    try:
        await stub.Shutdown(grpc_controller_pb2.Empty(), timeout=max(call_timeout, 0.1))
    except grpc.aio.AioRpcError as exc:
        if exc.code() not in (grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.UNAVAILABLE):
            _log.warning("Shutdown request failed: %s: %s", exc.code().name, exc.details())
        # UNAVAILABLE can also mean it stopped before it could answer: the caller checks.
        return exc.code() == grpc.StatusCode.UNAVAILABLE
    return True


async def close_channel(channel: grpc.aio.Channel) -> None:
    """Close ``channel``, cancelling its calls."""
    with contextlib.suppress(Exception):
        await channel.close(None)
    bridge = _bridges.pop(id(channel), None)
    if bridge is not None:
        await bridge.close()
