"""``ilp-host demo``: two peered hosts settle on a simulated ledger, and the books reconcile.

What it runs, all real processes on this machine: the simulated ledger (``python -m
host.simledger``), and two hosts, Alice and Bob (``ilp-host run``; or, with ``--alice-engine
external``/``--bob-engine external``, ``ilp-host connector`` and ``ilp-host engine`` from the
same config: proposal 2), each supervising a simledger adaptor (Python by default; ``--alice
go``, ``--bob node``... pick another language, ``--alice-adaptor "CMD ARGS"`` any program that
speaks the contract and the simledger peer messages), peered over ILP-over-HTTP on loopback.
Alice's ledger account is funded; Alice
then sends test packets to Bob through her connector until her engine has settled several
times on the ledger. The packets exercise links and settlement; they are not a payment protocol.

At the end it prints both sides' clearing balances and both ledger balances, and checks that
they reconcile exactly (see :func:`reconcile`). Exit status 0 only when they do.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO, TypeVar

import grpc

from host.demo_ethereum import KINDS as ETHEREUM_KINDS
from host.demo_ethereum import EthereumDemo, ethereum_chain
from host.pb.ilphost.admin.v1 import admin_pb2, admin_pb2_grpc
from host.pb.ilphost.simledger.v1 import simledger_pb2, simledger_pb2_grpc
from host.simledger.process import start_ledger
from sdk import channels
from sdk.pb.ilphost.types.v1 import types_pb2

REPO = Path(__file__).resolve().parents[1]
_ADAPTOR_DIR = REPO / "adaptors"
#: The in-tree simledger adaptor of each language: the command that runs it ("python" is the
#: host's own interpreter). Any of them can settle with any other; the choices of ``--alice``
#: and ``--bob`` are this table's keys.
ADAPTORS: dict[str, tuple[str, ...]] = {
    "python": ("python", str(_ADAPTOR_DIR / "simledger-python" / "adaptor.py")),
    "node": ("node", str(_ADAPTOR_DIR / "simledger-node" / "adaptor.js")),
    "go": (str(_ADAPTOR_DIR / "simledger-go" / "bin" / "simledger-go"),),
    "rust": (str(_ADAPTOR_DIR / "simledger-rust" / "target" / "debug" / "simledger-rust"),),
}
ACCOUNT_SCALE = 6  # the ILP accounts count in micro-dollars...
LEDGER_SCALE = 2  # ...the ledger in cents: conversions leave leftovers, kept and settled later
FUNDING = 1_000_000  # cents minted into Alice's ledger account
PACKET_AMOUNT = 12_345  # micro-dollars per packet
SETTLE_THRESHOLD = -100_000
MIN_BALANCE = -2_000_000
MAX_BALANCE = 2_000_000
DEADLINE = 60.0  # for each wait; generous, the machine may be busy
_T = TypeVar("_T")

_CONFIG = """\
[host]
state_dir = "{name}"

[[adaptor]]
name = "{adaptor_name}"
{adaptor}

[[account]]
id = "{peer}"
adaptor = "{adaptor_name}"
asset_code = "{asset_code}"
asset_scale = {account_scale}
settle_threshold = {threshold}
settle_to = 0
min_balance = {min_balance}
max_balance = {max_balance}

[connector]
address = "test.{name}"
port = {port}

[[peer]]
id = "{peer}"
url = "http://127.0.0.1:{peer_port}/"
address = "test.{peer}"
incoming_token = "demo-token-{peer}-to-{name}"
outgoing_token = "demo-token-{name}-to-{peer}"
"""


#: What ``ilp-host demo --help`` says it does.
DESCRIPTION = __doc__.split("\n\n")[0].replace("``", "")


class DemoError(RuntimeError):
    """The demo could not run to the end; the message says where it stopped."""


@dataclass(frozen=True)
class AdaptorCommand:
    """What runs one side's adaptor: its command, the directory it runs in (None: the side's
    config directory), and how the demo names it."""

    label: str
    argv: tuple[str, ...]
    cwd: Path | None = None

    @classmethod
    def of_language(cls, language: str) -> AdaptorCommand:
        """The in-tree simledger adaptor written in ``language`` (a key of ADAPTORS)."""
        return cls(f"{language} adaptor", ADAPTORS[language])

    @classmethod
    def parse(cls, text: str, cwd: Path) -> AdaptorCommand:
        """A command line as a shell splits it, run from ``cwd`` (where the operator typed it,
        so relative paths mean what they meant there); ValueError if it is not one."""
        try:
            argv = tuple(shlex.split(text))
        except ValueError as exc:
            raise ValueError(f"{text!r}: {exc}") from exc
        if not argv:
            raise ValueError("the adaptor command is empty")
        program = argv[0]
        if "/" in program:  # the host resolves a relative program against its config directory
            argv = (str((cwd / program).absolute()), *argv[1:])
        return cls(f"adaptor {shlex.join(argv)!r}", argv, cwd.absolute())


def _adaptor(choice: str | AdaptorCommand) -> AdaptorCommand:
    return choice if isinstance(choice, AdaptorCommand) else AdaptorCommand.of_language(choice)


#: Where a host's engine runs: in the connector's process (proposal 1, ``ilp-host run``) or
#: in a process of its own (proposal 2), and the processes that makes.
ENGINE_PLACES = {"internal": ("run",), "external": ("connector", "engine")}


@dataclass
class Host:
    """One running host, its processes (see ENGINE_PLACES) and its admin clients."""

    name: str
    config: Path
    log: Path
    processes: dict[str, subprocess.Popen[bytes]]
    channels: list[grpc.Channel] = field(default_factory=list)
    stubs: dict[str, admin_pb2_grpc.HostAdminStub] = field(default_factory=dict)

    @property
    def admin(self) -> admin_pb2_grpc.HostAdminStub:
        """The engine's admin API: adaptors, accounts, settlements."""
        return self.stubs["engine" if "engine" in self.stubs else "run"]

    @property
    def connector(self) -> admin_pb2_grpc.HostAdminStub:
        """The connector's admin API (peers, packets): the engine's unless the host is split."""
        return self.stubs["connector" if "connector" in self.stubs else "run"]

    def connect(self) -> None:
        """Wait until each process serves its admin socket, then make its channel."""
        for role, process in self.processes.items():
            state = self.config.parent / self.name
            socket = state if role == "run" else state / role
            wait_until_listening(socket / "admin.sock", process)
            self.channels.append(channels.blocking_channel(f"unix:{socket / 'admin.sock'}"))
            self.stubs[role] = admin_pb2_grpc.HostAdminStub(self.channels[-1])

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log.read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return "\n".join(f"    {line}" for line in text[-lines:])


@dataclass
class Books:
    """Everything the reconciliation looks at, read once the settlements are quiet."""

    sent: int  # micro-dollars fulfilled from Alice to Bob
    alice_balance: int  # Alice's clearing balance of account "bob"
    alice_leftover: int
    alice_completed: list[admin_pb2.Settlement] = field(default_factory=list)
    alice_unfinished: list[admin_pb2.Settlement] = field(default_factory=list)
    bob_balance: int = 0  # Bob's clearing balance of account "alice"
    bob_credited: list[admin_pb2.Settlement] = field(default_factory=list)
    alice_ledger: int = 0  # cents
    bob_ledger: int = 0


def free_ports(count: int) -> list[int]:
    """Ports the kernel just handed out on loopback (the hosts bind them right after)."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def write_config(
    directory: Path,
    name: str,
    peer: str,
    port: int,
    peer_port: int,
    ledger: str,
    *,
    threshold: int = SETTLE_THRESHOLD,
    adaptor: str | AdaptorCommand = "python",
    extra: str = "",
    chain: EthereumDemo | None = None,
) -> Path:
    """The host config of one side, its adaptor a language of ADAPTORS or any command; or,
    with ``chain``, the Ethereum adaptor on it. ``extra`` is added (more tables, e.g.
    ``[metrics]``)."""
    chosen = _adaptor(adaptor)
    path = directory / f"{name}.toml"
    if chain is not None:
        block, asset = chain.adaptor_toml(name), (chain.asset_code, chain.account_scale)
    else:
        # TOML's basic strings are JSON's strings. The state file's path is absolute: an
        # adaptor of --SIDE-adaptor runs in the operator's directory.
        state_db = json.dumps(str(directory.absolute() / name / "adaptor.db"))
        block = (
            f"command = {json.dumps(list(chosen.argv))}\n"
            f"cwd = {json.dumps(str(chosen.cwd or '.'))}\n"
            f'env = {{ ILP_SIMLEDGER_ADDR = "{ledger}", ILP_SIMLEDGER_ACCOUNT = "{name}-ledger", '
            f"ILP_ADAPTOR_STATE_DB = {state_db} }}"
        )
        asset = ("USD", ACCOUNT_SCALE)
    path.write_text(
        extra
        + "\n"
        + _CONFIG.format(
            name=name,
            peer=peer,
            port=port,
            peer_port=peer_port,
            adaptor=block,
            adaptor_name="ethereum" if chain is not None else "simledger",
            asset_code=asset[0],
            account_scale=asset[1],
            threshold=threshold,
            min_balance=MIN_BALANCE,
            max_balance=MAX_BALANCE,
        )
    )
    return path


def wait_until_listening(
    path: Path, process: subprocess.Popen[bytes], deadline: float = DEADLINE
) -> None:
    """Return once a process accepts connections on the unix socket ``path``.

    Only then is a gRPC channel made to it: a channel whose first attempts fail (no file yet,
    or the file a killed predecessor left) can stay failing long after the socket is up.
    DemoError if the process exits first or the deadline passes.
    """
    limit = time.monotonic() + deadline
    while time.monotonic() < limit:
        if process.poll() is not None:
            raise DemoError(f"the process exited ({process.returncode}) before listening on {path}")
        with socket.socket(socket.AF_UNIX) as probe:
            try:
                probe.connect(str(path))
                return
            except OSError:
                pass
        time.sleep(0.05)
    raise DemoError(f"nothing listens on {path} after {deadline:g} s")


def start_host(
    directory: Path, name: str, config: Path, engine: str = "internal", log_format: str = "text"
) -> Host:
    """Start the host's processes (``ilp-host run``, or the connector and the engine) without
    waiting for them: :meth:`Host.connect` does. The config must be in ``directory``."""
    log = directory / f"{name}.log"
    processes: dict[str, subprocess.Popen[bytes]] = {}
    with log.open("wb") as out:
        for role in ENGINE_PLACES[engine]:
            processes[role] = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "host.cli",
                    role,
                    "-c",
                    str(config),
                    "--log-format",
                    log_format,
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=directory,
            )
    return Host(name, config, log, processes)


def stop_process(process: subprocess.Popen[bytes], grace: float = 30.0) -> None:
    """SIGTERM (a graceful stop), then SIGKILL if it is still running after ``grace`` seconds."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def stop_host(host: Host) -> None:
    """Stop each process, the engine before the connector."""
    for channel in host.channels:
        channel.close()
    for process in reversed(host.processes.values()):
        stop_process(process)


def wait_for(what: str, check: Callable[[], _T | None], hosts: Sequence[Host] = ()) -> _T:
    """Poll ``check`` until it returns a value; DemoError naming ``what`` at the deadline."""
    deadline = time.monotonic() + DEADLINE
    last = ""
    while time.monotonic() < deadline:
        for host in hosts:
            for role, process in host.processes.items():
                if process.poll() is not None:
                    raise DemoError(
                        f"{host.name}'s {role} exited with status {process.returncode} while "
                        f"waiting for {what}; its log ends:\n{host.log_tail()}"
                    )
        try:
            value = check()
        except grpc.RpcError as exc:
            value, last = None, f"{exc.code().name}: {exc.details()}"
        if value is not None:
            return value
        time.sleep(0.2)
    tails = "".join(f"\n  {h.name}'s log ends:\n{h.log_tail()}" for h in hosts)
    raise DemoError(f"timed out waiting for {what} ({last or 'no answer'}){tails}")


def exchange_state(host: Host) -> tuple[bool, bool]:
    """Whether the host's peer accounts exist, and whether a settlement message it sent was
    answered (the adaptors' exchange of ledger accounts). A READY link says neither: route
    broadcast makes links READY before any adaptor serves."""
    peers = host.connector.ListPeers(admin_pb2.ListPeersRequest(), timeout=5).peers
    exist = bool(peers) and all(p.HasField("clearing_balance") for p in peers)
    return exist, any(p.settlement_messages == "ok" for p in peers)


def caught_up(host: Host) -> bool:
    """Whether the host's engine has applied every balance change its connector logged, and
    the connector every settlement of the engine (always true in one process)."""
    listing = host.connector.ListPeers(admin_pb2.ListPeersRequest(), timeout=10)
    if not listing.engine.external:
        return True
    if not listing.engine.connected or listing.engine.unacknowledged:
        return False
    balance = account(host).clearing_balance
    return all(peer.clearing_balance == balance for peer in listing.peers)


def settlements(host: Host) -> list[admin_pb2.Settlement]:
    request = admin_pb2.ListSettlementsRequest(limit=10000)
    return list(host.admin.ListSettlements(request, timeout=10).settlements)


def account(host: Host) -> admin_pb2.Account:
    (only,) = host.admin.ListAccounts(admin_pb2.ListAccountsRequest(), timeout=10).accounts
    return only


def ledger_balance(ledger: simledger_pb2_grpc.SimLedgerStub, account_id: str) -> int:
    reply = ledger.GetAccount(simledger_pb2.GetAccountRequest(account_id=account_id), timeout=10)
    return int(reply.account.balance.value)


_OUT = admin_pb2.SETTLEMENT_DIRECTION_OUTGOING
_IN = admin_pb2.SETTLEMENT_DIRECTION_INCOMING
_DONE = admin_pb2.SETTLEMENT_STATE_COMPLETED


def usd(micro: int, scale: int = ACCOUNT_SCALE, code: str = "USD") -> str:
    sign = "-" if micro < 0 else ""
    whole, frac = divmod(abs(micro), 10**scale)
    return f"{sign}{whole}.{frac:0{scale}d} {code}"


def reconcile(books: Books, chain_problems: list[str] | None = None) -> list[str]:
    """What does not add up (empty when everything reconciles). Pure.

    - Alice: what she owes Bob for the packets, less what her engine debited for settlements
      (completed + unfinished + leftover), is her clearing balance.
    - Ledger: Bob's account received exactly Alice's completed settlements; Alice's lost them.
      On a chain (``chain_problems``, see host.demo_ethereum) the chain's own checks instead.
    - Bob: what Alice owes him for the packets, less the settlements he credited, is his
      clearing balance; and he credited each of Alice's settlements once.
    """
    problems = []
    debited = (
        sum(int(s.amount.value) for s in books.alice_completed + books.alice_unfinished)
        + books.alice_leftover
    )
    if books.alice_balance != -books.sent + debited:
        problems.append(
            f"Alice: balance {books.alice_balance} != -sent {books.sent} + debited {debited}"
        )
    paid = sum(int(s.ledger_amount.value) for s in books.alice_completed)
    if chain_problems is not None:
        problems.extend(chain_problems)
    elif books.bob_ledger != paid:
        problems.append(f"ledger: Bob's account holds {books.bob_ledger}, Alice paid {paid}")
    if chain_problems is None and books.alice_ledger != FUNDING - paid:
        problems.append(
            f"ledger: Alice's account holds {books.alice_ledger}, expected {FUNDING} - {paid}"
        )
    credited = sum(int(s.amount.value) for s in books.bob_credited)
    if books.bob_balance != books.sent - credited:
        problems.append(
            f"Bob: balance {books.bob_balance} != sent {books.sent} - credited {credited}"
        )
    alice_ids = sorted(s.ledger_settlement_id for s in books.alice_completed)
    bob_ids = sorted(s.ledger_settlement_id for s in books.bob_credited)
    if alice_ids != bob_ids:
        problems.append(
            f"Bob credited {len(bob_ids)} ledger payments, Alice completed {len(alice_ids)}"
        )
    return problems


@contextlib.contextmanager
def peered_hosts(
    directory: Path,
    *,
    threshold: int = SETTLE_THRESHOLD,
    languages: tuple[str | AdaptorCommand, str | AdaptorCommand] = ("python", "python"),
    engines: tuple[str, str] = ("internal", "internal"),
    say: Callable[[str], None] = lambda text: None,
    extra: Mapping[str, str] | None = None,
    log_format: str = "text",
    chain: EthereumDemo | None = None,
) -> Iterator[tuple[Host, Host, simledger_pb2_grpc.SimLedgerStub]]:
    """The ledger (Alice's account funded) and Alice's and Bob's hosts, peered and READY.

    ``languages``: each side's adaptor, a language of ADAPTORS or an AdaptorCommand;
    ``engines``: where each side's engine runs (see ENGINE_PLACES); ``extra``: config text to
    add to a side's config, by name; ``log_format``: the hosts' ``--log-format``. With
    ``chain`` both sides run the Ethereum adaptor on it instead, and the simulated ledger
    (still yielded) is unused.

    Everything is stopped on exit: the hosts with SIGTERM, then the ledger.
    """
    with contextlib.ExitStack() as stack:
        ledger_target = f"unix:{directory / 'ledger.sock'}"
        # On a chain the simulated ledger runs unused (it keeps this function's shape): unsaid.
        aside = say if chain is None else (lambda text: None)
        aside(f"starting the simulated ledger ({ledger_target})")
        stack.enter_context(
            start_ledger(
                directory / "ledger.db",
                ledger_target,
                ["--asset-code", "USD", "--asset-scale", str(LEDGER_SCALE)],
            )
        )
        ledger_channel = stack.enter_context(channels.blocking_channel(ledger_target))
        ledger = simledger_pb2_grpc.SimLedgerStub(ledger_channel)
        ledger.CreateAccount(simledger_pb2.CreateAccountRequest(account_id="alice-ledger"))
        ledger.Mint(
            simledger_pb2.MintRequest(
                transfer_id="demo-funding",
                account_id="alice-ledger",
                amount=types_pb2.Amount(value=str(FUNDING), scale=LEDGER_SCALE),
            )
        )
        aside(f"funded alice-ledger with {usd(FUNDING, LEDGER_SCALE)}")
        if chain is not None:
            say(
                f"anvil at {chain.node.url}: Alice's address holds {chain.alice_start} "
                f"{chain.asset_code} units at scale {chain.ledger_scale}"
                + (f" (token {chain.token})" if chain.token else "")
            )
        alice_port, bob_port = free_ports(2)
        configs = {
            "alice": write_config(
                directory,
                "alice",
                "bob",
                alice_port,
                bob_port,
                ledger_target,
                threshold=threshold,
                adaptor=languages[0],
                extra=(extra or {}).get("alice", ""),
                chain=chain,
            ),
            "bob": write_config(
                directory,
                "bob",
                "alice",
                bob_port,
                alice_port,
                ledger_target,
                threshold=threshold,
                adaptor=languages[1],
                extra=(extra or {}).get("bob", ""),
                chain=chain,
            ),
        }
        hosts = []
        for index, (name, config) in enumerate(configs.items()):
            adaptor, engine = _adaptor(languages[index]), engines[index]
            commands = " + ".join(
                f"ilp-host {role} -c {config.name}" for role in ENGINE_PLACES[engine]
            )
            label = "ethereum adaptor" if chain is not None else adaptor.label
            say(
                f"starting {name}'s host with the {label}, engine {engine} "
                f"({commands}; log {name}.log)"
            )
            host = start_host(directory, name, config, engine, log_format)
            stack.callback(stop_host, host)
            hosts.append(host)
        for host in hosts:  # both started first: each one's adaptor looks for the other
            host.connect()

        # One exchange over either link carries both ledger accounts (a message and its reply).
        def exchanged() -> bool | None:
            states = [exchange_state(host) for host in hosts]
            done = all(exist for exist, _ in states) and any(sent for _, sent in states)
            return True if done else None

        wait_for("the adaptors' exchange of ledger accounts over peer.settle", exchanged, hosts)
        # An adaptor slower to start (Node.js) may still be setting up its host's account.
        wait_for(
            "both hosts' engines to have their peer account",
            lambda: (
                True
                if all(
                    host.admin.ListAccounts(admin_pb2.ListAccountsRequest(), timeout=10).accounts
                    for host in hosts
                )
                else None
            ),
            hosts,
        )
        say("both hosts serve; their adaptors exchanged ledger accounts over peer.settle")
        yield hosts[0], hosts[1], ledger


def run_demo(
    directory: Path,
    *,
    min_settlements: int = 5,
    out: TextIO = sys.stdout,
    then: Callable[[Host, Host], None] | None = None,
    languages: tuple[str | AdaptorCommand, str | AdaptorCommand] = ("python", "python"),
    engines: tuple[str, str] = ("internal", "internal"),
    extra: Mapping[str, str] | None = None,
    log_format: str = "text",
    inspect: Callable[[Host, Host, Books], None] | None = None,
    ledger: str = "simledger",
) -> tuple[Books, list[str]]:
    """Run the whole scenario in ``directory``; the books and what did not reconcile.

    ``then`` is called with Alice's and Bob's hosts once the books are read, before the hosts
    stop (tests use it to probe the running pair); ``inspect`` after it, with the books too.
    ``ledger``: "simledger", or one of host.demo_ethereum.KINDS (both sides then run the
    Ethereum adaptor on anvil).
    """
    options = _Options(min_settlements, out, then, languages, engines, extra, log_format, inspect)
    if ledger not in ETHEREUM_KINDS:
        return _run_demo(directory, options, None)
    print(f"starting anvil ({ledger})", file=out, flush=True)
    with ethereum_chain(directory, ledger) as chain:
        return _run_demo(directory, options, chain)


@dataclass(frozen=True)
class _Options:
    """run_demo's choices, passed on whole to the scenario."""

    min_settlements: int
    out: TextIO
    then: Callable[[Host, Host], None] | None
    languages: tuple[str | AdaptorCommand, str | AdaptorCommand]
    engines: tuple[str, str]
    extra: Mapping[str, str] | None
    log_format: str
    inspect: Callable[[Host, Host, Books], None] | None


def _run_demo(
    directory: Path, options: _Options, chain: EthereumDemo | None
) -> tuple[Books, list[str]]:
    min_settlements, out, then = options.min_settlements, options.out, options.then
    languages, engines, extra = options.languages, options.engines, options.extra
    log_format, inspect = options.log_format, options.inspect
    code, scale = (chain.asset_code, chain.account_scale) if chain else ("USD", ACCOUNT_SCALE)
    ledger_scale = chain.ledger_scale if chain else LEDGER_SCALE

    def say(text: str) -> None:
        print(text, file=out, flush=True)

    with peered_hosts(
        directory,
        languages=languages,
        engines=engines,
        say=say,
        extra=extra,
        log_format=log_format,
        chain=chain,
    ) as (
        alice,
        bob,
        ledger,
    ):
        hosts = [alice, bob]

        sent = 0
        seen: set[str] = set()
        rounds = 0
        while True:
            outgoing = [s for s in settlements(alice) if s.direction == _OUT]
            for s in sorted(outgoing, key=lambda s: s.created.ToNanoseconds()):
                if s.id not in seen and s.state == _DONE:
                    seen.add(s.id)
                    say(
                        f"  settlement {s.id[:8]}: {usd(int(s.amount.value), scale, code)} = "
                        f"{s.ledger_amount.value} at the ledger's scale {ledger_scale} "
                        f"({s.ledger_settlement_id})"
                    )
            if len(seen) >= min_settlements:
                break
            rounds += 1
            if rounds > 40:
                tails = "".join(f"\n  {h.name}'s log ends:\n{h.log_tail(40)}" for h in hosts)
                raise DemoError(f"only {len(seen)} settlements after {rounds - 1} rounds{tails}")
            request = admin_pb2.SendPacketsRequest(
                destination="test.bob.demo", amount=PACKET_AMOUNT, count=50, concurrency=8
            )
            last = admin_pb2.SendPacketsResponse()
            for progress in alice.connector.SendPackets(request, timeout=DEADLINE):
                last = progress
            sent += last.fulfilled * PACKET_AMOUNT
            rejected = ", ".join(f"{c}: {n}" for c, n in sorted(last.rejected_by_code.items()))
            say(
                f"round {rounds}: {last.fulfilled}/{last.sent} packets fulfilled"
                f"{' (rejected ' + rejected + ')' if rejected else ''}, "
                f"median {last.median_latency_ms:.1f} ms; sent so far {usd(sent, scale, code)}"
            )
            # An engine in its own process settles once it has read the connector's log.
            wait_for(
                "the engines to catch up with their connectors",
                lambda: True if all(caught_up(host) for host in hosts) else None,
                hosts,
            )

        def quiet() -> Books | None:
            if not all(caught_up(host) for host in hosts):
                return None
            alice_rows = [s for s in settlements(alice) if s.direction == _OUT]
            bob_rows = [s for s in settlements(bob) if s.direction == _IN]
            unfinished = [s for s in alice_rows if s.state != _DONE]
            credited = [s for s in bob_rows if s.state == _DONE]
            done = [s for s in alice_rows if s.state == _DONE]
            if unfinished or len(credited) != len(done) or len(bob_rows) != len(credited):
                return None
            a, b = account(alice), account(bob)
            if len(settlements(alice)) + len(settlements(bob)) != len(alice_rows) + len(bob_rows):
                return None  # a settlement began while the books were read
            return Books(
                sent=sent,
                alice_balance=int(a.clearing_balance.value),
                alice_leftover=int(a.leftover.value),
                alice_completed=done,
                alice_unfinished=unfinished,
                bob_balance=int(b.clearing_balance.value),
                bob_credited=credited,
                alice_ledger=chain.balance("alice")
                if chain
                else ledger_balance(ledger, "alice-ledger"),
                bob_ledger=chain.balance("bob") if chain else ledger_balance(ledger, "bob-ledger"),
            )

        books = wait_for("every settlement to be paid and credited", quiet, hosts)
        on_chain = None
        if chain is not None:
            on_chain = chain.reconcile(chain.books(), books.alice_completed)
        problems = reconcile(books, on_chain)
        say("")
        say(render(books, code, scale, ledger_scale))
        if then is not None:
            then(alice, bob)
        if inspect is not None:
            inspect(alice, bob, books)
        return books, problems
    raise AssertionError("unreachable")  # pragma: no cover


def render(
    books: Books,
    code: str = "USD",
    scale: int = ACCOUNT_SCALE,
    ledger_scale: int = LEDGER_SCALE,
) -> str:
    """The final table."""
    paid = sum(int(s.ledger_amount.value) for s in books.alice_completed)
    rows = [
        ("packets sent Alice -> Bob", usd(books.sent, scale, code), ""),
        (
            "settlements",
            f"{len(books.alice_completed)} paid by Alice",
            f"{len(books.bob_credited)} credited by Bob",
        ),
        (
            "clearing balance",
            f"Alice: {usd(books.alice_balance, scale, code)}",
            f"Bob: {usd(books.bob_balance, scale, code)}",
        ),
        (
            "leftover (not yet a ledger unit)",
            f"Alice: {usd(books.alice_leftover, scale, code)}",
            "",
        ),
        (
            "ledger balance",
            f"alice: {usd(books.alice_ledger, ledger_scale, code)}",
            f"bob: {usd(books.bob_ledger, ledger_scale, code)}",
        ),
        ("paid on the ledger", usd(paid, ledger_scale, code), ""),
    ]
    width = max(len(r[0]) for r in rows)
    middle = max(len(r[1]) for r in rows)
    return "\n".join(f"{a:<{width}}  {b:<{middle}}  {c}".rstrip() for a, b, c in rows)


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
    for side in ("alice", "bob"):
        adaptor = parser.add_mutually_exclusive_group()
        adaptor.add_argument(
            f"--{side}",
            choices=sorted(ADAPTORS),
            metavar="LANGUAGE",
            help=f"the language of {side.title()}'s simledger adaptor: "
            f"{', '.join(sorted(ADAPTORS))} (default python)",
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


def side_adaptor(args: argparse.Namespace, side: str) -> str | AdaptorCommand:
    """The adaptor ``--SIDE``/``--SIDE-adaptor`` chose; ValueError for a malformed command."""
    command: str | None = getattr(args, f"{side}_adaptor")
    if command is not None:
        return AdaptorCommand.parse(command, Path.cwd())
    language: str | None = getattr(args, side)
    return language or "python"


def run(args: argparse.Namespace) -> int:
    """Run the demo the parsed options describe; 0 when the books reconcile."""
    try:
        languages = (side_adaptor(args, "alice"), side_adaptor(args, "bob"))
    except ValueError as exc:
        print(f"ilp-host demo: {exc}", file=sys.stderr)
        return 2
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
    os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
    try:
        with _workspace(args.dir) as directory:
            _, problems = run_demo(
                directory,
                min_settlements=args.settlements,
                out=sys.stdout,  # the current one (a default would be bound at import)
                languages=languages,
                engines=(args.alice_engine, args.bob_engine),
                ledger=args.ledger,
            )
    except DemoError as exc:
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
