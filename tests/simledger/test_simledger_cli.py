"""``ilp-host ledger``: the commands docs/simledger.md shows, run as written against a ledger
started with ``ilp-host ledger serve``, and what they refuse."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from host.simledger.cli import LedgerCliError, units
from host.simledger.process import start_ledger

ROOT = Path(__file__).resolve().parents[2]
ILP_HOST = str(Path(sys.executable).parent / "ilp-host")


def doc_commands() -> list[list[str]]:
    """The shell lines of the first code block of docs/simledger.md's "Run it"."""
    doc = (ROOT / "docs" / "simledger.md").read_text()
    section = doc.split("## Run it", 1)[1]
    block = re.search(r"```sh\n(.*?)```", section, re.DOTALL)
    assert block is not None
    return [shlex.split(line.removesuffix("&")) for line in block.group(1).splitlines() if line]


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """``ilp-host ARGV`` as a user runs it: its own process, this test's environment and
    directory. (In the test process, a sync gRPC channel per command beside the grpc.aio
    channels of earlier tests made the interpreter crash in garbage collection now and then.)"""
    del capsys  # the command's output is its process's
    done = subprocess.run(
        [ILP_HOST, *argv], capture_output=True, text=True, timeout=60, check=False
    )
    return done.returncode, done.stdout, done.stderr


def test_the_documented_commands_work_as_written(
    tmp_path: Path, monkeypatch: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    commands = doc_commands()
    serve, export, *clients = commands
    assert serve[:3] == ["ilp-host", "ledger", "serve"]
    assert export[0] == "export"
    monkeypatch.chdir(tmp_path)  # the doc's relative paths: ledger.db, unix:ledger.sock
    variable, _, target = export[1].partition("=")
    monkeypatch.setenv(variable, target)
    arguments = dict(zip(serve[3::2], serve[4::2], strict=True))
    with start_ledger(arguments["--db"], arguments["--listen"], program=(ILP_HOST, *serve[1:3])):
        assert (tmp_path / "ledger.sock").exists() and (tmp_path / "ledger.db").exists()
        printed = {}
        for argv in clients:
            assert argv[0] == "ilp-host"
            status, out, err = run(argv[1:], capsys)
            assert status == 0, (argv, err)
            assert err == ""
            printed[argv[2]] = out
        assert printed["balance"] == "alice-ledger: 100.00 USD\n"
        lines = printed["transfers"].splitlines()
        assert lines[0].split() == ["SEQ", "TRANSFER", "FROM", "TO", "AMOUNT"]
        assert [line.split()[2:] for line in lines[1:]] == [
            ["(mint)", "alice-ledger", "100.00", "USD"],
            ["(mint)", "bob-ledger", "0.50", "USD"],
        ]
        assert printed["offline"].startswith("the ledger is offline;")
        assert printed["online"].startswith("the ledger is online;")
        assert "latency 200 ms, 100/1000 refused before commit" in printed["faults"]

        # The knobs back to none (the doc left 10 % of mints refused), keeping what the others
        # set: faults sets only the knobs it is given.
        knobs = ["ledger", "faults", "--latency-ms", "0", "--error-per-mille", "0"]
        assert run(knobs, capsys)[1] == (
            "the ledger is online; latency 0 ms, 0/1000 refused before commit, "
            "0/1000 answered UNAVAILABLE after commit\n"
        )

        # The same mint id mints once; --json; only one account's; a page after a sequence.
        assert run(["ledger", "fund", "bob-ledger", "0.50", "--id", "bob-seed"], capsys)[0] == 0
        status, out, _ = run(["ledger", "transfers", "--json", "--account", "bob-ledger"], capsys)
        assert status == 0
        rows = [json.loads(line) for line in out.splitlines()]
        assert [(r["transfer_id"], r["amount"]) for r in rows] == [
            ("bob-seed", {"value": "50", "scale": 2})
        ]
        status, out, _ = run(["ledger", "transfers", "--after", "1", "--limit", "1"], capsys)
        assert "bob-seed" in out and "alice-ledger" not in out

        # Offline: the knobs and the log still answer; a balance does not.
        assert run(["ledger", "offline"], capsys)[0] == 0
        assert run(["ledger", "transfers"], capsys)[0] == 0
        status, _, err = run(["ledger", "balance", "alice-ledger"], capsys)
        assert status == 1 and "answered UNAVAILABLE: the ledger is offline" in err
        assert run(["ledger", "online"], capsys)[0] == 0

        for argv, complaint in (
            (["ledger", "fund", "a b", "1"], "INVALID_ARGUMENT"),
            (["ledger", "fund", "x", "1.001"], "2 decimal place(s), this has 3"),
            (["ledger", "fund", "x", "-1"], "expected a decimal"),
            (["ledger", "balance", "nobody"], "NOT_FOUND"),
            (["ledger", "transfers", "--account", "nobody"], "NOT_FOUND"),
            (["ledger", "transfers", "--limit", "0"], "--limit must be"),
        ):
            status, out, err = run(argv, capsys)
            assert (status, out) == (1, ""), argv
            assert complaint in err and err.count("\n") == 1, err
        status, out, _ = run(["ledger", "transfers"], capsys)
        assert len(out.splitlines()) == 3  # the refused calls changed nothing


def test_without_a_ledger_address_it_says_where_to_give_one(
    monkeypatch: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("ILP_SIMLEDGER_ADDR", raising=False)
    status, _, err = run(["ledger", "transfers"], capsys)
    assert status == 2 and "--ledger TARGET or set ILP_SIMLEDGER_ADDR" in err


def test_amounts_are_decimals_in_the_assets_units() -> None:
    assert units("100", 2) == 10_000
    assert units("12.5", 2) == 1_250
    assert units("0.01", 2) == 1
    assert units("7", 0) == 7
    for bad in ("0", "0.00", "1.", ".5", "01", "1e3", "", "1.234"):
        with pytest.raises(LedgerCliError):
            units(bad, 2)
