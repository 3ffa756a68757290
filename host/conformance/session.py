"""The adaptor under test, running, and what checks need to talk to it.

A ``Session`` starts the adaptor as the host does and records how far it got (``Phase``) and
why not further. Checks call its RPC helpers (a failed call becomes ``CheckFailed`` naming the
RPC and the status), set up accounts through it (so that they are deleted at the end, newest
first, as csi-sanity cleans up what it created), read ``WatchEvents`` through ``EventStream``
(host/conformance/streams.py), and read balances where the suite can see them. From the
handshake on, ``plugin.GRPCStdio`` is drained, as the host must.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import itertools
import os
import signal
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import grpc

from host.conformance import launch
from host.conformance.report import CheckFailed
from host.conformance.streams import EventStream, StdioDrain
from host.conformance.world import ADAPTOR_LEDGER_ACCOUNT, SIMLEDGER, World, peer_ledger_account
from host.supervisor import rpc
from host.supervisor.diagnose import StartFailure, describe_exit, stderr_summary
from host.supervisor.process import AdaptorProcess
from sdk import amount, contract, handshake, mtls
from sdk.handshake import Handshake
from sdk.pb.ilphost.adaptor.v1 import adaptor_pb2, adaptor_pb2_grpc
from sdk.pb.ilphost.types.v1 import types_pb2

if TYPE_CHECKING:
    from sdk.pb.ilphost.adaptor.v1.adaptor_pb2_grpc import LedgerAdaptorAsyncStub

#: Pause between two looks at a condition that lives in another process.
POLL: Final = 0.1


@dataclass(frozen=True)
class SuiteOptions:
    """How to run the suite. Times are in seconds; generous, as nothing here measures speed
    except ``shutdown_grace``, which the contract sets."""

    command: tuple[str, ...]
    #: Added to the adaptor's environment (over the suite's own variables).
    env: Mapping[str, str] = field(default_factory=dict)
    #: Start no ledger: the adaptor's own configuration (``env``) says where its ledger is.
    use_adaptor_config: bool = False
    #: Check names or groups ("send_money" selects "send_money.*"); empty selects all.
    only: tuple[str, ...] = ()
    cwd: Path | None = None
    #: Where the run's temporary directory is made (default: the system's temp directory).
    #: Keep it short: the adaptor's unix socket lives below it.
    temp_root: Path | None = None
    start_timeout: float = 30.0
    call_timeout: float = 10.0
    #: How long an event the adaptor must send (a re-delivery, a payment seen) may take.
    event_timeout: float = 10.0
    #: When the suite cannot pay the adaptor itself: how long a new WatchEvents stream is
    #: watched for settlements the adaptor already has, and the quiet gap that ends the look.
    incoming_wait: float = 3.0
    quiet_period: float = 1.0
    #: The contract's limit from the Shutdown request (or SIGTERM) to exit status 0.
    shutdown_grace: float = 5.0
    #: Where the adaptor is asked to listen; "tcp" comes with automatic mutual TLS, as the
    #: host runs it.
    transport: launch.Transport = "unix"


class Phase(enum.IntEnum):
    """How far the start of the adaptor under test got."""

    NOT_STARTED = 0
    #: The process runs; its handshake line was not accepted (yet).
    SPAWNED = 1
    #: The handshake line was accepted and the channel is open.
    CONNECTED = 2
    #: Health is SERVING and GetInfo answered: the RPC checks can run.
    READY = 3


@dataclass(frozen=True)
class Balances:
    """What the suite can see of money: the adaptor's settlement account and the peer's ledger
    account, each None when it cannot be seen."""

    adaptor: int | None
    peer: int | None

    @property
    def observable(self) -> bool:
        """Whether any balance is known."""
        return self.adaptor is not None or self.peer is not None


class Session:
    """The adaptor under test in one run of the suite, and the world around it."""

    def __init__(self, options: SuiteOptions, world: World) -> None:
        self.options = options
        self.world = world
        self.phase = Phase.NOT_STARTED
        #: Why the phase is not READY ("" once it is), and the check that reports it in full.
        self.failure = "the adaptor was not started"
        self.failure_check = "handshake"
        self.process: AdaptorProcess | None = None
        self.handshake: Handshake | None = None
        self.channel: grpc.aio.Channel | None = None
        self.stdio: StdioDrain | None = None
        self.info = adaptor_pb2.GetInfoResponse()
        #: Incoming settlements the checks share (checks/incoming.py), or why there are none.
        self.incoming: list[adaptor_pb2.IncomingSettlement] | None = None
        self.incoming_problem = ""
        self._stub: LedgerAdaptorAsyncStub | None = None
        self._accounts: list[str] = []
        self._streams: set[EventStream] = set()
        self._socket_dirs = (world.directory / f"sockets{n}" for n in itertools.count())
        self._keys = itertools.count(1)
        self._run_id = uuid.uuid4().hex[:12]
        #: The suite's own certificate, as the host's, when the adaptor is asked for mutual TLS.
        self.own: mtls.Certificate | None = (
            mtls.generate_certificate() if options.transport == "tcp" else None
        )

    # --- what checks read ---------------------------------------------------------------------

    @property
    def adaptor(self) -> LedgerAdaptorAsyncStub:
        """The LedgerAdaptor stub (once CONNECTED)."""
        assert self._stub is not None, "no channel: the check ran before the adaptor connected"
        return self._stub

    @property
    def capabilities(self) -> frozenset[str]:
        """What GetInfo declared."""
        return frozenset(self.info.capabilities)

    @property
    def on_suite_ledger(self) -> bool:
        """Whether the adaptor settles on the suite's own ledger (so the suite can pay it and
        see its payments)."""
        return self.world.ledger is not None and self.info.ledger == SIMLEDGER

    def new_key(self) -> str:
        """A fresh idempotency key (unique across runs, so a persistent ledger cannot mix them)."""
        return f"conformance-{self._run_id}-{next(self._keys)}"

    def amount(self, value: int | str, scale: int | None = None) -> types_pb2.Amount:
        """An Amount at the ledger's scale (or ``scale``)."""
        return types_pb2.Amount(
            value=str(value), scale=self.info.asset_scale if scale is None else scale
        )

    def exited(self) -> str:
        """ "" while the adaptor process runs, else how it ended and its last stderr lines."""
        process = self.process
        if process is None or process.returncode is None:
            return ""
        return f"the adaptor {describe_exit(process.returncode)}" + stderr_summary(
            list(process.stderr_tail)
        )

    # --- starting -----------------------------------------------------------------------------

    def _environment(self, state_db: str) -> dict[str, str]:
        return launch.environment(
            self.options.command,
            {**self.world.adaptor_env(state_db), **self.options.env},
            socket_dir=next(self._socket_dirs),
            engine_addr=self.world.engine.address,
            transport=self.options.transport,
            client_cert_pem=self.own.cert_pem if self.own is not None else None,
        )

    async def refused_start(
        self, *, versions: str | None = None, cookie: bool = True
    ) -> launch.Refusal:
        """Start the adaptor once more in an environment it must refuse: PLUGIN_PROTOCOL_VERSIONS
        set to ``versions``, or without the magic cookie. Its own state file, so that a
        misbehaving start cannot touch the main run's."""
        env = self._environment(f"refused-{uuid.uuid4().hex[:8]}.db")
        offered: tuple[int, ...] = contract.CONTRACT_VERSIONS
        if versions is not None:
            env[contract.ENV_PROTOCOL_VERSIONS] = versions
            offered = tuple(handshake.parse_versions(versions))
        if not cookie:
            env.pop(contract.MAGIC_COOKIE_KEY, None)
        socket_dir = Path(env[contract.ENV_UNIX_SOCKET_DIR])
        try:
            return await launch.refused_start(
                self.options.command,
                env,
                self.options.cwd,
                socket_dir,
                offered,
                self.options.start_timeout,
            )
        except StartFailure as failure:
            raise CheckFailed(f"the adaptor could not be started: {failure}") from failure

    async def start(self) -> None:
        """Start the adaptor under test as the host does, as far as it goes. Never raises:
        ``phase`` says how far it got and ``failure`` why not further."""
        options = self.options
        env = self._environment("adaptor-state.db")
        socket_dir = Path(env[contract.ENV_UNIX_SOCKET_DIR])
        try:
            self.process = await launch.spawn(options.command, env, options.cwd, socket_dir)
            self.phase = Phase.SPAWNED
            self.handshake = await self.process.read_handshake(
                contract.CONTRACT_VERSIONS, options.start_timeout
            )
            self.channel = rpc.open_channel(self.handshake, self.own)
        except StartFailure as failure:
            self.failure = f"the adaptor did not start: {failure}"
            return
        self.phase = Phase.CONNECTED
        self._stub = adaptor_pb2_grpc.LedgerAdaptorStub(self.channel)
        self.stdio = StdioDrain(self.channel)
        try:
            await rpc.wait_serving(self.channel, options.start_timeout, options.call_timeout)
        except StartFailure as failure:
            self.failure, self.failure_check = f"the adaptor does not serve: {failure}", "health"
            return
        problem = await self._first_info()
        if problem:
            self.failure, self.failure_check = problem, "get_info"
            return
        await self._until_ready()
        self.phase, self.failure, self.failure_check = Phase.READY, "", ""

    async def _first_info(self) -> str:
        """GetInfo, asked again while UNAVAILABLE (the adaptor may not know its asset before its
        ledger first answered); what went wrong, or ""."""
        deadline = time.monotonic() + self.options.start_timeout
        while True:
            try:
                self.info = await self.adaptor.GetInfo(
                    adaptor_pb2.GetInfoRequest(), timeout=self.options.call_timeout
                )
                return ""
            except grpc.aio.AioRpcError as exc:
                if exc.code() != grpc.StatusCode.UNAVAILABLE or time.monotonic() > deadline:
                    return f"GetInfo failed: {exc.code().name}: {exc.details()}"
            await asyncio.sleep(POLL)

    async def _until_ready(self) -> None:
        """Give the adaptor the start timeout to report ``ready`` (its ledger connected); the
        checks run either way and show what does not work."""
        deadline = time.monotonic() + self.options.start_timeout
        while time.monotonic() < deadline:
            try:
                probe = await self.adaptor.Probe(
                    adaptor_pb2.ProbeRequest(), timeout=self.options.call_timeout
                )
            except grpc.aio.AioRpcError:
                return  # the probe check reports it
            if not probe.HasField("ready") or probe.ready.value:
                return
            await asyncio.sleep(POLL)

    # --- calls --------------------------------------------------------------------------------

    async def call(self, method: str, request: Any) -> Any:
        """``LedgerAdaptor.<method>(request)``; an error status becomes CheckFailed."""
        try:
            return await getattr(self.adaptor, method)(request, timeout=self.options.call_timeout)
        except grpc.aio.AioRpcError as exc:
            raise CheckFailed(f"{method} answered {exc.code().name}: {exc.details()}") from exc

    async def status(self, method: str, request: Any) -> tuple[grpc.StatusCode, str]:
        """The status ``LedgerAdaptor.<method>(request)`` answers: (code, details)."""
        try:
            await getattr(self.adaptor, method)(request, timeout=self.options.call_timeout)
        except grpc.aio.AioRpcError as exc:
            return exc.code(), exc.details() or ""
        return grpc.StatusCode.OK, ""

    async def poll(self, condition: Callable[[], Awaitable[bool]], within: float) -> bool:
        """Whether ``condition`` held within ``within`` seconds (looked at every POLL)."""
        deadline = time.monotonic() + within
        while not await condition():
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(POLL)
        return True

    # --- accounts -----------------------------------------------------------------------------

    def set_up_account(self, account_id: str) -> None:
        """Remember that ``account_id`` was set up: it is deleted when the run ends."""
        if account_id not in self._accounts:
            self._accounts.append(account_id)

    def forget_account(self, account_id: str) -> None:
        """``account_id`` was deleted by a check."""
        with contextlib.suppress(ValueError):
            self._accounts.remove(account_id)

    async def ensure_account(self, account_id: str) -> None:
        """Set up ``account_id`` unless this run did already."""
        if account_id in self._accounts:
            return
        try:
            await self.call("SetupAccount", adaptor_pb2.SetupAccountRequest(account_id=account_id))
        except CheckFailed as exc:
            raise CheckFailed(f"could not set up account {account_id!r}: {exc}") from exc
        self.set_up_account(account_id)

    async def delete_accounts(self) -> list[str]:
        """Delete every account this run set up, newest first; the problems, if any."""
        problems = []
        while self._accounts:
            account_id = self._accounts.pop()
            code, details = await self.status(
                "DeleteAccount", adaptor_pb2.DeleteAccountRequest(account_id=account_id)
            )
            if code != grpc.StatusCode.OK:
                problems.append(
                    f"cleanup: DeleteAccount({account_id!r}) answered {code.name}: {details}"
                )
        return problems

    # --- money --------------------------------------------------------------------------------

    async def balances(self, account_id: str) -> Balances:
        """The balances the suite can see: on its own ledger the adaptor's settlement account and
        the ledger account of ``account_id``'s peer; else GetBalance if declared; else none."""
        ledger = self.world.ledger
        if ledger is not None and self.on_suite_ledger:
            return Balances(
                await ledger.balance(ADAPTOR_LEDGER_ACCOUNT),
                await ledger.balance(peer_ledger_account(account_id)),
            )
        if "balance" in self.capabilities:
            reply = await self.call("GetBalance", adaptor_pb2.GetBalanceRequest())
            try:
                return Balances(amount.unsigned_of(reply.balance, "balance"), None)
            except amount.AmountError as exc:
                raise CheckFailed(f"GetBalance answered a malformed amount: {exc}") from exc
        return Balances(None, None)

    @asynccontextmanager
    async def events(self) -> AsyncIterator[EventStream]:
        """A new WatchEvents stream, closed on exit."""
        stream = EventStream(self.adaptor)
        self._streams.add(stream)
        try:
            yield stream
        finally:
            self._streams.discard(stream)
            await stream.close()

    # --- stopping -----------------------------------------------------------------------------

    async def stop_as_asked(self) -> tuple[str, int | None, float]:
        """Ask the adaptor to stop as the host does first: the Shutdown RPC, or SIGTERM to its
        group when it does not serve GRPCController. Returns (how it was asked, its exit
        status or None if it still runs after ``shutdown_grace``, seconds it took)."""
        process, channel = self.process, self.channel
        assert process is not None and channel is not None
        for stream in list(self._streams):
            await stream.close()
        grace = self.options.shutdown_grace
        started = time.monotonic()
        if await rpc.request_shutdown(channel, min(self.options.call_timeout, grace)):
            how = "the Shutdown request"
        else:
            how = "SIGTERM (it does not serve plugin.GRPCController)"
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pgid, signal.SIGTERM)
        try:
            # The grace counts from the request: a slow answer to Shutdown uses it up too.
            async with asyncio.timeout(max(0.0, started + grace - time.monotonic())):
                status: int | None = await process.wait()
        except TimeoutError:
            status = None
        return how, status, time.monotonic() - started

    async def close(self) -> None:
        """Stop everything the session started: streams, the adaptor (Shutdown, SIGTERM,
        SIGKILL of its group), the channel. (The world removes the directories.)"""
        for stream in list(self._streams):
            await stream.close()
        process = self.process
        if process is not None:
            if process.returncode is None and self.channel is not None:
                await rpc.request_shutdown(self.channel, self.options.call_timeout)
                await process.wait_group_gone(self.options.shutdown_grace)
            await process.terminate(launch.TERM_GRACE)
            await process.close()
        if self.stdio is not None:
            await self.stdio.close()
        if self.channel is not None:
            await rpc.close_channel(self.channel)
