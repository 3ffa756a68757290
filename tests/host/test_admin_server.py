"""host.admin: the admin server on a real unix socket (and TLS TCP), over a stand-in supervisor.

The stand-in keeps snapshots in memory so that every status path of HostAdmin, health and
auth is exercised exactly; tests/host/test_cli_integration.py runs the real supervisor.
"""

from __future__ import annotations

import asyncio
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from host.admin.auth import BearerTokenInterceptor, bearer_token
from host.admin.convert import adaptor_to_proto
from host.admin.server import (
    NO_ENGINE,
    AdminError,
    AdminServer,
    TcpListener,
    health_statuses,
)
from host.credentials import ServerTls, read_token
from host.lifecycle import ProcessState
from host.pb.ilphost.admin.v1 import admin_pb2, admin_pb2_grpc
from host.supervisor import AdaptorSnapshot
from sdk.connectivity import ConnectionState, Connectivity
from sdk.mtls import generate_certificate
from sdk.pb.ilphost.adaptor.v1 import adaptor_pb2
from tests.grpc_status import failure
from tests.polling import wait_until_async

SINCE = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
DEADLINE = 30.0


def snapshot(
    name: str, state: ProcessState, pid: int | None = 100, **changes: Any
) -> AdaptorSnapshot:
    base = AdaptorSnapshot(
        name=name,
        state=state,
        since=SINCE,
        last_error="",
        attempts=0,
        pid=pid,
        contract_version=1 if state == ProcessState.SERVING else 0,
        connections=(
            ConnectionState("host", "host-channel", Connectivity.READY, SINCE),
            ConnectionState("ledger", "settlement-system", Connectivity.CONNECTING, SINCE, "", 2),
        ),
        info=adaptor_pb2.GetInfoResponse(name="memory-python", asset_code="USD", asset_scale=2),
    )
    return replace(base, **changes)


class StandInSupervisor:
    """Snapshots in memory with the Supervisor's watch semantics (current first, then changes)."""

    def __init__(self, *snapshots: AdaptorSnapshot) -> None:
        self._snapshots = {s.name: s for s in snapshots}
        self._watchers: list[asyncio.Queue[AdaptorSnapshot | None]] = []
        self.restarts: list[str] = []

    def snapshots(self) -> list[AdaptorSnapshot]:
        return list(self._snapshots.values())

    def snapshot(self, name: str) -> AdaptorSnapshot:
        return self._snapshots[name]

    async def watch(self, name: str | None = None) -> AsyncIterator[AdaptorSnapshot]:
        queue: asyncio.Queue[AdaptorSnapshot | None] = asyncio.Queue()
        self._watchers.append(queue)
        try:
            for current in self.snapshots():
                if name in (None, current.name):
                    yield current
            while (change := await queue.get()) is not None:
                if name in (None, change.name):
                    yield change
        finally:
            self._watchers.remove(queue)

    @property
    def watchers(self) -> int:
        return len(self._watchers)

    def publish(self, new: AdaptorSnapshot) -> None:
        self._snapshots[new.name] = new
        for queue in self._watchers:
            queue.put_nowait(new)

    def close(self) -> None:
        for queue in self._watchers:
            queue.put_nowait(None)

    async def restart(self, name: str) -> AdaptorSnapshot:
        self.restarts.append(name)
        old = self._snapshots[name]
        self.publish(replace(old, state=ProcessState.SERVING, pid=(old.pid or 0) + 1))
        return self._snapshots[name]


class Harness:
    """A started AdminServer on a short unix socket path, and a channel to it."""

    def __init__(self, supervisor: StandInSupervisor, **kwargs: Any) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="ilp"))
        self.supervisor = supervisor
        self.server = AdminServer(supervisor, self.dir / "admin.sock", **kwargs)

    async def __aenter__(self) -> Harness:
        await self.server.start()
        self.channel = grpc.aio.insecure_channel(f"unix:{self.server.socket}")
        self.admin = admin_pb2_grpc.HostAdminStub(self.channel)
        self.health = health_pb2_grpc.HealthStub(self.channel)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.channel.close()
        self.supervisor.close()
        await self.server.stop(grace=0.5)
        shutil.rmtree(self.dir)


def run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(test(), timeout=90))


# -- pure pieces -----------------------------------------------------------------------------


def test_convert() -> None:
    message = adaptor_to_proto(snapshot("memory", ProcessState.SERVING, pid=4242))
    assert message.name == "memory"
    assert message.state == admin_pb2.PROCESS_STATE_SERVING
    assert message.since.ToDatetime(tzinfo=UTC) == SINCE
    assert message.pid == 4242
    assert message.contract_version == 1
    assert [(c.name, c.kind, c.state, c.attempts) for c in message.connections] == [
        ("host", "host-channel", 3, 0),
        ("ledger", "settlement-system", 2, 2),
    ]
    assert message.info.asset_code == "USD"
    stopped = adaptor_to_proto(
        snapshot("m", ProcessState.CRASHED, pid=None, info=None, last_error="boom", attempts=2)
    )
    assert (stopped.pid, stopped.HasField("info"), stopped.last_error, stopped.attempts) == (
        0,
        False,
        "boom",
        2,
    )


def test_health_statuses() -> None:
    assert health_statuses({}) == {"": True}
    assert health_statuses({"a": True, "b": True}) == {"": True, "a": True, "b": True}
    assert health_statuses({"a": True, "b": False}) == {"": False, "a": True, "b": False}


def test_bearer_token_parsing() -> None:
    assert bearer_token([("authorization", "Bearer abc")]) == b"abc"
    assert bearer_token([("x", "y"), ("Authorization", b"bearer abc")]) == b"abc"
    assert bearer_token([("authorization", "Basic abc")]) is None
    assert bearer_token([("authorization", "Bearer")]) is None
    assert bearer_token(None) is None
    interceptor = BearerTokenInterceptor("s3cret")
    assert interceptor.authorized([("authorization", "Bearer s3cret")])
    assert not interceptor.authorized([("authorization", "Bearer s3cre")])
    assert not interceptor.authorized([("authorization", "Bearer s3cret2")])
    assert not interceptor.authorized([])


def test_credentials_import_on_their_own() -> None:
    """host.credentials imported first, as the metrics listener does (it imported
    host.admin, whose server imports host.credentials back: a cycle)."""
    for module in ("host.credentials", "host.admin", "host.metrics"):
        done = subprocess.run(
            [sys.executable, "-c", f"import {module}"], capture_output=True, text=True, check=False
        )
        assert done.returncode == 0, done.stderr


def test_read_token(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("  abc123\n")
    assert read_token(path) == "abc123"
    path.write_text("\n")
    with pytest.raises(ValueError, match="is empty"):
        read_token(path)
    path.write_text("two words")
    with pytest.raises(ValueError, match="one word"):
        read_token(path)
    with pytest.raises(ValueError, match="cannot read"):
        read_token(tmp_path / "missing")


# -- HostAdmin -------------------------------------------------------------------------------


def test_list_and_get() -> None:
    async def test() -> None:
        supervisor = StandInSupervisor(
            snapshot("memory", ProcessState.SERVING), snapshot("xrpl", ProcessState.BACKOFF, None)
        )
        async with Harness(supervisor) as h:
            assert stat.S_IMODE(h.server.socket.stat().st_mode) == 0o600
            listing = await h.admin.ListAdaptors(admin_pb2.ListAdaptorsRequest())
            assert [(a.name, a.state, a.pid) for a in listing.adaptors] == [
                ("memory", admin_pb2.PROCESS_STATE_SERVING, 100),
                ("xrpl", admin_pb2.PROCESS_STATE_BACKOFF, 0),
            ]
            reply = await h.admin.GetAdaptor(admin_pb2.GetAdaptorRequest(name="xrpl"))
            assert reply.adaptor == listing.adaptors[1]
            code, details = await failure(
                h.admin.GetAdaptor(admin_pb2.GetAdaptorRequest(name="nope"))
            )
            assert code == grpc.StatusCode.NOT_FOUND
            assert "nope" in details
            # A 3 MB name is not echoed back: the message stays short.
            code, details = await failure(
                h.admin.GetAdaptor(admin_pb2.GetAdaptorRequest(name="n" * 3_000_000))
            )
            assert code == grpc.StatusCode.NOT_FOUND and len(details) < 200
            # Reflection advertises Health/List: it answers (it was UNIMPLEMENTED + ERROR).
            listed = await h.health.List(health_pb2.HealthListRequest())
            assert listed.statuses["memory"].status == health_pb2.HealthCheckResponse.SERVING
            assert listed.statuses["xrpl"].status == health_pb2.HealthCheckResponse.NOT_SERVING
            assert listed.statuses[""].status == health_pb2.HealthCheckResponse.NOT_SERVING
        assert not h.server.socket.exists()

    run(test)


def test_watch_sends_current_then_changes_and_ends_with_the_supervisor() -> None:
    async def test() -> None:
        supervisor = StandInSupervisor(
            snapshot("memory", ProcessState.SERVING), snapshot("xrpl", ProcessState.STARTING)
        )
        async with Harness(supervisor) as h:
            # The server's health follower is one watcher; wait for it before counting ours.
            await wait_until_async(lambda: supervisor.watchers == 1, "the health follower")
            everything = h.admin.WatchAdaptors(admin_pb2.WatchAdaptorsRequest())
            only_xrpl = h.admin.WatchAdaptors(admin_pb2.WatchAdaptorsRequest(name="xrpl"))
            first = [await everything.read(), await everything.read()]
            assert [m.adaptor.name for m in first] == ["memory", "xrpl"]
            assert (await only_xrpl.read()).adaptor.state == admin_pb2.PROCESS_STATE_STARTING
            await wait_until_async(lambda: supervisor.watchers == 3, "both watches")
            supervisor.publish(snapshot("memory", ProcessState.CRASHED, last_error="exit 1"))
            supervisor.publish(snapshot("xrpl", ProcessState.SERVING, pid=7))
            change = await everything.read()
            assert (change.adaptor.name, change.adaptor.state, change.adaptor.last_error) == (
                "memory",
                admin_pb2.PROCESS_STATE_CRASHED,
                "exit 1",
            )
            assert (await everything.read()).adaptor.pid == 7
            xrpl = await only_xrpl.read()
            assert (xrpl.adaptor.name, xrpl.adaptor.pid) == ("xrpl", 7)
            supervisor.close()
            assert await everything.read() == grpc.aio.EOF
            assert await only_xrpl.read() == grpc.aio.EOF
            assert await everything.code() == grpc.StatusCode.OK

            unknown = h.admin.WatchAdaptors(admin_pb2.WatchAdaptorsRequest(name="nope"))
            assert await unknown.code() == grpc.StatusCode.NOT_FOUND
            assert "nope" in await unknown.details()

    run(test)


def test_restart() -> None:
    async def test() -> None:
        supervisor = StandInSupervisor(snapshot("memory", ProcessState.SERVING, pid=100))
        async with Harness(supervisor) as h:
            reply = await h.admin.RestartAdaptor(admin_pb2.RestartAdaptorRequest(name="memory"))
            assert reply.adaptor.pid == 101
            assert supervisor.restarts == ["memory"]
            code, _ = await failure(
                h.admin.RestartAdaptor(admin_pb2.RestartAdaptorRequest(name="nope"))
            )
            assert code == grpc.StatusCode.NOT_FOUND
            await h.server.begin_shutdown()
            code, details = await failure(
                h.admin.RestartAdaptor(admin_pb2.RestartAdaptorRequest(name="memory"))
            )
            assert code == grpc.StatusCode.FAILED_PRECONDITION
            assert "stopping" in details
            assert supervisor.restarts == ["memory"]

    run(test)


class StandInEngine:
    async def list_accounts(self) -> admin_pb2.ListAccountsResponse:
        return admin_pb2.ListAccountsResponse(accounts=[admin_pb2.Account(account_id="bob")])

    async def get_account(self, account_id: str) -> admin_pb2.GetAccountResponse:
        raise AdminError(grpc.StatusCode.NOT_FOUND, f"no account {account_id!r}")

    async def list_settlements(
        self, account_id: str, limit: int
    ) -> admin_pb2.ListSettlementsResponse:
        return admin_pb2.ListSettlementsResponse(
            settlements=[admin_pb2.Settlement(id=f"{account_id}:{limit}")]
        )

    async def settle(self, request: admin_pb2.SettleRequest) -> admin_pb2.SettleResponse:
        raise RuntimeError("a bug in the engine")


def test_engine_rpcs_without_an_engine_are_unimplemented() -> None:
    async def test() -> None:
        async with Harness(StandInSupervisor()) as h:
            calls = [
                h.admin.ListAccounts(admin_pb2.ListAccountsRequest()),
                h.admin.GetAccount(admin_pb2.GetAccountRequest(account_id="bob")),
                h.admin.ListSettlements(admin_pb2.ListSettlementsRequest()),
                h.admin.Settle(admin_pb2.SettleRequest(account_id="bob")),
            ]
            for call in calls:
                assert await failure(call) == (grpc.StatusCode.UNIMPLEMENTED, NO_ENGINE)

    run(test)


def test_engine_rpcs_with_an_engine() -> None:
    async def test() -> None:
        async with Harness(StandInSupervisor(), engine=StandInEngine()) as h:
            accounts = await h.admin.ListAccounts(admin_pb2.ListAccountsRequest())
            assert [a.account_id for a in accounts.accounts] == ["bob"]
            settlements = await h.admin.ListSettlements(
                admin_pb2.ListSettlementsRequest(account_id="bob")
            )
            assert [s.id for s in settlements.settlements] == ["bob:100"]  # 0 means 100
            code, details = await failure(
                h.admin.GetAccount(admin_pb2.GetAccountRequest(account_id="eve"))
            )
            assert (code, details) == (grpc.StatusCode.NOT_FOUND, "no account 'eve'")
            code, details = await failure(h.admin.Settle(admin_pb2.SettleRequest()))
            assert code == grpc.StatusCode.INTERNAL
            assert "bug" not in details  # internals stay in the host's log

    run(test)


# -- health and reflection -------------------------------------------------------------------


def test_health_follows_the_adaptors() -> None:
    async def test() -> None:
        supervisor = StandInSupervisor(
            snapshot("memory", ProcessState.SERVING), snapshot("xrpl", ProcessState.STARTING)
        )
        async with Harness(supervisor) as h:

            async def check(service: str) -> int:
                reply = await h.health.Check(health_pb2.HealthCheckRequest(service=service))
                return reply.status

            assert await check("memory") == SERVING
            assert await check("xrpl") == NOT_SERVING
            assert await check("") == NOT_SERVING
            code, _ = await failure(h.health.Check(health_pb2.HealthCheckRequest(service="nope")))
            assert code == grpc.StatusCode.NOT_FOUND

            watch = h.health.Watch(health_pb2.HealthCheckRequest(service="xrpl"))
            overall = h.health.Watch(health_pb2.HealthCheckRequest(service=""))
            assert (await watch.read()).status == NOT_SERVING
            assert (await overall.read()).status == NOT_SERVING
            await wait_until_async(lambda: supervisor.watchers == 1, "the health follower")
            supervisor.publish(snapshot("xrpl", ProcessState.SERVING))
            assert (await watch.read()).status == SERVING
            assert (await overall.read()).status == SERVING
            supervisor.publish(snapshot("memory", ProcessState.CRASHED))
            assert (await overall.read()).status == NOT_SERVING
            assert await check("memory") == NOT_SERVING
            assert await check("xrpl") == SERVING

            await h.server.begin_shutdown()
            assert (await watch.read()).status == NOT_SERVING
            assert await check("") == NOT_SERVING
            watch.cancel()
            overall.cancel()

    run(test)


def test_reflection_lists_the_services() -> None:
    async def test() -> None:
        async with Harness(StandInSupervisor()) as h:
            stub = reflection_pb2_grpc.ServerReflectionStub(h.channel)
            request = reflection_pb2.ServerReflectionRequest(list_services="")
            async for reply in stub.ServerReflectionInfo(iter([request])):
                names = {s.name for s in reply.list_services_response.service}
            assert names == {
                "ilphost.admin.v1.HostAdmin",
                "grpc.health.v1.Health",
                "grpc.reflection.v1alpha.ServerReflection",
            }

    run(test)


# -- TCP with TLS and a bearer token ---------------------------------------------------------


def test_tcp_requires_tls_and_the_token() -> None:
    certificate = generate_certificate()

    async def test() -> None:
        tcp = TcpListener(
            "127.0.0.1", 0, ServerTls(certificate.cert_pem, certificate.key_pem, "s3cret")
        )
        supervisor = StandInSupervisor(snapshot("memory", ProcessState.SERVING))
        async with Harness(supervisor, tcp=tcp) as h:
            assert h.server.tcp_port
            address = f"127.0.0.1:{h.server.tcp_port}"
            options = [("grpc.ssl_target_name_override", "localhost")]
            tls = grpc.ssl_channel_credentials(root_certificates=certificate.cert_pem)

            def with_token(token: str) -> grpc.ChannelCredentials:
                return grpc.composite_channel_credentials(
                    tls, grpc.access_token_call_credentials(token)
                )

            request = admin_pb2.ListAdaptorsRequest()
            async with grpc.aio.secure_channel(address, tls, options=options) as channel:
                stub = admin_pb2_grpc.HostAdminStub(channel)
                code, details = await failure(stub.ListAdaptors(request))
                assert code == grpc.StatusCode.UNAUTHENTICATED
                assert "bearer token" in details
                watch = stub.WatchAdaptors(admin_pb2.WatchAdaptorsRequest())
                assert await watch.code() == grpc.StatusCode.UNAUTHENTICATED
                reflect = reflection_pb2_grpc.ServerReflectionStub(channel)
                listing = reflect.ServerReflectionInfo(
                    iter([reflection_pb2.ServerReflectionRequest(list_services="")])
                )
                assert await listing.code() == grpc.StatusCode.UNAUTHENTICATED
                # Health stays open to probes that cannot send headers.
                health = health_pb2_grpc.HealthStub(channel)
                reply = await health.Check(health_pb2.HealthCheckRequest(service="memory"))
                assert reply.status == SERVING
            wrong = with_token("s3cre7")
            async with grpc.aio.secure_channel(address, wrong, options=options) as channel:
                stub = admin_pb2_grpc.HostAdminStub(channel)
                code, _ = await failure(stub.ListAdaptors(request))
                assert code == grpc.StatusCode.UNAUTHENTICATED
            right = with_token("s3cret")
            async with grpc.aio.secure_channel(address, right, options=options) as channel:
                stub = admin_pb2_grpc.HostAdminStub(channel)
                listing_reply = await stub.ListAdaptors(request)
                assert [a.name for a in listing_reply.adaptors] == ["memory"]
                watch = stub.WatchAdaptors(admin_pb2.WatchAdaptorsRequest())
                assert (await watch.read()).adaptor.name == "memory"
                watch.cancel()
            # Plain text on the TLS port does not get through.
            async with grpc.aio.insecure_channel(address) as channel:
                stub = admin_pb2_grpc.HostAdminStub(channel)
                code, _ = await failure(stub.ListAdaptors(request, timeout=10))
                assert code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
            # The unix socket needs no token.
            assert (await h.admin.ListAdaptors(request)).adaptors[0].name == "memory"

    run(test)
