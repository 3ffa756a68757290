"""ILP addresses (RFC 0015) and error codes (RFC 0027)."""

from __future__ import annotations

import pytest

from host.ilp import Reject, address
from host.ilp.errors import (
    ErrorCode,
    ErrorFamily,
    family_of,
    is_well_formed,
    is_well_formed_bytes,
    title_of,
)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "it is empty"),
        ("g." + "x" * 1022, "it has 1024 characters, at most 1023"),
        ("g.alice bob", "character ' ' at index 7"),
        ("g.caf\u00e9", "character '\\xe9' at index 5"),
        ("g.alice\n", "character '\\n' at index 7"),
        ("G.alice", "it starts with 'G', not an allocation scheme"),
        ("test4.alice", "it starts with 'test4'"),
        ("peer", "it needs at least one segment after the allocation scheme"),
        ("peer.", "it needs at least one segment after the allocation scheme"),
        ("g..alice", "segments must not be empty"),
        ("g.alice.", "segments must not be empty"),
        (".g.alice", "it starts with ''"),
    ],
)
def test_why_an_address_is_invalid(text: str, reason: str) -> None:
    assert not address.is_valid(text)
    assert address.why_invalid(text).startswith(reason)
    with pytest.raises(address.AddressError) as caught:
        address.validate(text, "destination")
    assert str(caught.value).startswith("destination ")
    assert reason in str(caught.value)


def test_every_scheme_is_accepted_and_case_matters() -> None:
    for scheme in address.SCHEMES:
        assert address.is_valid(f"{scheme}.a")
        assert address.scheme_of(f"{scheme}.a.b") == scheme
    assert address.is_valid("g.Alice") and address.is_valid("g.alice")
    assert not address.is_valid("Test.alice")


def test_peer_addresses() -> None:
    assert address.is_peer_address("peer.settle")
    assert address.is_peer_address("peer.config")
    assert not address.is_peer_address("g.peer.settle")
    assert not address.is_peer_address("peers.x")


def test_long_invalid_addresses_are_shortened_in_messages() -> None:
    with pytest.raises(address.AddressError, match=r"\.\.\. \(2000 chars\)"):
        address.validate("x" * 2000)


def test_named_codes_match_rfc_0027() -> None:
    assert len(ErrorCode) == 21
    assert str(ErrorCode.F01_INVALID_PACKET) == "F01"
    assert ErrorCode.F02_UNREACHABLE.rfc_name == "Unreachable"
    assert Reject("F06", "g.x").code == ErrorCode.F06_UNEXPECTED_PAYMENT  # str vs StrEnum
    assert ErrorCode.T04_INSUFFICIENT_LIQUIDITY.rfc_name == "Insufficient Liquidity"
    assert ErrorCode.R00_TRANSFER_TIMED_OUT.rfc_name == "Transfer Timed Out"
    assert ErrorCode.F04_INSUFFICIENT_DESTINATION_AMOUNT.rfc_name == (
        "Insufficient Destination Amount"
    )
    for code in ErrorCode:
        assert is_well_formed(code)
        assert code.name.startswith(code.value + "_")
        assert code.family is family_of(code)


def test_families_and_unnamed_codes() -> None:
    assert family_of("F42") is ErrorFamily.FINAL
    assert family_of("T00") is ErrorFamily.TEMPORARY
    assert family_of("R99") is ErrorFamily.RELATIVE
    assert title_of("T04") == "Insufficient Liquidity"
    assert title_of("T42") == "Unnamed temporary error T42"
    with pytest.raises(ValueError, match="two digits"):
        family_of("X00")


@pytest.mark.parametrize("code", ["", "F0", "F000", "f00", "X00", "F0a", "F\u0661\u0662", " F00"])
def test_malformed_codes(code: str) -> None:
    assert not is_well_formed(code)
    assert not is_well_formed_bytes(code.encode("utf-8"))
