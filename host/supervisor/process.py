"""One adaptor process at the operating-system level: spawn, output, signals, reaping.

The process gets its own process group (its own session), so that a stop reaches its children
and grandchildren too; on Linux it also gets a parent-death signal (SIGKILL), so that a host
killed with SIGKILL leaves no adaptor behind. stdout carries the handshake line and then log
lines; stderr is read from the start (its last lines explain a failed start).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from host.supervisor.diagnose import (
    StartFailure,
    StartProblem,
    explain_exit,
    explain_handshake_error,
    explain_spawn_error,
    explain_timeout,
    inspect_program,
    quote,
)
from host.supervisor.logs import LineParser, emit
from sdk.handshake import Handshake, HandshakeError, HandshakeProblem, parse

#: Longest output line kept whole; longer ones are logged as dropped.
LINE_LIMIT = 256 * 1024
#: Lines of stderr kept to explain a failed start.
STDERR_TAIL = 20
#: How often a stopping group is checked for survivors.
POLL_INTERVAL = 0.05
#: How long the output pumps get to reach end-of-file once the process is gone.
DRAIN_TIMEOUT = 1.0

_PR_SET_PDEATHSIG = 1
_log = logging.getLogger("ilp_host.supervisor")


def _parent_death_signal() -> Callable[[], None] | None:
    """A preexec_fn that asks the kernel to SIGKILL the child when the host dies (Linux).

    libc is looked up before the fork: after it, in a process with gRPC's threads, the child
    must do as little as possible. The signal is tied to the forking *thread*, which is the
    event loop's. If the host died between fork and prctl, the child kills itself.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    host_pid = os.getpid()

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        if os.getppid() != host_pid:
            os.kill(os.getpid(), signal.SIGKILL)

    return preexec


def live_group_members(pgid: int) -> list[int]:
    """The processes of group ``pgid`` that still run (zombies excluded: they are dead, just not
    reaped, e.g. orphans under an init that does not reap)."""
    try:
        os.killpg(pgid, 0)  # cheap, and definite when nobody (not even a zombie) is left
    except ProcessLookupError:
        return []
    except PermissionError:
        pass
    proc = Path("/proc")
    if not proc.is_dir():  # not Linux: zombies count as alive here
        return [pgid]
    members = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses.
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) >= 3 and fields[2] == str(pgid) and fields[0] not in ("Z", "X"):
            members.append(int(entry.name))
    return members


def is_alive(pid: int) -> bool:
    """Whether ``pid`` is a running (not zombie) process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    return stat[stat.rfind(")") + 2 :].split()[0] not in ("Z", "X")


def _protocol_factory(reader: asyncio.StreamReader) -> Callable[[], asyncio.Protocol]:
    def make() -> asyncio.Protocol:
        return asyncio.StreamReaderProtocol(reader)

    return make


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _popen(
    command: tuple[str, ...], env: Mapping[str, str], cwd: Path | None
) -> subprocess.Popen[bytes]:
    """Fork and exec, synchronously and on purpose: the parent-death signal belongs to the
    forking thread, which must be the event loop's (it lives as long as the host)."""
    if cwd is not None and not cwd.is_dir():
        raise StartFailure(StartProblem.SPAWN_FAILED, f"working directory {cwd} does not exist")
    try:
        return subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=dict(env),
            cwd=cwd,
            start_new_session=True,
            preexec_fn=_parent_death_signal(),
            close_fds=True,
        )
    except OSError as exc:
        raise explain_spawn_error(exc, inspect_program(command[0], env, cwd)) from exc


class AdaptorProcess:
    """A spawned adaptor process with its output pumps. Use ``spawn``; end with ``terminate``
    (or ``kill``) and then ``close``."""

    def __init__(self, name: str, popen: subprocess.Popen[bytes], logger: logging.Logger) -> None:
        self.name = name
        self.pid = popen.pid
        self.pgid = popen.pid  # start_new_session: the adaptor leads its own group
        self._popen = popen
        self._logger = logger
        self.stderr_tail: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL)
        self._stdout = asyncio.StreamReader(limit=LINE_LIMIT)
        self._stderr = asyncio.StreamReader(limit=LINE_LIMIT)
        self._transports: list[asyncio.BaseTransport] = []
        self._exited: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._tasks: list[asyncio.Task[None]] = []
        self._exit_waiter: asyncio.Task[None] | None = None

    @classmethod
    async def spawn(
        cls,
        name: str,
        command: tuple[str, ...],
        env: Mapping[str, str],
        cwd: Path | None,
        logger: logging.Logger,
    ) -> AdaptorProcess:
        """Start ``command``; a failed exec raises StartFailure with the diagnosis."""
        popen = _popen(command, env, cwd)
        self = cls(name, popen, logger)
        await self._connect_pipes()
        self._watch_exit()
        self._tasks.append(asyncio.create_task(self._pump_stderr(), name=f"{name}-stderr"))
        return self

    async def _connect_pipes(self) -> None:
        loop = asyncio.get_running_loop()
        assert self._popen.stdout is not None and self._popen.stderr is not None
        for reader, pipe in (
            (self._stdout, self._popen.stdout),
            (self._stderr, self._popen.stderr),
        ):
            transport, _ = await loop.connect_read_pipe(_protocol_factory(reader), pipe)
            self._transports.append(transport)

    def _watch_exit(self) -> None:
        """Resolve ``_exited`` when the process ends: a pidfd on Linux, else a waiting thread."""
        loop = asyncio.get_running_loop()
        try:
            pidfd = os.pidfd_open(self.pid)
        except (AttributeError, OSError):  # not Linux, or a kernel before 5.3
            self._exit_waiter = asyncio.create_task(self._wait_in_thread())
            return

        def on_exit() -> None:
            loop.remove_reader(pidfd)
            os.close(pidfd)
            code = self._popen.wait()
            if not self._exited.done():
                self._exited.set_result(code)

        loop.add_reader(pidfd, on_exit)

    async def _wait_in_thread(self) -> None:
        code = await asyncio.to_thread(self._popen.wait)
        if not self._exited.done():
            self._exited.set_result(code)

    @property
    def returncode(self) -> int | None:
        """The exit status once reaped (negative: killed by that signal), else None."""
        return self._exited.result() if self._exited.done() else None

    async def wait(self) -> int:
        """Wait for the process to end; its exit status."""
        return await asyncio.shield(self._exited)

    # --- output ---------------------------------------------------------------------------

    async def _readline(self, reader: asyncio.StreamReader) -> str | None:
        """The next line without its newline, or None at end of output."""
        while True:
            try:
                raw = await reader.readline()
            except ValueError:  # longer than LINE_LIMIT; the reader skipped it
                self._logger.warning(
                    "adaptor %s wrote a line of more than %d bytes; dropped", self.name, LINE_LIMIT
                )
                continue
            if not raw:
                return None
            return raw.decode("utf-8", "replace").rstrip("\r\n")

    async def _pump_stderr(self) -> None:
        parser = LineParser()
        while (line := await self._readline(self._stderr)) is not None:
            self.stderr_tail.append(line)
            if line.strip():
                emit(self._logger, self.name, "stderr", parser.parse(line))

    async def _pump_stdout(self) -> None:
        parser = LineParser()
        while (line := await self._readline(self._stdout)) is not None:
            if line.strip():
                emit(self._logger, self.name, "stdout", parser.parse(line))

    async def read_handshake(self, offered: Iterable[int], within: float) -> Handshake:
        """Read stdout until a line parses as a handshake, within ``within`` seconds; then keep
        draining stdout into logs. Raises StartFailure with the diagnosis."""
        versions = tuple(offered)
        garbage: list[str] = []
        deadline = time.monotonic() + within

        async def first_handshake() -> Handshake | None:
            while (line := await self._readline(self._stdout)) is not None:
                if not line.strip():
                    continue
                try:
                    return parse(line, versions)
                except HandshakeError as exc:
                    if exc.problem is not HandshakeProblem.GARBAGE:
                        raise explain_handshake_error(exc) from exc
                    garbage.append(line)
                    self._logger.warning(
                        "adaptor %s printed before its handshake: %s", self.name, quote(line)
                    )
            return None

        try:
            async with asyncio.timeout(within):
                handshake = await first_handshake()
        except TimeoutError:
            raise explain_timeout(within, list(self.stderr_tail), garbage) from None
        if handshake is not None:
            self._tasks.append(asyncio.create_task(self._pump_stdout(), name=f"{self.name}-stdout"))
            return handshake
        # stdout ended: the process is exiting (or closed stdout and lives on).
        try:
            async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                code = await self.wait()
        except TimeoutError:
            raise explain_timeout(within, list(self.stderr_tail), garbage) from None
        await self.drain_stderr()
        raise explain_exit(code, list(self.stderr_tail), garbage)

    async def drain_stderr(self) -> None:
        """Let the stderr pump reach end-of-file (the diagnosis wants the last lines)."""
        pumps = [task for task in self._tasks if task.get_name().endswith("-stderr")]
        if pumps:
            await asyncio.wait(pumps, timeout=DRAIN_TIMEOUT)

    # --- ending ---------------------------------------------------------------------------

    async def terminate(self, term_grace: float) -> signal.Signals | None:
        """SIGTERM to the whole group; after ``term_grace`` seconds SIGKILL to whoever is left
        (children and grandchildren included); then reap. Returns the last signal it needed
        (None: nobody was left). Safe to call again."""
        if not live_group_members(self.pgid):
            await self.wait()
            return None
        _signal_group(self.pgid, signal.SIGTERM)
        if await self.wait_group_gone(term_grace):
            await self.wait()
            return signal.SIGTERM
        await self.kill()
        return signal.SIGKILL

    async def kill(self) -> None:
        """SIGKILL to the whole group, then reap."""
        if live_group_members(self.pgid):
            _log.warning("adaptor %s: killing process group %d", self.name, self.pgid)
            _signal_group(self.pgid, signal.SIGKILL)
        await self.wait()

    async def wait_group_gone(self, within: float) -> bool:
        """Wait until no process of the group runs; whether that happened ``within`` seconds."""
        deadline = time.monotonic() + within
        while live_group_members(self.pgid):
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(POLL_INTERVAL)
        return True

    async def close(self) -> None:
        """After the process is gone: finish the output pumps and close the pipes."""
        if self._tasks:
            _, pending = await asyncio.wait(self._tasks, timeout=DRAIN_TIMEOUT)
            # Output still open: a process outside the group holds the pipe. Stop reading.
            for task in pending:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            self._tasks.clear()
        for transport in self._transports:
            transport.close()
        self._transports.clear()
        if not self._exited.done():  # only if close() came without a wait: do not leak a zombie
            await self.kill()
