"""One life of an adaptor: spawn, handshake, connect, serve, end.

``start`` returns once the adaptor serves (or raises StartFailure saying why not); ``serve``
returns the reason it stopped serving (the process exited, or health checks failed); ``stop``
ends it gracefully (Shutdown RPC, then SIGTERM, then SIGKILL of its group) and ``kill`` ends it
without asking (SIGTERM, then SIGKILL). Either also closes the channel and removes the socket
directory. The runner turns these steps into lifecycle states.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import shutil
import signal
from collections.abc import Callable, Coroutine, Mapping
from pathlib import Path
from typing import Any

import grpc

from host.supervisor import rpc
from host.supervisor.diagnose import describe_exit, stderr_summary
from host.supervisor.logs import logger_for
from host.supervisor.process import AdaptorProcess
from host.supervisor.spec import AdaptorSpec
from sdk import mtls
from sdk.connectivity import ConnectionState, Connectivity
from sdk.contract import CONTRACT_VERSIONS
from sdk.pb.ilphost.adaptor.v1 import adaptor_pb2

_log = logging.getLogger("ilp_host.supervisor")


class StopOutcome(enum.Enum):
    """How a graceful stop ended."""

    SHUTDOWN = "stopped after the Shutdown request"
    SIGTERM = "stopped by SIGTERM"
    SIGKILL = "killed with SIGKILL"
    EXITED = "had exited already"


def host_connection() -> ConnectionState:
    """The host's channel to an adaptor, before it exists."""
    return ConnectionState(name="host", kind="host-channel")


class AdaptorInstance:
    """One adaptor process and the host's channel to it. ``notify`` is called whenever what
    a snapshot shows (pid, connections, info) changes."""

    def __init__(
        self,
        spec: AdaptorSpec,
        env: Mapping[str, str],
        socket_dir: Path,
        own_certificate: mtls.Certificate | None,
        notify: Callable[[], None],
    ) -> None:
        self.spec = spec
        self._env = env
        self._socket_dir = socket_dir
        self._own = own_certificate
        self._notify = notify
        self._logger = logger_for(spec.name)
        self.process: AdaptorProcess | None = None
        self.channel: grpc.aio.Channel | None = None
        self.contract_version = 0
        self.info: adaptor_pb2.GetInfoResponse | None = None
        self.host_connection = host_connection()
        self.connections: dict[str, ConnectionState] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self.closed = False

    @property
    def pid(self) -> int | None:
        """The process id while the process exists."""
        if self.process is None or self.process.returncode is not None:
            return None
        return self.process.pid

    def _spawn_task(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        self._tasks.append(asyncio.create_task(coro, name=f"{self.spec.name}-{name}"))

    async def start(self, on_handshake: Callable[[], None]) -> None:
        """Spawn, read the handshake line (then call ``on_handshake``), connect, and wait for
        health SERVING, GetInfo, Probe. Raises StartFailure."""
        spec = self.spec
        self._socket_dir.mkdir(mode=0o700)
        self.process = await AdaptorProcess.spawn(
            spec.name, spec.command, self._env, spec.cwd, self._logger
        )
        self._notify()
        handshake = await self.process.read_handshake(CONTRACT_VERSIONS, spec.start_timeout)
        self.contract_version = handshake.app_version
        on_handshake()
        self.channel = rpc.open_channel(handshake, self._own)
        self._spawn_task(rpc.track_channel(self.channel, self._channel_state), "channel")
        # At once: a go-plugin plugin stalls on output while nobody reads its stdio stream.
        self._spawn_task(rpc.drain_stdio(self.channel, spec.name, self._logger), "stdio")
        await rpc.wait_serving(self.channel, spec.start_timeout, spec.health_timeout)
        self.info = await rpc.get_info(self.channel, spec.start_timeout, spec.health_timeout)
        # The stream starts with the current state of every connection (the contract), taken
        # as the truth: no Probe races it. Only an adaptor without WatchEvents is probed.
        self._spawn_task(
            rpc.follow_connections(
                self.channel,
                spec.name,
                self._adaptor_connection,
                without_stream=self._probe_connections,
            ),
            "events",
        )
        self._notify()

    async def _probe_connections(self) -> None:
        """The connections of an adaptor that serves no WatchEvents: from Probe, once."""
        if self.channel is None:
            return
        answer = await rpc.probe(self.channel, self.spec.health_timeout)
        for message in answer.connections if answer is not None else ():
            connection = rpc.connection_from_proto(message)
            if connection is not None:
                self._adaptor_connection(connection)

    def _channel_state(self, observed: Connectivity) -> None:
        if observed != self.host_connection.state:
            self.host_connection = rpc.follow_channel(self.host_connection, observed)
            self._notify()

    def _adaptor_connection(self, connection: ConnectionState) -> None:
        known = self.connections.get(connection.name)
        newer = (
            known is None
            or known.since is None
            or (connection.since is not None and connection.since >= known.since)
        )
        if newer and connection != known:
            self.connections[connection.name] = connection
            self._notify()

    async def serve(self) -> str:
        """Watch the serving adaptor; return why it stopped serving."""
        assert self.process is not None and self.channel is not None
        health = asyncio.create_task(self._health_checks(self.channel))
        exited = asyncio.create_task(self.process.wait())
        try:
            await asyncio.wait({health, exited}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (health, exited):
                task.cancel()
            await asyncio.gather(health, exited, return_exceptions=True)
        if self.process.returncode is not None:
            return await self._exit_reason("while serving")
        return health.result()

    async def _health_checks(self, channel: grpc.aio.Channel) -> str:
        failures = 0
        spec = self.spec
        while True:
            await asyncio.sleep(spec.health_interval)
            problem = await rpc.check_health(channel, spec.health_timeout)
            if problem is None:
                failures = 0
                continue
            failures += 1
            _log.warning(
                "adaptor %s: health check %d/%d failed: %s",
                spec.name,
                failures,
                spec.failure_threshold,
                problem,
            )
            if failures >= spec.failure_threshold:
                return f"{failures} health checks in a row failed: {problem}"

    async def _exit_reason(self, when: str) -> str:
        assert self.process is not None
        code = await self.process.wait()
        await self.process.drain_stderr()
        tail = list(self.process.stderr_tail)
        return f"{describe_exit(code)} {when}" + stderr_summary(tail, 3, empty="")

    async def stop(self) -> StopOutcome:
        """Stop gracefully: Shutdown RPC and close the channel, wait ``shutdown_grace``; then
        SIGTERM to the group, wait ``term_grace``; then SIGKILL. Then close everything."""
        spec = self.spec
        process = self.process
        try:
            if process is None or (
                process.returncode is not None and await process.wait_group_gone(0)
            ):
                return StopOutcome.EXITED
            may_stop = False
            if self.channel is not None and process.returncode is None:
                may_stop = await rpc.request_shutdown(self.channel, spec.shutdown_grace)
            await self._close_channel()
            if may_stop and await process.wait_group_gone(spec.shutdown_grace):
                await process.wait()
                return StopOutcome.SHUTDOWN
            used = await process.terminate(spec.term_grace)
            if used is signal.SIGKILL:
                _log.warning(
                    "adaptor %s ignored SIGTERM for %g s: killed its process group",
                    spec.name,
                    spec.term_grace,
                )
                return StopOutcome.SIGKILL
            return StopOutcome.SIGTERM if used is signal.SIGTERM else StopOutcome.EXITED
        finally:
            await self.close()

    async def kill(self) -> None:
        """End without asking (a crash or a failed start): SIGTERM, then SIGKILL, close."""
        try:
            if self.process is not None:
                await self.process.terminate(self.spec.term_grace)
        finally:
            await self.close()

    async def _close_channel(self) -> None:
        if self.channel is not None:
            channel, self.channel = self.channel, None
            await rpc.close_channel(channel)

    async def close(self) -> None:
        """Release everything (idempotent): background tasks, channel, pipes, socket dir."""
        if self.closed:
            return
        self.closed = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        await self._close_channel()
        if self.process is not None:
            await self.process.close()
        if self.host_connection.state != Connectivity.SHUTDOWN:
            self.host_connection = self.host_connection.to(Connectivity.SHUTDOWN)
        self.connections.clear()
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(self._socket_dir)
        self._notify()
