"""The ``conformance`` subcommand: ``ilp-host conformance [options] -- COMMAND [ARGS]``.

``add_parser`` hangs it under ``ilp-host`` (host/cli.py); ``main`` runs it alone
(``python -m host.conformance``). One line per check on stdout as it finishes, then the summary
``N passed, N failed, N skipped``; exit status 0 iff no check failed, 1 otherwise, 2 for a
usage error.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

DESCRIPTION = """\
Check an adaptor program against the adaptor contract (docs/protocol.md), given only how to
start it. Unless --use-adaptor-config, the suite runs its own simulated ledger and passes
ILP_SIMLEDGER_ADDR, ILP_SIMLEDGER_ACCOUNT and ILP_ADAPTOR_STATE_DB to the adaptor (adaptors
of other ledgers ignore them). Checks the adaptor's capabilities exclude are skipped."""

EPILOG = """\
examples:
  ilp-host conformance -- python adaptors/simledger-python/adaptor.py
  ilp-host conformance --transport both -- adaptors/simledger-rust/target/debug/simledger-rust
  ilp-host conformance --junit report.xml --env ILP_ADAPTOR_INCOMING=peer:500,peer:250 \\
      -- node adaptors/memory-node/adaptor.js
  ilp-host conformance --list"""


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--junit", metavar="FILE", help="also write the results as JUnit XML")
    parser.add_argument(
        "--env",
        metavar="K=V",
        action="append",
        default=[],
        help="add a variable to the adaptor's environment (repeatable)",
    )
    parser.add_argument(
        "--use-adaptor-config",
        action="store_true",
        help="start no ledger: the adaptor's own configuration (its environment) says where "
        "its ledger is; checks that need the suite's ledger look only at what they can",
    )
    parser.add_argument(
        "--only",
        metavar="NAME,...",
        action="append",
        default=[],
        help='run only these checks (repeatable); a group such as "send_money" selects '
        "send_money.*",
    )
    parser.add_argument(
        "--transport",
        choices=("unix", "tcp", "both"),
        default="unix",
        help="where the adaptor is asked to listen: a unix socket (default), loopback TCP with "
        "automatic mutual TLS, or both (one run each, unix first)",
    )
    parser.add_argument("--list", action="store_true", help="list the checks and exit")
    parser.add_argument("--cwd", help="the adaptor's working directory (default: this one)")
    parser.add_argument(
        "--start-timeout",
        type=float,
        default=30.0,
        metavar="S",
        help="seconds to wait for the handshake and for SERVING (default 30)",
    )
    parser.add_argument(
        "--event-timeout",
        type=float,
        default=10.0,
        metavar="S",
        help="seconds an event may take to arrive, e.g. a re-delivery (default 10)",
    )
    parser.add_argument(
        "--shutdown-grace",
        type=float,
        default=5.0,
        metavar="S",
        help="seconds from the Shutdown request to exit status 0 (default 5)",
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="log the adaptor's output on stderr"
    )
    # Not "command": ilp-host keeps the subcommand's name there.
    parser.add_argument(
        "adaptor_command", nargs=argparse.REMAINDER, metavar="COMMAND", help="-- COMMAND [ARGS]"
    )


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``conformance`` to the subcommands of ``ilp-host`` (its handler is ``run``)."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "conformance",
        help="check an adaptor program against the contract",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_arguments(parser)
    parser.set_defaults(handler=run)
    return parser


class UsageError(ValueError):
    """A command line the suite cannot run."""


def _environment(pairs: Sequence[str]) -> dict[str, str]:
    env: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"--env {pair!r}: expected KEY=VALUE")
        env[key] = value
    return env


def _options(args: argparse.Namespace) -> list[Any]:
    """The suite options of each run the command line asks for (one per transport)."""
    from host.conformance.session import SuiteOptions

    command = list(args.adaptor_command)
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        raise UsageError("no adaptor command: ilp-host conformance [options] -- COMMAND [ARGS]")
    for name in ("start_timeout", "event_timeout", "shutdown_grace"):
        if not getattr(args, name) > 0:
            raise UsageError(f"--{name.replace('_', '-')} must be greater than 0")
    from host.conformance.launch import TRANSPORTS

    transports = [t for t in TRANSPORTS if args.transport in (t, "both")]
    return [
        SuiteOptions(
            command=tuple(command),
            env=_environment(args.env),
            use_adaptor_config=args.use_adaptor_config,
            only=tuple(name for item in args.only for name in item.split(",") if name.strip()),
            cwd=Path(args.cwd) if args.cwd else None,
            start_timeout=args.start_timeout,
            event_timeout=args.event_timeout,
            shutdown_grace=args.shutdown_grace,
            transport=transport,
        )
        for transport in transports
    ]


def _list_checks() -> int:
    from host.conformance.checks import CHECKS

    width = max(len(check.name) for check in CHECKS)
    for check in CHECKS:
        needs = f" [needs: {', '.join(check.requires)}]" if check.requires else ""
        print(f"{check.name.ljust(width)}  {check.summary}{needs}")
    return EXIT_OK


def run(args: argparse.Namespace) -> int:
    """Run the suite as the command line ``args`` say; the exit status."""
    if args.list:
        return _list_checks()
    # Imported here: `ilp-host --help` need not load gRPC and the supervisor.
    from host.conformance.checks import select
    from host.conformance.report import format_line, format_summary, render_junit
    from host.conformance.runner import SuiteError, run_suite

    try:
        runs = _options(args)
        select(runs[0].only)
    except ValueError as exc:
        print(f"ilp-host conformance: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.verbose:
        logging.basicConfig(
            stream=sys.stderr, level=logging.INFO, format="%(levelname)-7s %(name)s: %(message)s"
        )
    status = EXIT_OK
    for options in runs:
        transport = "unix socket" if options.transport == "unix" else "tcp + mutual TLS"
        print(f"conformance of: {' '.join(options.command)} ({transport})", flush=True)
        try:
            result = asyncio.run(
                run_suite(options, on_result=lambda r: print(format_line(r), flush=True))
            )
        except (SuiteError, ValueError) as exc:
            print(f"ilp-host conformance: {exc}", file=sys.stderr)
            return EXIT_FAILED if isinstance(exc, SuiteError) else EXIT_USAGE
        for note in result.notes:
            print(f"note: {note}")
        if result.adaptor:
            print(f"adaptor: {result.adaptor}")
        print(format_summary(result.results), flush=True)
        if args.junit:
            # One report per transport when both run: FILE for unix, FILE with .tcp for tcp.
            junit = Path(args.junit)
            if len(runs) > 1 and options.transport == "tcp":
                junit = junit.with_name(f"{junit.stem}.tcp{junit.suffix}")
            try:
                junit.write_bytes(render_junit(result))
            except OSError as exc:
                print(f"ilp-host conformance: cannot write {junit}: {exc}", file=sys.stderr)
                return EXIT_FAILED
        if not result.ok:
            status = EXIT_FAILED
    return status


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m host.conformance [options] -- COMMAND [ARGS]``."""
    parser = argparse.ArgumentParser(
        prog="ilp-host conformance",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_arguments(parser)
    return run(parser.parse_args(argv))
