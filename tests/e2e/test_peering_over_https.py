"""Two `ilp-host run` processes peered over HTTPS, with the certificates of a CA the test makes.

Each host serves ILP-over-HTTP with `[connector] tls_cert`/`tls_key` (a certificate of the test's
CA for 127.0.0.1, its key 0600) and checks its peer's certificate against `peer_ca` (that CA
alone); `ilp-host send` pays across and both books move. Loopback only, as every test.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from host.demo.twohost import free_ports
from tests.certificates import TestCa
from tests.polling import wait_until

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
ILP_HOST = str(Path(sys.executable).parent / "ilp-host")
MEMORY_ADAPTOR = REPO / "adaptors" / "memory-python" / "adaptor.py"
DEADLINE = 60.0

CONFIG = """
[host]
state_dir = "{name}-state"
[[adaptor]]
name = "memory"
command = ["python", "{adaptor}"]
[[account]]
id = "{peer}"
adaptor = "memory"
asset_code = "USD"
asset_scale = 2
min_balance = -100000
max_balance = 100000
settle_threshold = -100000
[connector]
address = "test.{name}"
host = "127.0.0.1"
port = {port}
tls_cert = "tls/{name}.crt"
tls_key = "tls/{name}.key"
peer_ca = "tls/ca.pem"
[[peer]]
id = "{peer}"
url = "https://127.0.0.1:{peer_port}/"
address = "test.{peer}"
incoming_token = "{peer}-to-{name}-token"
outgoing_token = "{name}-to-{peer}-token"
"""


def ilp_host(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [ILP_HOST, *args], cwd=REPO, capture_output=True, text=True, timeout=DEADLINE
    )


def test_two_hosts_peered_over_https_pay_each_other(tmp_path: Path) -> None:
    ca = TestCa.make()
    tls = tmp_path / "tls"
    tls.mkdir(mode=0o700)
    (tls / "ca.pem").write_bytes(ca.cert_pem)
    ports = dict(zip(("alice", "bob"), free_ports(2), strict=True))
    configs = {}
    for name, peer in (("alice", "bob"), ("bob", "alice")):
        ca.write(tls, name, "127.0.0.1")
        configs[name] = tmp_path / f"{name}.toml"
        configs[name].write_text(
            CONFIG.format(
                name=name,
                peer=peer,
                adaptor=MEMORY_ADAPTOR,
                port=ports[name],
                peer_port=ports[peer],
            )
        )
    hosts = []
    try:
        for name, config in configs.items():
            with (tmp_path / f"{name}.log").open("wb") as log:
                hosts.append(
                    subprocess.Popen(
                        [ILP_HOST, "run", "-c", str(config)],
                        cwd=REPO,
                        stdout=log,
                        stderr=log,
                        stdin=subprocess.DEVNULL,
                    )
                )

        def send() -> subprocess.CompletedProcess[str]:
            assert all(host.poll() is None for host in hosts), logs(tmp_path)
            return ilp_host(
                "send",
                "test.bob.sink",
                "--amount",
                "100",
                "--count",
                "2",
                "-c",
                str(configs["alice"]),
            )

        # Until both hosts listen (a send while bob starts is rejected, and may be repeated).
        sent = wait_until(
            send,
            "alice's packets to bob, fulfilled over HTTPS",
            timeout=DEADLINE,
            interval=0.5,
            done=lambda result: result.returncode == 0 and "rejected   0" in result.stdout,
        )
        assert "fulfilled  2" in sent.stdout, sent.stdout
        peers = ilp_host("peers", "-c", str(configs["bob"]))
        assert peers.returncode == 0, peers.stderr
        # bob's book: alice owes it what was fulfilled (each successful send: 2.00).
        row = re.search(
            rf"\nalice +peer +test\.alice +https://127\.0\.0\.1:{ports['alice']}/ +(\S+)",
            peers.stdout,
        )
        assert row is not None, peers.stdout
        assert float(row.group(1)) > 0 and float(row.group(1)) % 2 == 0, peers.stdout
        for name in configs:
            text = (tmp_path / f"{name}.log").read_text(errors="replace")
            assert f"listening on https://127.0.0.1:{ports[name]}/" in text, text
    finally:
        for host in hosts:
            host.send_signal(signal.SIGTERM)
        for host in hosts:
            try:
                host.wait(timeout=30)
            except subprocess.TimeoutExpired:
                host.kill()
                host.wait()
    assert all(host.returncode == 0 for host in hosts), logs(tmp_path)
    assert " ERROR " not in logs(tmp_path), logs(tmp_path)


def logs(directory: Path) -> str:
    return "\n".join(path.read_text(errors="replace")[-3000:] for path in directory.glob("*.log"))
