"""Every failed start names why: pure explanations, then each one through real processes."""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import signal
import stat
import struct
import sys
from pathlib import Path

import pytest

from host.lifecycle import ProcessState
from host.supervisor import AdaptorSnapshot, AdaptorSpec, StartProblem, Supervisor
from host.supervisor.diagnose import (
    ProgramFacts,
    describe_binary,
    describe_exit,
    elf_machine,
    explain_exit,
    explain_handshake_error,
    explain_spawn_error,
    explain_timeout,
    inspect_program,
    this_machine,
)
from sdk.handshake import HandshakeError, HandshakeProblem

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "adaptors"
GO_PLUGIN_COOKIE_MESSAGE = (
    "This binary is a plugin. These are not meant to be executed directly.",
    "Please execute the program that consumes these plugins, which will",
    "load any plugins automatically",
)


def elf_header(machine: int, *, bits64: bool = True, big_endian: bool = False) -> bytes:
    order = ">" if big_endian else "<"
    ident = b"\x7fELF" + bytes([2 if bits64 else 1, 2 if big_endian else 1, 1]) + bytes(9)
    return ident + struct.pack(f"{order}HHI", 2, machine, 1) + bytes(44)


# --- pure -----------------------------------------------------------------------------------


def test_elf_machine_reads_both_byte_orders() -> None:
    assert elf_machine(elf_header(183)) == 183
    assert elf_machine(elf_header(22, big_endian=True)) == 22
    assert elf_machine(b"#!/bin/sh\n") is None
    assert elf_machine(b"\x7fELF") is None  # truncated


@pytest.mark.parametrize(
    ("header", "words"),
    [
        (elf_header(62), "a 64-bit ELF x86-64 binary"),
        (elf_header(183), "a 64-bit ELF AArch64 (arm64) binary"),
        (elf_header(40, bits64=False), "a 32-bit ELF ARM (32-bit) binary"),
        (elf_header(9999), "a 64-bit ELF machine 9999 binary"),
        (b"\xcf\xfa\xed\xfe" + bytes(28), "a macOS (Mach-O) binary"),
        (b"MZ\x90\x00", "a Windows (PE) executable"),
        (b"#!/usr/bin/env python3\n", "a script"),
        (b"hello world", "not a binary or script format this system runs"),
    ],
)
def test_describe_binary(header: bytes, words: str) -> None:
    assert describe_binary(header) == words


def test_spawn_error_not_found() -> None:
    failure = explain_spawn_error(
        FileNotFoundError(errno.ENOENT, "No such file"), ProgramFacts("ledgerd", None)
    )
    assert failure.problem is StartProblem.NOT_FOUND
    assert "command not found: 'ledgerd'" in str(failure)
    assert "PATH" in str(failure)


def test_spawn_error_missing_interpreter() -> None:
    facts = ProgramFacts("./a.py", Path("/x/a.py"), mode=0o100755, header=b"#!/opt/py9/bin/py\n")
    failure = explain_spawn_error(FileNotFoundError(errno.ENOENT, "No such file"), facts)
    assert failure.problem is StartProblem.NOT_FOUND
    assert "interpreter was not found: #!/opt/py9/bin/py" in str(failure)


def test_spawn_error_permissions() -> None:
    facts = ProgramFacts("./a", Path("/x/a"), mode=0o100644, header=b"#!/bin/sh\n")
    failure = explain_spawn_error(PermissionError(errno.EACCES, "Permission denied"), facts)
    assert failure.problem is StartProblem.NOT_EXECUTABLE
    assert "-rw-r--r--" in str(failure)
    assert "chmod +x" in str(failure)


def test_spawn_error_directory() -> None:
    facts = ProgramFacts("./a", Path("/x/a"), is_dir=True, mode=0o040755)
    failure = explain_spawn_error(PermissionError(errno.EACCES, "Permission denied"), facts)
    assert failure.problem is StartProblem.NOT_EXECUTABLE
    assert "is a directory" in str(failure)


def test_spawn_error_wrong_architecture_names_both() -> None:
    other = 183 if this_machine() != "AArch64 (arm64)" else 62
    facts = ProgramFacts("./a", Path("/x/a"), mode=0o100755, header=elf_header(other))
    failure = explain_spawn_error(OSError(errno.ENOEXEC, "Exec format error"), facts)
    assert failure.problem is StartProblem.WRONG_ARCHITECTURE
    assert describe_binary(elf_header(other)) in str(failure)
    assert f"this machine is {this_machine()}" in str(failure)


def test_spawn_error_text_without_shebang() -> None:
    facts = ProgramFacts("./a", Path("/x/a"), mode=0o100755, header=b"echo hi\n")
    failure = explain_spawn_error(OSError(errno.ENOEXEC, "Exec format error"), facts)
    assert failure.problem is StartProblem.WRONG_ARCHITECTURE
    assert "#! line" in str(failure)


def test_spawn_error_other() -> None:
    facts = ProgramFacts("./a", Path("/x/a"), mode=0o100755)
    failure = explain_spawn_error(OSError(errno.E2BIG, "Argument list too long"), facts)
    assert failure.problem is StartProblem.SPAWN_FAILED
    assert "Argument list too long" in str(failure)


def test_exit_codes_and_signals() -> None:
    assert describe_exit(3) == "exited with code 3"
    assert describe_exit(-signal.SIGSEGV) == "was killed by SIGSEGV"
    assert describe_exit(-200) == "was killed by signal 200"


def test_exit_with_go_plugin_cookie_message() -> None:
    failure = explain_exit(1, GO_PLUGIN_COOKIE_MESSAGE)
    assert failure.problem is StartProblem.COOKIE_REFUSED
    assert str(failure).startswith("exited with code 1 before the handshake: cookie refused")
    assert "This binary is a plugin" in str(failure)


def test_exit_with_sdk_cookie_message() -> None:
    from sdk.server import NOT_STARTED_BY_HOST

    failure = explain_exit(1, ['{"@level": "error", "@message": "x"}', NOT_STARTED_BY_HOST])
    assert failure.problem is StartProblem.COOKIE_REFUSED


def test_exit_with_no_common_version() -> None:
    sdk_words = (
        "MemoryAdaptor: no contract version in common: the host offers [7] "
        "(PLUGIN_PROTOCOL_VERSIONS='7'), this adaptor speaks [1]; upgrade the older of the two"
    )
    failure = explain_exit(1, [sdk_words])
    assert failure.problem is StartProblem.NO_COMMON_VERSION
    assert "no common contract version" in str(failure)


def test_plain_exit_quotes_stderr_and_stdout() -> None:
    failure = explain_exit(2, ["", "boom: config missing"], ["Hello"])
    assert failure.problem is StartProblem.EXITED
    assert "exited with code 2 before the handshake" in str(failure)
    assert "'boom: config missing'" in str(failure)
    assert "stdout had 'Hello'" in str(failure)
    assert "stderr was empty" in str(explain_exit(0, []))


def test_timeout_with_and_without_garbage() -> None:
    quiet = explain_timeout(2.5, [], [])
    assert quiet.problem is StartProblem.TIMEOUT
    assert "no handshake line within 2.5 s" in str(quiet)
    noisy = explain_timeout(2.5, [], ["x" * 500, "second"])
    assert noisy.problem is StartProblem.GARBAGE
    assert "printed garbage instead of a handshake line: 'xxx" in str(noisy)
    assert "..." in str(noisy)  # a long line is shortened


def test_handshake_error_names_the_rule() -> None:
    error = HandshakeError(HandshakeProblem.APP_VERSION, "adaptor chose 9, host offered [1]")
    failure = explain_handshake_error(error)
    assert failure.problem is StartProblem.HANDSHAKE
    assert str(failure) == (
        "handshake line refused: app protocol version not offered: "
        "adaptor chose 9, host offered [1]"
    )


def test_inspect_program_searches_path(tmp_path: Path) -> None:
    program = tmp_path / "bin" / "ledgerd"
    program.parent.mkdir()
    program.write_bytes(b"#!/bin/sh\n")
    program.chmod(0o755)
    facts = inspect_program("ledgerd", {"PATH": f"/nonexistent:{program.parent}"}, None)
    assert facts.path == program
    assert facts.header == b"#!/bin/sh\n"
    assert inspect_program("ledgerd", {"PATH": "/nonexistent"}, None).path is None
    assert inspect_program("bin/ledgerd", {}, tmp_path).path == program


# --- real processes -------------------------------------------------------------------------


def first_failure(spec: AdaptorSpec) -> AdaptorSnapshot:
    """Start ``spec`` once (the backoff is long: no retry happens), return its snapshot."""

    async def go() -> AdaptorSnapshot:
        async with Supervisor([spec]) as supervisor:
            snapshot = supervisor.snapshot(spec.name)
            assert snapshot.state in (ProcessState.CRASHED, ProcessState.BACKOFF)
            assert snapshot.pid is None  # nothing left running
            return snapshot

    return asyncio.run(go())


def spec_of(*command: str, **options: object) -> AdaptorSpec:
    return AdaptorSpec("broken", command, backoff_initial=60, backoff_max=60, **options)  # type: ignore[arg-type]


def fixture(name: str) -> tuple[str, str]:
    return (sys.executable, str(FIXTURES / name))


def test_command_not_found() -> None:
    snapshot = first_failure(spec_of("ilp-no-such-adaptor-anywhere"))
    assert snapshot.last_error.startswith("command not found: 'ilp-no-such-adaptor-anywhere'")


def test_missing_working_directory(tmp_path: Path) -> None:
    snapshot = first_failure(spec_of(sys.executable, cwd=tmp_path / "gone"))
    assert "working directory" in snapshot.last_error
    assert "does not exist" in snapshot.last_error


def test_not_executable(tmp_path: Path) -> None:
    program = tmp_path / "adaptor"
    program.write_text("#!/bin/sh\nexit 0\n")
    program.chmod(0o644)
    snapshot = first_failure(spec_of(str(program)))
    assert "is not executable (-rw-r--r--)" in snapshot.last_error


def _emulators_registered() -> bool:
    """binfmt_misc with qemu runs foreign binaries (Docker Desktop does): no ENOEXEC then."""
    try:
        return any(p.name.startswith("qemu") for p in Path("/proc/sys/fs/binfmt_misc").iterdir())
    except OSError:
        return False


@pytest.mark.skipif(_emulators_registered(), reason="foreign binaries run under qemu here")
def test_wrong_architecture(tmp_path: Path) -> None:
    other = 183 if this_machine() != "AArch64 (arm64)" else 62
    program = tmp_path / "adaptor"
    program.write_bytes(elf_header(other))
    program.chmod(0o755)
    snapshot = first_failure(spec_of(str(program)))
    assert "is not a program for this machine" in snapshot.last_error
    assert describe_binary(elf_header(other)) in snapshot.last_error
    assert this_machine() in snapshot.last_error


def test_text_file_without_shebang(tmp_path: Path) -> None:
    program = tmp_path / "adaptor"
    program.write_text("echo not a program\n")
    program.chmod(0o755)
    snapshot = first_failure(spec_of(str(program)))
    assert "a script needs a #! line" in snapshot.last_error


def test_script_with_missing_interpreter(tmp_path: Path) -> None:
    program = tmp_path / "adaptor"
    program.write_text("#!/nonexistent/python9\n")
    program.chmod(0o755)
    snapshot = first_failure(spec_of(str(program)))
    assert "interpreter was not found: #!/nonexistent/python9" in snapshot.last_error


def test_exits_before_handshake_with_code_and_stderr() -> None:
    snapshot = first_failure(spec_of(*fixture("exits_at_once.py")))
    assert snapshot.last_error.startswith("exited with code 3 before the handshake")
    assert "cannot read configuration file" in snapshot.last_error


def test_cookie_refused() -> None:
    snapshot = first_failure(spec_of(*fixture("wrong_cookie.py")))
    assert "cookie refused" in snapshot.last_error
    assert "exited with code 1" in snapshot.last_error


def test_no_handshake_in_time() -> None:
    snapshot = first_failure(spec_of(*fixture("hangs.py"), start_timeout=1.0))
    assert snapshot.last_error.startswith("no handshake line within 1 s")
    assert "waiting for a ledger" in snapshot.last_error  # the stderr tail


def test_garbage_is_quoted() -> None:
    snapshot = first_failure(spec_of(*fixture("garbage.py"), start_timeout=1.0))
    assert snapshot.last_error.startswith(
        "printed garbage instead of a handshake line: 'Hello! Listening on port 8080'"
    )


def test_bad_version_names_the_rule() -> None:
    snapshot = first_failure(spec_of(*fixture("bad_version.py")))
    assert snapshot.last_error == (
        "handshake line refused: app protocol version not offered: adaptor chose 99, host "
        "offered [1]"
    )


def test_handshake_but_nobody_listens() -> None:
    snapshot = first_failure(spec_of(*fixture("no_server.py"), start_timeout=1.0))
    assert snapshot.last_error.startswith("not SERVING within 1 s of its handshake")
    assert snapshot.contract_version == 0  # the process is gone
    assert snapshot.connections[0].name == "host"


def test_failure_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="ilp_host")
    first_failure(spec_of(*fixture("exits_at_once.py")))
    crashed = [r for r in caplog.records if "CRASHED" in r.getMessage()]
    assert crashed and crashed[0].levelno == logging.WARNING
    assert "exited with code 3" in crashed[0].getMessage()
    # The stderr line itself came through as a log record of the adaptor.
    assert any(
        r.name == "ilp_host.adaptor.broken" and "cannot read configuration" in r.getMessage()
        for r in caplog.records
    )


def test_unreadable_socket_root_is_private(tmp_path: Path) -> None:
    root = tmp_path / "sockets"

    async def go() -> None:
        async with Supervisor([spec_of(*fixture("hangs.py"), start_timeout=1.0)], socket_root=root):
            assert stat.S_IMODE(os.stat(root).st_mode) == 0o700

    asyncio.run(go())
    assert root.is_dir()  # given by the caller: kept
    assert list(root.iterdir()) == []  # the adaptor's own directory is gone
