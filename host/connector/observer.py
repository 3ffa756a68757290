"""What the connector tells an observer (metrics) about the packets on its links.

Called on the packet path, so an implementation must be cheap and must not raise. The
connector counts at its links: every Prepare a peer sent us (``incoming``) and every Prepare we
sent a peer (``outgoing``), with the reply it got. ``peer.settle`` messages between the
settlement engines are reported apart (``settlement_message``), so that the packet counts are
the traffic's alone.
"""

from __future__ import annotations

from typing import Literal, Protocol

from host.ilp import Reply

Direction = Literal["incoming", "outgoing"]


class PacketObserver(Protocol):
    def incoming(self, account: str, amount: int, reply: Reply, seconds: float) -> None:
        """A Prepare of ``amount`` from peer ``account`` was answered with ``reply`` after
        ``seconds`` (amount 0 when the packet was not a valid Prepare)."""

    def outgoing(self, account: str, amount: int, reply: Reply | None) -> None:
        """A Prepare of ``amount`` went to peer ``account``; its reply, or None when the link
        failed before one came."""

    def settlement_message(self, account: str, direction: Direction, answered: bool) -> None:
        """A peer.settle message to or from peer ``account``; ``answered``: with a Fulfill."""


class NoObserver:
    """The default: nothing is observed."""

    def incoming(self, account: str, amount: int, reply: Reply, seconds: float) -> None:
        pass

    def outgoing(self, account: str, amount: int, reply: Reply | None) -> None:
        pass

    def settlement_message(self, account: str, direction: Direction, answered: bool) -> None:
        pass
