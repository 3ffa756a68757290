"""Two peered hosts on this machine, Alice and Bob, and the ledger they settle on: the harness
of ``ilp-host demo``, of the end-to-end and crash tests, and of the benchmarks.

All real processes: the simulated ledger (``python -m host.simledger``; Alice's account
funded) and each host as ``ilp-host run`` (engine ``internal``) or as ``ilp-host connector`` +
``ilp-host engine`` from the same config (engine ``external``: proposal 2), each supervising
its adaptor, peered with the other over ILP-over-HTTP on loopback. On a chain (``chain``, see
host.demo.ethereum) both sides run the Ethereum adaptor instead and no simulated ledger runs.

A host's processes can be started with failpoints armed (sdk.failpoints, inherited by its
adaptor), killed as a crash would, and started again. Every wait polls a check until a
deadline and fails at once when a process that should run has exited, saying what it waited
for and how the logs end.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import grpc

from host.demo.adaptors import AdaptorCommand, adaptors_dir, ethereum_adaptor, simledger_adaptor
from host.pb.ilphost.admin.v1 import admin_pb2, admin_pb2_grpc
from host.pb.ilphost.simledger.v1 import simledger_pb2, simledger_pb2_grpc
from host.simledger.process import LedgerProcess, start_ledger
from sdk import channels, failpoints
from sdk.pb.ilphost.types.v1 import types_pb2

if TYPE_CHECKING:  # the chain's module imports eth_account only when a chain is used
    from host.demo.ethereum import EthereumDemo

ACCOUNT_SCALE = 6  # the ILP accounts count in micro-dollars...
LEDGER_SCALE = 2  # ...the ledger in cents: conversions leave leftovers, kept and settled later
FUNDING = 1_000_000  # cents minted into Alice's ledger account
SETTLE_THRESHOLD = -100_000
MIN_BALANCE = -2_000_000
MAX_BALANCE = 2_000_000
#: Every wait polls until this many seconds have passed: generous, the machine may be busy.
DEADLINE = 60.0
#: How long an adaptor may take to handshake (the host's default is 10 s): on a busy machine
#: the Ethereum adaptor's imports alone took 20 to 36 s, and a start cut short is started again,
#: as slowly, so that it never served.
START_TIMEOUT = DEADLINE
#: Where a host's engine runs: in the connector's process (proposal 1, ``ilp-host run``) or
#: in a process of its own (proposal 2), and the processes that makes.
ENGINE_PLACES = {"internal": ("run",), "external": ("connector", "engine")}
_T = TypeVar("_T")

_CONFIG = """\
[host]
state_dir = {state_dir}

[[adaptor]]
name = "{adaptor_name}"
command = {command}
cwd = {cwd}
env = {{ {env} }}
timeouts = {{ start = {start_timeout:g} }}
{restart}
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
incoming_token = "token-{peer}-to-{name}"
outgoing_token = "token-{name}-to-{peer}"
"""


class HarnessError(RuntimeError):
    """A wait failed (a deadline passed, a process exited); the message says which, and how
    the hosts' logs end."""


@dataclass(frozen=True)
class Side:
    """How one host of the pair is set up.

    ``adaptor``: its simledger adaptor (None: the in-tree Python one); ``engine``: where its
    engine runs (a key of ENGINE_PLACES); ``extra``: config text added to its file (more
    tables, e.g. ``[metrics]``).
    """

    adaptor: AdaptorCommand | None = None
    engine: str = "internal"
    threshold: int = SETTLE_THRESHOLD
    extra: str = ""


def _toml(value: object) -> str:
    """A TOML basic string or array of them (JSON's escapes are TOML's for these)."""
    return json.dumps(value)


def free_ports(count: int) -> list[int]:
    """Ports the kernel just handed out on loopback (the hosts bind them right after)."""
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def wait_until_listening(
    path: Path, process: subprocess.Popen[bytes], deadline: float = DEADLINE
) -> None:
    """Return once a process accepts connections on the unix socket ``path``.

    Only then is a gRPC channel made to it: a channel whose first attempts fail (no file yet,
    or the file a killed predecessor left) can stay failing long after the socket is up.
    HarnessError if the process exits first or the deadline passes.
    """
    limit = time.monotonic() + deadline
    while time.monotonic() < limit:
        if process.poll() is not None:
            raise HarnessError(
                f"the process exited ({process.returncode}) before listening on {path}"
            )
        with socket.socket(socket.AF_UNIX) as probe:
            try:
                probe.connect(str(path))
                return
            except OSError:
                pass
        time.sleep(0.05)
    raise HarnessError(f"nothing listens on {path} after {deadline:g} s")


def stop_process(process: subprocess.Popen[bytes], grace: float = 30.0) -> None:
    """SIGTERM (a graceful stop), then SIGKILL if it is still running after ``grace`` seconds."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@dataclass
class Host:
    """One side: its files, and its processes while they run (see ENGINE_PLACES)."""

    name: str
    peer: str
    directory: Path
    engine: str = "internal"
    log_format: str = "text"
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    channels: dict[str, grpc.Channel] = field(default_factory=dict)

    @property
    def config(self) -> Path:
        return self.directory / f"{self.name}.toml"

    @property
    def log(self) -> Path:
        return self.directory / f"{self.name}.log"

    @property
    def state_dir(self) -> Path:
        return self.directory / self.name

    @property
    def adaptor_db(self) -> Path:
        """The state file of its simledger adaptor."""
        return self.directory / f"{self.name}-adaptor.db"

    @property
    def once_dir(self) -> Path:
        """Where armed failpoints record that they fired (each fires once)."""
        return self.directory / f"{self.name}-failpoints"

    @property
    def roles(self) -> tuple[str, ...]:
        return ENGINE_PLACES[self.engine]

    @property
    def engine_role(self) -> str:
        return "engine" if "engine" in self.roles else "run"

    @property
    def connector_role(self) -> str:
        return "connector" if "connector" in self.roles else "run"

    def role_dir(self, role: str) -> Path:
        """Where one process keeps its state: the state directory itself, or its role's."""
        return self.state_dir if role == "run" else self.state_dir / role

    @property
    def engine_db(self) -> Path:
        return self.role_dir(self.engine_role) / "engine.db"

    @property
    def process(self) -> subprocess.Popen[bytes] | None:
        """The engine's process (the only one when it runs inside the connector)."""
        return self.processes.get(self.engine_role)

    def _stub(self, role: str) -> admin_pb2_grpc.HostAdminStub:
        channel = self.channels.get(role)
        if channel is None:
            raise HarnessError(f"{self.name}'s {role} is not running")
        return admin_pb2_grpc.HostAdminStub(channel)

    @property
    def admin(self) -> admin_pb2_grpc.HostAdminStub:
        """The engine's admin API: adaptors, accounts, settlements."""
        return self._stub(self.engine_role)

    @property
    def connector(self) -> admin_pb2_grpc.HostAdminStub:
        """The connector's admin API (peers, packets): the engine's unless the host is split."""
        return self._stub(self.connector_role)

    # -- processes ----------------------------------------------------------------------------

    def start(
        self, armed: Sequence[str] = (), roles: Sequence[str] = (), *, wait: bool = True
    ) -> None:
        """Start the host's processes (or only ``roles``) with the failpoints ``armed`` (each
        fires once per directory), and unless not ``wait``, :meth:`connect` to them."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("ILP_FAILPOINTS")}
        if armed:
            self.once_dir.mkdir(exist_ok=True)
            env[failpoints.ENV_FAILPOINTS] = ",".join(armed)
            env[failpoints.ENV_ONCE_DIR] = str(self.once_dir)
        for role in roles or self.roles:
            if role in self.processes:
                raise HarnessError(f"{self.name}'s {role} is already running")
            argv = [sys.executable, "-m", "host.cli", role, "-c", str(self.config)]
            with self.log.open("ab") as out:
                if self.log_format == "text":  # a line of a JSON log is a JSON object
                    out.write(f"==== start {self.name} {role} armed={list(armed)}\n".encode())
                    out.flush()
                self.processes[role] = subprocess.Popen(
                    [*argv, "--log-format", self.log_format],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    cwd=self.directory,
                    env=env,
                )
        if wait:
            self.connect()

    def connect(self) -> None:
        """Wait until each started process serves its admin socket, then make its channel."""
        for role, process in self.processes.items():
            if role in self.channels:
                continue
            path = self.role_dir(role) / "admin.sock"
            try:
                wait_until_listening(path, process)
            except HarnessError as exc:
                raise HarnessError(f"{self.name}'s {role}: {exc}\n{self.log_tail()}") from None
            self.channels[role] = channels.blocking_channel(f"unix:{path}")

    def _forget(self, role: str) -> int:
        status = self.processes.pop(role).returncode
        channel = self.channels.pop(role, None)
        if channel is not None:
            channel.close()
        return status

    def wait_exited(self, role: str | None = None) -> int:
        """Wait until the engine's process (or ``role``'s) has exited (a failpoint fired); its
        status."""
        role = role or self.engine_role
        process = self.processes.get(role)
        if process is None:
            raise HarnessError(f"{self.name}'s {role} is not running")
        try:
            process.wait(DEADLINE)
        except subprocess.TimeoutExpired:
            raise HarnessError(
                f"{self.name}'s {role} did not exit within {DEADLINE:g} s; its log ends:\n"
                f"{self.log_tail()}"
            ) from None
        return self._forget(role)

    def kill(self, role: str) -> None:
        """SIGKILL one process, as a crash would (its adaptors die with it: parent-death)."""
        process = self.processes.get(role)
        if process is None:
            raise HarnessError(f"{self.name}'s {role} is not running")
        process.kill()
        process.wait(DEADLINE)
        self._forget(role)

    def stop(self, roles: Sequence[str] = ()) -> None:
        """SIGTERM (graceful stop), SIGKILL if it does not stop in time; the engine before the
        connector. Idempotent."""
        for role in reversed(roles or self.roles):
            process = self.processes.get(role)
            if process is not None:
                stop_process(process)
                self._forget(role)

    def alive(self, role: str | None = None) -> bool:
        process = self.processes.get(role or self.engine_role)
        return process is not None and process.poll() is None

    def exited(self) -> str | None:
        """Which of its started processes has exited, and how (None: all run)."""
        for role, process in self.processes.items():
            if process.poll() is not None:
                return f"{self.name}'s {role} exited with status {process.returncode}"
        return None

    def log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        text = self.log_text().splitlines()[-lines:]
        return "\n".join(f"    {line}" for line in text) or "    (empty)"

    # -- reading the host -------------------------------------------------------------------

    def account(self) -> admin_pb2.Account:
        """Its account of the peer, as the engine holds it."""
        reply = self.admin.GetAccount(admin_pb2.GetAccountRequest(account_id=self.peer), timeout=10)
        return reply.account

    def settlements(self) -> list[admin_pb2.Settlement]:
        request = admin_pb2.ListSettlementsRequest(limit=10_000)
        return list(self.admin.ListSettlements(request, timeout=10).settlements)

    def adaptor(self, name: str = "simledger") -> admin_pb2.Adaptor:
        reply = self.admin.GetAdaptor(admin_pb2.GetAdaptorRequest(name=name), timeout=10)
        return reply.adaptor

    def connector_view(self) -> tuple[int | None, admin_pb2.EngineLink]:
        """The clearing balance of the peer's account as the connector holds it (None when it
        has none yet), and the connector's view of the engine."""
        listing = self.connector.ListPeers(admin_pb2.ListPeersRequest(), timeout=10)
        (peer,) = listing.peers
        balance = int(peer.clearing_balance.value) if peer.HasField("clearing_balance") else None
        return balance, listing.engine

    def in_step(self) -> bool:
        """Whether the engine has applied every balance change the connector logged and the
        connector every settlement of the engine (always, when they share a process)."""
        balance, engine = self.connector_view()
        if not engine.external:
            return True
        if not engine.connected or engine.unacknowledged:
            return False
        return balance == int(self.account().clearing_balance.value)

    def exchanged(self) -> tuple[bool, bool]:
        """Whether its peer accounts exist, and whether a settlement message it sent was
        answered (the adaptors' exchange of ledger accounts). A READY link says neither: route
        broadcast makes links READY before any adaptor serves."""
        peers = self.connector.ListPeers(admin_pb2.ListPeersRequest(), timeout=5).peers
        exist = bool(peers) and all(p.HasField("clearing_balance") for p in peers)
        return exist, any(p.settlement_messages == "ok" for p in peers)


def wait_for(
    what: str,
    check: Callable[[], _T | None],
    hosts: Sequence[Host] = (),
    *,
    deadline: float = DEADLINE,
    interval: float = 0.2,
) -> _T:
    """Poll ``check`` until it returns a value (not None) and return it. HarnessError naming
    ``what`` (and the last gRPC error) when ``deadline`` seconds have passed, or at once when
    a process of ``hosts`` has exited. A gRPC error counts as "not yet"."""
    limit = time.monotonic() + deadline
    last = ""
    while True:
        for host in hosts:
            exited = host.exited()
            if exited:
                raise HarnessError(
                    f"{exited} while waiting for {what}; its log ends:\n{host.log_tail()}"
                )
        try:
            value = check()
        except grpc.RpcError as exc:
            value, last = None, f"{exc.code().name}: {exc.details()}"
        if value is not None:
            return value
        if time.monotonic() >= limit:
            break
        time.sleep(interval)
    tails = "".join(f"\n  {h.name}'s log ends:\n{h.log_tail()}" for h in hosts)
    raise HarnessError(f"timed out waiting for {what} ({last or 'no answer'}){tails}")


class Pair:
    """The ledger and Alice's and Bob's hosts in one directory (see the module docstring).

    ``host_class`` is what each side is made of (a test adds readers of its files).

    ``sides``: Alice's and Bob's set-up; ``funding``: cents minted into alice-ledger;
    ``restart``: the adaptors' restart backoff (initial, max seconds; None: the host's
    default); ``adaptors``: the in-tree adaptors directory (see host.demo.adaptors).
    Nothing runs until :meth:`start_ledger` and :meth:`start_hosts`; :meth:`close` stops all.
    """

    host_class: type[Host] = Host

    def __init__(
        self,
        directory: Path,
        sides: tuple[Side, Side] = (Side(), Side()),
        *,
        funding: int = FUNDING,
        chain: EthereumDemo | None = None,
        restart: tuple[float, float] | None = None,
        log_format: str = "text",
        adaptors: Path | None = None,
    ) -> None:
        self.directory = directory
        self.funding = funding
        self.chain = chain
        self.ledger_target = f"unix:{directory / 'ledger.sock'}"
        self.ledger_db = directory / "ledger.db"
        self._ledger: LedgerProcess | None = None
        self._ledger_channel: grpc.Channel | None = None
        self.ledger: simledger_pb2_grpc.SimLedgerStub | None = None
        self._adaptors = adaptors
        ports = free_ports(2)
        self.alice = self.host_class("alice", "bob", directory, sides[0].engine, log_format)
        self.bob = self.host_class("bob", "alice", directory, sides[1].engine, log_format)
        self.hosts = (self.alice, self.bob)
        for index, (host, side) in enumerate(zip(self.hosts, sides, strict=True)):
            self._write_config(host, side, ports[index], ports[1 - index], restart)
        self.labels = tuple(
            "ethereum adaptor" if chain else (side.adaptor or self._in_tree()).label
            for side in sides
        )

    def _in_tree(self) -> AdaptorCommand:
        return simledger_adaptor("python", self._adaptors or adaptors_dir())

    def _write_config(
        self, host: Host, side: Side, port: int, peer_port: int, restart: tuple[float, float] | None
    ) -> None:
        if self.chain is not None:
            adaptor = ethereum_adaptor(self.chain.adaptors)
            env = self.chain.adaptor_env(host.name)
            asset, name = (self.chain.asset_code, self.chain.account_scale), "ethereum"
        else:
            adaptor = side.adaptor or self._in_tree()
            env = {
                "ILP_SIMLEDGER_ADDR": self.ledger_target,
                "ILP_SIMLEDGER_ACCOUNT": f"{host.name}-ledger",
                "ILP_ADAPTOR_STATE_DB": str(host.adaptor_db),
            }
            asset, name = ("USD", ACCOUNT_SCALE), "simledger"
        backoff = (
            f"restart = {{ initial = {restart[0]:g}, max = {restart[1]:g} }}\n" if restart else ""
        )
        host.config.write_text(
            side.extra
            + "\n"
            + _CONFIG.format(
                state_dir=_toml(str(host.state_dir)),
                adaptor_name=name,
                command=_toml(list(adaptor.argv)),
                cwd=_toml(str(adaptor.cwd or ".")),
                env=", ".join(f"{key} = {_toml(value)}" for key, value in env.items()),
                restart=backoff,
                start_timeout=START_TIMEOUT,
                name=host.name,
                peer=host.peer,
                asset_code=asset[0],
                account_scale=asset[1],
                threshold=side.threshold,
                min_balance=MIN_BALANCE,
                max_balance=MAX_BALANCE,
                port=port,
                peer_port=peer_port,
            )
        )

    # -- starting and stopping --------------------------------------------------------------

    def restart_ledger(self) -> None:
        """Start the simulated ledger's process on its file (a restart funds nothing)."""
        self._ledger = start_ledger(
            self.ledger_db,
            self.ledger_target,
            ["--asset-code", "USD", "--asset-scale", str(LEDGER_SCALE)],
        )

    def start_ledger(self) -> None:
        """Start the simulated ledger and fund alice-ledger (nothing on a chain)."""
        if self.chain is not None:
            return
        self.restart_ledger()
        self._ledger_channel = channels.blocking_channel(self.ledger_target)
        self.ledger = simledger_pb2_grpc.SimLedgerStub(self._ledger_channel)
        self.ledger.CreateAccount(
            simledger_pb2.CreateAccountRequest(account_id="alice-ledger"), timeout=10
        )
        self.ledger.Mint(
            simledger_pb2.MintRequest(
                transfer_id="funding",
                account_id="alice-ledger",
                amount=types_pb2.Amount(value=str(self.funding), scale=LEDGER_SCALE),
            ),
            timeout=10,
        )

    def start_hosts(self, armed: tuple[Sequence[str], Sequence[str]] = ((), ())) -> None:
        """Start both hosts (Alice's and Bob's failpoints ``armed``), then connect to both:
        both are started before waiting for either, as each one's adaptor looks for the other."""
        for host, fired in zip(self.hosts, armed, strict=True):
            host.start(fired, wait=False)
        for host in self.hosts:
            host.connect()

    def wait_exchanged(self) -> None:
        """Wait until the adaptors have exchanged their ledger accounts over peer.settle (one
        exchange over either link carries both: a message and its reply) and both engines
        have their peer account (an adaptor slower to start may still be setting it up)."""

        def exchanged() -> bool | None:
            states = [host.exchanged() for host in self.hosts]
            done = all(exist for exist, _ in states) and any(sent for _, sent in states)
            return True if done else None

        self.wait_for("the adaptors' exchange of ledger accounts over peer.settle", exchanged)
        self.wait_for(
            "both hosts' engines to have their peer account",
            lambda: True if all(host.account() for host in self.hosts) else None,
        )

    def close(self) -> None:
        """Stop the hosts (SIGTERM; Bob first, the reverse of their start), then the ledger.
        Idempotent."""
        for host in reversed(self.hosts):
            host.stop()
        if self._ledger_channel is not None:
            self._ledger_channel.close()
            self._ledger_channel = None
        if self._ledger is not None:
            self._ledger.stop()
            self._ledger = None

    # -- waiting and acting -----------------------------------------------------------------

    def logs(self, lines: int = 80) -> str:
        return "".join(f"\n  {h.name}'s log ends:\n{h.log_tail(lines)}" for h in self.hosts)

    def wait_for(self, what: str, check: Callable[[], _T | None]) -> _T:
        """:func:`wait_for` over both hosts."""
        return wait_for(what, check, self.hosts)

    def send(self, amount: int, count: int, concurrency: int = 4) -> admin_pb2.SendPacketsResponse:
        """Alice sends ``count`` test packets of ``amount`` to Bob; the last progress report."""
        request = admin_pb2.SendPacketsRequest(
            destination="test.bob.demo", amount=amount, count=count, concurrency=concurrency
        )
        last = admin_pb2.SendPacketsResponse()
        for progress in self.alice.connector.SendPackets(request, timeout=DEADLINE):
            last = progress
        return last

    def ledger_balance(self, account_id: str) -> int:
        """A balance on the simulated ledger, in cents."""
        if self.ledger is None:
            raise HarnessError("the simulated ledger is not running")
        request = simledger_pb2.GetAccountRequest(account_id=account_id)
        return int(self.ledger.GetAccount(request, timeout=10).account.balance.value)


@contextlib.contextmanager
def running(pair: Pair, say: Callable[[str], None] = lambda text: None) -> Iterator[Pair]:
    """``pair`` started: the ledger (unless on a chain), then both hosts, until their adaptors
    have exchanged their ledger accounts; everything stopped on exit. ``say`` tells what
    happens."""
    try:
        if pair.chain is None:
            say(f"starting the simulated ledger ({pair.ledger_target})")
            pair.start_ledger()
            say(f"funded alice-ledger with {pair.funding / 10**LEDGER_SCALE:.2f} USD")
        else:
            chain = pair.chain
            say(
                f"anvil at {chain.node.url}: Alice's address holds {chain.alice_start} "
                f"{chain.asset_code} units at scale {chain.ledger_scale}"
                + (f" (token {chain.token})" if chain.token else "")
            )
        for host, label in zip(pair.hosts, pair.labels, strict=True):
            commands = " + ".join(f"ilp-host {role} -c {host.config.name}" for role in host.roles)
            say(
                f"starting {host.name}'s host with the {label}, engine {host.engine} "
                f"({commands}; log {host.log.name})"
            )
        pair.start_hosts()
        pair.wait_exchanged()
        say("both hosts serve; their adaptors exchanged ledger accounts over peer.settle")
        yield pair
    finally:
        pair.close()
