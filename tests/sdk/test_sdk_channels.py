"""sdk.channels: the authority rule (pure). Its effect on a real server that refuses a
percent-encoded authority is tested against the Rust adaptor (tests/adaptors)."""

from __future__ import annotations

import pytest

from sdk import channels


@pytest.mark.parametrize(
    "target", ["unix:/tmp/x/adaptor.sock", "unix:///tmp/a.sock", "unix-abstract:n"]
)
def test_unix_targets_send_localhost(target: str) -> None:
    assert ("grpc.default_authority", "localhost") in channels.channel_options(target)


@pytest.mark.parametrize("target", ["127.0.0.1:5000", "localhost:1", "dns:///example:443"])
def test_other_targets_keep_grpcs_default(target: str) -> None:
    assert channels.channel_options(target, [("a", 1)]) == [("a", 1)]


def test_an_authority_the_caller_set_wins_and_options_are_kept() -> None:
    options = channels.channel_options(
        "unix:/s", [("grpc.default_authority", "mine"), ("grpc.keepalive_time_ms", 10)]
    )
    assert options == [("grpc.default_authority", "mine"), ("grpc.keepalive_time_ms", 10)]
