"""The conformance suite against real adaptor programs: the reference adaptors pass, a broken
one fails exactly the checks of its defects, and the command line works end to end.

Every run starts real processes (the simulated ledger, the adaptor, its refused starts) and
talks over real sockets. Node.js and Go adaptors need their toolchains: missing, their tests
fail under CI (the variable CI is set) and are skipped otherwise.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, NoReturn

import pytest

from host.conformance import CHECKS, Outcome, SuiteOptions, SuiteResult, run_suite
from host.conformance.launch import TRANSPORTS, Transport

ROOT = Path(__file__).resolve().parents[2]
ADAPTORS = ROOT / "adaptors"
BROKEN = Path(__file__).resolve().parent / "fixtures" / "broken_adaptor.py"
#: The memory adaptors report these at start: the suite's incoming checks use them.
INCOMING = {"ILP_ADAPTOR_INCOMING": "conformance-peer:500,conformance-peer:250"}
#: Generous: the machine is shared. Only a broken adaptor ever waits these out.
TIMEOUTS = {
    "start_timeout": 60.0,
    "event_timeout": 30.0,
    "incoming_wait": 30.0,
    "quiet_period": 2.0,
}
#: What each reference adaptor may skip: what it does not declare, and stdio if not served.
MEMORY_SKIPS = {
    "receive_data.reply",
    "receive_data.garbage",
    "peer_message.request",
    "peer_message.refused",
}


def run(
    command: list[str], temp_root: Path, env: Mapping[str, str] | None = None, **options: Any
) -> SuiteResult:
    settings = {**TIMEOUTS, **options}
    return asyncio.run(
        run_suite(
            SuiteOptions(
                command=tuple(command), env=dict(env or {}), temp_root=temp_root, **settings
            )
        )
    )


def explain(result: SuiteResult) -> str:
    lines = [f"{r.outcome.value} {r.name}: {r.reason}" for r in result.results]
    return "\n".join([*lines, *result.notes, "stderr:", *result.stderr_tail])


def outcomes(result: SuiteResult, outcome: Outcome) -> set[str]:
    return {r.name for r in result.results if r.outcome is outcome}


def assert_conforms(result: SuiteResult, may_skip: set[str]) -> None:
    assert [r.name for r in result.results] == [c.name for c in CHECKS], explain(result)
    assert outcomes(result, Outcome.FAIL) == set(), explain(result)
    assert outcomes(result, Outcome.SKIP) <= may_skip, explain(result)
    assert result.ok
    assert result.notes == (), explain(result)


def unavailable(message: str) -> NoReturn:
    """A toolchain or install step is missing: fail under CI, else skip."""
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def require_tool(tool: str, what: str) -> str:
    """The path of ``tool`` (see ``unavailable``)."""
    path = shutil.which(tool)
    if path is None:
        unavailable(f"{tool} is not installed: cannot run {what}")
    return path


@pytest.fixture
def temp_root() -> Iterator[Path]:
    """A private parent for the run's temporary directory: it must be empty after the run.
    Short, under the system temp dir: the adaptor's unix socket lives below it."""
    root = Path(tempfile.mkdtemp(prefix="ilp"))
    yield root
    leftovers = list(root.iterdir())
    shutil.rmtree(root, ignore_errors=True)
    assert leftovers == [], "the run left files behind"


# --- the reference adaptors pass ----------------------------------------------------------


#: Every reference adaptor is checked over both transports: a unix socket, and TCP with
#: automatic mutual TLS.
over_each_transport = pytest.mark.parametrize("transport", TRANSPORTS)


def assert_transport(result: SuiteResult, transport: Transport) -> None:
    """The adaptor listened as asked, with mutual TLS on TCP that refuses other clients."""
    reason = next(r.reason for r in result.results if r.name == "transport")
    if transport == "tcp":
        assert "with mutual TLS" in reason and "another client certificate refused" in reason
    else:
        assert reason.startswith("unix socket ")


@over_each_transport
def test_memory_python_conforms(temp_root: Path, transport: Transport) -> None:
    result = run(
        [sys.executable, str(ADAPTORS / "memory-python" / "adaptor.py")],
        temp_root,
        INCOMING,
        transport=transport,
    )
    assert_transport(result, transport)
    assert_conforms(result, MEMORY_SKIPS)
    # The incoming checks ran on the settlements the adaptor had at start.
    assert "'memory-in-1'" in next(
        r.reason for r in result.results if r.name == "watch_events.incoming"
    )
    assert result.adaptor.startswith("memory-python ")


@over_each_transport
def test_simledger_python_conforms_on_the_suites_ledger(
    temp_root: Path, transport: Transport
) -> None:
    result = run(
        [sys.executable, str(ADAPTORS / "simledger-python" / "adaptor.py")],
        temp_root,
        transport=transport,
    )
    assert_conforms(result, set())
    assert_transport(result, transport)
    reasons = {r.name: r.reason for r in result.results}
    # The money was seen on the ledger, and the suite's own payment came back as an event.
    assert "paid 123 once (on the ledger)" in reasons["send_money.idempotent"]
    assert "conformance-incoming-1" in reasons["watch_events.incoming"]
    assert "as on the ledger" in reasons["get_balance"]


def node_command(name: str) -> list[str]:
    directory = ADAPTORS / name
    if not directory.is_dir():
        pytest.skip(f"adaptors/{name} does not exist (yet)")
    node = require_tool("node", f"adaptors/{name}")
    main = json.loads((directory / "package.json").read_text()).get("main", "adaptor.js")
    if not (directory / "node_modules").is_dir():
        unavailable(f"adaptors/{name}/node_modules is missing: run make setup")
    if not (directory / main).is_file():
        pytest.skip(f"adaptors/{name}/{main} does not exist (yet)")
    return [node, str(directory / main)]


@over_each_transport
def test_memory_node_conforms(temp_root: Path, transport: Transport) -> None:
    result = run(node_command("memory-node"), temp_root, INCOMING, transport=transport)
    assert_conforms(result, MEMORY_SKIPS | {"stdio"})
    assert_transport(result, transport)


@over_each_transport
def test_simledger_node_conforms(temp_root: Path, transport: Transport) -> None:
    result = run(node_command("simledger-node"), temp_root, transport=transport)
    assert_conforms(result, {"stdio"})
    assert_transport(result, transport)


@pytest.fixture(scope="module")
def simledger_go() -> Iterator[list[str]]:
    """The Go adaptor, built once into a temporary directory."""
    directory = ADAPTORS / "simledger-go"
    go = require_tool("go", "adaptors/simledger-go")
    build = Path(tempfile.mkdtemp(prefix="ilpgo"))
    try:
        binary = build / "simledger-go"
        done = subprocess.run(
            [go, "build", "-o", str(binary), "."],
            cwd=directory,
            capture_output=True,
            text=True,
            timeout=900,
        )
        if done.returncode != 0:
            pytest.fail(f"go build in adaptors/simledger-go failed:\n{done.stderr[-3000:]}")
        yield [str(binary)]
    finally:
        shutil.rmtree(build, ignore_errors=True)


@pytest.mark.timeout(900)  # a cold Go build of gRPC takes minutes on a small machine
@over_each_transport
def test_simledger_go_conforms(
    simledger_go: list[str], temp_root: Path, transport: Transport
) -> None:
    result = run(simledger_go, temp_root, transport=transport)
    assert_conforms(result, {"stdio"})
    assert_transport(result, transport)
    if transport == "tcp":
        # go-plugin's own AutoMTLS, unchanged: a P-521 certificate on a unix socket (go-plugin
        # listens on TCP only on Windows), reached through the host's TLS bridge.
        reason = next(r.reason for r in result.results if r.name == "transport")
        assert "secp521r1" in reason and reason.startswith("unix "), reason


RUST_ADAPTOR = ADAPTORS / "simledger-rust" / "target" / "debug" / "simledger-rust"


@over_each_transport
def test_simledger_rust_conforms(temp_root: Path, transport: Transport) -> None:
    """A tonic adaptor built against the upstream http crate: it refuses a '%' in :authority,
    so this also checks the authority the host sends on unix sockets."""
    if not RUST_ADAPTOR.is_file():
        unavailable("adaptors/simledger-rust is not built: run make setup")
    result = run([str(RUST_ADAPTOR)], temp_root, transport=transport)
    assert_conforms(result, {"stdio"})
    assert_transport(result, transport)


# --- a broken adaptor fails exactly its defects --------------------------------------------


def test_a_broken_adaptor_fails_exactly_its_defects(tmp_path: Path, temp_root: Path) -> None:
    journal = tmp_path / "accounts.journal"
    env = {**INCOMING, "BROKEN_ADAPTOR_JOURNAL": str(journal)}
    # The re-delivery it lacks never comes: no need to wait long for it.
    result = run([sys.executable, str(BROKEN)], temp_root, env, event_timeout=3.0)
    assert outcomes(result, Outcome.FAIL) == {
        "send_money.idempotent",
        "watch_events.redelivery",
    }, explain(result)
    assert not result.ok
    reasons = {r.name: r.reason for r in result.results}
    assert "a retry must return the first result" in reasons["send_money.idempotent"]
    assert "went down by 246, not 123" in reasons["send_money.idempotent"]
    assert (
        "did not re-deliver the unacknowledged settlement 'memory-in-1'"
        in (reasons["watch_events.redelivery"])
    )
    # Cleanup: every account the suite set up was deleted again by the end of the run.
    last: dict[str, str] = {}
    for line in journal.read_text().splitlines():
        what, account = line.split(" ", 1)
        last[account] = what
    assert last, "the suite set up no account"
    assert set(last.values()) == {"delete"}, last


def test_a_broken_process_contract_fails_exactly_those_checks(temp_root: Path) -> None:
    env = {**INCOMING, "BROKEN_ADAPTOR_DEFECTS": "cookie,version,exit"}
    result = run([sys.executable, str(BROKEN)], temp_root, env)
    assert outcomes(result, Outcome.FAIL) == {
        "handshake.no_common_version",
        "cookie",
        "shutdown",
    }, explain(result)
    reasons = {r.name: r.reason for r in result.results}
    assert "adaptor chose 1, host offered [99]" in reasons["handshake.no_common_version"]
    assert "started without ILP_SETTLEMENT_ADAPTOR" in reasons["cookie"]
    assert "exited with code 3 after the Shutdown request" in reasons["shutdown"]


def test_a_stream_that_does_not_start_with_the_connections_fails_that_check(
    temp_root: Path,
) -> None:
    env = {**INCOMING, "BROKEN_ADAPTOR_DEFECTS": "connections"}
    result = run(
        [sys.executable, str(BROKEN)],
        temp_root,
        env,
        event_timeout=2.0,
        only=("watch_events.connections_first",),
    )
    assert outcomes(result, Outcome.FAIL) == {"watch_events.connections_first"}, explain(result)
    reason = next(r.reason for r in result.results if r.name == "watch_events.connections_first")
    assert "before the state of ledger" in reason or "did not send the state of ledger" in reason


def test_an_adaptor_that_does_not_start_fails_every_check_with_the_diagnosis(
    temp_root: Path,
) -> None:
    result = run([str(ROOT / "adaptors" / "no-such-adaptor")], temp_root)
    assert outcomes(result, Outcome.FAIL) == {c.name for c in CHECKS}
    first = result.results[0]
    assert first.name == "handshake" and "command not found" in first.reason
    assert all("(see handshake)" in r.reason for r in result.results[1:])


def test_only_runs_the_selected_checks(temp_root: Path) -> None:
    result = run(
        [sys.executable, str(ADAPTORS / "memory-python" / "adaptor.py")],
        temp_root,
        only=("get_info", "send_money.idempotent"),
        use_adaptor_config=True,
    )
    assert [(r.name, r.outcome) for r in result.results] == [
        ("get_info", Outcome.PASS),
        ("send_money.idempotent", Outcome.PASS),
    ], explain(result)


# --- the command line ----------------------------------------------------------------------


def test_the_command_line_runs_the_suite_and_writes_junit(tmp_path: Path, temp_root: Path) -> None:
    report = tmp_path / "report.xml"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "host.conformance",
            "--junit",
            str(report),
            "--start-timeout",
            "60",
            "--event-timeout",
            "30",
            "--",
            sys.executable,
            str(ADAPTORS / "simledger-python" / "adaptor.py"),
        ],
        cwd=ROOT,
        env={**os.environ, "TMPDIR": str(temp_root)},
        capture_output=True,
        text=True,
        timeout=110,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    verdicts = [line for line in lines if line.split(" ", 1)[0] in ("PASS", "FAIL", "SKIP")]
    assert [line.split()[1] for line in verdicts] == [c.name for c in CHECKS]
    assert lines[-1] == f"{len(CHECKS)} passed, 0 failed, 0 skipped"
    root = ET.parse(report).getroot()
    assert root.get("tests") == str(len(CHECKS)) and root.get("failures") == "0"
    assert [case.get("name") for case in root.iter("testcase")] == [c.name for c in CHECKS]


def test_the_command_line_exits_1_when_a_check_fails(temp_root: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "host.conformance", "--only", "handshake", "--", "/no/such/adaptor"],
        cwd=ROOT,
        env={**os.environ, "TMPDIR": str(temp_root)},
        capture_output=True,
        text=True,
        timeout=110,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "FAIL  handshake" in done.stdout and "command not found" in done.stdout
    assert done.stdout.splitlines()[-1] == "0 passed, 1 failed, 0 skipped"
