"""The admin gRPC server: HostAdmin, grpc.health.v1.Health and server reflection.

It listens on a unix socket (mode 0600, inside the 0700 state directory) and, when configured,
also on TCP with TLS where every call but health checks needs the bearer token. The two
listeners are two grpc.aio servers sharing the same servicers, because an interceptor applies
to a whole server and the local socket needs no token.

Health: service ``""`` is SERVING when every adaptor is SERVING, and each adaptor's configured
name is SERVING iff that adaptor is; a task follows ``Supervisor.watch()`` to keep them current.

The account and settlement RPCs belong to the settlement engine. The servicer takes an optional
:class:`EngineAdmin`; without one they answer UNIMPLEMENTED.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from host.admin.auth import BearerTokenInterceptor
from host.admin.convert import adaptor_to_proto
from host.credentials import ServerTls
from host.lifecycle import ProcessState
from host.pb.ilphost.admin.v1 import admin_pb2, admin_pb2_grpc
from host.supervisor import AdaptorSnapshot, SupervisorStopped
from sdk.health import HealthServicer

log = logging.getLogger("ilp_host.admin")

Context = grpc.aio.ServicerContext[Any, Any]
_T = TypeVar("_T")

#: The service name of the host as a whole in grpc.health.v1.
OVERALL = ""
_SERVING = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class SupervisorView(Protocol):
    """What the admin server needs of :class:`host.supervisor.Supervisor`."""

    def snapshots(self) -> list[AdaptorSnapshot]: ...

    def snapshot(self, name: str) -> AdaptorSnapshot: ...

    def watch(self, name: str | None = None) -> AsyncIterator[AdaptorSnapshot]: ...

    async def restart(self, name: str) -> AdaptorSnapshot: ...


class EngineAdmin(Protocol):
    """The settlement engine's side of HostAdmin.

    Methods return the response messages. To refuse a request with a status (NOT_FOUND,
    INVALID_ARGUMENT, FAILED_PRECONDITION, ALREADY_EXISTS, ...), raise :class:`AdminError`;
    any other exception becomes INTERNAL and is logged.
    """

    async def list_accounts(self) -> admin_pb2.ListAccountsResponse: ...

    async def get_account(self, account_id: str) -> admin_pb2.GetAccountResponse: ...

    async def list_settlements(
        self, account_id: str, limit: int
    ) -> admin_pb2.ListSettlementsResponse: ...

    async def settle(self, request: admin_pb2.SettleRequest) -> admin_pb2.SettleResponse: ...

    async def retry_settlement(self, settlement_id: str) -> admin_pb2.RetrySettlementResponse: ...


class RemoteConnectorAdmin(Protocol):
    """An engine's link to a connector in another process (host.remote_connector)."""

    async def status_message(self) -> admin_pb2.GetConnectorLinkResponse: ...


class ConnectorAdmin(Protocol):
    """The connector's side of HostAdmin; refusals raise :class:`AdminError`."""

    async def list_peers(self) -> admin_pb2.ListPeersResponse: ...

    async def list_routes(self) -> admin_pb2.ListRoutesResponse: ...

    def send_packets(
        self, request: admin_pb2.SendPacketsRequest
    ) -> AsyncIterator[admin_pb2.SendPacketsResponse]: ...

    async def reconcile(self, peer_id: str) -> admin_pb2.ReconcileResponse: ...


class AdminError(Exception):
    """A refusal with a gRPC status, raised by an :class:`EngineAdmin`."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details


NO_ENGINE = "no settlement engine configured in this host"
NO_CONNECTOR = "no connector configured in this host (add [connector] and [[peer]])"


class HostAdminServicer(admin_pb2_grpc.HostAdminServicer):
    """ilphost.admin.v1.HostAdmin over a supervisor and, optionally, an engine."""

    def __init__(
        self,
        supervisor: SupervisorView,
        engine: EngineAdmin | None = None,
        connector: ConnectorAdmin | None = None,
        link: RemoteConnectorAdmin | None = None,
    ) -> None:
        self._supervisor = supervisor
        self._engine = engine
        self._connector = connector
        self._link = link
        self.stopping = False

    async def _adaptor(self, name: str, context: Context) -> AdaptorSnapshot:
        try:
            return self._supervisor.snapshot(name)
        except KeyError:
            # At most 80 characters of the name: an error must not echo a client's megabytes.
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no adaptor named {name[:80]!r}")

    async def ListAdaptors(
        self, request: admin_pb2.ListAdaptorsRequest, context: Context
    ) -> admin_pb2.ListAdaptorsResponse:
        return admin_pb2.ListAdaptorsResponse(
            adaptors=[adaptor_to_proto(snapshot) for snapshot in self._supervisor.snapshots()]
        )

    async def GetAdaptor(
        self, request: admin_pb2.GetAdaptorRequest, context: Context
    ) -> admin_pb2.GetAdaptorResponse:
        snapshot = await self._adaptor(request.name, context)
        return admin_pb2.GetAdaptorResponse(adaptor=adaptor_to_proto(snapshot))

    async def WatchAdaptors(
        self, request: admin_pb2.WatchAdaptorsRequest, context: Context
    ) -> AsyncIterator[admin_pb2.WatchAdaptorsResponse]:
        name = request.name or None
        if name is not None:
            await self._adaptor(name, context)
        async for snapshot in self._supervisor.watch(name):
            yield admin_pb2.WatchAdaptorsResponse(adaptor=adaptor_to_proto(snapshot))

    async def RestartAdaptor(
        self, request: admin_pb2.RestartAdaptorRequest, context: Context
    ) -> admin_pb2.RestartAdaptorResponse:
        await self._adaptor(request.name, context)
        if self.stopping:
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION, "the host is stopping; no restarts"
            )
        log.info("restart of adaptor %r requested through the admin API", request.name)
        try:
            snapshot = await self._supervisor.restart(request.name)
        except SupervisorStopped:
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION, "the host is stopping; no restarts"
            )
        return admin_pb2.RestartAdaptorResponse(adaptor=adaptor_to_proto(snapshot))

    async def ListAccounts(
        self, request: admin_pb2.ListAccountsRequest, context: Context
    ) -> admin_pb2.ListAccountsResponse:
        return await self._engine_call(context, lambda engine: engine.list_accounts())

    async def GetAccount(
        self, request: admin_pb2.GetAccountRequest, context: Context
    ) -> admin_pb2.GetAccountResponse:
        return await self._engine_call(
            context, lambda engine: engine.get_account(request.account_id)
        )

    async def ListSettlements(
        self, request: admin_pb2.ListSettlementsRequest, context: Context
    ) -> admin_pb2.ListSettlementsResponse:
        limit = request.limit or 100
        return await self._engine_call(
            context, lambda engine: engine.list_settlements(request.account_id, limit)
        )

    async def Settle(
        self, request: admin_pb2.SettleRequest, context: Context
    ) -> admin_pb2.SettleResponse:
        return await self._engine_call(context, lambda engine: engine.settle(request))

    async def RetrySettlement(
        self, request: admin_pb2.RetrySettlementRequest, context: Context
    ) -> admin_pb2.RetrySettlementResponse:
        return await self._engine_call(
            context, lambda engine: engine.retry_settlement(request.settlement_id)
        )

    async def ListPeers(
        self, request: admin_pb2.ListPeersRequest, context: Context
    ) -> admin_pb2.ListPeersResponse:
        if self._connector is None:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, NO_CONNECTOR)
        assert self._connector is not None
        return await self._connector.list_peers()

    async def ListRoutes(
        self, request: admin_pb2.ListRoutesRequest, context: Context
    ) -> admin_pb2.ListRoutesResponse:
        if self._connector is None:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, NO_CONNECTOR)
        assert self._connector is not None
        return await self._connector.list_routes()

    async def Reconcile(
        self, request: admin_pb2.ReconcileRequest, context: Context
    ) -> admin_pb2.ReconcileResponse:
        if self._connector is None:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, NO_CONNECTOR)
        assert self._connector is not None
        try:
            return await self._connector.reconcile(request.peer)
        except AdminError as exc:
            await context.abort(exc.code, exc.details)
            raise  # pragma: no cover - abort raises

    async def GetConnectorLink(
        self, request: admin_pb2.GetConnectorLinkRequest, context: Context
    ) -> admin_pb2.GetConnectorLinkResponse:
        if self._link is None:
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                "this host's engine does not run apart from its connector (see ilp-host engine)",
            )
        assert self._link is not None
        return await self._link.status_message()

    async def SendPackets(
        self, request: admin_pb2.SendPacketsRequest, context: Context
    ) -> AsyncIterator[admin_pb2.SendPacketsResponse]:
        if self._connector is None:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, NO_CONNECTOR)
        assert self._connector is not None
        try:
            async for progress in self._connector.send_packets(request):
                yield progress
        except AdminError as exc:
            await context.abort(exc.code, exc.details)

    async def _engine_call(
        self, context: Context, call: Callable[[EngineAdmin], Awaitable[_T]]
    ) -> _T:
        if self._engine is None:
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, NO_ENGINE)
        try:
            return await call(self._engine)
        except AdminError as exc:
            await context.abort(exc.code, exc.details)
        except Exception:
            log.exception("the settlement engine failed an admin request")
            await context.abort(grpc.StatusCode.INTERNAL, "internal error in the engine")


def health_statuses(serving: dict[str, bool]) -> dict[str, bool]:
    """Health per service name: each adaptor's, and ``""`` when all of them serve. Pure."""
    return {OVERALL: all(serving.values()), **serving}


class HealthFollower:
    """Keeps a grpc.health.v1 servicer in step with the supervisor's snapshots."""

    def __init__(self, supervisor: SupervisorView) -> None:
        # grpcio-health-checking's asyncio servicer (Watch included); untyped.
        self.servicer = HealthServicer()
        self._supervisor = supervisor
        self._serving: dict[str, bool] = {}

    async def prime(self) -> None:
        """Set every service from the current snapshots, before the server answers."""
        for snapshot in self._supervisor.snapshots():
            self._serving[snapshot.name] = snapshot.state == ProcessState.SERVING
        await self._publish()

    async def follow(self) -> None:
        """Apply each change until the supervisor's watch ends (the host is stopping)."""
        async for snapshot in self._supervisor.watch():
            serving = snapshot.state == ProcessState.SERVING
            if self._serving.get(snapshot.name) != serving:
                self._serving[snapshot.name] = serving
                log.debug("health of %r: %s", snapshot.name, "SERVING" if serving else "NOT")
                await self._publish()
        await self.shut_down()  # the supervisor has stopped: nothing serves any more

    async def _publish(self) -> None:
        for service, serving in health_statuses(self._serving).items():
            await self.servicer.set(service, _SERVING if serving else _NOT_SERVING)

    async def shut_down(self) -> None:
        """Every service NOT_SERVING from now on (watchers are told)."""
        await self.servicer.enter_graceful_shutdown()


@dataclass(frozen=True)
class TcpListener:
    """The TCP admin listener: address, TLS certificate chain and key, bearer token."""

    host: str
    port: int
    tls: ServerTls


SERVICE_NAMES: tuple[str, ...] = (
    admin_pb2.DESCRIPTOR.services_by_name["HostAdmin"].full_name,
    health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
    reflection.SERVICE_NAME,
)


class AdminServer:
    """The host's admin API on its unix socket and, optionally, TLS TCP.

    ``start()`` binds (RuntimeError naming the address if it cannot) and starts following
    health; ``begin_shutdown()`` marks the host as stopping (health NOT_SERVING, restarts
    refused) while the adaptors are being stopped; ``stop()`` closes the listeners and removes
    the socket file.
    """

    def __init__(
        self,
        supervisor: SupervisorView,
        socket: Path,
        *,
        engine: EngineAdmin | None = None,
        connector: ConnectorAdmin | None = None,
        tcp: TcpListener | None = None,
        link: RemoteConnectorAdmin | None = None,
    ) -> None:
        self.socket = socket
        self._tcp = tcp
        self.admin = HostAdminServicer(supervisor, engine, connector, link)
        self.health = HealthFollower(supervisor)
        self._servers: list[grpc.aio.Server] = []
        self._follower: asyncio.Task[None] | None = None
        self.tcp_port: int | None = None

    def _server(self, interceptors: Sequence[grpc.aio.ServerInterceptor[Any, Any]]) -> Any:
        server = grpc.aio.server(interceptors=interceptors)
        admin_pb2_grpc.add_HostAdminServicer_to_server(self.admin, server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health.servicer, server)
        reflection.enable_server_reflection(SERVICE_NAMES, server)
        self._servers.append(server)
        return server

    async def start(self, *, follow_health: bool = True) -> None:
        """Bind the listeners and start serving; RuntimeError naming the address on failure.

        ``follow_health=False`` leaves following the supervisor to the caller, who runs
        ``self.health.follow()`` among its own supervised tasks (host.app)."""
        await self.health.prime()
        unix = self._server(())
        with contextlib.suppress(FileNotFoundError):
            self.socket.unlink()  # left by a host that died; the caller holds the state lock
        try:
            bound = unix.add_insecure_port(f"unix:{self.socket}")
        except RuntimeError:
            bound = 0
        if bound == 0:
            raise RuntimeError(f"cannot listen on the admin socket {self.socket}")
        os.chmod(self.socket, 0o600)
        if self._tcp is not None:
            tcp = self._server((BearerTokenInterceptor(self._tcp.tls.token),))
            credentials = self._tcp.tls.server_credentials()
            address = _join_host_port(self._tcp.host, self._tcp.port)
            try:
                self.tcp_port = tcp.add_secure_port(address, credentials)
            except RuntimeError as exc:
                raise RuntimeError(f"cannot listen on the admin address {address}: {exc}") from exc
            if self.tcp_port == 0:
                raise RuntimeError(f"cannot listen on the admin address {address}")
        for server in self._servers:
            await server.start()
        if follow_health:
            self._follower = asyncio.create_task(self.health.follow(), name="admin-health")
            self._follower.add_done_callback(_log_failure)

    async def begin_shutdown(self) -> None:
        """The host is stopping: report NOT_SERVING and refuse restarts."""
        self.admin.stopping = True
        await self.health.shut_down()

    async def stop(self, grace: float = 1.0) -> None:
        """Close the listeners (streams get ``grace`` seconds) and remove the socket."""
        self.admin.stopping = True
        if self._follower is not None:
            self._follower.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._follower
        await asyncio.gather(*(server.stop(grace) for server in self._servers))
        self._servers.clear()
        with contextlib.suppress(FileNotFoundError):
            self.socket.unlink()


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("health reporting stopped", exc_info=task.exception())


def _join_host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
