"""The story ``ilp-host demo`` tells: two peered hosts settle on a ledger, and the books
reconcile.

The ledger and the hosts are host.demo.twohost's :class:`Pair` (the simulated ledger, or with
an Ethereum ``ledger`` a local anvil chain). Alice then sends test packets to Bob through her
connector until her engine has settled several times on the ledger. The packets exercise links
and settlement; they are not a payment protocol. At the end it prints both sides' clearing
balances and both ledger balances, and checks that they reconcile exactly (see
:func:`reconcile`).
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from host.demo.adaptors import adaptors_dir
from host.demo.ethereum import KINDS as ETHEREUM_KINDS
from host.demo.ethereum import EthereumDemo, ethereum_chain
from host.demo.twohost import (
    ACCOUNT_SCALE,
    FUNDING,
    LEDGER_SCALE,
    HarnessError,
    Host,
    Pair,
    Side,
    running,
)
from host.pb.ilphost.admin.v1 import admin_pb2

PACKET_AMOUNT = 12_345  # micro-dollars per packet


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
      On a chain (``chain_problems``, see host.demo.ethereum) the chain's own checks instead.
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


def run_demo(
    directory: Path,
    sides: tuple[Side, Side] = (Side(), Side()),
    *,
    min_settlements: int = 5,
    out: TextIO = sys.stdout,
    then: Callable[[Host, Host], None] | None = None,
    inspect: Callable[[Host, Host, Books], None] | None = None,
    ledger: str = "simledger",
    log_format: str = "text",
    adaptors: Path | None = None,
) -> tuple[Books, list[str]]:
    """Run the whole scenario in ``directory``; the books and what did not reconcile.

    ``sides``: Alice's and Bob's set-up (adaptor, engine, extra config); ``then`` is called
    with Alice's and Bob's hosts once the books are read, before the hosts stop (tests use it
    to probe the running pair); ``inspect`` after it, with the books too. ``ledger``:
    "simledger", or one of host.demo.ethereum.KINDS (both sides then run the Ethereum adaptor
    on anvil). ``adaptors``: the in-tree adaptors directory (default: see host.demo.adaptors).
    HarnessError when it cannot run to the end.
    """

    def say(text: str) -> None:
        print(text, file=out, flush=True)

    with contextlib.ExitStack() as stack:
        chain = None
        if ledger in ETHEREUM_KINDS:
            say(f"starting anvil ({ledger})")
            found = adaptors or adaptors_dir()
            chain = stack.enter_context(ethereum_chain(directory, ledger, found))
        pair = Pair(directory, sides, chain=chain, log_format=log_format, adaptors=adaptors)
        with running(pair, say):
            books = _settle(pair, min_settlements, say)
            on_chain = chain.reconcile(chain.books(), books.alice_completed) if chain else None
            problems = reconcile(books, on_chain)
            code, scale, ledger_scale = _units(chain)
            say("")
            say(render(books, code, scale, ledger_scale))
            if then is not None:
                then(pair.alice, pair.bob)
            if inspect is not None:
                inspect(pair.alice, pair.bob, books)
            return books, problems
    raise AssertionError("unreachable")  # pragma: no cover


def _units(chain: EthereumDemo | None) -> tuple[str, int, int]:
    """The asset code, the accounts' scale and the ledger's."""
    if chain is None:
        return "USD", ACCOUNT_SCALE, LEDGER_SCALE
    return chain.asset_code, chain.account_scale, chain.ledger_scale


def _settle(pair: Pair, min_settlements: int, say: Callable[[str], None]) -> Books:
    """Send packets until Alice has settled ``min_settlements`` times; the books once quiet."""
    alice, bob, chain = pair.alice, pair.bob, pair.chain
    code, scale, ledger_scale = _units(chain)
    sent = 0
    seen: set[str] = set()
    rounds = 0
    while True:
        outgoing = [s for s in alice.settlements() if s.direction == _OUT]
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
            raise HarnessError(
                f"only {len(seen)} settlements after {rounds - 1} rounds{pair.logs(40)}"
            )
        last = pair.send(PACKET_AMOUNT, count=50, concurrency=8)
        sent += last.fulfilled * PACKET_AMOUNT
        rejected = ", ".join(f"{c}: {n}" for c, n in sorted(last.rejected_by_code.items()))
        say(
            f"round {rounds}: {last.fulfilled}/{last.sent} packets fulfilled"
            f"{' (rejected ' + rejected + ')' if rejected else ''}, "
            f"median {last.median_latency_ms:.1f} ms; sent so far {usd(sent, scale, code)}"
        )
        # An engine in its own process settles once it has read the connector's log.
        pair.wait_for(
            "the engines to catch up with their connectors",
            lambda: True if all(host.in_step() for host in pair.hosts) else None,
        )

    def quiet() -> Books | None:
        if not all(host.in_step() for host in pair.hosts):
            return None
        alice_rows = [s for s in alice.settlements() if s.direction == _OUT]
        bob_rows = [s for s in bob.settlements() if s.direction == _IN]
        unfinished = [s for s in alice_rows if s.state != _DONE]
        credited = [s for s in bob_rows if s.state == _DONE]
        done = [s for s in alice_rows if s.state == _DONE]
        if unfinished or len(credited) != len(done) or len(bob_rows) != len(credited):
            return None
        a, b = alice.account(), bob.account()
        if len(alice.settlements()) + len(bob.settlements()) != len(alice_rows) + len(bob_rows):
            return None  # a settlement began while the books were read
        return Books(
            sent=sent,
            alice_balance=int(a.clearing_balance.value),
            alice_leftover=int(a.leftover.value),
            alice_completed=done,
            alice_unfinished=unfinished,
            bob_balance=int(b.clearing_balance.value),
            bob_credited=credited,
            alice_ledger=chain.balance("alice") if chain else pair.ledger_balance("alice-ledger"),
            bob_ledger=chain.balance("bob") if chain else pair.ledger_balance("bob-ledger"),
        )

    return pair.wait_for("every settlement to be paid and credited", quiet)


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
