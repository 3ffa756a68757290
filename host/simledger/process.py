"""Run the simulated ledger as a subprocess and wait until it listens (for tests and the demo).

``start_ledger`` returns once the ledger printed its listening line, or raises LedgerStartError
saying why not (exited with a status, or no line before the deadline). The ledger's stderr is
inherited, so its complaints land where the caller's do.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from host.simledger.__main__ import LISTENING


class LedgerStartError(RuntimeError):
    """The ledger did not come up; the message says what it did instead."""


class LedgerProcess:
    """A running simledger subprocess and the gRPC target it listens on."""

    def __init__(self, process: subprocess.Popen[str], target: str) -> None:
        self.process = process
        self.target = target

    @property
    def pid(self) -> int:
        """The process id."""
        return self.process.pid

    def stop(self, grace: float = 15.0) -> int:
        """SIGTERM, wait up to ``grace`` seconds, then SIGKILL; the exit status. Idempotent."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(grace)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._close_pipe()
        return self.process.returncode

    def kill(self) -> int:
        """SIGKILL (a crash: nothing is flushed but what SQLite already committed)."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        self._close_pipe()
        return self.process.returncode

    def _close_pipe(self) -> None:
        if self.process.stdout is not None:
            self.process.stdout.close()

    def __enter__(self) -> LedgerProcess:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def start_ledger(
    db: str | Path,
    listen: str,
    extra_args: Sequence[str] = (),
    timeout: float = 60.0,
    program: Sequence[str] = (sys.executable, "-m", "host.simledger"),
) -> LedgerProcess:
    """Start ``PROGRAM --db DB --listen LISTEN [extra_args]`` and wait for it. ``program`` is
    ``python -m host.simledger`` or, as an operator runs it, ``ilp-host ledger serve``."""
    command = [
        *program,
        "--db",
        str(db),
        "--listen",
        listen,
        *extra_args,
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    stdout = process.stdout
    assert stdout is not None
    lines: list[str] = []
    # readline blocks; a thread lets us give up at the deadline (killing the child ends it).
    reader = threading.Thread(target=lambda: lines.append(stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    line = lines[0].strip() if lines else ""
    if line.startswith(LISTENING + " "):
        return LedgerProcess(process, line[len(LISTENING) + 1 :])
    if process.poll() is None:
        process.kill()
    status = process.wait()
    reader.join()
    stdout.close()
    if line:
        raise LedgerStartError(f"simledger printed {line[:200]!r} instead of its listening line")
    if lines:
        raise LedgerStartError(
            f"simledger exited with status {status} before listening (see its stderr)"
        )
    raise LedgerStartError(f"simledger printed no listening line within {timeout} s; killed it")
