"""The adaptors serving now, as the engine sees them: a registry the host keeps current.

The engine binding (host.binding) binds an adaptor's SettlementPort when it starts serving and
unbinds it when it stops; ``changed`` says that a bound adaptor can take work it could not take
before (its accounts are set up). The engine reads the registry for every settlement it carries,
and registers itself as an observer so that settlements waiting for an adaptor go out as soon as
it can take them. Nobody else holds the ports: one owner, told of every change.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from host.engine.ports import SettlementPort

#: Told the name of an adaptor that was bound, unbound or changed.
Observer = Callable[[str], None]


class AdaptorRegistry:
    """The SettlementPort of each adaptor serving now, by adaptor name."""

    def __init__(self, ports: Mapping[str, SettlementPort] | None = None) -> None:
        """``ports``: adaptors serving from the start (tests, tools with a fixed ledger)."""
        self._ports: dict[str, SettlementPort] = dict(ports or {})
        self._observers: list[Observer] = []

    def bind(self, name: str, port: SettlementPort) -> None:
        """``name`` serves now, through ``port`` (replacing the port of an earlier process)."""
        self._ports[name] = port
        self._notify(name)

    def unbind(self, name: str) -> None:
        """``name`` stopped serving: its settlements wait until it is bound again."""
        if self._ports.pop(name, None) is not None:
            self._notify(name)

    def changed(self, name: str) -> None:
        """``name`` can take work it could not before (its accounts are set up)."""
        self._notify(name)

    def port(self, name: str) -> SettlementPort | None:
        """The port of ``name`` while it serves, else None."""
        return self._ports.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._ports

    def names(self) -> frozenset[str]:
        """The adaptors serving now."""
        return frozenset(self._ports)

    def observe(self, observer: Observer) -> None:
        """Call ``observer`` after every bind, unbind and change (synchronously: keep it short)."""
        self._observers.append(observer)

    def _notify(self, name: str) -> None:
        for observer in self._observers:
            observer(name)
