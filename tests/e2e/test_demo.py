"""The main job end to end: a ledger and two peered hosts settle, and the books reconcile."""

from __future__ import annotations

import io
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from host.demo import PACKET_AMOUNT, Books, Host, account, reconcile, run_demo, settlements
from sdk.pb.ilphost.admin.v1 import admin_pb2


@pytest.fixture
def workdir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="ilpe2e"))  # short: unix socket paths
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_two_hosts_settle_and_reconcile(workdir: Path) -> None:
    probed: dict[str, object] = {}

    def over_the_limit(alice: Host, bob: Host) -> None:
        """A packet beyond Alice's credit limit with Bob is refused T04; nothing moves."""
        before = (account(alice).clearing_balance.value, account(bob).clearing_balance.value)
        count = len(settlements(alice))
        request = admin_pb2.SendPacketsRequest(
            destination="test.bob.demo", amount=3_000_000, count=1, concurrency=1
        )
        replies = list(alice.connector.SendPackets(request, timeout=60))
        probed["last"] = replies[-1]
        after = (account(alice).clearing_balance.value, account(bob).clearing_balance.value)
        probed["unchanged"] = before == after and count == len(settlements(alice))

    out = io.StringIO()
    books, problems = run_demo(workdir, min_settlements=3, out=out, then=over_the_limit)
    assert problems == [], out.getvalue()
    assert len(books.alice_completed) >= 3
    assert len(books.bob_credited) == len(books.alice_completed)
    assert books.sent > 0 and books.sent % PACKET_AMOUNT == 0
    assert books.bob_ledger > 0
    last = probed["last"]
    assert isinstance(last, admin_pb2.SendPacketsResponse)
    assert last.done and last.fulfilled == 0 and dict(last.rejected_by_code) == {"T04": 1}
    assert probed["unchanged"] is True
    assert "the books" not in out.getvalue()  # the verdict is main()'s, not run_demo's


def test_reconcile_names_what_does_not_add_up() -> None:
    paid = admin_pb2.Settlement(
        amount={"value": "110000", "scale": 6},
        ledger_amount={"value": "11", "scale": 2},
        ledger_settlement_id="x:1",
    )
    good = Books(
        sent=200_000,
        alice_balance=-200_000 + 110_000 + 500,
        alice_leftover=500,
        alice_completed=[paid],
        bob_balance=200_000 - 110_000,
        bob_credited=[paid],
        alice_ledger=1_000_000 - 11,
        bob_ledger=11,
    )
    assert reconcile(good) == []
    good.bob_ledger = 22  # paid twice on the ledger
    good.bob_credited = [paid, paid]  # and credited twice
    problems = reconcile(good)
    assert any("Bob's account holds 22" in p for p in problems)
    assert any("Bob: balance" in p for p in problems)
    assert any("credited 2 ledger payments" in p for p in problems)


@pytest.mark.parametrize("languages", [("go", "python"), ("python", "node")])
def test_mixed_language_adaptors_settle_and_reconcile(
    workdir: Path, languages: tuple[str, str]
) -> None:
    """Adaptors in different languages exchange ledger accounts and settle with each other."""
    out = io.StringIO()
    books, problems = run_demo(workdir, min_settlements=2, out=out, languages=languages)
    assert problems == [], out.getvalue()
    assert len(books.alice_completed) >= 2
    assert f"with the {languages[0]} adaptor" in out.getvalue()


def test_the_demo_with_alice_split_in_two_processes(workdir: Path) -> None:
    """Proposal 2 on Alice's side (her engine pays), with a Node.js adaptor for Bob."""
    out = io.StringIO()
    books, problems = run_demo(
        workdir,
        min_settlements=2,
        out=out,
        languages=("python", "node"),
        engines=("external", "internal"),
    )
    assert problems == [], out.getvalue()
    assert len(books.alice_completed) >= 2
    assert "ilp-host connector -c alice.toml + ilp-host engine -c alice.toml" in out.getvalue()
