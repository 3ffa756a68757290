"""``python -m host.simledger``: run the simulated ledger until SIGTERM or SIGINT.

Once it listens it prints ``simledger listening on <grpc target>`` on stdout (and flushes):
whoever started it waits for that line. Configuration errors go to stderr with exit status 2.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Sequence

import grpc
from grpc_reflection.v1alpha import reflection

from host.pb.ilphost.simledger.v1 import simledger_pb2, simledger_pb2_grpc
from host.simledger.faults import FaultDice, FaultError, Faults
from host.simledger.service import SimLedgerService
from host.simledger.store import BookMismatch, LedgerStore
from sdk.amount import MAX_SCALE

LISTENING = "simledger listening on"
#: Seconds in-flight calls get to finish once a stop signal arrived.
STOP_GRACE = 2.0


DESCRIPTION = "A simulated ledger (SimLedger gRPC service over an SQLite book)."


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m host.simledger", description=DESCRIPTION)
    add_arguments(parser)
    return parser


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ledger's options (``python -m host.simledger`` and ``ilp-host ledger serve``)."""
    parser.add_argument("--db", required=True, help="SQLite file of the book (created if absent)")
    parser.add_argument(
        "--listen", required=True, help='"unix:/path" or "HOST:PORT" (port 0 = any free port)'
    )
    parser.add_argument("--asset-code", help="asset of a new book (default USD)")
    parser.add_argument(
        "--asset-scale", type=int, help=f"scale of a new book, 0..{MAX_SCALE} (default 2)"
    )
    parser.add_argument("--seed", type=int, help="seed of the fault dice (default: random)")
    parser.add_argument("--latency-ms", type=int, default=0, help="delay of each Transfer/Mint")
    parser.add_argument(
        "--error-per-mille", type=int, default=0, help="Transfer/Mint refused before commit"
    )
    parser.add_argument(
        "--fail-after-commit-per-mille",
        type=int,
        default=0,
        help="Transfer/Mint committed, then answered UNAVAILABLE",
    )
    parser.add_argument("--offline", action="store_true", help="start offline")


def _target(listen: str, port: int) -> str:
    """The gRPC target clients use for the bound address."""
    if listen.startswith("unix:"):
        return listen
    host = listen.rpartition(":")[0]
    return f"{host}:{port}"


async def _serve(args: argparse.Namespace, faults: Faults) -> int:
    try:
        store = LedgerStore(args.db, args.asset_code, args.asset_scale)
    except BookMismatch as exc:
        print(f"simledger: {exc}", file=sys.stderr)
        return 2
    service = SimLedgerService(store, faults, FaultDice(args.seed))
    # No SO_REUSEPORT: a second ledger on the same port must fail, not share it.
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    simledger_pb2_grpc.add_SimLedgerServicer_to_server(service, server)
    reflection.enable_server_reflection(
        (
            simledger_pb2.DESCRIPTOR.services_by_name["SimLedger"].full_name,
            reflection.SERVICE_NAME,
        ),
        server,
    )
    try:
        port = server.add_insecure_port(args.listen)
    except RuntimeError as exc:
        service.close()
        print(f"simledger: cannot listen on {args.listen!r}: {exc}", file=sys.stderr)
        return 2
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    print(f"{LISTENING} {_target(args.listen, port)}", flush=True)
    await stop.wait()
    service.begin_shutdown()
    await server.stop(STOP_GRACE)
    service.close()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ledger; the exit status."""
    return serve(_parser().parse_args(argv))


def serve(args: argparse.Namespace) -> int:
    """Run the ledger the parsed options describe until SIGTERM or SIGINT; the exit status."""
    if args.asset_scale is not None and not 0 <= args.asset_scale <= MAX_SCALE:
        print(f"simledger: --asset-scale must be 0..{MAX_SCALE}", file=sys.stderr)
        return 2
    try:
        faults = Faults(
            latency_ms=args.latency_ms,
            error_per_mille=args.error_per_mille,
            fail_after_commit_per_mille=args.fail_after_commit_per_mille,
            offline=args.offline,
        )
    except FaultError as exc:
        print(f"simledger: {exc}", file=sys.stderr)
        return 2
    return asyncio.run(_serve(args, faults))


if __name__ == "__main__":
    sys.exit(main())
