"""The pure parts of the conformance suite: the report (text and JUnit XML), the selection of
checks by name, and the command line's parsing."""

from __future__ import annotations

import argparse
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from host.conformance import CHECKS, cli, select
from host.conformance.report import (
    CheckResult,
    Outcome,
    SuiteResult,
    format_line,
    format_summary,
    render_junit,
    render_text,
)

RESULTS = (
    CheckResult("handshake", Outcome.PASS, "'1|1|unix|/x|grpc|'", 0.01),
    CheckResult("send_money.idempotent", Outcome.FAIL, "paid twice <&> \x00 \x1b[31m", 0.5),
    CheckResult("receive_data.reply", Outcome.SKIP, "capability not declared: data"),
)
SUITE = SuiteResult(
    command=("python", "adaptor.py"),
    results=RESULTS,
    adaptor="memory-python 0.1.0",
    notes=("cleanup: DeleteAccount('x') answered INTERNAL: boom",),
    stderr_tail=("panic: \x07bell",),
    seconds=1.5,
)


def test_lines_name_the_outcome_the_check_and_the_reason() -> None:
    assert format_line(RESULTS[2]).split() == [
        "SKIP",
        "receive_data.reply",
        "capability",
        "not",
        "declared:",
        "data",
    ]
    assert format_line(CheckResult("x", Outcome.PASS)) == "PASS  x"


def test_summary_counts_each_outcome() -> None:
    assert format_summary(RESULTS) == "1 passed, 1 failed, 1 skipped"
    assert format_summary(()) == "0 passed, 0 failed, 0 skipped"
    text = render_text(SUITE)
    assert text.splitlines()[-1] == "1 passed, 1 failed, 1 skipped"
    assert "note: cleanup: DeleteAccount('x')" in text


def test_a_suite_is_ok_iff_nothing_failed() -> None:
    assert not SUITE.ok
    assert SuiteResult(("a",), (RESULTS[0], RESULTS[2])).ok
    assert SUITE.outcome_of("send_money.idempotent") is Outcome.FAIL
    assert SUITE.outcome_of("no such check") is None


def test_junit_is_well_formed_and_carries_every_verdict() -> None:
    root = ET.fromstring(render_junit(SUITE))
    assert root.tag == "testsuite"
    assert (root.get("tests"), root.get("failures"), root.get("skipped")) == ("3", "1", "1")
    cases = {case.get("name"): case for case in root.iter("testcase")}
    assert list(cases) == ["handshake", "send_money.idempotent", "receive_data.reply"]
    failure = cases["send_money.idempotent"].find("failure")
    assert failure is not None
    # Characters XML cannot carry are replaced, the rest kept (escaped by the writer).
    assert failure.get("message") == "paid twice <&> \ufffd \ufffd[31m"
    skipped = cases["receive_data.reply"].find("skipped")
    assert skipped is not None and skipped.get("message") == "capability not declared: data"
    assert cases["handshake"].find("failure") is None
    assert root.findtext("system-err") == "panic: \ufffdbell"
    assert "memory-python 0.1.0" in {p.get("value") for p in root.iter("property")}


def test_select_by_name_and_group_in_run_order() -> None:
    names = [check.name for check in CHECKS]
    assert len(set(names)) == len(names)
    assert names[0] == "handshake" and names[-1] == "shutdown"
    assert [c.name for c in select([])] == names
    assert [c.name for c in select(["send_money"])] == [
        "send_money.idempotent",
        "send_money.key_conflict",
        "send_money.invalid",
        "send_money.key_grammar",
    ]
    assert [c.name for c in select(["shutdown", " cookie "])] == ["cookie", "shutdown"]
    # A check's own name wins over the group it also starts.
    assert [c.name for c in select(["handshake"])] == ["handshake"]
    assert [c.name for c in select(["handshake.no_common_version"])] == [
        "handshake.no_common_version"
    ]
    with pytest.raises(ValueError, match="no check named 'send'"):
        select(["send"])


def test_every_check_has_a_summary_and_known_capabilities() -> None:
    known = {"send_money", "receive_money", "data", "balance", "accounts"}
    for check in CHECKS:
        assert check.summary
        assert set(check.requires) <= known


def _ilp_host_parser() -> argparse.ArgumentParser:
    """A parent parser shaped like host/cli.py's, with the subcommand hooked in."""
    parser = argparse.ArgumentParser(prog="ilp-host")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    cli.add_parser(commands)
    return parser


def test_the_subcommand_takes_the_adaptor_command_after_the_double_dash() -> None:
    args = _ilp_host_parser().parse_args(
        ["conformance", "--junit", "r.xml", "--env", "A=1=2", "--only", "cookie,health",
         "--only", "shutdown", "--", "python", "adaptor.py", "--verbose"]
    )  # fmt: skip
    assert args.handler is cli.run
    assert args.command == "conformance"  # ilp-host's own dest is left alone
    (options,) = cli._options(args)
    assert options.transport == "unix"
    assert options.command == ("python", "adaptor.py", "--verbose")
    assert dict(options.env) == {"A": "1=2"}
    assert options.only == ("cookie", "health", "shutdown")
    assert args.junit == "r.xml"


def test_transport_both_is_one_run_per_transport_unix_first() -> None:
    args = _ilp_host_parser().parse_args(["conformance", "--transport", "both", "--", "x"])
    assert [options.transport for options in cli._options(args)] == ["unix", "tcp"]
    args = _ilp_host_parser().parse_args(["conformance", "--transport", "tcp", "--", "x"])
    assert [options.transport for options in cli._options(args)] == ["tcp"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["conformance"], "no adaptor command"),
        (["conformance", "--env", "NOEQUALS", "--", "x"], "expected KEY=VALUE"),
        (["conformance", "--env", "=v", "--", "x"], "expected KEY=VALUE"),
        (["conformance", "--shutdown-grace", "0", "--", "x"], "--shutdown-grace"),
    ],
)
def test_usage_errors_say_what_is_wrong(argv: list[str], message: str) -> None:
    args = _ilp_host_parser().parse_args(argv)
    with pytest.raises(cli.UsageError, match=message):
        cli._options(args)


def test_usage_errors_exit_2_before_anything_starts(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--only", "nonsense", "--", "/nonexistent/adaptor"]) == cli.EXIT_USAGE
    assert "no check named 'nonsense'" in capsys.readouterr().err
    assert cli.main(["--env", "A=\0", "--", "x"]) == cli.EXIT_USAGE
    assert "not a valid variable" in capsys.readouterr().err


def test_list_names_every_check(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--list"]) == cli.EXIT_OK
    listed = [line.split()[0] for line in capsys.readouterr().out.splitlines()]
    assert sorted(listed) == sorted(check.name for check in CHECKS)


def test_docs_conformance_lists_every_check() -> None:
    """docs/conformance.md has one table row per check, each once."""
    doc = (Path(__file__).resolve().parents[2] / "docs" / "conformance.md").read_text()
    listed = re.findall(r"^\| `([a-z_.]+)` \|", doc, re.MULTILINE)
    assert sorted(listed) == sorted(check.name for check in CHECKS)
