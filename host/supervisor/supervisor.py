"""The supervisor of every configured adaptor: the host's view of its adaptor processes.

Shaped like temporalio's worker: ``start`` launches one runner task per adaptor and a run task
over them; the run task waits until a stop is requested or a runner fails (a bug), treats its
own cancellation as a stop request, stops every adaptor (shielded from further cancellation),
and re-raises the first error, which ``stop`` then raises. ``async with`` starts and stops.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import random as _random
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from types import TracebackType

import grpc

from host.lifecycle import ProcessLifecycle, ProcessState
from host.supervisor.instance import host_connection
from host.supervisor.runner import AdaptorRunner, AdaptorSnapshot, SupervisorStopped
from host.supervisor.spec import AdaptorSpec
from sdk import mtls

__all__ = ["AdaptorSnapshot", "Supervisor", "SupervisorStopped"]

_log = logging.getLogger("ilp_host.supervisor")
#: Changes a watcher may fall behind by before the oldest are dropped (a stuck client must not
#: grow the host's memory without bound).
WATCH_BACKLOG = 1000
#: A socket root longer than this leaves adaptors too little of the ~100 bytes of a socket path.
SOCKET_ROOT_WARN = 60


class _Watcher:
    def __init__(self, name: str | None) -> None:
        self.name = name
        self.queue: collections.deque[AdaptorSnapshot | None] = collections.deque()
        self.ready = asyncio.Event()

    def put(self, item: AdaptorSnapshot | None) -> None:
        if item is not None and self.name is not None and item.name != self.name:
            return
        if len(self.queue) >= WATCH_BACKLOG:
            self.queue.popleft()
        self.queue.append(item)
        self.ready.set()


class Supervisor:
    """Runs the adaptors of ``specs``: starts them, checks their health, restarts them with
    backoff when they crash, stops them gracefully.

    ``engine_addr`` is passed to every adaptor (ILP_HOST_ENGINE_ADDR). ``socket_root`` holds one
    private directory per adaptor for its socket; by default a fresh temporary directory,
    removed at stop. ``random`` is the jitter source for restart delays.

    What the adaptors do once they serve is not the supervisor's business: ``watch`` tells
    when each starts or stops serving, and ``channel`` gives its channel meanwhile (the engine
    binding, host.binding, follows both).
    """

    def __init__(
        self,
        specs: Sequence[AdaptorSpec],
        *,
        engine_addr: str | None = None,
        socket_root: Path | None = None,
        random: Callable[[], float] = _random.random,
    ) -> None:
        names = [spec.name for spec in specs]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"adaptor names must be unique; repeated: {', '.join(duplicates)}")
        self._specs = tuple(specs)
        self._engine_addr = engine_addr
        self._socket_root_given = socket_root
        self._socket_root: Path | None = None
        self._random = random
        self._runners: dict[str, AdaptorRunner] = {}
        self._last: dict[str, AdaptorSnapshot] = {
            spec.name: _initial_snapshot(spec) for spec in self._specs
        }
        self._watchers: set[_Watcher] = set()
        self._run_task: asyncio.Task[None] | None = None
        self._stop_requested = asyncio.Event()
        self._started = False
        self._closed = False
        self._error_reported = False

    # --- start and stop -----------------------------------------------------------------

    async def start(self) -> None:
        """Start every adaptor; return once each has served or failed its first attempt (a
        failed one keeps being retried with backoff in the background)."""
        if self._closed or self._stop_requested.is_set():
            raise SupervisorStopped("the supervisor was stopped; make a new one")
        if self._started:
            raise RuntimeError("Supervisor.start() was called already")
        self._started = True
        self._socket_root = self._make_socket_root()
        own = mtls.generate_certificate() if any(s.auto_mtls for s in self._specs) else None
        for index, spec in enumerate(self._specs):
            # Short directory names: a unix socket path must stay under ~100 bytes.
            self._runners[spec.name] = AdaptorRunner(
                spec,
                self._socket_root / str(index),
                engine_addr=self._engine_addr,
                own_certificate=own,
                notify=self._publish,
                random=self._random,
            )
        self._run_task = asyncio.create_task(self._run(), name="supervisor")
        pending: set[asyncio.Future[None]] = {r.first_attempt for r in self._runners.values()}
        while pending and not self._run_task.done():
            _, pending = await asyncio.wait(
                {*pending, self._run_task}, return_when=asyncio.FIRST_COMPLETED
            )
            pending.discard(self._run_task)
        if self._run_task.done() and not self._run_task.cancelled():
            error = self._run_task.exception()
            if error is not None:
                self._error_reported = True
                raise error

    def _make_socket_root(self) -> Path:
        if self._socket_root_given is None:
            return Path(tempfile.mkdtemp(prefix="ilph"))  # 0700 by construction
        root = self._socket_root_given
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
        root.chmod(0o700)
        if len(str(root)) > SOCKET_ROOT_WARN:
            _log.warning(
                "socket root %s is long: adaptors may fail to bind (unix socket paths are "
                "limited to about 100 bytes)",
                root,
            )
        return root

    async def _run(self) -> None:
        tasks = [
            asyncio.create_task(runner.run(), name=f"adaptor-{name}")
            for name, runner in self._runners.items()
        ]
        stop_requested = asyncio.create_task(self._stop_requested.wait())
        try:
            # Runners end only when told to stop, or by a bug: either way, stop them all.
            await asyncio.wait([*tasks, stop_requested], return_when=asyncio.FIRST_COMPLETED)
        finally:  # also when cancelled: that is a stop request
            stop_requested.cancel()
            for runner in self._runners.values():
                runner.request_stop()
            try:
                await asyncio.shield(asyncio.gather(*tasks, return_exceptions=True))
            finally:
                self._close()
        errors = [t.exception() for t in tasks if not t.cancelled() and t.exception()]
        for error in errors[1:]:
            _log.error("adaptor supervision failed too", exc_info=error)
        if errors:
            raise errors[0]  # type: ignore[misc]

    def _close(self) -> None:
        self._closed = True
        for watcher in self._watchers:
            watcher.put(None)
        if self._socket_root_given is None and self._socket_root is not None:
            shutil.rmtree(self._socket_root, ignore_errors=True)

    async def stop(self) -> None:
        """Stop every adaptor gracefully and wait for it. Idempotent. Raises the first error of
        the supervision (a bug), once."""
        self._stop_requested.set()
        if self._run_task is None:
            self._closed = True
            return
        await asyncio.wait([self._run_task])
        if not self._run_task.cancelled() and not self._error_reported:
            error = self._run_task.exception()
            if error is not None:
                self._error_reported = True
                raise error

    async def wait(self) -> None:
        """Return once the supervision ended after a stop; raise its error if it failed (the
        error is then reported: ``stop`` does not raise it again)."""
        if self._run_task is None:
            raise RuntimeError("Supervisor.start() was not called")
        await asyncio.wait([self._run_task])
        if not self._run_task.cancelled() and self._run_task.exception() is not None:
            self._error_reported = True
            raise self._run_task.exception()  # type: ignore[misc]

    async def __aenter__(self) -> Supervisor:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()

    # --- views --------------------------------------------------------------------------

    def _runner(self, name: str) -> AdaptorRunner:
        runner = self._runners.get(name)
        if runner is None:
            raise KeyError(name)
        return runner

    def snapshots(self) -> list[AdaptorSnapshot]:
        """Every adaptor, in configuration order."""
        return [self.snapshot(spec.name) for spec in self._specs]

    def snapshot(self, name: str) -> AdaptorSnapshot:
        """One adaptor; KeyError if ``name`` is not configured."""
        if name in self._runners:
            return self._runners[name].snapshot()
        return self._last[name]  # before start: as configured; KeyError if unknown

    def serving(self, name: str) -> bool:
        """Whether ``name`` is SERVING."""
        return self.snapshot(name).state == ProcessState.SERVING

    def channel(self, name: str) -> grpc.aio.Channel | None:
        """The live channel to ``name`` while it is SERVING, else None. Valid until the next
        change of state: callers take it per call rather than keeping it."""
        if name not in self._runners:
            self.snapshot(name)  # KeyError if unknown
            return None
        return self._runner(name).channel()

    async def restart(self, name: str) -> AdaptorSnapshot:
        """Stop ``name`` gracefully and start it again with the backoff reset; return once the
        new process serves or its start failed. SupervisorStopped when stopping or stopped."""
        self.snapshot(name)  # KeyError if unknown
        if not self._started or self._closed or self._stop_requested.is_set():
            raise SupervisorStopped("the supervisor is not running")
        return await self._runner(name).request_restart()

    # --- watching -----------------------------------------------------------------------

    def _publish(self, snapshot: AdaptorSnapshot) -> None:
        if self._last.get(snapshot.name) == snapshot:
            return
        self._last[snapshot.name] = snapshot
        for watcher in self._watchers:
            watcher.put(snapshot)

    def watch(self, name: str | None = None) -> AsyncIterator[AdaptorSnapshot]:
        """The current state of every adaptor (or of ``name``), then each change, until the
        supervisor stops. KeyError for an unknown name."""
        if name is not None:
            self.snapshot(name)
        return self._watch(name)

    async def _watch(self, name: str | None) -> AsyncIterator[AdaptorSnapshot]:
        watcher = _Watcher(name)
        for snapshot in self.snapshots():
            watcher.put(snapshot)
        if self._closed:
            watcher.put(None)
        self._watchers.add(watcher)
        try:
            while True:
                await watcher.ready.wait()
                watcher.ready.clear()
                while watcher.queue:
                    item = watcher.queue.popleft()
                    if item is None:
                        return
                    yield item
        finally:
            self._watchers.discard(watcher)


def _initial_snapshot(spec: AdaptorSpec) -> AdaptorSnapshot:
    life = ProcessLifecycle()
    return AdaptorSnapshot(
        name=spec.name,
        state=life.state,
        since=life.since,
        last_error="",
        attempts=0,
        pid=None,
        contract_version=0,
        connections=(host_connection(),),
        info=None,
    )
