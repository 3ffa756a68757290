"""``ilp-host ledger``: run the simulated ledger and work it by hand (docs/simledger.md).

``serve`` runs it (the options of ``python -m host.simledger``); the other commands talk to a
running ledger at ``--ledger`` (default: ``ILP_SIMLEDGER_ADDR``, the variable its adaptors
read): ``fund`` opens an account and mints into it, ``balance`` shows one, ``transfers`` lists
the ledger's log, ``offline``/``online`` and ``faults`` turn the fault knobs.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import uuid
from collections.abc import Callable, Sequence
from typing import Final

import grpc
from google.protobuf import json_format

from host.pb.ilphost.simledger.v1 import simledger_pb2, simledger_pb2_grpc
from host.simledger import __main__ as ledger_main
from host.simledger.service import LIST_LIMIT
from host.status import format_amount
from sdk import channels
from sdk.pb.ilphost.types.v1 import types_pb2

#: Where the commands find the ledger by default: the variable its adaptors read.
ENV_LEDGER_ADDR: Final = "ILP_SIMLEDGER_ADDR"
CALL_TIMEOUT: Final = 10.0
_DECIMAL: Final = re.compile(r"(0|[1-9][0-9]*)(?:\.([0-9]+))?")

Command = Callable[[simledger_pb2_grpc.SimLedgerStub, argparse.Namespace], int]


class LedgerCliError(Exception):
    """A mistake of the operator's, or an answer of the ledger's: one line, exit status 1."""


def units(text: str, scale: int) -> int:
    """A decimal amount in the asset's units (``"12.5"``) as an integer at ``scale`` (1250 at
    scale 2); LedgerCliError if it is not one or has more decimals than the scale."""
    match = _DECIMAL.fullmatch(text)
    if match is None:
        raise LedgerCliError(f"AMOUNT {text!r}: expected a decimal such as 100 or 12.50")
    whole, fraction = match.group(1), match.group(2) or ""
    if len(fraction) > scale:
        raise LedgerCliError(
            f"AMOUNT {text!r}: the ledger counts {scale} decimal place(s), this has {len(fraction)}"
        )
    value = int(whole + fraction.ljust(scale, "0"))
    if value == 0:
        raise LedgerCliError("AMOUNT must be greater than zero")
    return value


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``ledger`` and its commands to ``ilp-host``'s commands."""
    ledger = commands.add_parser(
        "ledger",
        help="run the simulated ledger, fund accounts, list transfers, turn its fault knobs",
        description=__doc__.split("\n\n")[0].replace("``", ""),
    )
    actions = ledger.add_subparsers(dest="ledger_command", metavar="COMMAND", required=True)

    serve = actions.add_parser(
        "serve", help="run the ledger until SIGTERM/Ctrl-C", description=ledger_main.DESCRIPTION
    )
    ledger_main.add_arguments(serve)
    serve.set_defaults(handler=_serve)

    def client(name: str, help_text: str, command: Command) -> argparse.ArgumentParser:
        parser = actions.add_parser(name, help=help_text, description=help_text)
        parser.add_argument(
            "--ledger",
            metavar="TARGET",
            help=f'the ledger\'s gRPC target, "unix:/path" or "HOST:PORT" (default: '
            f"${ENV_LEDGER_ADDR})",
        )
        parser.set_defaults(handler=lambda args: _with_ledger(args, command))
        return parser

    fund = client("fund", "open an account (if new) and mint AMOUNT into it", _fund)
    fund.add_argument("account", metavar="ACCOUNT", help="1 to 128 of [A-Za-z0-9._~:-]")
    fund.add_argument(
        "amount", metavar="AMOUNT", help="in the asset's units: 100 or 12.50 (USD at scale 2)"
    )
    fund.add_argument(
        "--id",
        metavar="TRANSFER_ID",
        help="the mint's transfer id: the same id mints only once (default: a new one)",
    )

    balance = client("balance", "show an account's balance", _balance)
    balance.add_argument("account", metavar="ACCOUNT")

    transfers = client(
        "transfers", "list the ledger's transfers in order (mints have no payer)", _transfers
    )
    transfers.add_argument("--account", metavar="ACCOUNT", help="only those into or out of it")
    transfers.add_argument(
        "--after", type=int, default=0, metavar="SEQUENCE", help="only those after this one"
    )
    transfers.add_argument(
        "--limit", type=int, default=100, metavar="N", help=f"at most N, 1..{LIST_LIMIT}"
    )
    transfers.add_argument("--json", action="store_true", help="one JSON object per transfer")

    client("offline", "take the ledger offline: every call but these answers UNAVAILABLE", _offline)
    client("online", "bring the ledger back online", _online)
    faults = client("faults", "show the fault knobs; set those given", _faults)
    for knob, meaning in (
        ("latency-ms", "delay of each Transfer/Mint"),
        ("error-per-mille", "Transfer/Mint refused (UNAVAILABLE) before commit"),
        ("fail-after-commit-per-mille", "Transfer/Mint committed, then answered UNAVAILABLE"),
    ):
        faults.add_argument(f"--{knob}", type=int, metavar="N", help=meaning)


def _serve(args: argparse.Namespace) -> int:
    return ledger_main.serve(args)


def _with_ledger(args: argparse.Namespace, command: Command) -> int:
    target = args.ledger or os.environ.get(ENV_LEDGER_ADDR, "")
    if not target:
        print(
            f"ilp-host ledger: where is the ledger? Give --ledger TARGET or set {ENV_LEDGER_ADDR}",
            file=sys.stderr,
        )
        return 2
    try:
        with channels.blocking_channel(target) as channel:
            return command(simledger_pb2_grpc.SimLedgerStub(channel), args)
    except LedgerCliError as exc:
        print(f"ilp-host ledger: {exc}", file=sys.stderr)
    except grpc.RpcError as exc:
        code, details = exc.code(), exc.details()
        print(
            f"ilp-host ledger: the ledger at {target} answered {code.name}: {details}",
            file=sys.stderr,
        )
    return 1


def _info(stub: simledger_pb2_grpc.SimLedgerStub) -> simledger_pb2.GetLedgerInfoResponse:
    info: simledger_pb2.GetLedgerInfoResponse = stub.GetLedgerInfo(
        simledger_pb2.GetLedgerInfoRequest(), timeout=CALL_TIMEOUT
    )
    return info


def _fund(stub: simledger_pb2_grpc.SimLedgerStub, args: argparse.Namespace) -> int:
    info = _info(stub)
    value = units(args.amount, info.asset_scale)
    stub.CreateAccount(
        simledger_pb2.CreateAccountRequest(account_id=args.account), timeout=CALL_TIMEOUT
    )
    transfer_id = args.id or f"fund:{args.account}:{uuid.uuid4().hex}"
    reply = stub.Mint(
        simledger_pb2.MintRequest(
            transfer_id=transfer_id,
            account_id=args.account,
            amount=types_pb2.Amount(value=str(value), scale=info.asset_scale),
        ),
        timeout=CALL_TIMEOUT,
    )
    balance = stub.GetAccount(
        simledger_pb2.GetAccountRequest(account_id=args.account), timeout=CALL_TIMEOUT
    ).account.balance
    minted = reply.transfer.amount
    print(
        f"minted {format_amount(minted.value, minted.scale, info.asset_code)} into "
        f"{args.account} (transfer {reply.transfer.transfer_id}, sequence "
        f"{reply.transfer.sequence}); balance "
        f"{format_amount(balance.value, balance.scale, info.asset_code)}"
    )
    return 0


def _balance(stub: simledger_pb2_grpc.SimLedgerStub, args: argparse.Namespace) -> int:
    info = _info(stub)
    balance = stub.GetAccount(
        simledger_pb2.GetAccountRequest(account_id=args.account), timeout=CALL_TIMEOUT
    ).account.balance
    print(f"{args.account}: {format_amount(balance.value, balance.scale, info.asset_code)}")
    return 0


def _transfers(stub: simledger_pb2_grpc.SimLedgerStub, args: argparse.Namespace) -> int:
    if not 1 <= args.limit <= LIST_LIMIT:
        raise LedgerCliError(f"--limit must be 1..{LIST_LIMIT}, got {args.limit}")
    if args.after < 0:
        raise LedgerCliError(f"--after must be 0 or more, got {args.after}")
    try:
        asset_code = _info(stub).asset_code
    except grpc.RpcError:
        asset_code = ""  # offline: the log is still shown, in the ledger's units
    reply = stub.ListTransfers(
        simledger_pb2.ListTransfersRequest(
            after_sequence=args.after, limit=args.limit, account_id=args.account or ""
        ),
        timeout=CALL_TIMEOUT,
    )
    if args.json:
        for transfer in reply.transfers:
            print(json.dumps(json_format.MessageToDict(transfer, preserving_proto_field_name=True)))
        return 0
    print(_table(reply.transfers, asset_code))
    return 0


def _table(transfers: Sequence[simledger_pb2.LedgerTransfer], asset_code: str) -> str:
    rows = [("SEQ", "TRANSFER", "FROM", "TO", "AMOUNT")]
    for t in transfers:
        rows.append(
            (
                str(t.sequence),
                t.transfer_id,
                t.from_account_id or "(mint)",
                t.to_account_id,
                format_amount(t.amount.value, t.amount.scale, asset_code),
            )
        )
    if len(rows) == 1:
        return "no transfers"
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def _set_faults(stub: simledger_pb2_grpc.SimLedgerStub, **changes: object) -> simledger_pb2.Faults:
    faults = stub.GetFaults(simledger_pb2.GetFaultsRequest(), timeout=CALL_TIMEOUT).faults
    for knob, value in changes.items():
        if value is not None:
            setattr(faults, knob, value)
    reply = stub.SetFaults(simledger_pb2.SetFaultsRequest(faults=faults), timeout=CALL_TIMEOUT)
    knobs: simledger_pb2.Faults = reply.faults
    return knobs


def _describe(faults: simledger_pb2.Faults) -> str:
    return (
        f"{'offline' if faults.offline else 'online'}; latency {faults.latency_ms} ms, "
        f"{faults.error_per_mille}/1000 refused before commit, "
        f"{faults.fail_after_commit_per_mille}/1000 answered UNAVAILABLE after commit"
    )


def _offline(stub: simledger_pb2_grpc.SimLedgerStub, args: argparse.Namespace) -> int:
    print(f"the ledger is {_describe(_set_faults(stub, offline=True))}")
    return 0


def _online(stub: simledger_pb2_grpc.SimLedgerStub, args: argparse.Namespace) -> int:
    print(f"the ledger is {_describe(_set_faults(stub, offline=False))}")
    return 0


def _faults(stub: simledger_pb2_grpc.SimLedgerStub, args: argparse.Namespace) -> int:
    knobs = _set_faults(
        stub,
        latency_ms=args.latency_ms,
        error_per_mille=args.error_per_mille,
        fail_after_commit_per_mille=args.fail_after_commit_per_mille,
    )
    print(f"the ledger is {_describe(knobs)}")
    return 0
