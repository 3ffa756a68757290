"""The results of a conformance run and how they are written: text lines and JUnit XML.

A check ends in PASS (it returned what it saw), FAIL (it raised CheckFailed) or SKIP (it raised
CheckSkipped). The rest is pure, results in and text or bytes out: one line per check (PASS,
FAIL with the reason, SKIP with the reason), a summary line, and a JUnit XML document for CI.
"""

from __future__ import annotations

import enum
import socket
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

#: Width of the name column in text lines (longer names push the reason right).
NAME_WIDTH = 28
#: The JUnit ``classname`` of every test case.
JUNIT_CLASS = "ilp-host.conformance"


class Outcome(enum.Enum):
    """What one check concluded."""

    PASS = "PASS"
    FAIL = "FAIL"
    SKIP = "SKIP"


class CheckFailed(Exception):
    """Raised by a check: the adaptor broke the contract (FAIL); the message says how."""


class CheckSkipped(Exception):
    """Raised by a check: it cannot run against this adaptor (SKIP); the message says why."""


@dataclass(frozen=True)
class CheckResult:
    """One check's verdict. ``reason`` says why it failed or was skipped, or (for PASS) what
    was observed."""

    name: str
    outcome: Outcome
    reason: str = ""
    seconds: float = 0.0


@dataclass(frozen=True)
class SuiteResult:
    """A whole run: the command, what the adaptor said of itself, every verdict, and notes
    (cleanup problems, the adaptor's last stderr lines)."""

    command: tuple[str, ...]
    results: tuple[CheckResult, ...]
    adaptor: str = ""
    notes: tuple[str, ...] = ()
    stderr_tail: tuple[str, ...] = ()
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    seconds: float = 0.0

    def count(self, outcome: Outcome) -> int:
        """How many checks ended with ``outcome``."""
        return sum(1 for result in self.results if result.outcome is outcome)

    @property
    def ok(self) -> bool:
        """True iff no check failed (what the exit status says)."""
        return self.count(Outcome.FAIL) == 0

    def outcome_of(self, name: str) -> Outcome | None:
        """The outcome of the check ``name``, or None if it did not run."""
        for result in self.results:
            if result.name == name:
                return result.outcome
        return None


def format_line(result: CheckResult) -> str:
    """``PASS  name  what was seen`` / ``FAIL  name  why`` / ``SKIP  name  why``."""
    line = f"{result.outcome.value}  {result.name.ljust(NAME_WIDTH)}"
    if result.reason:
        line += f"  {result.reason}"
    return line.rstrip()


def format_summary(results: Sequence[CheckResult]) -> str:
    """``N passed, N failed, N skipped``."""
    counts = {outcome: 0 for outcome in Outcome}
    for result in results:
        counts[result.outcome] += 1
    return (
        f"{counts[Outcome.PASS]} passed, {counts[Outcome.FAIL]} failed, "
        f"{counts[Outcome.SKIP]} skipped"
    )


def render_text(suite: SuiteResult) -> str:
    """The whole report as the command line prints it."""
    lines = [f"conformance of: {' '.join(suite.command)}"]
    if suite.adaptor:
        lines.append(f"adaptor: {suite.adaptor}")
    lines.extend(format_line(result) for result in suite.results)
    lines.extend(f"note: {note}" for note in suite.notes)
    lines.append(format_summary(suite.results))
    return "\n".join(lines)


def render_junit(suite: SuiteResult) -> bytes:
    """The run as a JUnit XML document (one ``testsuite``, one ``testcase`` per check)."""
    root = ET.Element(
        "testsuite",
        {
            "name": "ilp-host conformance",
            "tests": str(len(suite.results)),
            "failures": str(suite.count(Outcome.FAIL)),
            "errors": "0",
            "skipped": str(suite.count(Outcome.SKIP)),
            "time": f"{suite.seconds:.3f}",
            "timestamp": suite.started_at.strftime("%Y-%m-%dT%H:%M:%S"),
            "hostname": socket.gethostname(),
        },
    )
    properties = ET.SubElement(root, "properties")
    for name, value in (("command", " ".join(suite.command)), ("adaptor", suite.adaptor)):
        ET.SubElement(properties, "property", {"name": name, "value": _xml_safe(value)})
    for result in suite.results:
        case = ET.SubElement(
            root,
            "testcase",
            {"classname": JUNIT_CLASS, "name": result.name, "time": f"{result.seconds:.3f}"},
        )
        reason = _xml_safe(result.reason)
        if result.outcome is Outcome.FAIL:
            failure = ET.SubElement(case, "failure", {"message": reason, "type": "conformance"})
            failure.text = reason
        elif result.outcome is Outcome.SKIP:
            ET.SubElement(case, "skipped", {"message": reason})
        elif reason:
            ET.SubElement(case, "system-out").text = reason
    if suite.notes:
        ET.SubElement(root, "system-out").text = _xml_safe("\n".join(suite.notes))
    if suite.stderr_tail:
        ET.SubElement(root, "system-err").text = _xml_safe("\n".join(suite.stderr_tail))
    ET.indent(root)
    document: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return document + b"\n"


def _xml_safe(text: str) -> str:
    """``text`` without the characters XML 1.0 cannot carry (an adaptor's stderr may hold any
    byte); each becomes U+FFFD."""
    return "".join(
        char
        if char in "\t\n\r"
        or 0x20 <= ord(char) <= 0xD7FF
        or 0xE000 <= ord(char) <= 0xFFFD
        or 0x10000 <= ord(char) <= 0x10FFFF
        else "\ufffd"
        for char in text
    )
