"""Several ``ilp-host run`` instances of one host on one PostgreSQL database, killed at random.

The processes are real (host.demo.twohost, tests.crash.harness): the simulated ledger; Bob, one
host on his SQLite file; and Alice, :data:`INSTANCES` instances of ``ilp-host run``, each with
its own configuration file, state directory, ILP-over-HTTP port and simledger adaptor (its own
adaptor state file), and one ``[engine] database = "postgresql://…"`` for all. Every instance
has the same ILP address, the same account ``bob`` and the same ledger account; Bob's peer link
points at the first instance. Each instance sends packets to Bob all along (the admin API's
SendPackets); Bob sends some back to Alice through the first instance, fewer than he receives,
so that he always has the ledger funds for what he owes. Both settle automatically.

Each cycle of a run (:func:`schedule`, a pure function of its seed) SIGKILLs one of Alice's
instances (its adaptor dies with it), keeps it down a moment and starts it again, some times
with the ``engine.after-send-money`` failpoint armed (it then dies by itself between a ledger
payment and its record). The verdict (tests.chaos.chaos.verdict, once every instance runs
again and the outbox is drained):

- every settlement of Alice's (whichever instance made or paid it) is completed and credited
  by Bob once, and each of Bob's is credited once by Alice, although all of her instances'
  adaptors report it;
- the ledger holds exactly one transfer per settlement, with the id the adaptor derives from
  the settlement id, for its amount, and nothing else; the balances are what they add up to;
- Alice's books (the shared database) and Bob's agree to the unit (``ilp-host reconcile``);
- nothing is left in the outbox (the query of docs/operations.md).

``python -m tests.store.pg_tier --seed N --kills N`` runs it outside pytest (``make soak-pg``);
tests/store/test_store_postgres_tier.py runs a bounded version.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import shutil
import sys
import tempfile
import time
import tomllib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc

from host.demo import twohost
from host.demo.twohost import ACCOUNT_SCALE, LEDGER_SCALE, HarnessError, Side, free_ports
from sdk import failpoints
from tests.chaos.chaos import PACKET, Fault, Traffic, Verdict, verdict
from tests.crash import harness
from tests.crash.harness import FUNDING, RESTART
from tests.postgres_server import TEST_SETTINGS, PostgresServer, postgres_server

INSTANCES = 3
#: How long a killed instance stays down at most, and how long it works before, at most.
MAX_DOWN = 0.5
MAX_PAUSE = 2.0
#: Alice and Bob settle when they owe this many packets' worth (each a whole ledger unit).
SETTLE_EVERY = 5
THRESHOLD = -PACKET * SETTLE_EVERY
#: What Alice's instances' senders and Bob's send per round (packets of PACKET), how many at
#: once: Bob's rounds are bursts, so that now and then he owes Alice and settles (when he has
#: the ledger funds for it, see TierRun.run).
ALICE_ROUND = (10, 1)
BOB_ROUND = (30, 6)
#: The docs' query of the outbox's work left (docs/operations.md, "What to watch").
OUTBOX_LEFT = (
    "SELECT state, count(*) FROM settlements WHERE state IN ('pending', 'submitted', "
    "'credited') GROUP BY state"
)
OUTGOING_COUNT = "SELECT count(*) FROM settlements WHERE direction = 'outgoing'"
#: The outbox lease of Alice's instances (``[engine] outbox_lease``): the settlements a killed
#: instance held wait for it to run out (on PostgreSQL a restart frees nothing), and the
#: verdict's wait (60 s) must be far longer than that; just above the adaptor call deadline.
LEASE = 12


@dataclass
class Instance(harness.Host):
    """One instance of Alice's host: her name, address and accounts; files of its own."""

    slot: int = 0

    @property
    def label(self) -> str:
        return f"{self.name}-{self.slot}"

    @property
    def config(self) -> Path:
        return self.directory / f"{self.label}.toml"

    @property
    def log(self) -> Path:
        return self.directory / f"{self.label}.log"

    @property
    def state_dir(self) -> Path:
        return self.directory / self.label

    @property
    def adaptor_db(self) -> Path:
        return self.directory / f"{self.label}-adaptor.db"

    @property
    def once_dir(self) -> Path:
        return self.directory / f"{self.label}-failpoints"

    def exited(self) -> str | None:
        found = super().exited()
        return None if found is None else found.replace(self.name, self.label, 1)


class Tier(harness.Pair):
    """The ledger, Bob, and Alice as ``instances`` instances on the database ``url``.

    ``alice`` is one of her instances (the one the checks read: they all show the same books);
    ``hosts`` are all the processes' hosts, Bob last. ``thresholds``: Alice's and Bob's
    settle thresholds (account scale).
    """

    def __init__(
        self,
        directory: Path,
        server: PostgresServer,
        url: str,
        *,
        instances: int = INSTANCES,
        thresholds: tuple[int, int] = (THRESHOLD, THRESHOLD),
    ) -> None:
        self.server = server
        self.url = url
        database = f"[engine]\ndatabase = {json.dumps(url)}\noutbox_lease = {LEASE}\n"
        alice_side = Side(threshold=thresholds[0], extra=database)
        # The two-host pair writes Bob's file and one for Alice, which the instances' follow.
        twohost.Pair.__init__(
            self,
            directory,
            (alice_side, Side(threshold=thresholds[1])),
            funding=FUNDING,
            restart=RESTART,
        )
        ports = {
            h.name: tomllib.loads(h.config.read_text())["connector"]["port"] for h in self.hosts
        }
        self.instances = [Instance("alice", "bob", directory, slot=n) for n in range(instances)]
        for instance, port in zip(
            self.instances, [ports["alice"], *free_ports(instances - 1)], strict=True
        ):
            self._write_config(instance, alice_side, port, ports["bob"], RESTART)
        self.alice = self.instances[0]
        self.hosts = (*self.instances, self.bob)

    def start_tier(
        self, slots: Sequence[int] | None = None, armed: Sequence[str] = (), *, learn: bool = True
    ) -> None:
        """Start Bob unless he runs and Alice's instances (or only ``slots``, with the
        failpoints ``armed``), wait until each serves and its account exists, and with
        ``learn`` until the adaptors know each other's ledger accounts (they can settle)."""
        started: list[harness.Host] = [self.bob] if self.bob.process is None else []
        chosen = range(len(self.instances)) if slots is None else slots
        started += [self.instances[n] for n in chosen]
        for host in started:
            host.start(armed if isinstance(host, Instance) else (), wait=False)
        for host in started:
            host.connect()
        for host in started:
            self.wait_ready(host, link=False)
        for host in started if learn else []:
            self.wait_for(
                f"{host.label if isinstance(host, Instance) else host.name}'s adaptor to learn "
                f"{host.peer}-ledger",
                lambda host=host: (
                    True if host.peer_ledger_account() == f"{host.peer}-ledger" else None
                ),
            )

    def running(self) -> Instance:
        """An instance that runs (to read the shared books through)."""
        for instance in self.instances:
            if instance.alive():
                return instance
        raise HarnessError("none of Alice's instances runs")

    def psql(self, sql: str) -> str:
        """``sql`` on Alice's database, as an operator would run it."""
        return self.server.psql(sql, self.url)


def schedule(seed: int, kills: int, instances: int = INSTANCES) -> list[Fault]:
    """The kills of a run: a pure function of its seed, count and the number of instances.
    ``kind`` "kill" restarts the instance as it was, "kill+armed" with the
    ``engine.after-send-money`` failpoint armed (it fires once per instance)."""
    rng = random.Random(seed)
    return [
        Fault(
            cycle,
            f"alice-{rng.randrange(instances)}",
            rng.choice(("kill", "kill", "kill+armed")),
            rng.uniform(0.2, MAX_PAUSE),
            rng.uniform(0.0, MAX_DOWN),
        )
        for cycle in range(kills)
    ]


def still_armed(instance: Instance) -> bool:
    """Whether the instance's last start armed the failpoint and it has not fired since."""
    text = instance.log_text()
    last_start = text[text.rfind("==== start ") :]
    first_line = last_start.partition("\n")[0]
    fired = f"failpoint {failpoints.ENGINE_AFTER_SEND_MONEY}" in last_start
    return failpoints.ENGINE_AFTER_SEND_MONEY in first_line and not fired


class TierRun:
    """One run of ``faults`` over a started :class:`Tier`."""

    def __init__(self, tier: Tier, seed: int, faults: list[Fault]) -> None:
        self.tier = tier
        self.seed = seed
        self.faults = faults
        self.done: list[str] = []
        self._began = time.monotonic()

    def note(self, text: str) -> None:
        """Log what happened, at how many seconds into the run."""
        self.done.append(f"{time.monotonic() - self._began:5.1f}s {text}")

    def run(self) -> None:
        tier = self.tier
        senders = [
            Traffic(
                i.role_dir("run") / "admin.sock",
                "test.bob.tier",
                *ALICE_ROUND,
                pause_after_rejects=True,
            )
            for i in tier.instances
        ]

        def bob_may_send() -> bool:
            """Whether Bob has the ledger funds to settle what he would owe Alice after a
            round (packets cut short by a kill included): his settlements must not fail."""
            try:
                account = tier.bob.account()
            except (grpc.RpcError, HarnessError):
                return False
            owed = max(0, -int(account.clearing_balance.value))
            owed += int(account.pending_settlement.value)  # debited, not yet paid
            funds = tier.balance_on_file("bob-ledger") * 10 ** (ACCOUNT_SCALE - LEDGER_SCALE)
            return funds - owed >= (bob.count + bob.concurrency) * PACKET

        bob = Traffic(
            tier.bob.role_dir("run") / "admin.sock",
            "test.alice.tier",
            *BOB_ROUND,
            allowed=bob_may_send,
            pause_after_rejects=True,
        )
        for sender in [*senders, bob]:
            sender.start()
        try:
            # A first burst of Bob's while every instance runs: he owes Alice and settles.
            twohost.wait_for(
                "Bob's first round of packets to Alice",
                lambda: True if bob.fulfilled else None,
                tier.hosts,
            )
            for fault in self.faults:
                self.note(f"{fault}: {self._apply(fault)}")
        finally:
            for sender in [*senders, bob]:
                sender.join()
        self.note(
            f"packets fulfilled in whole rounds: Alice to Bob {sum(s.fulfilled for s in senders)}"
            f", Bob to Alice {bob.fulfilled}; settlements made by Alice: "
            f"{tier.psql(OUTGOING_COUNT)}"
        )

    def _apply(self, fault: Fault) -> str:
        """Wait until the instance serves, let it work ``pause`` seconds, kill it, keep it
        down ``hold`` seconds, start it again."""
        instance = self.tier.instances[int(fault.target.rsplit("-", 1)[1])]
        for _ in range(3):
            self.restart_exited()
            with contextlib.suppress(HarnessError):  # it exited: an armed failpoint fired
                instance.connect()
                break
        time.sleep(fault.pause)
        if not instance.alive():
            return "had exited by itself"
        armed = (failpoints.ENGINE_AFTER_SEND_MONEY,) if fault.kind == "kill+armed" else ()
        instance.kill("run")
        time.sleep(fault.hold)
        # Not waiting until it serves: the next kill may hit it while it starts up.
        instance.start(armed, wait=False)
        return "killed; started" + (f" with {armed[0]} armed" if armed else "")

    def restart_exited(self) -> None:
        """Start again the instances that exited by themselves (an armed failpoint fired)."""
        for instance in self.tier.instances:
            if instance.processes and not instance.alive():
                status = instance.wait_exited("run")
                instance.start(wait=False)
                self.note(f"{instance.label} had exited ({status}): started")

    def restore(self) -> None:
        """Every instance running and serving again, none with a failpoint still armed (it
        would fire at the verdict's first settlement), the first one read for the verdict."""
        for instance in self.tier.instances:
            if instance.alive() and still_armed(instance):
                instance.kill("run")
                instance.start(wait=False)
                self.note(f"{instance.label}: its failpoint never fired; started without it")
        for _ in range(len(self.tier.instances) + 1):
            self.restart_exited()
            try:
                for instance in self.tier.instances:
                    instance.connect()
                break
            except HarnessError:
                continue  # an armed failpoint fired while it started up: again
        for host in self.tier.hosts:
            self.tier.wait_ready(host, link=False)
        self.tier.alice = self.tier.running()
        self.note("every instance serves again")

    def fired(self) -> int:
        """How many times an armed failpoint killed an instance."""
        mark = f"failpoint {failpoints.ENGINE_AFTER_SEND_MONEY}"
        return sum(i.log_text().count(mark) for i in self.tier.instances)


@dataclass
class Report:
    """One run's schedule, what each kill did, and the verdict."""

    seed: int
    log: list[str]
    verdict: Verdict
    outbox_left: str
    fired: int
    #: Bob's settlements to Alice, each credited once though all her instances saw it.
    incoming: int

    @property
    def problems(self) -> list[str]:
        found = list(self.verdict.problems)
        if self.outbox_left:
            found.append(f"the outbox still has work: {self.outbox_left!r}")
        if not self.verdict.books_agree:
            found.append(f"the books do not agree: {self.verdict.reconciliation}")
        return found

    def text(self) -> str:
        lines = [
            f"tier run: seed {self.seed} (replay: python -m tests.store.pg_tier --seed "
            f"{self.seed} --kills {sum(' #' in line for line in self.log)})"
        ]
        lines += [f"  {line}" for line in self.log]
        lines.append(
            f"  settlements: {self.verdict.settlements} ({self.incoming} of them Bob's to "
            f"Alice); instances killed by the "
            f"failpoint between pay and record: {self.fired}"
        )
        lines += [f"  PROBLEM: {problem}" for problem in self.problems]
        lines.append(f"  reconciliation: {self.verdict.reconciliation.get('status')}")
        return "\n".join(lines)


def tier_run(server: PostgresServer, seed: int, kills: int) -> Report:
    """Start a tier on a new schema of ``server``, run ``kills`` kills drawn from ``seed``,
    judge the books."""
    faults = schedule(seed, kills)
    with running_tier(server) as tier:
        run = TierRun(tier, seed, faults)
        try:
            run.run()
        finally:
            run.restore()
        judged = verdict(tier, one_way=False)  # Bob sends packets to Alice too
        run.note("judged")
        incoming = [s for s in tier.alice.settlements() if s.direction == harness.INCOMING]
        return Report(seed, run.done, judged, tier.psql(OUTBOX_LEFT), run.fired(), len(incoming))


@contextlib.contextmanager
def running_tier(
    server: PostgresServer,
    thresholds: tuple[int, int] = (THRESHOLD, THRESHOLD),
    slots: Sequence[int] | None = None,
    armed: Sequence[str] = (),
    *,
    learn: bool = True,
) -> Iterator[Tier]:
    """A fresh ledger, Bob and Alice's instances (or only ``slots``, with the failpoints
    ``armed``) on a new schema of ``server``, started (with ``learn``: ready to settle);
    everything stopped and deleted on exit."""
    directory = Path(tempfile.mkdtemp(prefix="ilptier"))  # short: unix socket paths
    tier = Tier(directory, server, server.new_schema(), thresholds=thresholds)
    try:
        tier.start_ledger()
        tier.start_tier(slots, armed, learn=learn)
        yield tier
    finally:
        tier.close()
        shutil.rmtree(directory, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.store.pg_tier", description=__doc__)
    parser.add_argument("--seed", type=int, default=None, help="default: a random one")
    parser.add_argument("--kills", type=int, default=100, help="kills in all (default 100)")
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.randrange(2**32)
    with postgres_server(TEST_SETTINGS) as server:
        report = tier_run(server, seed, args.kills)
    print(report.text(), flush=True)
    return 1 if report.problems else 0


if __name__ == "__main__":
    sys.exit(main())
