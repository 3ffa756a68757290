"""What another local user can see of a running host: nothing in its state directory.

A real `ilp-host run` (memory adaptor, one account, so the engine's database exists) with its
state directory two levels below a fresh directory; then a real second user (`nobody`, via
runuser) tries to list and read. Before, `mkdir(parents=True)` made the parents 0755 and
SQLite made `engine.db` 0644.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.polling import wait_until

REPO = Path(__file__).resolve().parents[2]
MEMORY_ADAPTOR = REPO / "adaptors" / "memory-python" / "adaptor.py"
RUNUSER = shutil.which("runuser")

pytestmark = pytest.mark.slow

CONFIG = """
[host]
state_dir = "deep/er/state"
[[adaptor]]
name = "memory"
command = {command}
env = {{ ILP_ADAPTOR_ASSET_CODE = "EUR" }}
[[account]]
id = "peer1"
adaptor = "memory"
asset_code = "EUR"
asset_scale = 2
"""


def as_nobody(*command: str) -> int:
    assert RUNUSER is not None
    return subprocess.run(
        [RUNUSER, "-u", "nobody", "--", *command], capture_output=True, timeout=30, check=False
    ).returncode


@pytest.mark.skipif(os.geteuid() != 0 or RUNUSER is None, reason="needs root and runuser")
def test_another_user_can_read_nothing_of_a_running_host() -> None:
    top = Path(tempfile.mkdtemp(prefix="ilp"))
    top.chmod(0o755)  # the operator's directory, open to all: only what the host makes is private
    config = top / "host.toml"
    config.write_text(CONFIG.format(command=json.dumps(["python", str(MEMORY_ADAPTOR)])))
    host = subprocess.Popen(
        [sys.executable, "-m", "host.cli", "run", "-c", str(config)],
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    state = top / "deep" / "er" / "state"
    try:

        def started() -> bool:
            assert host.poll() is None, host.stderr.read() if host.stderr else ""
            return (state / "admin.sock").exists() and (state / "engine.db").exists()

        wait_until(started, "the host to have its database and admin socket", interval=0.1)
        for directory in (top / "deep", top / "deep" / "er", state):
            assert stat.S_IMODE(directory.stat().st_mode) == 0o700, directory
        for name in ("engine.db", "engine.db-wal", "admin.sock", "engine.sock"):
            path = state / name
            if path.exists():
                assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0, path
        assert as_nobody("ls", str(top)) == 0  # the operator's own directory: readable
        assert as_nobody("ls", str(top / "deep")) != 0
        assert as_nobody("cat", str(state / "engine.db")) != 0
    finally:
        host.send_signal(signal.SIGTERM)
        host.wait(timeout=60)
        if host.stderr is not None:
            host.stderr.close()
        shutil.rmtree(top, ignore_errors=True)
