"""The contract's grammar of ids and keys (sdk/contract.py): the one definition."""

from __future__ import annotations

import pytest

from sdk import contract


@pytest.mark.parametrize("value", ["a", "peer-1", "A.b_c~d-e", "x" * 128])
def test_account_ids(value: str) -> None:
    assert contract.is_account_id(value)


@pytest.mark.parametrize("value", ["", "x" * 129, "a b", "a/b", "a:b", "é", "a\n"])
def test_malformed_account_ids(value: str) -> None:
    assert not contract.is_account_id(value)


def test_an_idempotency_key_is_printable_ascii_space_included() -> None:
    assert contract.is_idempotency_key("settle now: #42 ~ (operator)")
    assert contract.is_idempotency_key(" ")
    assert contract.is_idempotency_key("k" * 128)
    for bad in ("", "k" * 129, "tab\there", "new\nline", "del\x7f", "é"):
        assert not contract.is_idempotency_key(bad), bad


def test_a_settlement_id_has_no_space() -> None:
    assert contract.is_settlement_id("alice-ledger:3f95f1eb")
    assert contract.is_settlement_id("x" * 255)
    for bad in ("", "a b", "x" * 256, "é"):
        assert not contract.is_settlement_id(bad), bad
