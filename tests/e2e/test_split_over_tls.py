"""A host split in two processes whose Connector API is on TCP: TLS and the bearer token.

`ilp-host connector` serves the Connector API on loopback TCP with the configured certificate,
key and token; `ilp-host engine`, from the same file, trusts the certificate and presents the
token, and attaches. The token and key files are 0600, as the host requires.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import grpc
import pytest

from host.demo.twohost import free_ports
from host.pb.ilphost.admin.v1 import admin_pb2, admin_pb2_grpc
from sdk.mtls import generate_certificate
from tests.polling import wait_until

REPO = Path(__file__).resolve().parents[2]
MEMORY_ADAPTOR = REPO / "adaptors" / "memory-python" / "adaptor.py"

pytestmark = pytest.mark.slow

CONFIG = """
[host]
state_dir = "state"
[[adaptor]]
name = "memory"
command = {command}
env = {{ ILP_ADAPTOR_ASSET_CODE = "USD" }}
[[account]]
id = "bob"
adaptor = "memory"
asset_code = "USD"
asset_scale = 2
[connector]
address = "test.alice"
port = {port}
api = "localhost:{api_port}"
api_tls_cert = "tls/api.crt"
api_tls_key = "tls/api.key"
api_token_file = "tls/api.token"
[[peer]]
id = "bob"
url = "http://127.0.0.1:{peer_port}/"
address = "test.bob"
incoming_token = "bob-to-alice-token"
outgoing_token = "alice-to-bob-token"
"""


def test_the_engine_attaches_to_a_tcp_connector_api_with_tls_and_its_token() -> None:
    directory = Path(tempfile.mkdtemp(prefix="ilp"))
    port, api_port, peer_port = free_ports(3)
    tls = directory / "tls"
    tls.mkdir(mode=0o700)
    certificate = generate_certificate()
    (tls / "api.crt").write_bytes(certificate.cert_pem)
    for name, content in (("api.key", certificate.key_pem), ("api.token", b"engine-token-1\n")):
        (tls / name).write_bytes(content)
        (tls / name).chmod(0o600)
    config = directory / "host.toml"
    command = json.dumps(["python", str(MEMORY_ADAPTOR)])
    config.write_text(
        CONFIG.format(command=command, port=port, api_port=api_port, peer_port=peer_port)
    )
    log = (directory / "host.log").open("wb")
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "host.cli", role, "-c", str(config)],
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        for role in ("connector", "engine")
    ]
    socket = directory / "state" / "engine" / "admin.sock"
    try:

        def connector_link() -> admin_pb2.GetConnectorLinkResponse:
            assert all(p.poll() is None for p in processes), (directory / "host.log").read_text()
            with grpc.insecure_channel(f"unix:{socket}") as channel:
                stub = admin_pb2_grpc.HostAdminStub(channel)
                return stub.GetConnectorLink(admin_pb2.GetConnectorLinkRequest(), timeout=5)

        link = wait_until(
            connector_link,
            "the engine's link to its connector over TLS",
            interval=0.1,
            done=lambda link: link.connected,
            ignore=(grpc.RpcError,),  # not serving yet
        )
        text = (directory / "host.log").read_text()
        assert link.address == f"localhost:{api_port}"
        assert f"Connector API on localhost:{api_port} (TLS, bearer token)" in text
        assert " ERROR " not in text
    finally:
        for process in reversed(processes):
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=60)
        log.close()
        shutil.rmtree(directory, ignore_errors=True)
