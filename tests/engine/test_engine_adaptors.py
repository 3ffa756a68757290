"""The adaptor registry: bind, unbind and changed, each told to the observers."""

from __future__ import annotations

from engine_fakes import FakeLedger

from host.engine import AdaptorRegistry


def test_observers_hear_of_every_bind_unbind_and_change() -> None:
    registry = AdaptorRegistry()
    heard: list[str] = []
    registry.observe(heard.append)
    first, second = FakeLedger(), FakeLedger()

    assert "sim" not in registry and registry.port("sim") is None
    registry.bind("sim", first)
    assert "sim" in registry and registry.port("sim") is first
    registry.bind("sim", second)  # a new process of the same adaptor replaces the port
    assert registry.port("sim") is second
    registry.changed("sim")
    registry.unbind("sim")
    registry.unbind("sim")  # not bound: nothing changed, nobody told
    registry.unbind("never")
    assert "sim" not in registry and registry.names() == frozenset()
    assert heard == ["sim", "sim", "sim", "sim"]


def test_a_fixed_mapping_is_a_registry_of_those_adaptors() -> None:
    ledger = FakeLedger()
    registry = AdaptorRegistry({"sim": ledger})
    assert registry.names() == frozenset({"sim"}) and registry.port("sim") is ledger
