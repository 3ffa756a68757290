"""A chaos run: Alice pays Bob packets while random processes are SIGKILLed or SIGSTOPped.

The processes are real (tests.crash.harness): the simulated ledger, Alice's and Bob's hosts,
each as one ``ilp-host run`` (proposal 1) or as ``ilp-host connector`` + ``ilp-host engine``
(proposal 2), and each host's simledger adaptor. Alice settles automatically (every
:data:`SETTLE_EVERY` packets). A thread sends packets from Alice to Bob all along.

Each cycle draws, from one ``random.Random(seed)``, a target among those processes, a fault
(SIGKILL, or SIGSTOP then SIGCONT) and its timings; the same seed draws the same schedule
(the processes' own timing is the machine's, so a replay repeats the faults, not every
interleaving). A killed host process is started again by the run, a killed adaptor by its
host's supervisor, a killed ledger by the run.

The verdict, once everything runs again and is quiet (:func:`verdict`):

- every outgoing settlement of Alice's is completed, none failed, and Bob credited each one
  exactly once (the same ledger ids); Bob paid nothing back (see :func:`verdict`);
- the ledger holds exactly one transfer per settlement, from its payer's ledger account to its
  payee's, for its amount, and nothing else, and the balances are what they add up to;
- Alice's and Bob's clearing books agree to the unit: ``ilp-host reconcile bob`` on Alice says
  "agree" (host.connector.reconciliation), else the exact difference is reported.

``python -m tests.chaos --seed N --cycles N --engines internal,external`` runs it outside pytest
(``make chaos``: the long version).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from host.demo.twohost import ENGINE_PLACES, HarnessError
from host.pb.ilphost.admin.v1 import admin_pb2, admin_pb2_grpc
from tests.crash.harness import (
    COMPLETED,
    FAILED,
    FUNDING,
    INCOMING,
    OUTGOING,
    Host,
    Pair,
    running_pair,
)

#: Per packet, at the account's scale (6): a whole number of ledger units (scale 2), so that no
#: leftover stays behind and every debit is paid in full.
PACKET = 10_000
SETTLE_EVERY = 20
THRESHOLD = -PACKET * SETTLE_EVERY
#: How long a SIGSTOPped process stays stopped, and the pause before a fault, at most.
MAX_STOP = 0.6
MAX_PAUSE = 0.5
#: How long a killed host process stays down at most before the run starts it again.
MAX_DOWN = 0.4


@dataclass(frozen=True)
class Fault:
    """One cycle of the schedule."""

    cycle: int
    target: str  # "ledger", "<host>:<role>" or "<host>:adaptor"
    kind: str  # "kill" or "stop"
    pause: float  # before the fault
    hold: float  # stopped for, or down for

    def __str__(self) -> str:
        return (
            f"#{self.cycle} {self.kind} {self.target} after {self.pause:.2f}s for {self.hold:.2f}s"
        )


def targets(engines: tuple[str, str]) -> list[str]:
    """Every process a fault can hit, for where Alice's and Bob's engines run ("internal" or
    "external", see host.demo.twohost.ENGINE_PLACES)."""
    found = ["ledger"]
    for name, engine in zip(("alice", "bob"), engines, strict=True):
        found += [f"{name}:{role}" for role in ENGINE_PLACES[engine]]
        found.append(f"{name}:adaptor")
    return found


def schedule(seed: int, cycles: int, engines: tuple[str, str]) -> list[Fault]:
    """The faults of a run: a pure function of its seed, cycle count and engines' places."""
    rng = random.Random(seed)
    choices = targets(engines)
    faults = []
    for cycle in range(cycles):
        target = rng.choice(choices)
        kind = rng.choice(("kill", "kill", "stop"))
        pause = rng.uniform(0.0, MAX_PAUSE)
        hold = rng.uniform(0.0, MAX_STOP if kind == "stop" else MAX_DOWN)
        faults.append(Fault(cycle, target, kind, pause, hold))
    return faults


@dataclass
class Traffic:
    """Sends rounds of test packets through one host's admin socket from a thread, while
    ``allowed()`` says so, through whatever is up, until stopped. ``fulfilled``: the packets
    fulfilled in rounds that finished; ``last_error``: the last reason a packet or a round
    failed; ``pause_after_rejects``: wait a little after a round with rejected packets."""

    socket: Path
    destination: str = "test.bob.chaos"
    count: int = 10
    concurrency: int = 2
    allowed: Callable[[], bool] = lambda: True
    pause_after_rejects: bool = False
    fulfilled: int = 0
    last_error: str = ""
    stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="test-traffic", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        request = admin_pb2.SendPacketsRequest(
            destination=self.destination,
            amount=PACKET,
            count=self.count,
            concurrency=self.concurrency,
        )
        while not self.stop.is_set():
            if not self.allowed():
                self.stop.wait(0.2)
                continue
            # A fresh channel each round: one made while the process was down may stay failing.
            with grpc.insecure_channel(f"unix:{self.socket}") as channel:
                stub = admin_pb2_grpc.HostAdminStub(channel)
                try:
                    for progress in stub.SendPackets(request, timeout=15):
                        if progress.done:
                            self.fulfilled += progress.fulfilled
                            if progress.rejected:
                                self.last_error = progress.last_reject
                                if self.pause_after_rejects:
                                    self.stop.wait(0.2)
                except grpc.RpcError as exc:
                    self.last_error = f"{exc.code().name}: {exc.details()}"
                    self.stop.wait(0.2)

    def join(self) -> None:
        self.stop.set()
        if self._thread is not None:
            self._thread.join(30)


class ChaosRun:
    """One run over a started :class:`~tests.crash.harness.Pair`."""

    def __init__(self, pair: Pair, seed: int, faults: list[Fault]) -> None:
        self.pair = pair
        self.seed = seed
        self.faults = faults
        self.done: list[str] = []
        self._hosts = {host.name: host for host in pair.hosts}

    def run(self) -> None:
        alice = self.pair.alice
        traffic = Traffic(alice.role_dir(alice.connector_role) / "admin.sock")
        traffic.start()
        try:
            for fault in self.faults:
                time.sleep(fault.pause)
                self.done.append(f"{fault}: {self._apply(fault)}")
        finally:
            traffic.join()
        self.done.append(f"packets fulfilled during the run: {traffic.fulfilled}")

    def _apply(self, fault: Fault) -> str:
        if fault.target == "ledger":
            return self._ledger(fault)
        name, role = fault.target.split(":")
        host = self._hosts[name]
        if role == "adaptor":
            return self._adaptor(host, fault)
        if not host.alive(role):
            host.stop((role,))  # forgets the exited process and its channel
            host.start(roles=(role,))
            return "was not running: started"
        if fault.kind == "stop":
            _pause(host.processes[role].pid, fault.hold)
            return "stopped and continued"
        host.kill(role)
        time.sleep(fault.hold)
        host.start(roles=(role,))
        return "killed and started again"

    def _adaptor(self, host: Host, fault: Fault) -> str:
        try:
            pid = host.adaptor().pid
        except (grpc.RpcError, HarnessError) as exc:
            return f"skipped: no adaptor pid ({exc.__class__.__name__})"
        if not pid:
            return "skipped: the adaptor is not running"
        try:
            if fault.kind == "stop":
                _pause(pid, fault.hold)
                return f"pid {pid} stopped and continued"
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            return f"skipped: pid {pid} already gone"
        return f"pid {pid} killed (its host restarts it)"

    def _ledger(self, fault: Fault) -> str:
        ledger = self.pair._ledger
        assert ledger is not None
        if fault.kind == "stop":
            _pause(ledger.pid, fault.hold)
            return "stopped and continued"
        ledger.kill()
        time.sleep(fault.hold)
        self.pair.restart_ledger()
        return "killed and started again"

    def restore(self) -> None:
        """Every process running again (a run ends with all of them up)."""
        for host in self.pair.hosts:
            for role in host.roles:
                if not host.alive(role):
                    host.stop((role,))
                    self.done.append(f"after the run: {host.name}'s {role} was down, started")
                    host.start(roles=(role,))


def _pause(pid: int, seconds: float) -> None:
    try:
        os.kill(pid, signal.SIGSTOP)
    except ProcessLookupError:
        return
    try:
        time.sleep(seconds)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)


@dataclass
class Verdict:
    """What the run found: settlement problems (always a failure) and the reconciliation."""

    settlements: int
    problems: list[str]
    reconciliation: dict[str, object]

    @property
    def books_agree(self) -> bool:
        return self.reconciliation.get("status") == "agree"


def unresolved(host: Host) -> int:
    """How many packets the host forwarded without knowing their outcome yet (its in-flight
    journal resolves each by asking the peer, or at its expiry plus the grace)."""
    listing = host.connector.ListPeers(admin_pb2.ListPeersRequest(), timeout=10)
    return sum(len(peer.unresolved_packets) for peer in listing.peers)


def verdict(pair: Pair, *, one_way: bool = True) -> Verdict:
    """Wait until the pair is quiet, then check the settlements and reconcile the books.

    With ``one_way`` (only Alice sends packets, as in the chaos run), Alice settles what she
    owes Bob for them, never more, so Bob never owes her and must not pay her anything. A split
    host's engine once did: it credited Alice's settlement before it had applied the packets it
    paid for (they waited in its connector's log while it was down), saw itself owing her and
    paid her back (seeds 2766223412, 958682846); it now credits only once it has applied that
    log (host.remote_connector). Both directions are still checked alike, so a payment back is
    judged like any other."""
    alice, bob = pair.alice, pair.bob
    Flows = tuple[list[admin_pb2.Settlement], ...]

    def quiet() -> Flows | None:
        if not all(host.in_step() for host in pair.hosts):
            return None
        if any(unresolved(host) for host in pair.hosts):
            return None  # packets in flight at a kill, until asked about or expired
        a_out, a_in = _split(alice.settlements())
        b_out, b_in = _split(bob.settlements())
        flows = (a_out, b_in, b_out, a_in)
        if any(s.state == FAILED for flow in flows for s in flow):
            return flows  # a finding: no point waiting
        done = all(s.state == COMPLETED for flow in flows for s in flow)
        if done and len(b_in) == len(a_out) and len(a_in) == len(b_out):
            return flows
        return None

    a_out, b_in, b_out, a_in = pair.wait_for(
        "every settlement completed by its payer and credited by its payee", quiet
    )
    problems = [
        f"FAILED settlement {s.id}: {s.last_error}"
        for flow in (a_out, b_in, b_out, a_in)
        for s in flow
        if s.state == FAILED
    ]
    if one_way and b_out:
        problems.append(
            f"Bob paid Alice {len(b_out)} settlement(s) back, though he never owes her: his "
            "engine credited hers before the packets they paid for"
        )
    to_bob = _check_flow(pair, "alice", "bob", a_out, b_in, problems)
    to_alice = _check_flow(pair, "bob", "alice", b_out, a_in, problems)
    # From the ledger's file, as the transfers: the durable record of what moved.
    balances = (pair.balance_on_file("alice-ledger"), pair.balance_on_file("bob-ledger"))
    expected = (FUNDING - to_bob + to_alice, to_bob - to_alice)
    if balances != expected:
        problems.append(f"ledger balances (alice, bob) {balances}, expected {expected}")
    return Verdict(len(a_out) + len(b_out), problems, reconcile(alice))


def _split(
    settlements: list[admin_pb2.Settlement],
) -> tuple[list[admin_pb2.Settlement], list[admin_pb2.Settlement]]:
    """(outgoing, incoming)."""
    return (
        [s for s in settlements if s.direction == OUTGOING],
        [s for s in settlements if s.direction == INCOMING],
    )


def _check_flow(
    pair: Pair,
    payer: str,
    payee: str,
    paid_out: list[admin_pb2.Settlement],
    credited_in: list[admin_pb2.Settlement],
    problems: list[str],
) -> int:
    """Check one direction: what the payer paid is what the payee credited, each once, and is
    exactly the ledger's transfers between them; the amount moved."""
    paid = sorted(s.ledger_settlement_id for s in paid_out)
    credited = sorted(s.id.split(":", 2)[2] for s in credited_in)
    if paid != credited:
        problems.append(f"{payer} paid {paid}, {payee} credited {credited}")
    expected = sorted(
        (f"{payer}-ledger:{s.id}", f"{payee}-ledger", int(s.ledger_amount.value)) for s in paid_out
    )
    transfers = sorted(pair.transfers_from(f"{payer}-ledger"))
    if transfers != expected:
        problems.append(f"ledger transfers out of {payer}-ledger {transfers}, expected {expected}")
    if paid != sorted(t[0] for t in expected):
        problems.append(f"the ledger ids of {payer}'s settlements {paid} are not the transfers'")
    return sum(t[2] for t in expected)


def reconcile(host: Host) -> dict[str, object]:
    """``ilp-host reconcile PEER --json`` on ``host``, as an operator runs it; its outcome."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "host.cli",
            "reconcile",
            host.peer,
            "--json",
            "--attempts",
            "20",
            "-c",
            str(host.config),
        ],
        capture_output=True,
        text=True,
        cwd=host.directory,
        timeout=120,
    )
    if not result.stdout.strip():
        return {"status": "no answer", "detail": result.stderr.strip()}
    outcome: dict[str, object] = json.loads(result.stdout)
    outcome["exit_status"] = result.returncode
    return outcome


@dataclass
class Report:
    """One run's schedule, what each fault did, and the verdict."""

    seed: int
    engines: tuple[str, str]
    log: list[str]
    verdict: Verdict

    def text(self) -> str:
        lines = [
            f"chaos run: seed {self.seed}, engines {self.engines} (replay: --seed {self.seed})"
        ]
        lines += [f"  {line}" for line in self.log]
        lines.append(f"  settlements: {self.verdict.settlements}")
        lines += [f"  PROBLEM: {problem}" for problem in self.verdict.problems]
        outcome = self.verdict.reconciliation
        lines.append(
            f"  reconciliation: {outcome.get('status')}; clearing difference "
            f"{_value(outcome, 'clearing_difference')}, to the peer in transit "
            f"{_value(outcome, 'to_peer_in_transit')}, from the peer "
            f"{_value(outcome, 'from_peer_in_transit')}"
            + (f"; {outcome['detail']}" if outcome.get("detail") else "")
        )
        return "\n".join(lines)


def _value(outcome: dict[str, object], key: str) -> str:
    amount = outcome.get(key)
    return str(amount.get("value", "0")) if isinstance(amount, dict) else "?"


def chaos_run(seed: int, cycles: int, engines: tuple[str, str]) -> Report:
    """Start a pair with its engines where ``engines`` say, run ``cycles`` faults drawn from
    ``seed``, judge the books."""
    faults = schedule(seed, cycles, engines)
    with running_pair(alice_threshold=THRESHOLD, engines=engines) as pair:
        run = ChaosRun(pair, seed, faults)
        try:
            run.run()
        finally:
            run.restore()
        for host in pair.hosts:
            pair.wait_ready(host, link=False)
        return Report(seed, engines, run.done, verdict(pair))


def seeds(first: int) -> Iterator[int]:
    """The seeds of consecutive runs: the first given, then derived from it."""
    rng = random.Random(first)
    yield first
    while True:
        yield rng.randrange(2**32)
