"""The host's run loop supervises its own tasks: one that dies stops the whole host.

A real `ilp-host run` with the memory adaptor and one account; the failpoint
``host.engine-binding`` (sdk.failpoints.fail) makes the engine's binding task raise. Before,
the host ran on half alive (adaptors never bound again, health SERVING); now it stops
gracefully, says why once, and exits non-zero.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from sdk import failpoints

REPO = Path(__file__).resolve().parents[2]
MEMORY_ADAPTOR = REPO / "adaptors" / "memory-python" / "adaptor.py"

pytestmark = pytest.mark.slow

CONFIG = """
[host]
state_dir = "state"
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


def test_a_failing_host_task_stops_the_host_non_zero() -> None:
    directory = Path(tempfile.mkdtemp(prefix="ilp"))
    config = directory / "host.toml"
    command = json.dumps(["python", str(MEMORY_ADAPTOR)])
    config.write_text(CONFIG.format(command=command), encoding="utf-8")
    env = {**os.environ, failpoints.ENV_FAILPOINTS: failpoints.HOST_ENGINE_BINDING}
    done = subprocess.run(
        [sys.executable, "-m", "host.cli", "run", "-c", str(config)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    log = done.stderr
    assert done.returncode == 1, log
    causes = [line for line in log.splitlines() if "host task 'engine binding' failed" in line]
    assert len(causes) == 1, log
    assert "InjectedFailure: failpoint host.engine-binding" in causes[0]
    # Stopped gracefully: the adaptors were stopped and the admin socket removed.
    assert "stopping the adaptors" in log
    assert "host stopped after a failure" in log
    assert not (directory / "state" / "admin.sock").exists()
