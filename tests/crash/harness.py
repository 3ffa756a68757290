"""Real processes for the crash tests: the simulated ledger and two peered hosts, Alice and Bob.

Each host is an ``ilp-host run`` subprocess supervising the simledger-python adaptor, with an
ILP-over-HTTP peer link to the other on loopback; or, for a host in ``split`` mode (proposal 2),
two processes from the same config file: ``ilp-host connector`` and ``ilp-host engine``, each of
which can be killed and restarted on its own. Alice's ledger account is funded. A host can
be started with failpoints armed (sdk.failpoints) in its environment, which its adaptor
inherits, and restarted without them.

The checks read what an operator or an auditor would read: the admin API of each host, the
ledger's book (its SQLite file, read-only queries), and, to prove that a crash happened at the
intended point, the host's engine database and the adaptor's state file while a process is down.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import grpc

from host.demo import DemoError, stop_process, wait_until_listening
from host.demo import wait_for as demo_wait_for
from host.pb.ilphost.admin.v1 import admin_pb2, admin_pb2_grpc
from host.pb.ilphost.simledger.v1 import simledger_pb2, simledger_pb2_grpc
from host.simledger.process import LedgerProcess, start_ledger
from sdk import failpoints
from sdk.pb.ilphost.types.v1 import types_pb2

REPO = Path(__file__).resolve().parents[2]
ADAPTOR = REPO / "adaptors" / "simledger-python" / "adaptor.py"
ACCOUNT_SCALE = 6  # micro-dollars in the ILP accounts
LEDGER_SCALE = 2  # cents on the ledger
FUNDING = 100_000  # cents minted into alice-ledger
#: Every wait polls until this many seconds have passed: generous, the machine is shared.
DEADLINE = 60.0

OUTGOING = admin_pb2.SETTLEMENT_DIRECTION_OUTGOING
INCOMING = admin_pb2.SETTLEMENT_DIRECTION_INCOMING
COMPLETED = admin_pb2.SETTLEMENT_STATE_COMPLETED
FAILED = admin_pb2.SETTLEMENT_STATE_FAILED
SERVING = admin_pb2.PROCESS_STATE_SERVING

_T = TypeVar("_T")

#: Each host's config. By default the threshold sits at the credit limit, so packets never
#: trigger a settlement by themselves: the tests settle through the admin API.
NO_AUTOMATIC_SETTLEMENT = -2_000_000
_CONFIG = """\
[host]
state_dir = {state_dir}

[[adaptor]]
name = "simledger"
command = [{python}, {adaptor}]
env = {{ ILP_SIMLEDGER_ADDR = {ledger}, ILP_SIMLEDGER_ACCOUNT = {ledger_account}, \
ILP_ADAPTOR_STATE_DB = {adaptor_db} }}
restart = {{ initial = 0.2, max = 2.0 }}

[[account]]
id = "{peer}"
adaptor = "simledger"
asset_code = "USD"
asset_scale = {account_scale}
settle_threshold = {threshold}
settle_to = 0
min_balance = -2000000
max_balance = 2000000

[connector]
address = "test.{name}"
port = {port}

[[peer]]
id = "{peer}"
url = "http://127.0.0.1:{peer_port}/"
address = "test.{peer}"
incoming_token = "crash-token-{peer}-to-{name}"
outgoing_token = "crash-token-{name}-to-{peer}"
"""


def _toml(value: str) -> str:
    """A TOML basic string (JSON's escapes are TOML's for these characters)."""
    return json.dumps(value)


def free_ports(count: int) -> list[int]:
    """Loopback ports the kernel just handed out (the hosts bind them right after)."""
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


#: The processes of a host: one (``run``) or, split, the connector and the engine.
ROLES = {"run": ("run",), "split": ("connector", "engine")}


@dataclass
class Host:
    """One side: its files, and its processes while they run (see ROLES)."""

    name: str
    peer: str
    directory: Path
    config: Path
    log: Path
    mode: str = "run"
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    channels: dict[str, grpc.Channel] = field(default_factory=dict)

    @property
    def state_dir(self) -> Path:
        return self.directory / self.name

    def role_dir(self, role: str) -> Path:
        """Where one process keeps its state: the state directory itself, or its role's."""
        return self.state_dir if role == "run" else self.state_dir / role

    @property
    def engine_role(self) -> str:
        return "run" if self.mode == "run" else "engine"

    @property
    def connector_role(self) -> str:
        return "run" if self.mode == "run" else "connector"

    @property
    def engine_db(self) -> Path:
        return self.role_dir(self.engine_role) / "engine.db"

    @property
    def process(self) -> subprocess.Popen[bytes] | None:
        """The engine's process (the only one when not split)."""
        return self.processes.get(self.engine_role)

    @property
    def adaptor_db(self) -> Path:
        return self.directory / f"{self.name}-adaptor.db"

    @property
    def once_dir(self) -> Path:
        return self.directory / f"{self.name}-failpoints"

    def _stub(self, role: str) -> admin_pb2_grpc.HostAdminStub:
        channel = self.channels.get(role)
        assert channel is not None, f"{self.name}'s {role} is not running"
        return admin_pb2_grpc.HostAdminStub(channel)

    @property
    def admin(self) -> admin_pb2_grpc.HostAdminStub:
        """The engine's admin API: adaptors, accounts, settlements."""
        return self._stub(self.engine_role)

    @property
    def connector_admin(self) -> admin_pb2_grpc.HostAdminStub:
        """The connector's admin API: peers, test packets."""
        return self._stub(self.connector_role)

    def start(
        self, armed: tuple[str, ...] = (), roles: tuple[str, ...] = (), *, wait: bool = True
    ) -> None:
        """Start the host's processes (or only ``roles``) with the failpoints ``armed`` (each
        fires once per test), and unless not ``wait``, :meth:`connect` to them."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("ILP_FAILPOINTS")}
        if armed:
            self.once_dir.mkdir(exist_ok=True)
            env[failpoints.ENV_FAILPOINTS] = ",".join(armed)
            env[failpoints.ENV_ONCE_DIR] = str(self.once_dir)
        for role in roles or ROLES[self.mode]:
            assert role not in self.processes, f"{self.name}'s {role} is already running"
            with self.log.open("ab") as out:
                out.write(f"==== start {self.name} {role} armed={list(armed)}\n".encode())
                out.flush()
                self.processes[role] = subprocess.Popen(
                    [sys.executable, "-m", "host.cli", role, "-c", str(self.config)],
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
            socket = self.role_dir(role) / "admin.sock"
            try:
                wait_until_listening(socket, process, DEADLINE)
            except DemoError as exc:
                raise AssertionError(f"{self.name}'s {role}: {exc}\n{self.log_tail()}") from None
            self.channels[role] = grpc.insecure_channel(f"unix:{socket}")

    def _forget_process(self, role: str) -> int:
        status = self.processes.pop(role).returncode
        channel = self.channels.pop(role, None)
        if channel is not None:
            channel.close()
        return status

    def wait_killed(self, role: str | None = None) -> int:
        """Wait until the engine's process (or ``role``'s) died (a failpoint); its status."""
        role = role or self.engine_role
        process = self.processes.get(role)
        assert process is not None, f"{self.name}'s {role} is not running"
        try:
            process.wait(DEADLINE)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"{self.name}'s {role} did not die within {DEADLINE} s; its log ends:\n"
                f"{self.log_tail()}"
            ) from None
        return self._forget_process(role)

    def kill(self, role: str) -> None:
        """SIGKILL one process, as a crash would (its adaptors die with it: parent-death)."""
        process = self.processes.get(role)
        assert process is not None, f"{self.name}'s {role} is not running"
        process.kill()
        process.wait(DEADLINE)
        self._forget_process(role)

    def stop(self, roles: tuple[str, ...] = ()) -> None:
        """SIGTERM (graceful stop), SIGKILL if it does not stop in time; the engine before the
        connector. Idempotent."""
        for role in reversed(roles or ROLES[self.mode]):
            process = self.processes.get(role)
            if process is None:
                continue
            stop_process(process)
            self._forget_process(role)

    def alive(self, role: str | None = None) -> bool:
        process = self.processes.get(role or self.engine_role)
        return process is not None and process.poll() is None

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
        reply = self.admin.GetAccount(admin_pb2.GetAccountRequest(account_id=self.peer), timeout=10)
        return reply.account

    def settlements(self) -> list[admin_pb2.Settlement]:
        request = admin_pb2.ListSettlementsRequest(limit=10_000)
        return list(self.admin.ListSettlements(request, timeout=10).settlements)

    def connector_view(self) -> tuple[int | None, admin_pb2.EngineLink]:
        """The clearing balance of the peer's account as the connector holds it (None when it
        has none yet), and the connector's view of the engine."""
        listing = self.connector_admin.ListPeers(admin_pb2.ListPeersRequest(), timeout=10)
        (peer,) = listing.peers
        balance = int(peer.clearing_balance.value) if peer.HasField("clearing_balance") else None
        return balance, listing.engine

    def adaptor(self) -> admin_pb2.Adaptor:
        reply = self.admin.GetAdaptor(admin_pb2.GetAdaptorRequest(name="simledger"), timeout=10)
        return reply.adaptor

    def engine_rows(self) -> list[tuple[str, str, str]]:
        """(id, direction, state) of every settlement in the engine database, read directly
        (for a host that is down: what its crash left on disk)."""
        return _query(self.engine_db, "SELECT id, direction, state FROM settlements ORDER BY seq")

    def adaptor_incoming(self) -> list[tuple[str, int]]:
        """(settlement id, acknowledged) of every incoming transfer in the adaptor's state."""
        return _query(
            self.adaptor_db, "SELECT settlement_id, acknowledged FROM incoming ORDER BY sequence"
        )

    def peer_ledger_account(self) -> str | None:
        """The peer's ledger account, once the adaptors exchanged them (None before)."""
        rows = _query(
            self.adaptor_db, "SELECT ledger_account FROM peers WHERE account_id = ?", (self.peer,)
        )
        return rows[0][0] if rows else None

    def adaptor_sent_keys(self) -> list[str]:
        """The SendMoney idempotency keys the adaptor has claimed (it has started paying)."""
        return [
            row[0] for row in _query(self.adaptor_db, "SELECT idempotency_key FROM sdk_payments")
        ]


def _query(path: Path, sql: str, parameters: tuple[object, ...] = ()) -> list[tuple[Any, ...]]:
    """Rows of a read query on another process's SQLite file (WAL: it sees what committed)."""
    if not path.exists():  # connect() would create it, empty, under the process that owns it
        raise AssertionError(f"{path} does not exist (yet)")
    connection = sqlite3.connect(path, timeout=10)
    try:
        return [tuple(row) for row in connection.execute(sql, parameters).fetchall()]
    finally:
        connection.close()


class Pair:
    """The ledger and Alice's and Bob's hosts in one directory (see the module docstring)."""

    def __init__(
        self,
        directory: Path,
        alice_threshold: int = NO_AUTOMATIC_SETTLEMENT,
        *,
        modes: tuple[str, str] = ("run", "run"),
    ) -> None:
        """``modes``: Alice's and Bob's, "run" (one process) or "split" (see ROLES)."""
        self.directory = directory
        self.ledger_target = f"unix:{directory / 'ledger.sock'}"
        self.ledger_db = directory / "ledger.db"
        alice_port, bob_port = free_ports(2)
        self.alice = self._host("alice", "bob", alice_port, bob_port, alice_threshold)
        self.bob = self._host("bob", "alice", bob_port, alice_port, NO_AUTOMATIC_SETTLEMENT)
        self.alice.mode, self.bob.mode = modes
        self.hosts = (self.alice, self.bob)
        self._ledger: LedgerProcess | None = None
        self._ledger_channel: grpc.Channel | None = None
        self.ledger: simledger_pb2_grpc.SimLedgerStub | None = None

    def _host(self, name: str, peer: str, port: int, peer_port: int, threshold: int) -> Host:
        host = Host(
            name,
            peer,
            self.directory,
            self.directory / f"{name}.toml",
            self.directory / f"{name}.log",
        )
        host.config.write_text(
            _CONFIG.format(
                name=name,
                peer=peer,
                state_dir=_toml(str(host.state_dir)),
                python=_toml(sys.executable),
                adaptor=_toml(str(ADAPTOR)),
                ledger=_toml(self.ledger_target),
                ledger_account=_toml(f"{name}-ledger"),
                adaptor_db=_toml(str(host.adaptor_db)),
                account_scale=ACCOUNT_SCALE,
                threshold=threshold,
                port=port,
                peer_port=peer_port,
            )
        )
        return host

    def start_ledger(self) -> None:
        self._ledger = start_ledger(
            self.ledger_db,
            self.ledger_target,
            ["--asset-code", "USD", "--asset-scale", str(LEDGER_SCALE)],
        )
        self._ledger_channel = grpc.insecure_channel(self.ledger_target)
        self.ledger = simledger_pb2_grpc.SimLedgerStub(self._ledger_channel)
        self.ledger.CreateAccount(
            simledger_pb2.CreateAccountRequest(account_id="alice-ledger"), timeout=10
        )
        self.ledger.Mint(
            simledger_pb2.MintRequest(
                transfer_id="crash-funding",
                account_id="alice-ledger",
                amount=types_pb2.Amount(value=str(FUNDING), scale=LEDGER_SCALE),
            ),
            timeout=10,
        )

    def close(self) -> None:
        for host in self.hosts:
            host.stop()
        if self._ledger_channel is not None:
            self._ledger_channel.close()
        if self._ledger is not None:
            self._ledger.stop()

    # -- waiting ----------------------------------------------------------------------------

    def logs(self) -> str:
        return "".join(f"\n  {h.name}'s log ends:\n{h.log_tail(80)}" for h in self.hosts)

    def wait_for(self, what: str, check: Callable[[], _T | None]) -> _T:
        """Poll ``check`` until it returns a value (not None); AssertionError at the deadline,
        or at once if a host that should run has exited. gRPC errors count as "not yet"."""
        try:
            return demo_wait_for(what, check, self.hosts)
        except DemoError as exc:
            raise AssertionError(str(exc)) from None

    def wait_ready(self, host: Host, *, link: bool = True) -> None:
        """The host's adaptor serves and its account exists; with ``link``, its peer link is
        also READY (at first start: the adaptors exchanged ledger accounts over it). A
        restarted host's link stays IDLE until it carries something."""

        def ready() -> bool | None:
            if host.adaptor().state != SERVING:
                return None
            host.account()  # NOT_FOUND until the adaptor served and the account was created
            if link:
                request = admin_pb2.ListPeersRequest()
                peers = host.connector_admin.ListPeers(request, timeout=5).peers
                ready = types_pb2.CONNECTIVITY_STATE_READY
                if not peers or any(p.link.state != ready for p in peers):
                    return None
            return True

        self.wait_for(
            f"{host.name}'s adaptor and account" + (" and peer link" if link else ""), ready
        )

    # -- acting -----------------------------------------------------------------------------

    def send_packets(self, amount: int, count: int, concurrency: int = 4) -> int:
        """Alice sends ``count`` packets of ``amount`` to Bob; all must be fulfilled. The total."""
        request = admin_pb2.SendPacketsRequest(
            destination="test.bob.crash", amount=amount, count=count, concurrency=concurrency
        )
        last = admin_pb2.SendPacketsResponse()
        for progress in self.alice.connector_admin.SendPackets(request, timeout=DEADLINE):
            last = progress
        assert last.done and last.fulfilled == count, f"packets: {last}{self.logs()}"
        return amount * count

    def settle(self, amount: int, key: str) -> admin_pb2.Settlement:
        """Admin Settle on Alice for account bob (account scale)."""
        request = admin_pb2.SettleRequest(
            account_id="bob",
            amount=types_pb2.Amount(value=str(amount), scale=ACCOUNT_SCALE),
            idempotency_key=key,
        )
        return self.alice.admin.Settle(request, timeout=30).settlement

    # -- reading the ledger -----------------------------------------------------------------

    def ledger_balance(self, account_id: str) -> int:
        assert self.ledger is not None
        reply = self.ledger.GetAccount(
            simledger_pb2.GetAccountRequest(account_id=account_id), timeout=10
        )
        return int(reply.account.balance.value)

    def transfers_from(self, account_id: str) -> list[tuple[str, str, int]]:
        """(transfer id, payee, amount) of every transfer out of ``account_id``, in order."""
        rows = _query(
            self.ledger_db,
            "SELECT transfer_id, to_account_id, amount FROM transfers "
            "WHERE from_account_id = ? ORDER BY sequence",
            (account_id,),
        )
        return [(t, to, int(amount)) for t, to, amount in rows]

    # -- the verdict ------------------------------------------------------------------------

    def settled_books(self, sent: int, settlements: int) -> None:
        """Wait until Alice's ``settlements`` are completed and credited by Bob, then check
        that the ledger paid each exactly once and both sides' balances add up."""

        def quiet() -> tuple[list[admin_pb2.Settlement], list[admin_pb2.Settlement]] | None:
            # A split host's engine catches up with its connector's log asynchronously: read the
            # books once it has.
            if not all(in_step(host) for host in self.hosts if host.mode == "split"):
                return None
            out = [s for s in self.alice.settlements() if s.direction == OUTGOING]
            inc = [s for s in self.bob.settlements() if s.direction == INCOMING]
            failed = [s for s in out + inc if s.state == FAILED]
            assert not failed, f"FAILED settlements: {failed}{self.logs()}"
            done = len(out) == settlements and all(s.state == COMPLETED for s in out)
            if done and len(inc) == settlements and all(s.state == COMPLETED for s in inc):
                return out, inc
            return None

        outgoing, incoming = self.wait_for(
            f"{settlements} settlement(s) completed by Alice and acknowledged by Bob", quiet
        )
        problems = books_problems(
            sent=sent,
            outgoing=outgoing,
            incoming=incoming,
            transfers=self.transfers_from("alice-ledger"),
            alice=self.alice.account(),
            bob=self.bob.account(),
            alice_ledger=self.ledger_balance("alice-ledger"),
            bob_ledger=self.ledger_balance("bob-ledger"),
        )
        assert not problems, "the books do not add up:\n  " + "\n  ".join(problems) + self.logs()
        for host in self.hosts:
            if host.mode == "split":
                self.wait_for(
                    f"{host.name}'s connector to hold the balance her engine holds",
                    lambda host=host: in_step(host),
                )


def in_step(host: Host) -> bool | None:
    """True once a split host's engine has applied every change its connector logged and the
    connector every settlement of the engine: they agree on the clearing balance."""
    balance, engine = host.connector_view()
    if not engine.connected or engine.unacknowledged:
        return None
    return True if balance == int(host.account().clearing_balance.value) else None


def books_problems(
    *,
    sent: int,
    outgoing: list[admin_pb2.Settlement],
    incoming: list[admin_pb2.Settlement],
    transfers: list[tuple[str, str, int]],
    alice: admin_pb2.Account,
    bob: admin_pb2.Account,
    alice_ledger: int,
    bob_ledger: int,
) -> list[str]:
    """What does not add up, once every settlement is final (empty: all is well). Pure.

    - The ledger: exactly one transfer out of alice-ledger per settlement, with the id the
      adaptor derives from the settlement id (its idempotency key), to bob-ledger, for the
      settlement's ledger amount; nothing else; balances moved by exactly that.
    - Alice: balance = -sent + every amount debited for settlement (+ leftover).
    - Bob: credited each of Alice's ledger payments once; balance = sent - credited.
    """
    problems = []
    expected = sorted(
        (f"alice-ledger:{s.id}", "bob-ledger", int(s.ledger_amount.value)) for s in outgoing
    )
    if sorted(transfers) != expected:
        problems.append(f"ledger transfers out of alice-ledger {transfers}, expected {expected}")
    paid = sum(int(s.ledger_amount.value) for s in outgoing)
    if (alice_ledger, bob_ledger) != (FUNDING - paid, paid):
        problems.append(
            f"ledger balances alice {alice_ledger} bob {bob_ledger}, expected "
            f"{FUNDING - paid} and {paid}"
        )
    debited = sum(int(s.amount.value) for s in outgoing) + int(alice.leftover.value)
    if int(alice.clearing_balance.value) != -sent + debited:
        problems.append(
            f"Alice's balance {alice.clearing_balance.value} != -sent {sent} + debited {debited}"
        )
    if int(alice.pending_settlement.value) != 0:
        problems.append(f"Alice still has {alice.pending_settlement.value} pending settlement")
    paid_ids = sorted(s.ledger_settlement_id for s in outgoing)
    credited_ids = sorted(s.id.split(":", 2)[2] for s in incoming)
    if paid_ids != sorted(t[0] for t in expected) or credited_ids != paid_ids:
        problems.append(f"Alice paid {paid_ids}, Bob credited {credited_ids}")
    credited = sum(int(s.amount.value) for s in incoming)
    if int(bob.clearing_balance.value) != sent - credited:
        problems.append(
            f"Bob's balance {bob.clearing_balance.value} != sent {sent} - credited {credited}"
        )
    return problems


@contextlib.contextmanager
def running_pair(
    alice_armed: tuple[str, ...] = (),
    bob_armed: tuple[str, ...] = (),
    alice_threshold: int = NO_AUTOMATIC_SETTLEMENT,
    modes: tuple[str, str] = ("run", "run"),
) -> Iterator[Pair]:
    """A fresh ledger and both hosts (in these ``modes``, see ROLES), started (with these
    failpoints armed) and ready."""
    directory = Path(tempfile.mkdtemp(prefix="ilpcr"))  # short: unix socket paths
    pair = Pair(directory, alice_threshold, modes=modes)
    try:
        pair.start_ledger()
        # Both started before waiting for either: each one's adaptor looks for the other.
        pair.alice.start(alice_armed, wait=False)
        pair.bob.start(bob_armed, wait=False)
        pair.alice.connect()
        pair.bob.connect()
        for host in pair.hosts:
            # Not the peer link: one exchange of ledger accounts (a message and its reply) over
            # either link informs both adaptors, and the other link stays IDLE until used.
            pair.wait_ready(host, link=False)
        for host in pair.hosts:
            # Before this, SendMoney is refused (FAILED_PRECONDITION) and incoming transfers
            # wait: a crash test must start from a pair that can settle at once.
            pair.wait_for(
                f"{host.name}'s adaptor to learn {host.peer}-ledger",
                lambda host=host: (
                    True if host.peer_ledger_account() == f"{host.peer}-ledger" else None
                ),
            )
        yield pair
    finally:
        pair.close()
        shutil.rmtree(directory, ignore_errors=True)
