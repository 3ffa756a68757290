"""Why an adaptor failed to start, in words an operator can act on.

Every failed start ends in a StartFailure naming its StartProblem. The explanations are pure
functions of what was observed (the OSError of the spawn, the first bytes of the program file,
the exit status, the last stderr lines, the stdout lines that were not a handshake);
``inspect_program`` is the one function here that touches the file system.
"""

from __future__ import annotations

import enum
import errno
import os
import platform
import re
import signal
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from sdk.handshake import HandshakeError


class StartProblem(enum.Enum):
    """The kinds of failed start."""

    NOT_FOUND = "command not found"
    NOT_EXECUTABLE = "not executable"
    WRONG_ARCHITECTURE = "not a program for this machine"
    SPAWN_FAILED = "could not be started"
    EXITED = "exited before the handshake"
    COOKIE_REFUSED = "cookie refused"
    NO_COMMON_VERSION = "no common contract version"
    TIMEOUT = "no handshake line in time"
    GARBAGE = "printed garbage instead of a handshake line"
    HANDSHAKE = "handshake line refused"
    NOT_SERVING = "not serving after the handshake"


class StartFailure(Exception):
    """A start attempt that failed; ``str()`` is the whole diagnosis."""

    def __init__(self, problem: StartProblem, message: str) -> None:
        super().__init__(message)
        self.problem = problem


# ELF e_machine values (System V ABI) of the architectures one meets in practice.
ELF_MACHINES: Mapping[int, str] = {
    2: "SPARC",
    3: "x86 (i386)",
    8: "MIPS",
    20: "PowerPC",
    21: "PowerPC64",
    22: "s390x",
    40: "ARM (32-bit)",
    43: "SPARC V9",
    62: "x86-64",
    183: "AArch64 (arm64)",
    243: "RISC-V",
    258: "LoongArch",
}
_MACHINE_OF_PLATFORM: Mapping[str, int] = {
    "x86_64": 62,
    "amd64": 62,
    "i386": 3,
    "i686": 3,
    "aarch64": 183,
    "arm64": 183,
    "armv7l": 40,
    "armv6l": 40,
    "ppc64le": 21,
    "ppc64": 21,
    "s390x": 22,
    "riscv64": 243,
    "loongarch64": 258,
    "mips": 8,
    "mips64": 8,
}
_MACHO_MAGICS = (b"\xfe\xed\xfa\xce", b"\xfe\xed\xfa\xcf", b"\xce\xfa\xed\xfe", b"\xcf\xfa\xed\xfe")


def elf_machine(header: bytes) -> int | None:
    """The e_machine field of an ELF header, or None if ``header`` is not ELF."""
    if len(header) < 20 or header[:4] != b"\x7fELF":
        return None
    return int.from_bytes(header[18:20], "big" if header[5] == 2 else "little")


def describe_binary(header: bytes) -> str:
    """What kind of program file starts with ``header``, e.g. "an ELF AArch64 (arm64) binary"."""
    machine = elf_machine(header)
    if machine is not None:
        bits = {1: "32-bit ", 2: "64-bit "}.get(header[4], "")
        name = ELF_MACHINES.get(machine, f"machine {machine}")
        return f"a {bits}ELF {name} binary"
    if header[:4] in _MACHO_MAGICS or header[:4] == b"\xca\xfe\xba\xbe":
        return "a macOS (Mach-O) binary"
    if header[:2] == b"MZ":
        return "a Windows (PE) executable"
    if header[:2] == b"#!":
        return "a script"
    return "not a binary or script format this system runs"


def this_machine() -> str:
    """The name of this machine's architecture, in the words of ELF_MACHINES."""
    arch = platform.machine()
    machine = _MACHINE_OF_PLATFORM.get(arch.lower())
    return ELF_MACHINES.get(machine, arch) if machine is not None else arch


@dataclass(frozen=True)
class ProgramFacts:
    """What the file system says about the program an adaptor's command names."""

    program: str
    path: Path | None  # None: not found where the command says
    is_dir: bool = False
    mode: int = 0
    header: bytes = b""


def inspect_program(program: str, env: Mapping[str, str], cwd: Path | None) -> ProgramFacts:
    """Find ``program`` as exec does (a name with a slash is a path; else search PATH)."""
    base = cwd if cwd is not None else Path.cwd()
    if "/" in program:
        candidates = [base / program]
    else:
        search = env.get("PATH", os.defpath).split(os.pathsep)
        candidates = [base / (entry or ".") / program for entry in search]
    existing = [path for path in candidates if path.exists()]
    if not existing:
        return ProgramFacts(program, None)
    # exec takes the first candidate it may execute; a failure is about the first that exists.
    path = next((p for p in existing if p.is_file() and os.access(p, os.X_OK)), existing[0])
    info = path.stat()
    header = b""
    if stat.S_ISREG(info.st_mode):
        try:
            with path.open("rb") as file:
                header = file.read(256)
        except OSError:
            header = b""
    return ProgramFacts(program, path, stat.S_ISDIR(info.st_mode), info.st_mode, header)


def explain_spawn_error(exc: OSError, facts: ProgramFacts) -> StartFailure:
    """The diagnosis of an exec that failed with ``exc``."""
    where = f"{facts.program!r}" + (f" ({facts.path})" if facts.path else "")
    if facts.path is None:
        hint = "check the command and PATH" if "/" not in facts.program else "check the path"
        return StartFailure(StartProblem.NOT_FOUND, f"command not found: {where}: {hint}")
    if exc.errno == errno.ENOENT and facts.header.startswith(b"#!"):
        interpreter = facts.header[2:].split(b"\n", 1)[0].strip().decode(errors="replace")
        return StartFailure(
            StartProblem.NOT_FOUND,
            f"{where}: the script's interpreter was not found: #!{interpreter}",
        )
    if facts.is_dir:
        return StartFailure(StartProblem.NOT_EXECUTABLE, f"{where} is a directory, not a program")
    if exc.errno in (errno.EACCES, errno.EPERM):
        mode = stat.filemode(facts.mode) if facts.mode else "unknown mode"
        return StartFailure(
            StartProblem.NOT_EXECUTABLE,
            f"{where} is not executable ({mode}): make it executable (chmod +x) or check the "
            "permissions of its directories and the mount (noexec)",
        )
    if exc.errno == errno.ENOEXEC:
        kind = describe_binary(facts.header)
        machine = elf_machine(facts.header)
        if machine is not None:
            detail = f"it is {kind}, this machine is {this_machine()}"
        elif kind == "a script":
            detail = "it is a script the kernel cannot run"
        else:
            detail = f"it is {kind}"
            if facts.header and not facts.header.startswith((b"MZ", b"\xfe", b"\xce", b"\xcf")):
                detail += "; a script needs a #! line"
        return StartFailure(
            StartProblem.WRONG_ARCHITECTURE, f"{where} is not a program for this machine: {detail}"
        )
    return StartFailure(StartProblem.SPAWN_FAILED, f"{where} could not be started: {exc}")


# How a refused magic cookie reads on stderr: go-plugin's Serve, this project's SDK, and the
# common words of adaptors written by hand.
_COOKIE_PATTERNS = (
    re.compile(r"This binary is a plugin", re.I),
    re.compile(r"not meant to be (executed directly|run by hand)", re.I),
    re.compile(r"magic cookie", re.I),
    re.compile(r"started by the (settlement )?host", re.I),
)
_VERSION_PATTERNS = (
    re.compile(r"no common (contract |protocol |app[- ]protocol )?version", re.I),
    re.compile(r"no (contract |protocol )?version in common", re.I),
    re.compile(r"incompatible (api|protocol|contract) version", re.I),
)


def describe_exit(returncode: int) -> str:
    """ "exited with code 1" or "was killed by SIGKILL"."""
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"was killed by {name}"
    return f"exited with code {returncode}"


def explain_exit(
    returncode: int, stderr_tail: Sequence[str], garbage: Sequence[str] = ()
) -> StartFailure:
    """The diagnosis of an adaptor that exited before its handshake line."""
    problem = StartProblem.EXITED
    if any(p.search(line) for p in _VERSION_PATTERNS for line in stderr_tail):
        problem = StartProblem.NO_COMMON_VERSION
    elif any(p.search(line) for p in _COOKIE_PATTERNS for line in stderr_tail):
        problem = StartProblem.COOKIE_REFUSED
    message = f"{describe_exit(returncode)} before the handshake"
    if problem is StartProblem.COOKIE_REFUSED:
        message += (
            ": cookie refused (the adaptor expects another magic cookie: is it built for "
            "this host?)"
        )
    elif problem is StartProblem.NO_COMMON_VERSION:
        message += ": no common contract version"
    message += stderr_summary(stderr_tail) + _garbage_part(garbage)
    return StartFailure(problem, message)


def explain_timeout(
    timeout: float, stderr_tail: Sequence[str], garbage: Sequence[str]
) -> StartFailure:
    """The diagnosis of an adaptor that printed no handshake line within ``timeout``."""
    if garbage:
        return StartFailure(
            StartProblem.GARBAGE,
            f"printed garbage instead of a handshake line: {quote(garbage[0])} (no valid "
            f"handshake line within {timeout:g} s; expected CORE|APP|NETWORK|ADDR|grpc|CERT)"
            + stderr_summary(stderr_tail),
        )
    return StartFailure(
        StartProblem.TIMEOUT,
        f"no handshake line within {timeout:g} s (is it a ledger adaptor? does it start "
        "slowly? raise start_timeout)" + stderr_summary(stderr_tail),
    )


def explain_handshake_error(error: HandshakeError) -> StartFailure:
    """The diagnosis of a handshake line that breaks a rule of the contract."""
    return StartFailure(
        StartProblem.HANDSHAKE, f"handshake line refused: {error.problem.value}: {error.detail}"
    )


def quote(line: str, limit: int = 120) -> str:
    """A line as it appears in a diagnosis: repr, shortened."""
    return repr(line if len(line) <= limit else line[: limit - 3] + "...")


def stderr_summary(
    tail: Sequence[str], count: int = 5, *, empty: str = "; stderr was empty"
) -> str:
    """ "; last stderr lines: '...' | '...'" for a diagnosis (``empty`` when there were none)."""
    lines = [line for line in tail if line.strip()]
    if not lines:
        return empty
    return "; last stderr lines: " + " | ".join(quote(line, 200) for line in lines[-count:])


def _garbage_part(garbage: Sequence[str]) -> str:
    return f"; stdout had {quote(garbage[0])}" if garbage else ""
