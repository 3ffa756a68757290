"""``ilp-host demo``: two peered hosts settle on a simulated ledger, and the books reconcile.

What it runs, all real processes on this machine: the simulated ledger (``python -m
host.simledger``), and two hosts, Alice and Bob (``ilp-host run``; or, with ``--alice-engine
external``/``--bob-engine external``, ``ilp-host connector`` and ``ilp-host engine`` from the
same config: proposal 2), each supervising a simledger adaptor (Python by default; ``--alice
go``, ``--bob node``... pick another in-tree one, ``--alice-adaptor "CMD ARGS"`` any program
that speaks the contract and the simledger peer messages), peered over ILP-over-HTTP on
loopback. Alice's ledger account is funded; Alice then sends test packets to Bob through her
connector until her engine has settled several times on the ledger (host.demo.scenario).

At the end it prints both sides' clearing balances and both ledger balances, and checks that
they reconcile exactly. Exit status 0 only when they do; 2 for options that cannot run.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from host.demo.adaptors import (
    ENV_ADAPTORS,
    AdaptorCommand,
    AdaptorsNotFound,
    adaptors_dir,
    languages,
    simledger_adaptor,
)
from host.demo.ethereum import KINDS as ETHEREUM_KINDS
from host.demo.scenario import run_demo
from host.demo.twohost import ENGINE_PLACES, HarnessError, Side

#: What ``ilp-host demo --help`` says it does.
DESCRIPTION = (__doc__ or "").split("\n\n")[0].replace("``", "")


@contextlib.contextmanager
def _workspace(keep: str | None) -> Iterator[Path]:
    if keep is not None:
        path = Path(keep).absolute()
        path.mkdir(parents=True, exist_ok=True)
        yield path
        return
    # Short, so that unix socket paths stay under the ~100-byte limit.
    path = Path(tempfile.mkdtemp(prefix="ilpdemo"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The demo's options, on ``parser`` (``ilp-host demo`` and :func:`main` share them)."""
    parser.add_argument("--dir", help="keep everything in this directory (default: a temp dir)")
    parser.add_argument(
        "--settlements", type=_positive, default=5, help="settle at least this often (default 5)"
    )
    parser.add_argument(
        "--ledger",
        choices=("simledger", *ETHEREUM_KINDS),
        default="simledger",
        help="the settlement system: the simulated ledger (default), or a local anvil node in "
        "ETH or in an ERC-20 token; both sides then run adaptors/ethereum (docs/ethereum.md)",
    )
    parser.add_argument(
        "--adaptors",
        metavar="DIR",
        help="where the in-tree adaptors are (a checkout's adaptors/; default: "
        f"${ENV_ADAPTORS}, else the adaptors/ of the source tree this host runs from, "
        "else ./adaptors)",
    )
    choices = languages()
    for side in ("alice", "bob"):
        adaptor = parser.add_mutually_exclusive_group()
        adaptor.add_argument(
            f"--{side}",
            choices=choices,
            metavar="LANGUAGE",
            help=f"the language of {side.title()}'s simledger adaptor: "
            f"{', '.join(choices)} (default python)",
        )
        adaptor.add_argument(
            f"--{side}-adaptor",
            metavar='"CMD ARGS"',
            help=f"run this command as {side.title()}'s adaptor instead (split as a shell "
            "does, run from here); it gets the simledger variables ILP_SIMLEDGER_ADDR, "
            "ILP_SIMLEDGER_ACCOUNT and ILP_ADAPTOR_STATE_DB (docs/simledger.md)",
        )
        parser.add_argument(
            f"--{side}-engine",
            choices=sorted(ENGINE_PLACES),
            default="internal",
            help=f"where {side.title()}'s engine runs: in the connector's process "
            "(proposal 1, the default) or in its own (proposal 2)",
        )


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}")
    return int(text)


def side_adaptor(args: argparse.Namespace, side: str) -> AdaptorCommand:
    """The adaptor ``--SIDE``/``--SIDE-adaptor`` chose (default: the in-tree Python one);
    ValueError for a malformed command, AdaptorsNotFound for an in-tree one not found."""
    command: str | None = getattr(args, f"{side}_adaptor")
    if command is not None:
        return AdaptorCommand.parse(command, Path.cwd())
    language: str | None = getattr(args, side)
    return simledger_adaptor(language or "python", adaptors_dir(args.adaptors))


def run(args: argparse.Namespace) -> int:
    """Run the demo the parsed options describe; 0 when the books reconcile."""
    chosen = [
        f"--{o}" for o in ("alice", "bob", "alice_adaptor", "bob_adaptor") if getattr(args, o)
    ]
    if args.ledger != "simledger" and chosen:
        print(
            f"ilp-host demo: --ledger {args.ledger} runs the Ethereum adaptor on both sides; "
            f"{', '.join(c.replace('_', '-') for c in chosen)} choose simledger adaptors",
            file=sys.stderr,
        )
        return 2
    try:
        adaptors = adaptors_dir(args.adaptors) if args.ledger != "simledger" else None
        sides = tuple(
            Side(
                adaptor=side_adaptor(args, side) if adaptors is None else None,
                engine=getattr(args, f"{side}_engine"),
            )
            for side in ("alice", "bob")
        )
    except (ValueError, AdaptorsNotFound) as exc:
        print(f"ilp-host demo: {exc}", file=sys.stderr)
        return 2
    os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
    try:
        with _workspace(args.dir) as directory:
            _, problems = run_demo(
                directory,
                (sides[0], sides[1]),
                min_settlements=args.settlements,
                out=sys.stdout,  # the current one (a default would be bound at import)
                ledger=args.ledger,
                adaptors=adaptors,
            )
    except HarnessError as exc:
        print(f"demo failed: {exc}", file=sys.stderr)
        return 1
    if problems:
        print("\nthe books do NOT reconcile:", file=sys.stderr)
        for problem in problems:
            print(f"  {problem}", file=sys.stderr)
        return 1
    print("\nthe books reconcile: clearing balances, settlements and ledger agree")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the demo with ``argv``; 0 when the books reconcile."""
    parser = argparse.ArgumentParser(prog="ilp-host demo", description=DESCRIPTION)
    add_arguments(parser)
    return run(parser.parse_args(list(argv) if argv is not None else None))
