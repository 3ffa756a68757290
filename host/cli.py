"""The ``ilp-host`` command line.

Commands: ``run`` (the host), ``status`` (adaptors and their connections), ``health`` (a
grpc.health.v1 probe, like grpc_health_probe) and ``demo``. Exit status: 0 ok, 1 runtime
failure (including "host not running" and "not serving"), 2 usage or configuration error.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import sys
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import json_format
from grpc_health.v1 import health_pb2, health_pb2_grpc

from host.config import ConfigError, read_config
from host.status import describe_change, render_status
from sdk.pb.ilphost.admin.v1 import admin_pb2, admin_pb2_grpc

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
DEFAULT_CONFIG = "host.toml"


class CliError(Exception):
    """A failure to report on one line and exit with ``status``."""

    def __init__(self, message: str, status: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.status = status


# -- reaching the admin API ----------------------------------------------------------------


@dataclass(frozen=True)
class AdminTarget:
    """Where the admin API is and how to authenticate to it."""

    address: str  # "unix:/path" or "host:port"
    socket: Path | None = None
    ca: bytes | None = None
    token: str | None = None
    server_name: str | None = None

    def channel(self) -> grpc.aio.Channel:
        """A channel to the admin API (TLS and token for TCP)."""
        if self.socket is not None:
            return grpc.aio.insecure_channel(self.address)
        credentials = grpc.ssl_channel_credentials(root_certificates=self.ca)
        if self.token is not None:
            credentials = grpc.composite_channel_credentials(
                credentials, grpc.access_token_call_credentials(self.token)
            )
        options = []
        if self.server_name:
            options.append(("grpc.ssl_target_name_override", self.server_name))
        return grpc.aio.secure_channel(self.address, credentials, options=options)


def admin_target(args: argparse.Namespace) -> AdminTarget:
    """The admin address from ``--admin`` or else from the config file's state directory."""
    if args.admin is None:
        config = read_config(Path(args.config))
        socket = config.admin.socket
        if not socket.exists():
            raise CliError(f"no admin socket at {socket}: is `ilp-host run` running?")
        return AdminTarget(config.admin.socket_target, socket=socket)
    if args.admin.startswith("unix:"):
        socket = Path(args.admin.removeprefix("unix:").removeprefix("//"))
        if not socket.exists():
            raise CliError(f"no admin socket at {socket}: is `ilp-host run` running?")
        return AdminTarget(f"unix:{socket}", socket=socket)
    token = ca = None
    try:
        if args.token_file is not None:
            token = Path(args.token_file).read_text(encoding="utf-8").strip()
        if args.ca is not None:
            ca = Path(args.ca).read_bytes()
    except OSError as exc:
        raise CliError(f"cannot read {exc.filename}: {exc.strerror}", EXIT_USAGE) from exc
    return AdminTarget(args.admin, ca=ca, token=token, server_name=args.server_name)


def unreachable(target: AdminTarget, error: grpc.aio.AioRpcError) -> CliError:
    """The message for a failed call: names the address and the likely cause."""
    code = error.code()
    if code == grpc.StatusCode.UNAVAILABLE:
        hint = ": is `ilp-host run` running?" if target.socket is not None else ""
        return CliError(
            f"cannot reach the host's admin API at {target.address} ({error.details()}){hint}"
        )
    if code == grpc.StatusCode.UNAUTHENTICATED:
        return CliError(f"{target.address} refused the call: {error.details()} (see --token-file)")
    return CliError(f"{target.address}: {code.name}: {error.details()}")


# -- status --------------------------------------------------------------------------------


async def _status(args: argparse.Namespace) -> int:
    target = admin_target(args)
    async with target.channel() as channel:
        stub = admin_pb2_grpc.HostAdminStub(channel)
        try:
            listing = await stub.ListAdaptors(admin_pb2.ListAdaptorsRequest(), timeout=args.timeout)
            if args.json and not args.watch:
                print(json_format.MessageToJson(listing, indent=2))
            elif not args.watch:
                print(render_status(listing.adaptors, datetime.now(UTC)))
            else:
                await _watch(stub, listing, json_lines=args.json)
        except grpc.aio.AioRpcError as exc:
            raise unreachable(target, exc) from exc
    return EXIT_OK


async def _watch(
    stub: admin_pb2_grpc.HostAdminAsyncStub,
    listing: admin_pb2.ListAdaptorsResponse,
    *,
    json_lines: bool,
) -> None:
    """Print the table once every adaptor was seen on the stream, then one line per change."""
    names = {adaptor.name for adaptor in listing.adaptors}
    known: dict[str, admin_pb2.Adaptor] = {}
    table_printed = not names
    if table_printed and not json_lines:
        print(render_status([], datetime.now(UTC)), flush=True)
    async for message in stub.WatchAdaptors(admin_pb2.WatchAdaptorsRequest()):
        adaptor = message.adaptor
        if json_lines:
            print(json_format.MessageToJson(message, indent=None), flush=True)
            continue
        if table_printed:
            stamp = datetime.now().strftime("%H:%M:%S")
            for line in describe_change(known.get(adaptor.name), adaptor):
                print(f"{stamp} {line}", flush=True)
        known[adaptor.name] = adaptor
        if not table_printed and names <= known.keys():
            order = [adaptor.name for adaptor in listing.adaptors]
            ordered = sorted(
                known.values(), key=lambda a: order.index(a.name) if a.name in order else len(order)
            )
            print(render_status(ordered, datetime.now(UTC)), flush=True)
            table_printed = True
    print("the host closed the watch (it is stopping)", file=sys.stderr)


# -- health --------------------------------------------------------------------------------


async def _health(args: argparse.Namespace) -> int:
    target = admin_target(args)
    service = args.name or ""
    label = args.name or "host"
    async with target.channel() as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = await stub.Check(
                health_pb2.HealthCheckRequest(service=service), timeout=args.timeout
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                raise CliError(f"{label}: unknown service (no adaptor of that name)") from exc
            raise unreachable(target, exc) from exc
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    print(f"{label}: {status}")
    return EXIT_OK if reply.status == health_pb2.HealthCheckResponse.SERVING else EXIT_FAILURE


# -- run and demo --------------------------------------------------------------------------


def _run(args: argparse.Namespace) -> int:
    config = read_config(Path(args.config))
    logging.basicConfig(
        stream=sys.stderr,
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
    )
    # Imported here so that `status` and `health` do not load the supervisor.
    from host.app import HostError, run_host

    try:
        return asyncio.run(run_host(config))
    except HostError as exc:
        raise CliError(str(exc)) from exc


def _demo(args: argparse.Namespace) -> int:
    try:
        demo = importlib.import_module("host.demo")
    except ModuleNotFoundError as exc:
        if exc.name != "host.demo":
            raise
        raise CliError("the demo is not part of this installation (no host.demo module)") from exc
    status: int | None = demo.main()
    return status or EXIT_OK


# -- the parser ----------------------------------------------------------------------------


def _add_admin_options(parser: argparse.ArgumentParser) -> None:
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "-c",
        "--config",
        default=DEFAULT_CONFIG,
        help=f"the host's config file, to find its admin socket (default {DEFAULT_CONFIG})",
    )
    where.add_argument(
        "--admin",
        metavar="ADDR",
        help="the admin address instead: unix:/path/admin.sock or host:port (TLS)",
    )
    parser.add_argument("--token-file", help="bearer token for a TCP admin address")
    parser.add_argument("--ca", help="CA certificate (PEM) to verify a TCP admin address")
    parser.add_argument("--server-name", help="expected name in the TLS certificate")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds per call (default 10)")


def build_parser() -> argparse.ArgumentParser:
    """The ``ilp-host`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="ilp-host", description="The Interledger settlement host."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="run the host until SIGTERM or SIGINT")
    run.add_argument("-c", "--config", default=DEFAULT_CONFIG, help="config file (TOML)")
    run.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="stderr log level (default info)",
    )
    run.set_defaults(handler=_run)

    status = commands.add_parser("status", help="show the adaptors and their connections")
    _add_admin_options(status)
    status.add_argument("--json", action="store_true", help="print the admin API's JSON")
    status.add_argument("--watch", action="store_true", help="follow changes until Ctrl-C")
    status.set_defaults(handler=_sync(_status))

    health = commands.add_parser(
        "health", help="check health: exit 0 if SERVING, else 1 (like grpc_health_probe)"
    )
    health.add_argument("name", nargs="?", help="an adaptor's name (default: the whole host)")
    _add_admin_options(health)
    health.set_defaults(handler=_sync(_health))

    demo = commands.add_parser("demo", help="run the demonstration")
    demo.set_defaults(handler=_demo)
    return parser


def _sync(
    command: Callable[[argparse.Namespace], Coroutine[Any, Any, int]],
) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        return asyncio.run(command(args))

    return run


def main(argv: list[str] | None = None) -> int:
    """Run ``ilp-host`` with ``argv`` (default: the process's); returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        status: int = args.handler(args)
    except ConfigError as exc:
        print(f"ilp-host: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except CliError as exc:
        print(f"ilp-host: {exc}", file=sys.stderr)
        return exc.status
    except KeyboardInterrupt:
        return EXIT_OK if getattr(args, "watch", False) else EXIT_FAILURE
    return status


if __name__ == "__main__":
    sys.exit(main())
