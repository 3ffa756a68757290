"""``ilp-host conformance``: check any adaptor program against the adaptor contract.

Given only how to start an adaptor, the suite starts it as the host does, with a simulated
ledger and a fake Engine around it, and runs named checks, each PASS, FAIL (with the reason) or
SKIP (with the reason). Like csi-sanity for CSI plugins: checks skip by the capabilities the
adaptor declares, repeated calls check idempotency, and what the suite creates is cleaned up::

    result = await run_suite(SuiteOptions(command=("python", "adaptor.py")))
    print(render_text(result))

Modules: ``checks`` (the checks), ``session`` (the adaptor under test), ``world`` (ledger and
fake Engine), ``launch`` (starting it as the host does), ``runner`` (``run_suite``), ``report``
(results, text, JUnit XML), ``cli`` (the subcommand).
"""

import logging

from host.conformance.checks import CHECKS, Check, select
from host.conformance.report import (
    CheckResult,
    Outcome,
    SuiteResult,
    format_line,
    format_summary,
    render_junit,
    render_text,
)
from host.conformance.runner import SuiteError, run_suite
from host.conformance.session import SuiteOptions

# A library logs; the program that uses it decides where that goes (the CLI's --verbose).
logging.getLogger("ilp_host.conformance").addHandler(logging.NullHandler())

__all__ = [
    "CHECKS",
    "Check",
    "CheckResult",
    "Outcome",
    "SuiteError",
    "SuiteOptions",
    "SuiteResult",
    "format_line",
    "format_summary",
    "render_junit",
    "render_text",
    "run_suite",
    "select",
]
