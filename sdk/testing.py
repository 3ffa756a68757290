"""Test an adaptor without the host.

- ``serve_in_process(adaptor)``: serves an ``Adaptor`` in this process on a private unix socket
  (LedgerAdaptor, health, controller, reflection: what ``sdk.serve`` serves, without the process
  around it) and yields a client with the stubs.
- ``fake_engine(reply)``: a tiny Engine service the adaptor can call back (``SendData``): it
  records the calls and answers with ``reply``; its address goes in ``ILP_HOST_ENGINE_ADDR``.
- ``run_adaptor(argv)``: starts an adaptor *program* as the host would (cookie, versions,
  handshake, optional mutual TLS), connects, drains its stdio stream and stderr, and stops it
  with ``Shutdown`` (then SIGTERM, then SIGKILL) on exit.

Each is an async context manager that cleans up everything it made, even on failure::

    async with serve_in_process(MyAdaptor()) as client:
        info = await client.adaptor.GetInfo(adaptor_pb2.GetInfoRequest())
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import shlex
import shutil
import signal
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf import empty_pb2
from grpc_health.v1 import health_pb2_grpc

from sdk import channels, contract, mtls
from sdk.adaptor import Adaptor
from sdk.handshake import Handshake, HandshakeError, parse
from sdk.pb.ilphost.adaptor.v1 import adaptor_pb2_grpc
from sdk.pb.ilphost.engine.v1 import engine_pb2, engine_pb2_grpc
from sdk.pb.plugin import grpc_controller_pb2, grpc_controller_pb2_grpc, grpc_stdio_pb2_grpc
from sdk.server import AdaptorServer

if TYPE_CHECKING:
    from sdk.pb.ilphost.adaptor.v1.adaptor_pb2_grpc import LedgerAdaptorAsyncStub
    from sdk.pb.plugin.grpc_controller_pb2_grpc import GRPCControllerAsyncStub


def _private_dir() -> str:
    # Short and under the system temp dir: unix socket paths must stay under ~100 bytes.
    return tempfile.mkdtemp(prefix="ilp")


@dataclass
class AdaptorClient:
    """An open channel to an adaptor and the stubs of what it serves."""

    target: str
    channel: grpc.aio.Channel
    adaptor: LedgerAdaptorAsyncStub
    health: Any  # grpc_health ships no type hints: health_pb2_grpc.HealthStub
    controller: GRPCControllerAsyncStub

    @classmethod
    def over(cls, target: str, channel: grpc.aio.Channel) -> AdaptorClient:
        """The stubs over an open channel."""
        return cls(
            target=target,
            channel=channel,
            adaptor=adaptor_pb2_grpc.LedgerAdaptorStub(channel),
            health=health_pb2_grpc.HealthStub(channel),
            controller=grpc_controller_pb2_grpc.GRPCControllerStub(channel),
        )


@asynccontextmanager
async def serve_in_process(
    adaptor: Adaptor, *, grace: float | None = 1.0
) -> AsyncIterator[AdaptorClient]:
    """Serve ``adaptor`` here on a private unix socket; yields a connected client.

    ``start()`` runs before the client is yielded and ``stop()`` on exit, as under ``serve``.
    """
    directory = _private_dir()
    server = AdaptorServer(adaptor)
    started = False
    try:
        target = f"unix:{os.path.join(directory, 'adaptor.sock')}"
        server.listen(target)
        await server.start()
        await adaptor.start()
        started = True
        async with channels.aio_channel(target) as channel:
            yield AdaptorClient.over(target, channel)
    finally:
        await server.stop(grace, run_hook=started)
        shutil.rmtree(directory, ignore_errors=True)


class Refuse(Exception):
    """Raise from a fake engine's ``reply`` to answer the call with a gRPC error status."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details


Reply = Callable[[engine_pb2.SendDataRequest], bytes | Awaitable[bytes]]


class FakeEngine(engine_pb2_grpc.EngineServicer):
    """An Engine that records every SendData request and answers with ``reply``."""

    def __init__(self, reply: Reply | None = None) -> None:
        self.address = ""
        self.calls: list[engine_pb2.SendDataRequest] = []
        self._reply = reply

    async def SendData(
        self, request: engine_pb2.SendDataRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> engine_pb2.SendDataResponse:
        self.calls.append(request)
        if self._reply is None:
            return engine_pb2.SendDataResponse()
        try:
            answer = self._reply(request)
            data = await answer if inspect.isawaitable(answer) else answer
        except Refuse as refusal:
            await context.abort(refusal.code, refusal.details)
        return engine_pb2.SendDataResponse(data=data)


@asynccontextmanager
async def fake_engine(
    reply: Reply | None = None, *, set_environ: bool = True
) -> AsyncIterator[FakeEngine]:
    """Serve a FakeEngine on a private unix socket.

    With ``set_environ`` the address is put in ``ILP_HOST_ENGINE_ADDR`` for the duration (so
    ``sdk.connect_engine()`` finds it); the previous value is restored on exit.
    """
    directory = _private_dir()
    engine = FakeEngine(reply)
    server = grpc.aio.server()
    engine_pb2_grpc.add_EngineServicer_to_server(engine, server)
    previous = os.environ.get(contract.ENV_ENGINE_ADDR)
    try:
        engine.address = f"unix:{os.path.join(directory, 'engine.sock')}"
        server.add_insecure_port(engine.address)
        await server.start()
        if set_environ:
            os.environ[contract.ENV_ENGINE_ADDR] = engine.address
        yield engine
    finally:
        if set_environ:
            if previous is None:
                os.environ.pop(contract.ENV_ENGINE_ADDR, None)
            else:
                os.environ[contract.ENV_ENGINE_ADDR] = previous
        await server.stop(None)
        shutil.rmtree(directory, ignore_errors=True)


# --- an adaptor program under a minimal host ----------------------------------------------------


class StartFailed(RuntimeError):
    """The adaptor program did not complete the handshake; the message has its stderr."""


@dataclass
class AdaptorProcess:
    """A running adaptor program, its handshake, a client, and what it has written."""

    process: asyncio.subprocess.Process
    handshake: Handshake
    client: AdaptorClient
    host_certificate: mtls.Certificate | None
    #: What came on GRPCStdio, what came on stdout after the handshake line, and stderr.
    stdio: bytearray = field(default_factory=bytearray)
    stdout: bytearray = field(default_factory=bytearray)
    stderr: bytearray = field(default_factory=bytearray)

    output: asyncio.Event = field(default_factory=asyncio.Event, repr=False)
    ended: set[str] = field(default_factory=set, repr=False)

    async def wait_for_output(self, text: str, *, stream: str = "stdio") -> None:
        """Wait until ``text`` appears in ``stdio`` (GRPCStdio) or ``stderr``.

        EOFError if that stream ends without it. Bound the wait with ``asyncio.timeout``.
        """
        needle = text.encode()
        buffer = self.stdio if stream == "stdio" else self.stderr
        while True:
            # Clear before looking: output arriving after the look sets the event again.
            self.output.clear()
            if needle in buffer:
                return
            if stream in self.ended:
                raise EOFError(f"{stream} ended without {text!r}: {bytes(buffer)[-2000:]!r}")
            await self.output.wait()

    async def wait(self) -> int:
        """The exit status, once the program has exited (bound it with ``asyncio.timeout``)."""
        return await self.process.wait()


def adaptor_environ(
    extra: Mapping[str, str] | None = None,
    *,
    transport: str = "unix",
    client_cert_pem: bytes | None = None,
) -> dict[str, str]:
    """The environment the host gives an adaptor: this process's, plus cookie and versions."""
    env = dict(os.environ)
    env[contract.MAGIC_COOKIE_KEY] = contract.MAGIC_COOKIE_VALUE
    env[contract.ENV_PROTOCOL_VERSIONS] = ",".join(map(str, contract.CONTRACT_VERSIONS))
    env[contract.ENV_TRANSPORT] = transport
    if client_cert_pem is not None:
        env[contract.ENV_CLIENT_CERT] = client_cert_pem.decode()
    env.update(extra or {})
    return env


async def _drain(
    name: str,
    reader: asyncio.StreamReader | None,
    into: bytearray,
    output: asyncio.Event,
    ended: set[str],
) -> None:
    try:
        while reader is not None and (chunk := await reader.read(65536)):
            into += chunk
            output.set()
    finally:
        ended.add(name)
        output.set()


async def _drain_stdio(
    client: AdaptorClient, into: bytearray, output: asyncio.Event, ended: set[str]
) -> None:
    call = grpc_stdio_pb2_grpc.GRPCStdioStub(client.channel).StreamStdio(empty_pb2.Empty())
    try:
        async for message in call:
            into += message.data
            output.set()
    except grpc.aio.AioRpcError:
        pass  # UNIMPLEMENTED (no stdio) or the adaptor went away: nothing more to read.
    finally:
        ended.add("stdio")
        output.set()


async def _stop_process(process: asyncio.subprocess.Process, client: AdaptorClient | None) -> None:
    """Shutdown RPC, then SIGTERM, then SIGKILL: each step only if the previous did not work."""
    if process.returncode is None and client is not None:
        with contextlib.suppress(grpc.aio.AioRpcError):
            await client.controller.Shutdown(grpc_controller_pb2.Empty(), timeout=10)
    for sig, grace in ((None, 10.0), (signal.SIGTERM, 10.0), (signal.SIGKILL, 30.0)):
        if sig is not None and process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(sig)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(grace):
                await process.wait()
        if process.returncode is not None:
            return


@asynccontextmanager
async def run_adaptor(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    transport: str = "unix",
    use_mtls: bool = False,
    start_timeout: float = 30.0,
) -> AsyncIterator[AdaptorProcess]:
    """Start an adaptor program as the host would and yield it connected.

    ``env`` adds to (or overrides) the environment of ``adaptor_environ``. With ``use_mtls``
    a host certificate is made and passed in ``PLUGIN_CLIENT_CERT``, and the client connects
    with it to the certificate of the handshake line. On exit the program is stopped
    (Shutdown, SIGTERM, SIGKILL) and everything is closed; its exit status stays in
    ``process.returncode``.
    """
    host_cert = mtls.generate_certificate() if use_mtls else None
    environment = adaptor_environ(
        env, transport=transport, client_cert_pem=host_cert.cert_pem if host_cert else None
    )
    process = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=environment,
        start_new_session=True,
    )
    stderr = bytearray()
    stdout_rest = bytearray()
    output, ended = asyncio.Event(), set[str]()
    tasks = [asyncio.create_task(_drain("stderr", process.stderr, stderr, output, ended))]
    client: AdaptorClient | None = None
    try:
        assert process.stdout is not None
        try:
            async with asyncio.timeout(start_timeout):
                line = (await process.stdout.readline()).decode(errors="replace")
            parsed = parse(line, contract.CONTRACT_VERSIONS)
        except (TimeoutError, HandshakeError) as exc:
            raise StartFailed(
                f"{shlex.join(argv)}: no handshake ({exc}); stderr: {bytes(stderr)!r}"
            ) from exc
        tasks.append(
            asyncio.create_task(_drain("stdout", process.stdout, stdout_rest, output, ended))
        )
        target = parsed.grpc_target()
        if host_cert is not None:
            if parsed.server_cert_der is None:
                raise StartFailed(
                    f"{shlex.join(argv)}: mTLS asked for, but the handshake has no CERT"
                )
            credentials = mtls.channel_credentials(
                host_cert, mtls.der_to_pem(parsed.server_cert_der)
            )
            channel = channels.aio_channel(target, credentials, mtls.CHANNEL_OPTIONS)
        else:
            channel = channels.aio_channel(target)
        async with channel:
            client = AdaptorClient.over(target, channel)
            running = AdaptorProcess(
                process,
                parsed,
                client,
                host_cert,
                stdout=stdout_rest,
                stderr=stderr,
                output=output,
                ended=ended,
            )
            tasks.append(asyncio.create_task(_drain_stdio(client, running.stdio, output, ended)))
            try:
                yield running
            finally:
                await _stop_process(process, client)
    finally:
        await _stop_process(process, None)
        # The pipes reach EOF once the program has exited, unless a child of it still holds them.
        _, pending = await asyncio.wait(tasks, timeout=10)
        for task in pending:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
