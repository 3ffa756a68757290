"""``ilp-host demo --ledger ethereum`` and ``--ledger ethereum-erc20``: two hosts settle on
anvil and the books reconcile against the chain (balances, receipts, Transfer logs)."""

from __future__ import annotations

import io
import shutil
import tempfile
from pathlib import Path

import pytest

from host.demo.command import main
from host.demo.scenario import run_demo


@pytest.mark.parametrize("ledger", ["ethereum", "ethereum-erc20"])
def test_two_hosts_settle_on_anvil_and_reconcile_against_the_chain(ledger: str) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="ileth"))
    try:
        out = io.StringIO()
        books, problems = run_demo(workdir, min_settlements=2, out=out, ledger=ledger)
        assert problems == [], out.getvalue()
        assert len(books.alice_completed) >= 2
        assert len(books.bob_credited) == len(books.alice_completed)
        assert books.bob_ledger > 0
        # The ids are the chain's: transaction hashes, with the log index for a token.
        (first, *_) = books.alice_completed
        assert first.ledger_settlement_id.startswith("0x")
        assert (":" in first.ledger_settlement_id) == (ledger == "ethereum-erc20")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def test_the_demo_refuses_an_unknown_ledger(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--ledger", "bitcoin"])
    assert exited.value.code == 2
    assert "ethereum-erc20" in capsys.readouterr().err


def test_the_ethereum_demo_refuses_a_simledger_adaptor_choice(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["--ledger", "ethereum", "--alice", "go"]) == 2
    assert "--alice choose simledger adaptors" in capsys.readouterr().err
