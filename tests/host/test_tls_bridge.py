"""The host's TLS bridge: a stock go-plugin plugin with automatic mutual TLS (its own P-521
certificate, which gRPC's TLS stack cannot verify) serves under the host unchanged.

Real processes: the simulated ledger and adaptors/simledger-go (go-plugin's plugin.Serve)
under the host's Supervisor, asked for TCP (so automatic mutual TLS).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from host.simledger.process import LedgerProcess
from host.supervisor import tls_bridge
from sdk import mtls
from sdk.pb.ilphost.adaptor.v1 import adaptor_pb2
from tests.adaptors.test_simledger_go import (
    RPC_TIMEOUT,
    go_adaptor,
    go_spec,
    ledger,
    stub,
    supervised,
)

__all__ = ["go_adaptor", "ledger"]  # fixtures shared with the Go adaptor's tests


def _modes(socket: Path) -> tuple[bool, int, int]:
    """Whether ``socket`` is a socket, its mode, its directory's mode."""
    return socket.is_socket(), socket.stat().st_mode & 0o777, socket.parent.stat().st_mode & 0o777


@pytest.mark.parametrize(
    ("curve", "bridged"),
    [(ec.SECP256R1(), False), (ec.SECP384R1(), False), (ec.SECP521R1(), True)],
)
def test_only_curves_grpc_cannot_verify_are_bridged(curve: ec.EllipticCurve, bridged: bool) -> None:
    certificate = mtls.generate_certificate(curve)
    assert tls_bridge.needs_bridge(certificate.cert_pem) is bridged


def test_a_stock_go_plugin_with_automatic_mtls_serves_under_the_host(
    go_adaptor: Path, ledger: LedgerProcess, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="ilp_host")
    spec = dataclasses.replace(
        go_spec(go_adaptor, ledger.target, tmp_path / "alice.json"), transport="tcp"
    )
    assert spec.auto_mtls

    async def scenario() -> Path:
        async with supervised(spec) as supervisor:
            info = await stub(supervisor).GetInfo(adaptor_pb2.GetInfoRequest(), timeout=RPC_TIMEOUT)
            assert info.name == "simledger-go"
            said = [r.getMessage() for r in caplog.records if "TLS carried by" in r.getMessage()]
            assert len(said) == 1 and "secp521r1" in said[0], said
            found = re.search(r"\(unix:(\S+)\)", said[0])
            assert found is not None
            bridge = Path(found.group(1))
            modes = await asyncio.to_thread(_modes, bridge)
            assert modes == (True, 0o600, 0o700)
        return bridge

    bridge = asyncio.run(scenario())
    # Closed with its channel: the private directory is gone.
    assert not bridge.parent.exists()
