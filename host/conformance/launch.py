"""Start the adaptor under test the way the host does, and starts it must refuse.

The host's own pieces do the work, so the suite sees what the host would see: the environment
of ``host.supervisor.spec`` (cookie, versions, transport, socket directory, engine address),
the spawn of ``host.supervisor.process`` (own process group, parent-death signal, stderr read
from the first byte) and its handshake reading with the supervisor's diagnoses.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

from host.supervisor.diagnose import StartFailure, StartProblem
from host.supervisor.process import AdaptorProcess
from host.supervisor.spec import AdaptorSpec, adaptor_environment

#: The name the adaptor runs under (ILP_ADAPTOR_NAME, log records).
ADAPTOR_NAME: Final = "conformance"
#: The adaptor's stdout and stderr are logged here, as the host logs them.
LOGGER: Final = logging.getLogger("ilp_host.conformance.adaptor")
#: Seconds a process that must be stopped gets between SIGTERM and SIGKILL.
TERM_GRACE: Final = 5.0

_EXITED = (StartProblem.EXITED, StartProblem.COOKIE_REFUSED, StartProblem.NO_COMMON_VERSION)


#: Where the adaptor is asked to listen: a unix socket, or loopback TCP with automatic mutual
#: TLS (the host forces TLS on TCP).
Transport = Literal["unix", "tcp"]
TRANSPORTS: Final[tuple[Transport, ...]] = ("unix", "tcp")


def validate(command: Sequence[str], extra: Mapping[str, str]) -> None:
    """ValueError naming the problem if the host would refuse ``command`` or ``extra``."""
    AdaptorSpec(name=ADAPTOR_NAME, command=tuple(command), env=dict(extra))


def environment(
    command: Sequence[str],
    extra: Mapping[str, str],
    *,
    socket_dir: Path,
    engine_addr: str,
    transport: Transport = "unix",
    client_cert_pem: bytes | None = None,
) -> dict[str, str]:
    """The environment the host would give ``command`` on ``transport``: this process's, then
    ``extra``, then the contract's variables (``PLUGIN_CLIENT_CERT`` from ``client_cert_pem``).
    ValueError for a command or variable the host would refuse."""
    spec = AdaptorSpec(
        name=ADAPTOR_NAME,
        command=tuple(command),
        env=dict(extra),
        transport=transport,
        auto_mtls=client_cert_pem is not None,
    )
    return adaptor_environment(
        spec,
        os.environ,
        socket_dir=socket_dir,
        engine_addr=engine_addr,
        client_cert_pem=client_cert_pem,
    )


async def spawn(
    command: Sequence[str], env: Mapping[str, str], cwd: Path | None, socket_dir: Path
) -> AdaptorProcess:
    """Start ``command`` with a fresh private socket directory; StartFailure if it cannot run."""
    os.mkdir(socket_dir, 0o700)  # instant: a directory entry, no I/O worth a thread
    return await AdaptorProcess.spawn(ADAPTOR_NAME, tuple(command), env, cwd, LOGGER)


@dataclass(frozen=True)
class Refusal:
    """How an adaptor answered a start it should refuse."""

    #: It printed a line that parses as a handshake (at any version): it did not refuse.
    handshook: bool
    #: Its exit status when it exited by itself; None if it still ran at the deadline.
    exit_status: int | None
    #: The host's diagnosis of the attempt.
    diagnosis: str
    #: Its last stderr lines.
    stderr: tuple[str, ...]

    @property
    def message(self) -> str:
        """Its first non-empty stderr line, or ""."""
        return next((line.strip() for line in self.stderr if line.strip()), "")


async def refused_start(
    command: Sequence[str],
    env: Mapping[str, str],
    cwd: Path | None,
    socket_dir: Path,
    offered: Iterable[int],
    within: float,
) -> Refusal:
    """Start ``command`` in ``env`` (which it should refuse) and report what it did.

    The process is stopped (SIGTERM, then SIGKILL to its group) if it is still there.
    StartFailure if it could not be started at all.
    """
    process = await spawn(command, env, cwd, socket_dir)
    try:
        try:
            handshake = await process.read_handshake(offered, within)
        except StartFailure as failure:
            handshook = failure.problem is StartProblem.HANDSHAKE
            exited = failure.problem in _EXITED
            diagnosis = str(failure)
        else:
            handshook, exited = True, False
            diagnosis = f"it printed the handshake line {handshake.line()!r}"
        return Refusal(
            handshook=handshook,
            exit_status=process.returncode if exited else None,
            diagnosis=diagnosis,
            stderr=tuple(process.stderr_tail),
        )
    finally:
        await process.terminate(TERM_GRACE)
        await process.close()
