"""What sdk.serve reads from its environment, and its socket directory and parent watch."""

from __future__ import annotations

import asyncio
import os
import stat
import tempfile

import pytest

from sdk import contract, mtls, server
from sdk.adaptor import Adaptor
from sdk.server import NOT_STARTED_BY_HOST, AdaptorServer, Launch, LaunchError

COOKIE = {contract.MAGIC_COOKIE_KEY: contract.MAGIC_COOKIE_VALUE}


def launch(**env: str) -> Launch:
    return Launch.from_environ({**COOKIE, **env}, (1,))


def test_the_cookie_guards_against_running_by_hand() -> None:
    for environ in ({}, {contract.MAGIC_COOKIE_KEY: "nope"}):
        with pytest.raises(LaunchError) as caught:
            Launch.from_environ(environ, (1,))
        assert str(caught.value) == NOT_STARTED_BY_HOST
    assert "ilp-host run" in NOT_STARTED_BY_HOST


def test_version_negotiation() -> None:
    assert launch().app_version == 1  # nothing offered: our lowest
    assert (
        Launch.from_environ({**COOKIE, "PLUGIN_PROTOCOL_VERSIONS": "1,2,3"}, (1, 2)).app_version
        == 2
    )
    with pytest.raises(LaunchError, match=r"host offers \[3, 4\].*speaks \[1, 2\]"):
        Launch.from_environ({**COOKIE, "PLUGIN_PROTOCOL_VERSIONS": "3,4"}, (2, 1))


def test_transport_and_defaults() -> None:
    defaults = launch()
    assert (defaults.transport, defaults.socket_dir, defaults.port_range) == ("unix", None, None)
    assert defaults.client_cert_pem is None
    assert launch(ILP_ADAPTOR_TRANSPORT="tcp").transport == "tcp"
    assert launch(PLUGIN_UNIX_SOCKET_DIR="/run/x").socket_dir == "/run/x"
    with pytest.raises(LaunchError, match="expected unix or tcp"):
        launch(ILP_ADAPTOR_TRANSPORT="quic")


def test_port_range() -> None:
    assert launch(PLUGIN_MIN_PORT="10000", PLUGIN_MAX_PORT="10010").port_range == (10000, 10010)
    assert launch(PLUGIN_MIN_PORT="10000").port_range is None  # both or neither
    for low, high in (("a", "2"), ("10", "5"), ("0", "5"), ("5", "70000")):
        with pytest.raises(LaunchError):
            launch(PLUGIN_MIN_PORT=low, PLUGIN_MAX_PORT=high)


def test_client_certificate_must_be_one_pem_certificate() -> None:
    pem = mtls.generate_certificate().cert_pem
    assert launch(PLUGIN_CLIENT_CERT=pem.decode()).client_cert_pem == pem
    with pytest.raises(LaunchError, match="PLUGIN_CLIENT_CERT"):
        launch(PLUGIN_CLIENT_CERT="not a certificate")
    two = pem + mtls.generate_certificate().cert_pem
    with pytest.raises(LaunchError, match="one certificate, found 2"):
        launch(PLUGIN_CLIENT_CERT=two.decode())


def test_socket_directory_is_private_short_and_refused_when_too_deep() -> None:
    parent = tempfile.mkdtemp(prefix="ilp")
    try:
        directory = server._socket_directory(parent)
        assert os.path.dirname(directory) == parent
        assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700
        os.rmdir(directory)

        deep = os.path.join(parent, "d" * 100)
        os.mkdir(deep)
        with pytest.raises(LaunchError, match="too long"):
            server._socket_directory(deep)
        assert os.listdir(deep) == []
        os.rmdir(deep)
        with pytest.raises(LaunchError, match="cannot create the socket directory"):
            server._socket_directory(os.path.join(parent, "missing"))
    finally:
        os.rmdir(parent)


def test_parent_watch_requests_a_stop_when_the_parent_changes() -> None:
    async def main() -> str:
        adaptor_server = AdaptorServer(Adaptor())
        try:
            # A parent pid that is not ours: as if the host had died and we were adopted.
            await server._watch_parent(os.getppid() + 1_000_000, adaptor_server)
            return adaptor_server.stop_reason
        finally:
            await adaptor_server.stop(None, run_hook=False)

    assert asyncio.run(main()) == "parent process exited"
