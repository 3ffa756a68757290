"""The ``ilp-host`` command line.

Commands: ``run`` (the host in one process), ``connector`` and ``engine`` (the same host split in
two processes), ``status`` (adaptors and their connections, and peer links when a connector
runs), ``health`` (a grpc.health.v1 probe, like grpc_health_probe), the settlement engine's
``accounts``, ``settlements``, ``settle`` and ``retry``, the connector's ``peers``, ``routes``,
``send`` (test packets) and ``reconcile`` (the books compared with a peer's), and ``demo``.
Exit status: 0 ok, 1 runtime failure (including "host not running" and every status the server
refuses a call with, printed with its message), 2 usage or configuration error. ``health``
tells apart what grpc_health_probe tells apart: 3 the host could not be reached or the check
failed, 4 NOT_SERVING (or no such adaptor).

``--json`` prints the admin API's messages with the .proto's field names (``last_error``),
as grpcurl does. A reader that closes the pipe early (``ilp-host status | head -3``) ends
the command quietly.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import grpc
from google.protobuf import json_format
from grpc_health.v1 import health_pb2, health_pb2_grpc

from host import logformat
from host.config import ConfigError, connector_api_target, for_role, for_run, read_config
from host.conformance import cli as conformance_cli
from host.demo import command as demo
from host.pb.ilphost.admin.v1 import admin_pb2, admin_pb2_grpc
from host.simledger import cli as ledger_cli
from host.status import (
    describe_change,
    render_accounts,
    render_connector_link,
    render_peers,
    render_routes,
    render_settlements,
    render_status,
    render_table,
    send_progress_line,
    send_summary,
)
from sdk import channels

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
#: ``ilp-host health``: no answer (the host is not there, or the call failed).
EXIT_UNREACHABLE = 3
#: ``ilp-host health``: the answer is NOT_SERVING, or the service is unknown.
EXIT_NOT_SERVING = 4
DEFAULT_CONFIG = "host.toml"
_R = TypeVar("_R")


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
            return channels.aio_channel(self.address)
        credentials = grpc.ssl_channel_credentials(root_certificates=self.ca)
        if self.token is not None:
            credentials = grpc.composite_channel_credentials(
                credentials, grpc.access_token_call_credentials(self.token)
            )
        options = []
        if self.server_name:
            options.append(("grpc.ssl_target_name_override", self.server_name))
        return channels.aio_channel(self.address, credentials, options)


def admin_target(args: argparse.Namespace) -> AdminTarget:
    """The admin address from ``--admin`` or else from the config file's state directory.

    A host split in two processes (``ilp-host connector`` and ``ilp-host engine``) has an admin
    socket per process: the command's ``admin_role`` says which one it wants.
    """
    if args.admin is None:
        config = read_config(Path(args.config))
        sockets = [config.admin.socket]
        with contextlib.suppress(ConfigError):
            sockets.append(for_role(config, getattr(args, "admin_role", "engine")).admin.socket)
        for socket in sockets:
            if socket.exists():
                return AdminTarget(f"unix:{socket}", socket=socket)
        raise CliError(
            f"no admin socket at {' or '.join(map(str, sockets))}: is the host running "
            "(`ilp-host run`, or `ilp-host connector` and `ilp-host engine`)?"
        )
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
            peers = link = None
            if not args.watch:
                peers = await _if_present(
                    stub.ListPeers(admin_pb2.ListPeersRequest(), timeout=args.timeout)
                )
                link = await _if_present(
                    stub.GetConnectorLink(admin_pb2.GetConnectorLinkRequest(), timeout=args.timeout)
                )
            if args.json and not args.watch:
                document = _as_dict(listing)
                if peers is not None:
                    document["connector"] = _as_dict(peers)
                if link is not None:
                    document["connector_link"] = _as_dict(link)
                print(json.dumps(document, indent=2))
            elif not args.watch:
                print(render_status(listing.adaptors, datetime.now(UTC)))
                if peers is not None:
                    print(f"\n{render_peers(peers, datetime.now(UTC))}")
                if link is not None:
                    print(f"\n{render_connector_link(link)}")
            else:
                if await _until_interrupted(_watch(stub, listing, json_lines=args.json)):
                    return EXIT_OK
                raise CliError("the host closed the watch (it is stopping)")
        except grpc.aio.AioRpcError as exc:
            raise unreachable(target, exc) from exc
    return EXIT_OK


async def _until_interrupted(work: Coroutine[Any, Any, None]) -> bool:
    """Run ``work`` until it ends (False) or SIGINT/SIGTERM arrives (True).

    The signals are the loop's own here rather than asyncio.run's KeyboardInterrupt: that one
    cancels the whole command, channel teardown included, and a watcher whose parent ignored
    SIGINT would inherit the ignoring and never stop.
    """
    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(work)
    interrupted = False

    def interrupt() -> None:
        nonlocal interrupted
        interrupted = True
        task.cancel()

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, interrupt)
    try:
        await task
    except asyncio.CancelledError:
        if not interrupted:
            raise
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
    return interrupted


async def _if_present(call: Awaitable[_R]) -> _R | None:
    """The answer of a call about a part the host may not run (its connector, or an engine
    apart from its connector): None when the host says it has none."""
    try:
        return await call
    except grpc.aio.AioRpcError as exc:
        if exc.code() in (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.UNIMPLEMENTED):
            return None
        raise


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
            print(_as_json(message, indent=None), flush=True)
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


# -- health --------------------------------------------------------------------------------


async def _health(args: argparse.Namespace) -> int:
    try:
        target = admin_target(args)
    except CliError as exc:
        raise CliError(str(exc), EXIT_UNREACHABLE) from exc
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
                raise CliError(
                    f"{label}: unknown service (no adaptor of that name)", EXIT_NOT_SERVING
                ) from exc
            raise CliError(str(unreachable(target, exc)), EXIT_UNREACHABLE) from exc
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    print(f"{label}: {status}")
    return EXIT_OK if reply.status == health_pb2.HealthCheckResponse.SERVING else EXIT_NOT_SERVING


# -- accounts, settlements, settle, retry (the engine) -------------------------------------


@contextlib.asynccontextmanager
async def _admin(args: argparse.Namespace) -> AsyncIterator[admin_pb2_grpc.HostAdminAsyncStub]:
    """A HostAdmin stub; a failed call becomes a CliError with the server's status."""
    target = admin_target(args)
    async with target.channel() as channel:
        try:
            yield admin_pb2_grpc.HostAdminStub(channel)
        except grpc.aio.AioRpcError as exc:
            raise unreachable(target, exc) from exc


def _as_dict(message: Any) -> dict[str, Any]:
    """A message as JSON-ready data, with the .proto's field names (as grpcurl prints them)."""
    document: dict[str, Any] = json_format.MessageToDict(message, preserving_proto_field_name=True)
    return document


def _as_json(message: Any, indent: int | None = 2) -> str:
    return json_format.MessageToJson(message, indent=indent, preserving_proto_field_name=True)


def _print_json(message: Any) -> None:
    print(_as_json(message))


async def _accounts(args: argparse.Namespace) -> int:
    async with _admin(args) as stub:
        listing = await stub.ListAccounts(admin_pb2.ListAccountsRequest(), timeout=args.timeout)
    if args.json:
        _print_json(listing)
    else:
        print(render_accounts(listing.accounts))
    return EXIT_OK


async def _settlements(args: argparse.Namespace) -> int:
    request = admin_pb2.ListSettlementsRequest(account_id=args.account or "", limit=args.limit)
    async with _admin(args) as stub:
        listing = await stub.ListSettlements(request, timeout=args.timeout)
    if args.json:
        _print_json(listing)
    else:
        print(render_settlements(listing.settlements, datetime.now(UTC), wide=args.wide))
    return EXIT_OK


def _print_settlement(
    reply: admin_pb2.SettleResponse | admin_pb2.RetrySettlementResponse, *, as_json: bool
) -> None:
    if as_json:
        _print_json(reply)
    else:
        print(render_settlements([reply.settlement], datetime.now(UTC), wide=True))


async def _settle(args: argparse.Namespace) -> int:
    request = admin_pb2.SettleRequest(account_id=args.account, idempotency_key=args.key or "")
    async with _admin(args) as stub:
        if args.amount is not None:
            # The amount is at the account's scale; the server checks it (sign, digits, zero).
            found = await stub.GetAccount(
                admin_pb2.GetAccountRequest(account_id=args.account), timeout=args.timeout
            )
            request.amount.value = args.amount
            request.amount.scale = found.account.asset_scale
        reply = await stub.Settle(request, timeout=args.timeout)
    _print_settlement(reply, as_json=args.json)
    return EXIT_OK


async def _retry(args: argparse.Namespace) -> int:
    request = admin_pb2.RetrySettlementRequest(settlement_id=args.settlement_id)
    async with _admin(args) as stub:
        reply = await stub.RetrySettlement(request, timeout=args.timeout)
    _print_settlement(reply, as_json=args.json)
    return EXIT_OK


# -- peers and send (the connector) --------------------------------------------------------


async def _peers(args: argparse.Namespace) -> int:
    async with _admin(args) as stub:
        listing = await stub.ListPeers(admin_pb2.ListPeersRequest(), timeout=args.timeout)
    if args.json:
        _print_json(listing)
    else:
        print(render_peers(listing, datetime.now(UTC)))
    return EXIT_OK


async def _routes(args: argparse.Namespace) -> int:
    async with _admin(args) as stub:
        listing = await stub.ListRoutes(admin_pb2.ListRoutesRequest(), timeout=args.timeout)
    if args.json:
        _print_json(listing)
    else:
        print(render_routes(listing))
    return EXIT_OK


async def _send(args: argparse.Namespace) -> int:
    request = admin_pb2.SendPacketsRequest(
        destination=args.destination,
        amount=args.amount,
        count=args.count,
        concurrency=args.concurrency,
    )
    live = sys.stdout.isatty() and not args.json
    last: admin_pb2.SendPacketsResponse | None = None
    async with _admin(args) as stub:
        # No deadline: a long run streams progress for as long as it takes.
        async for message in stub.SendPackets(request):
            last = message
            if args.json:
                print(_as_json(message, indent=None), flush=True)
            elif not message.done:
                line = send_progress_line(message, args.count)
                print(f"\r{line}" if live else line, end="" if live else "\n", flush=True)
    if last is None or not last.done:
        raise CliError("the host ended the send without a summary (is it stopping?)")
    if not args.json:
        if live:
            print(f"\r{send_progress_line(last, args.count)}")
        print(send_summary(last))
    return EXIT_OK if last.fulfilled == last.sent == args.count else EXIT_FAILURE


# -- reconcile (the connector) -------------------------------------------------------------

#: Outcomes ``ilp-host reconcile`` exits 0 with: the clearing books agree, or the peer cannot
#: tell (a connector of another project).
_RECONCILED = frozenset({"agree", "settling", "unsupported"})
#: Between two attempts while packets are in flight.
_BUSY_PAUSE = 0.2


async def _reconcile(args: argparse.Namespace) -> int:
    request = admin_pb2.ReconcileRequest(peer=args.peer)
    async with _admin(args) as stub:
        for attempt in range(args.attempts):
            if attempt:
                await asyncio.sleep(_BUSY_PAUSE)
            reply = await stub.Reconcile(request, timeout=args.timeout)
            if reply.reconciliation.status != "busy":
                break
    outcome = reply.reconciliation
    if args.json:
        _print_json(outcome)
    else:
        print(_render_reconciliation(outcome))
    return EXIT_OK if outcome.status in _RECONCILED else EXIT_FAILURE


def _render_reconciliation(outcome: admin_pb2.Reconciliation) -> str:
    lines = [
        f"peer {outcome.peer}: {outcome.status}" + (f": {outcome.detail}" if outcome.detail else "")
    ]
    if not outcome.HasField("ours"):
        return lines[0]
    rows: list[tuple[str, ...]] = [("", "BALANCE", "SETTLED OUT", "SETTLED IN", "IN FLIGHT IN/OUT")]
    for name, totals in (("ours", outcome.ours), ("theirs", outcome.theirs)):
        rows.append(
            (
                name,
                totals.balance.value,
                totals.settled_out.value,
                totals.settled_in.value,
                f"{totals.in_flight_in.value}/{totals.in_flight_out.value}",
            )
        )
    lines.append(render_table(rows))
    lines.append(
        f"clearing difference {outcome.clearing_difference.value}; settlements in transit: "
        f"to the peer {outcome.to_peer_in_transit.value}, from the peer "
        f"{outcome.from_peer_in_transit.value} (at scale {outcome.clearing_difference.scale})"
    )
    return "\n".join(lines)


# -- run and demo --------------------------------------------------------------------------


def _run(args: argparse.Namespace) -> int:
    config = read_config(Path(args.config))
    logformat.configure(args.log_level, args.log_format)
    # Imported here so that `status` and `health` do not load the supervisor.
    from host.app import HostError, run_host

    mode = args.command
    connector = None
    if mode == "run":
        config = for_run(config)
    else:
        if mode == "engine":
            connector = args.connector or connector_api_target(config)
        config = for_role(config, mode)
    try:
        return asyncio.run(run_host(config, mode=mode, connector_address=connector))
    except HostError as exc:
        raise CliError(str(exc)) from exc


def _demo(args: argparse.Namespace) -> int:
    return demo.run(args)


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

    run = commands.add_parser(
        "run", help="run the host, connector and engine in one process, until SIGTERM or SIGINT"
    )
    connector = commands.add_parser(
        "connector",
        help="run the connector alone, serving the Connector API to an `ilp-host engine`",
    )
    engine = commands.add_parser(
        "engine",
        help="run the engine and the adaptors, bound to an `ilp-host connector`",
    )
    engine.add_argument(
        "--connector",
        metavar="ADDRESS",
        help="the Connector API: unix:/path or host:port (default: where `ilp-host connector` "
        "serves it for the same config file)",
    )
    for command in (run, connector, engine):
        command.add_argument("-c", "--config", default=DEFAULT_CONFIG, help="config file (TOML)")
        command.add_argument(
            "--log-level",
            default="info",
            choices=["debug", "info", "warning", "error"],
            help="stderr log level (default info)",
        )
        command.add_argument(
            "--log-format",
            default="text",
            choices=["text", "json"],
            help="stderr log lines as text (default) or one JSON object each",
        )
        command.set_defaults(handler=_run)

    status = commands.add_parser("status", help="show the adaptors and their connections")
    _add_admin_options(status)
    status.add_argument("--json", action="store_true", help="print the admin API's JSON")
    status.add_argument("--watch", action="store_true", help="follow changes until Ctrl-C")
    status.set_defaults(handler=_sync(_status))

    health = commands.add_parser(
        "health",
        help="check health: exit 0 if SERVING, 4 if NOT_SERVING, 3 if the host cannot be "
        "reached (like grpc_health_probe)",
    )
    health.add_argument("name", nargs="?", help="an adaptor's name (default: the whole host)")
    _add_admin_options(health)
    health.set_defaults(handler=_sync(_health))

    accounts = commands.add_parser(
        "accounts", help="show the peer accounts: clearing balances and settlement state"
    )
    _add_admin_options(accounts)
    accounts.add_argument("--json", action="store_true", help="print the admin API's JSON")
    accounts.set_defaults(handler=_sync(_accounts))

    settlements = commands.add_parser("settlements", help="show settlements, newest first")
    _add_admin_options(settlements)
    settlements.add_argument("--account", metavar="ID", help="only this account's")
    settlements.add_argument(
        "--limit", type=_count, default=20, help="at most this many (default 20)"
    )
    settlements.add_argument("--wide", action="store_true", help="show whole settlement ids")
    settlements.add_argument("--json", action="store_true", help="print the admin API's JSON")
    settlements.set_defaults(handler=_sync(_settlements))

    settle = commands.add_parser(
        "settle", help="settle an account now: by --amount, or down to its settle_to"
    )
    settle.add_argument("account", metavar="ACCOUNT", help="the account's id")
    settle.add_argument(
        "--amount",
        metavar="N",
        help="an integer at the account's scale (1000000 is 1 USD at scale 6); "
        "default: what brings the balance back to settle_to",
    )
    settle.add_argument(
        "--key", metavar="K", help="idempotency key: the same key settles only once"
    )
    _add_admin_options(settle)
    settle.add_argument("--json", action="store_true", help="print the admin API's JSON")
    settle.set_defaults(handler=_sync(_settle))

    retry = commands.add_parser(
        "retry", help="send a FAILED settlement again, with its original idempotency key"
    )
    retry.add_argument("settlement_id", metavar="SETTLEMENT_ID", help="the whole id (--wide)")
    _add_admin_options(retry)
    retry.add_argument("--json", action="store_true", help="print the admin API's JSON")
    retry.set_defaults(handler=_sync(_retry))

    peers = commands.add_parser("peers", help="show the connector's peers and their links")
    _add_admin_options(peers)
    peers.add_argument("--json", action="store_true", help="print the admin API's JSON")
    peers.set_defaults(handler=_sync(_peers), admin_role="connector")

    routes = commands.add_parser(
        "routes", help="show the connector's routing table (configured, local and learned)"
    )
    _add_admin_options(routes)
    routes.add_argument("--json", action="store_true", help="print the admin API's JSON")
    routes.set_defaults(handler=_sync(_routes), admin_role="connector")

    send = commands.add_parser(
        "send",
        help="send test packets through the connector (not a payment protocol)",
        description="Send COUNT test packets of AMOUNT to DESTINATION through this host's "
        "connector, showing progress, then a summary. This exercises the peer links, the "
        "balance middleware and settlement; it is not a payment protocol: the packets carry "
        "their own fulfillment, which only a host's test receiver honours. Exit 0 when every "
        "packet was fulfilled, 1 otherwise.",
    )
    send.add_argument("destination", metavar="DESTINATION", help="an ILP address, e.g. test.bob")
    send.add_argument(
        "--amount",
        type=_whole(64),
        required=True,
        metavar="N",
        help="per packet, in the first hop account's units (its scale)",
    )
    send.add_argument("--count", type=_count, required=True, metavar="N", help="how many packets")
    send.add_argument(
        "--concurrency", type=_count, default=1, metavar="N", help="in flight at once (default 1)"
    )
    _add_admin_options(send)
    send.add_argument("--json", action="store_true", help="print each progress message as JSON")
    send.set_defaults(handler=_sync(_send), admin_role="connector")

    reconcile = commands.add_parser(
        "reconcile",
        help="compare this host's books of a peer's account with the peer's (peer.reconcile)",
        description="Ask PEER for its totals of our bilateral account and compare them with "
        "ours: agree, settling (settlements in transit), differ (with the exact difference), "
        "busy (packets in flight: asked again, up to --attempts times), unsupported (the peer "
        "does not speak peer.reconcile) or failed (the peer could not be asked). Exit 0 for "
        "agree, settling and unsupported, 1 otherwise.",
    )
    reconcile.add_argument("peer", metavar="PEER", help="the peer's account id")
    reconcile.add_argument(
        "--attempts",
        type=_count,
        default=5,
        metavar="N",
        help="how often to ask while packets are in flight (default 5)",
    )
    _add_admin_options(reconcile)
    reconcile.add_argument("--json", action="store_true", help="print the admin API's JSON")
    reconcile.set_defaults(handler=_sync(_reconcile), admin_role="connector")

    demo_command = commands.add_parser(
        "demo",
        help="two hosts settle on a simulated ledger until the books reconcile",
        description=demo.DESCRIPTION,
    )
    demo.add_arguments(demo_command)
    demo_command.set_defaults(handler=_demo)

    conformance_cli.add_parser(commands).set_defaults(handler=conformance_cli.run)
    ledger_cli.add_parser(commands)
    return parser


def _whole(bits: int) -> Callable[[str], int]:
    """An option's parser: a whole number that fits the message field (``bits`` unsigned).

    Only what the field cannot carry is refused here; the server checks its own limits.
    """

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if not 0 <= value < 2**bits:
            raise argparse.ArgumentTypeError(f"must be 0..{2**bits - 1}, got {value}")
        return value

    return parse


_count = _whole(32)


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
        sys.stdout.flush()  # here, where a closed pipe is handled, not at the interpreter's exit
    except ConfigError as exc:
        print(f"ilp-host: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except CliError as exc:
        print(f"ilp-host: {exc}", file=sys.stderr)
        return exc.status
    except KeyboardInterrupt:
        return EXIT_OK if getattr(args, "watch", False) else EXIT_FAILURE
    except BrokenPipeError:
        return _reader_left()
    return status


def _reader_left() -> int:
    """stdout's reader closed the pipe (``| head``): stop quietly, as ``cat`` would.

    stdout goes to /dev/null so that the interpreter's last flush does not fail again.
    """
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
