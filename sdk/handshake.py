"""The go-plugin handshake line: ``CORE|APP|NETWORK|ADDR|PROTOCOL|CERT``.

Pure functions only: formatting, parsing and version negotiation, so that every malformed line
has a unit test and the host's supervisor turns each failure into a diagnosis.
"""

from __future__ import annotations

import base64
import binascii
import enum
from collections.abc import Iterable
from dataclasses import dataclass

from sdk.contract import CORE_PROTOCOL_VERSION, HANDSHAKE_PROTOCOL


class HandshakeProblem(enum.Enum):
    """Why a handshake line was refused."""

    GARBAGE = "not a handshake line"
    CORE_VERSION = "unsupported core protocol version"
    APP_VERSION = "app protocol version not offered"
    NETWORK = "unsupported network"
    ADDRESS = "empty address"
    PROTOCOL = "unsupported protocol"
    CERT = "certificate field is not base64 DER"


class HandshakeError(ValueError):
    """A handshake line the host cannot use; ``problem`` says which rule it broke."""

    def __init__(self, problem: HandshakeProblem, detail: str) -> None:
        super().__init__(f"{problem.value}: {detail}")
        self.problem = problem
        self.detail = detail


@dataclass(frozen=True)
class Handshake:
    """What an adaptor announced: where it listens and which contract version it chose."""

    app_version: int
    network: str
    address: str
    protocol: str = HANDSHAKE_PROTOCOL
    server_cert_der: bytes | None = None
    core_version: int = CORE_PROTOCOL_VERSION

    def line(self) -> str:
        """The handshake line, without the trailing newline."""
        cert = ""
        if self.server_cert_der is not None:
            cert = base64.b64encode(self.server_cert_der).decode().rstrip("=")
        return "|".join(
            (
                str(self.core_version),
                str(self.app_version),
                self.network,
                self.address,
                self.protocol,
                cert,
            )
        )

    def grpc_target(self) -> str:
        """The gRPC channel target for this address."""
        if self.network == "unix":
            return f"unix:{self.address}"
        return self.address


def _shown(line: str) -> str:
    return repr(line if len(line) <= 120 else line[:117] + "...")


def parse(line: str, offered_versions: Iterable[int]) -> Handshake:
    """Parse one handshake line, checking it against the versions the host offered.

    Raises HandshakeError naming the broken rule. Like go-plugin, at least four fields are
    required; PROTOCOL defaults to "netrpc" when absent (which this host refuses).
    """
    text = line.strip()
    parts = text.split("|")
    if len(parts) < 4 or not parts[0].isdigit() or not parts[1].isdigit():
        raise HandshakeError(
            HandshakeProblem.GARBAGE,
            f"expected CORE|APP|NETWORK|ADDR|PROTOCOL|CERT, got {_shown(text)}",
        )
    core, app = int(parts[0]), int(parts[1])
    if core != CORE_PROTOCOL_VERSION:
        raise HandshakeError(
            HandshakeProblem.CORE_VERSION, f"got {core}, this host speaks {CORE_PROTOCOL_VERSION}"
        )
    offered = sorted(set(offered_versions))
    if app not in offered:
        raise HandshakeError(
            HandshakeProblem.APP_VERSION, f"adaptor chose {app}, host offered {offered}"
        )
    network, address = parts[2], parts[3]
    if network not in ("unix", "tcp"):
        raise HandshakeError(HandshakeProblem.NETWORK, f"{network!r} (expected unix or tcp)")
    if not address:
        raise HandshakeError(HandshakeProblem.ADDRESS, f"in {_shown(text)}")
    protocol = parts[4] if len(parts) > 4 and parts[4] else "netrpc"
    if protocol != HANDSHAKE_PROTOCOL:
        raise HandshakeError(
            HandshakeProblem.PROTOCOL, f"{protocol!r} (this host speaks {HANDSHAKE_PROTOCOL!r})"
        )
    cert: bytes | None = None
    if len(parts) > 5 and parts[5]:
        field = parts[5]
        try:
            cert = base64.b64decode(field + "=" * (-len(field) % 4), validate=True)
        except binascii.Error as exc:
            raise HandshakeError(HandshakeProblem.CERT, str(exc)) from exc
    return Handshake(app, network, address, protocol, cert, core)


def parse_versions(value: str | None) -> list[int]:
    """Parse PLUGIN_PROTOCOL_VERSIONS ("1,2"); unparseable entries are ignored, like go-plugin."""
    versions: list[int] = []
    for item in (value or "").split(","):
        item = item.strip()
        if item.isdigit():
            versions.append(int(item))
    return versions


def negotiate(offered: str | None, supported: Iterable[int]) -> int | None:
    """The highest version both sides speak; the lowest supported one when nothing is offered.

    None when there is no common version.
    """
    ours = sorted(set(supported))
    if not ours:
        return None
    theirs = parse_versions(offered)
    if not theirs:
        return ours[0]
    common = set(ours) & set(theirs)
    return max(common) if common else None
