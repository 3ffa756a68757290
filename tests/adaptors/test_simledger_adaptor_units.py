"""The simledger adaptor's pure parts and its state file (no processes)."""

from __future__ import annotations

import importlib.util
import random
import sqlite3
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ADAPTOR_DIR = Path(__file__).resolve().parents[2] / "adaptors" / "simledger-python"


def _load(name: str, file: str) -> ModuleType:
    # The adaptor is a script folder, not a package: load its modules by path. adaptor.py
    # imports adaptor_state as a top-level module, as in its own process.
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, ADAPTOR_DIR / file)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


state_module = _load("adaptor_state", "adaptor_state.py")
adaptor_module = _load("simledger_python_adaptor", "adaptor.py")
AdaptorState: Any = state_module.AdaptorState
Acknowledgement: Any = state_module.Acknowledgement


@pytest.fixture
def state(tmp_path: Path) -> Iterator[Any]:
    opened = AdaptorState(tmp_path / "state.db")
    yield opened
    opened.close()


def test_config_names_every_missing_variable_and_checks_the_account() -> None:
    with pytest.raises(adaptor_module.ConfigError) as missing:
        adaptor_module.Config.from_env({"ILP_SIMLEDGER_ADDR": "unix:/x"})
    assert "ILP_SIMLEDGER_ACCOUNT, ILP_ADAPTOR_STATE_DB" in str(missing.value)
    with pytest.raises(adaptor_module.ConfigError, match="ILP_SIMLEDGER_ACCOUNT must be"):
        adaptor_module.Config.from_env(
            {
                "ILP_SIMLEDGER_ADDR": "unix:/x",
                "ILP_SIMLEDGER_ACCOUNT": "no spaces",
                "ILP_ADAPTOR_STATE_DB": "s.db",
            }
        )


def test_backoff_doubles_up_to_the_cap_with_jitter_and_resets() -> None:
    backoff = adaptor_module.Backoff(first=0.1, cap=1.0, rng=random.Random(3))
    delays = [backoff.delay() for _ in range(8)]
    nominal = [0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0, 1.0]
    for delay, expected in zip(delays, nominal, strict=True):
        assert 0.8 * expected <= delay <= 1.2 * expected
    backoff.reset()
    assert backoff.delay() <= 0.12


def test_incoming_is_reported_once_and_the_cursor_moves(state: Any) -> None:
    state.add_account("bob")
    state.learn_peer_ledger_account("bob", "ledger-bob")
    first = state.record_incoming("t1", 4, "ledger-bob", 500)
    assert (first.settlement_id, first.account_id, first.amount) == ("t1", "bob", 500)
    assert state.record_incoming("t1", 4, "ledger-bob", 500) is None
    assert state.record_incoming("mint", 6, "", 100) is None
    assert state.watch_cursor() == 6
    assert [i.settlement_id for i in state.unacknowledged()] == ["t1"]


def test_unknown_payers_wait_until_their_account_is_known(state: Any) -> None:
    assert state.record_incoming("t1", 1, "ledger-carol", 5) is None
    assert state.record_incoming("t2", 2, "ledger-dave", 6) is None
    assert state.unacknowledged() == []
    assert state.acknowledge("t1") == Acknowledgement.UNKNOWN
    state.add_account("carol")
    released = state.learn_peer_ledger_account("carol", "ledger-carol")
    assert [(i.settlement_id, i.account_id) for i in released] == [("t1", "carol")]
    assert [i.settlement_id for i in state.unacknowledged()] == ["t1"]


def test_acknowledgements_are_idempotent_and_persist(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    state = AdaptorState(path)
    state.add_account("bob")
    state.learn_peer_ledger_account("bob", "ledger-bob")
    for sequence, settlement_id in enumerate(("t1", "t2", "t3"), start=1):
        state.record_incoming(settlement_id, sequence, "ledger-bob", 1)
    assert state.acknowledge("t2") == Acknowledgement.ACKNOWLEDGED
    assert state.acknowledge("t2") == Acknowledgement.ALREADY
    assert state.acknowledge("nope") == Acknowledgement.UNKNOWN
    state.close()

    reopened = AdaptorState(path)
    assert [i.settlement_id for i in reopened.unacknowledged()] == ["t1", "t3"]
    assert reopened.acknowledge("t2") == Acknowledgement.ALREADY
    assert reopened.watch_cursor() == 3
    assert reopened.peer_ledger_account("bob") == "ledger-bob"
    reopened.close()


def test_a_version_1_file_is_upgraded_keeping_its_state(tmp_path: Path) -> None:
    # Version 1 kept idempotency keys in "sent"; the SDK's payment store keeps them now.
    path = tmp_path / "state.db"
    raw = sqlite3.connect(path)
    raw.executescript(
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
        "CREATE TABLE peers (account_id TEXT PRIMARY KEY, ledger_account TEXT);"
        "CREATE TABLE sent (idempotency_key TEXT PRIMARY KEY, account_id TEXT NOT NULL, "
        "amount TEXT NOT NULL);"
        "CREATE TABLE incoming (settlement_id TEXT PRIMARY KEY, sequence INTEGER NOT NULL "
        "UNIQUE, payer_ledger_account TEXT NOT NULL, amount TEXT NOT NULL, account_id TEXT, "
        "acknowledged INTEGER NOT NULL DEFAULT 0);"
        "INSERT INTO peers VALUES ('bob', 'ledger-bob');"
        "INSERT INTO sent VALUES ('k', 'bob', '5');"
        "PRAGMA user_version = 1;"
    )
    raw.close()
    upgraded = AdaptorState(path)
    assert upgraded.peer_ledger_account("bob") == "ledger-bob"
    upgraded.close()
    raw = sqlite3.connect(path)
    tables = {row[0] for row in raw.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert (raw.execute("PRAGMA user_version").fetchone()[0], "sent" in tables) == (2, False)
    raw.close()


def test_accounts_are_idempotent_and_deletable(state: Any) -> None:
    state.add_account("bob")
    state.learn_peer_ledger_account("bob", "ledger-bob")
    state.add_account("bob")
    state.add_account("carol")
    assert state.peer_ledger_account("bob") == "ledger-bob"
    assert state.accounts_awaiting_exchange() == ["carol"]
    state.delete_account("carol")
    state.delete_account("carol")
    assert not state.has_account("carol")
    assert state.accounts_awaiting_exchange() == []


def test_a_state_file_from_a_newer_adaptor_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    AdaptorState(path).close()
    raw = sqlite3.connect(path)
    raw.execute("PRAGMA user_version = 7")
    raw.close()
    with pytest.raises(RuntimeError, match="schema version 7"):
        AdaptorState(path)
