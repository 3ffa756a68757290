"""The supervision of one adaptor: start it, watch it, restart it with backoff, stop it.

``run`` loops over lives of the adaptor (host/supervisor/instance.py) until a stop is requested.
A failed start or a crash is CRASHED, then BACKOFF for the delay of backoff.py, then STARTING
again. Stop and restart requests interrupt whatever step is under way; a restart is a graceful
stop and a start with the backoff reset.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random as _random
import shutil
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import grpc

from host.lifecycle import ProcessLifecycle, ProcessState
from host.supervisor.diagnose import StartFailure
from host.supervisor.instance import AdaptorInstance, StopOutcome, host_connection
from host.supervisor.spec import AdaptorSpec, adaptor_environment
from sdk import mtls
from sdk.backoff import backoff_delay
from sdk.connectivity import ConnectionState
from sdk.pb.ilphost.adaptor.v1 import adaptor_pb2

_log = logging.getLogger("ilp_host.supervisor")
_T = TypeVar("_T")


class SupervisorStopped(RuntimeError):
    """The supervisor is stopping or stopped: no more starts or restarts."""


@dataclass(frozen=True)
class AdaptorSnapshot:
    """One adaptor as it is now: process lifecycle, connections, what it said of itself."""

    name: str
    state: ProcessState
    since: datetime
    last_error: str
    attempts: int
    pid: int | None
    #: The negotiated contract version; 0 before the handshake of the current process.
    contract_version: int
    #: First the host's channel ("host", kind "host-channel"), then the adaptor's own, by name.
    connections: tuple[ConnectionState, ...]
    #: The adaptor's GetInfo answer from the last time it served; None if it never did.
    info: adaptor_pb2.GetInfoResponse | None


class _Interrupted(Exception):
    """A stop or restart request arrived while a step was under way."""


class AdaptorRunner:
    """Supervises one adaptor. ``notify`` gets a snapshot after every change."""

    def __init__(
        self,
        spec: AdaptorSpec,
        socket_dir: Path,
        *,
        engine_addr: str | None,
        own_certificate: mtls.Certificate | None,
        notify: Callable[[AdaptorSnapshot], None],
        random: Callable[[], float] = _random.random,
    ) -> None:
        self.spec = spec
        self._socket_dir = socket_dir
        self._engine_addr = engine_addr
        self._own = own_certificate if spec.auto_mtls else None
        self._notify = notify
        self._random = random
        self.lifecycle = ProcessLifecycle()
        self.instance: AdaptorInstance | None = None
        self._info: adaptor_pb2.GetInfoResponse | None = None
        self._host_connection = host_connection()
        self._wake = asyncio.Event()
        self._stop_requested = False
        self._restart_waiters: list[asyncio.Future[AdaptorSnapshot]] = []
        #: Resolved when the first start attempt served or failed (or a stop came first).
        self.first_attempt: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    # --- what others see --------------------------------------------------------------------

    def snapshot(self) -> AdaptorSnapshot:
        """The adaptor as it is now."""
        instance = self.instance
        connections: tuple[ConnectionState, ...] = (self._host_connection,)
        if instance is not None:
            connections = (instance.host_connection, *instance.connections.values())
            if instance.info is not None:
                self._info = instance.info
        life = self.lifecycle
        return AdaptorSnapshot(
            name=self.spec.name,
            state=life.state,
            since=life.since,
            last_error=life.last_error,
            attempts=life.attempts,
            pid=instance.pid if instance is not None else None,
            contract_version=instance.contract_version if instance is not None else 0,
            connections=connections,
            info=self._info,
        )

    def channel(self) -> grpc.aio.Channel | None:
        """The channel to the adaptor while it serves."""
        if self.lifecycle.state != ProcessState.SERVING or self.instance is None:
            return None
        return self.instance.channel

    def _changed(self) -> None:
        instance = self.instance
        if self.lifecycle.state == ProcessState.SERVING and instance and instance.pid is None:
            return  # the process has just ended: CRASHED follows at once and tells it all
        self._notify(self.snapshot())

    def _to(self, state: ProcessState, error: str = "") -> None:
        self.lifecycle = self.lifecycle.to(state, error)
        level = logging.WARNING if state == ProcessState.CRASHED else logging.INFO
        _log.log(
            level, "adaptor %s: %s%s", self.spec.name, state.name, f": {error}" if error else ""
        )
        self._changed()

    # --- requests ---------------------------------------------------------------------------

    def request_stop(self) -> None:
        """Ask ``run`` to stop the adaptor gracefully and return."""
        self._stop_requested = True
        self._wake.set()

    def request_restart(self) -> asyncio.Future[AdaptorSnapshot]:
        """Ask for a graceful stop and a fresh start; the future resolves once the new process
        serves or its start fails (SupervisorStopped if a stop comes first)."""
        waiter: asyncio.Future[AdaptorSnapshot] = asyncio.get_running_loop().create_future()
        if self._stop_requested:
            waiter.set_exception(SupervisorStopped(f"adaptor {self.spec.name} is stopping"))
            return waiter
        self._restart_waiters.append(waiter)
        self._wake.set()
        return waiter

    def _attempt_done(self) -> None:
        if not self.first_attempt.done():
            self.first_attempt.set_result(None)
        snapshot = self.snapshot()
        waiters, self._restart_waiters = self._restart_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(snapshot)

    async def _unless_woken(self, coro: Coroutine[Any, Any, _T]) -> _T:
        """Run ``coro`` unless a request comes first (then cancel it, raise _Interrupted)."""
        work = asyncio.create_task(coro)
        woken = asyncio.create_task(self._wake.wait())
        try:
            await asyncio.wait({work, woken}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            woken.cancel()
            if not work.done():
                work.cancel()
            await asyncio.gather(work, woken, return_exceptions=True)
        if work.cancelled():
            raise _Interrupted
        return work.result()

    # --- the loop ---------------------------------------------------------------------------

    async def run(self) -> None:
        """Supervise until a stop is requested; the adaptor is then stopped."""
        try:
            while not self._stop_requested:
                self._wake.clear()
                crashed = await self._life()
                if not crashed or self._stop_requested:
                    continue
                self._to(ProcessState.BACKOFF)
                delay = backoff_delay(
                    self.lifecycle.attempts,
                    initial=self.spec.backoff_initial,
                    multiplier=self.spec.backoff_multiplier,
                    cap=self.spec.backoff_max,
                    jitter=self.spec.backoff_jitter,
                    random=self._random,
                )
                _log.info(
                    "adaptor %s: restart %d in %.2f s",
                    self.spec.name,
                    self.lifecycle.attempts,
                    delay,
                )
                try:
                    await self._unless_woken(asyncio.sleep(delay))
                except _Interrupted:
                    self._to(ProcessState.STOPPED)  # the restart resets the backoff
        finally:
            state = self.lifecycle.state
            if state in (ProcessState.STARTING, ProcessState.HANDSHAKING, ProcessState.SERVING):
                self._to(ProcessState.STOPPING)  # cancelled: _life has killed the process
            if self.lifecycle.state != ProcessState.STOPPED:
                self._to(ProcessState.STOPPED)
            if not self.first_attempt.done():
                self.first_attempt.set_result(None)
            for waiter in self._restart_waiters:
                if not waiter.done():
                    waiter.set_exception(SupervisorStopped(f"adaptor {self.spec.name} stopped"))
            self._restart_waiters.clear()

    async def _life(self) -> bool:
        """One process, from STARTING to its end; whether it crashed (else it was stopped)."""
        spec = self.spec
        self._to(ProcessState.STARTING)
        shutil.rmtree(self._socket_dir, ignore_errors=True)
        instance = AdaptorInstance(
            spec,
            adaptor_environment(
                spec,
                os.environ,
                socket_dir=self._socket_dir,
                engine_addr=self._engine_addr,
                client_cert_pem=self._own.cert_pem if self._own is not None else None,
            ),
            self._socket_dir,
            self._own,
            self._changed,
        )
        self.instance = instance
        try:
            try:
                await self._unless_woken(
                    instance.start(on_handshake=lambda: self._to(ProcessState.HANDSHAKING))
                )
            except _Interrupted:
                await self._stop(instance)
                return False
            except Exception as exc:
                reason = str(exc) if isinstance(exc, StartFailure) else f"start failed: {exc!r}"
                if not isinstance(exc, StartFailure):
                    _log.exception("adaptor %s: unexpected error while starting", spec.name)
                self._to(ProcessState.CRASHED, reason)
                await instance.kill()
                self._attempt_done()
                return True
            self._to(ProcessState.SERVING)
            self._attempt_done()
            try:
                reason = await self._unless_woken(instance.serve())
            except _Interrupted:
                await self._stop(instance)
                return False
            self._to(ProcessState.CRASHED, reason)
            await instance.kill()
            return True
        finally:
            if not instance.closed:  # cancelled mid-step: still leave nothing behind
                await asyncio.shield(instance.kill())
            self._host_connection = instance.host_connection
            self.instance = None
            self._changed()

    async def _stop(self, instance: AdaptorInstance) -> None:
        was_serving = self.lifecycle.state == ProcessState.SERVING
        self._to(ProcessState.STOPPING)
        outcome = await asyncio.shield(instance.stop())
        note = ""
        if outcome is StopOutcome.SIGKILL or (was_serving and outcome is StopOutcome.SIGTERM):
            # Worth the operator's attention: the adaptor does not stop when asked.
            asked = "the Shutdown request" if was_serving else "SIGTERM"
            note = f"did not stop after {asked}: {outcome.value}"
            _log.warning("adaptor %s %s", self.spec.name, note)
        self._to(ProcessState.STOPPED, note)
