"""Checks of the process contract at start: the handshake line, version negotiation, the magic
cookie, health (docs/protocol.md sections 1 to 3 and 5).

The refusals (no common version, no cookie) are starts of their own, made after the adaptor
under test has started with the right environment: that start is the control, so an adaptor
that exits 1 for another reason (a crash at load) cannot pass for one that refuses.
"""

from __future__ import annotations

from host.conformance import tls_probe
from host.conformance.checks.registry import check
from host.conformance.launch import Refusal
from host.conformance.report import CheckFailed
from host.conformance.session import Phase, Session
from host.supervisor import rpc
from host.supervisor.diagnose import describe_exit
from sdk import contract, mtls

#: Longest stderr line quoted in a PASS line.
QUOTE_LIMIT = 160


def _quoted(refusal: Refusal) -> str:
    message = refusal.message
    return message if len(message) <= QUOTE_LIMIT else message[: QUOTE_LIMIT - 3] + "..."


@check(
    "handshake",
    "offered version 1, it prints a well-formed handshake line with CORE 1 and APP 1",
    needs=Phase.SPAWNED,
)
async def handshake_line(session: Session) -> str:
    line = session.handshake
    if line is None:
        raise CheckFailed(session.failure)
    # The host's parse already refused another core version or a version not offered.
    expected = max(contract.CONTRACT_VERSIONS)
    if line.app_version != expected:
        raise CheckFailed(f"chose contract version {line.app_version}, expected {expected}")
    return repr(line.line())


@check(
    "handshake.no_common_version",
    "offered only version 99, it exits non-zero with a message on stderr, no handshake line",
    needs=Phase.CONNECTED,
)
async def no_common_version(session: Session) -> str:
    refusal = await session.refused_start(versions="99")
    offered = f"offered {contract.ENV_PROTOCOL_VERSIONS}=99 only"
    if refusal.handshook:
        raise CheckFailed(
            f"{offered}, {refusal.diagnosis}; it must print a message on stderr and exit 1 "
            "(docs/protocol.md, section 3). go-plugin's Serve falls back to its lowest version "
            "instead: a Go adaptor checks the variable itself before calling Serve"
        )
    if refusal.exit_status is None:
        raise CheckFailed(f"{offered}, it neither exited nor handshook: {refusal.diagnosis}")
    if refusal.exit_status == 0:
        raise CheckFailed(f"{offered}, it exited with code 0; expected non-zero")
    if not refusal.message:
        raise CheckFailed(
            f"{offered}, it {describe_exit(refusal.exit_status)} without a message on stderr: "
            "say which versions each side speaks"
        )
    return f"{describe_exit(refusal.exit_status)}: {_quoted(refusal)}"


@check(
    "cookie",
    "without the magic cookie it exits 1 with a message on stderr, no handshake line",
    needs=Phase.CONNECTED,
)
async def cookie(session: Session) -> str:
    refusal = await session.refused_start(cookie=False)
    if refusal.handshook:
        raise CheckFailed(
            f"started without {contract.MAGIC_COOKIE_KEY}: {refusal.diagnosis}; it must refuse"
        )
    if refusal.exit_status is None:
        raise CheckFailed(
            f"without the cookie it neither exited nor handshook: {refusal.diagnosis}"
        )
    if refusal.exit_status != 1:
        raise CheckFailed(
            f"without the cookie it {describe_exit(refusal.exit_status)}; expected exit code 1"
        )
    if not refusal.message:
        raise CheckFailed("without the cookie it exited 1 but said nothing on stderr")
    return f"exit 1: {_quoted(refusal)}"


@check("health", 'grpc.health.v1 reports service "plugin" SERVING', needs=Phase.CONNECTED)
async def health(session: Session) -> str:
    assert session.channel is not None
    problem = await rpc.check_health(session.channel, session.options.call_timeout)
    if problem is not None:
        raise CheckFailed(problem)
    return f"{contract.HEALTH_SERVICE!r} SERVING"


@check(
    "transport",
    "it listens where asked: a unix socket, or 127.0.0.1 over TCP with mutual TLS that "
    "refuses a client with another certificate or none",
    needs=Phase.CONNECTED,
)
async def transport(session: Session) -> str:
    line = session.handshake
    assert line is not None
    asked = session.options.transport
    if asked == "unix":
        if line.network != "unix":
            raise CheckFailed(
                f"asked for a unix socket, it listens on {line.network} {line.address}"
            )
        return f"unix socket {line.address}"
    # The host's channel (open already) trusts exactly the certificate of the handshake line
    # and presents the suite's own: that one must be accepted, any other refused.
    within = session.options.call_timeout
    refused_right = await tls_probe.probe(line, session.own, within)
    if refused_right is not None:
        raise CheckFailed(f"a client with the host's certificate was refused: {refused_right}")
    wrong = await tls_probe.probe(line, mtls.generate_certificate(), within)
    if wrong is None:
        raise CheckFailed(
            "a client presenting another certificate than PLUGIN_CLIENT_CERT was accepted: "
            "trust exactly the host's certificate (docs/protocol.md, section 4)"
        )
    anonymous = await tls_probe.probe(line, None, within)
    if anonymous is None:
        raise CheckFailed(
            "a client presenting no certificate was accepted: require one (docs/protocol.md, "
            "section 4)"
        )
    if line.network == "tcp":
        host = line.address.rpartition(":")[0]
        if host not in ("127.0.0.1", "localhost", "[::1]"):
            raise CheckFailed(f"asked for loopback TCP, it listens on {line.address}")
        where = f"tcp {line.address}"
    else:
        # go-plugin listens on TCP only on Windows: a stock go-plugin plugin answers with a
        # unix socket, with mutual TLS all the same; the host accepts it (docs/protocol.md).
        where = f"unix {line.address} (asked for tcp: as a go-plugin plugin on Linux does)"
    curve = mtls.curve_of(mtls.der_to_pem(line.server_cert_der or b""))
    return (
        f"{where} with mutual TLS ({curve or 'non-EC'} certificate); another client "
        f"certificate refused ({wrong}); none refused"
    )
