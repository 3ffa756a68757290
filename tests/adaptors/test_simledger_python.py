"""What only the Python simledger adaptor does, beside the scenarios every adaptor runs
(test_simledger_adaptors.py): it refuses to start without the host's Engine address, and names
SQLite's complaint about a state file it cannot open."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from sdk import contract
from sdk.testing import adaptor_environ
from tests.adaptors.simledger_builds import PYTHON_COMMAND


@pytest.mark.parametrize(
    ("problem", "complaint"),
    [
        ("no engine address", contract.ENV_ENGINE_ADDR),
        ("unusable state file", "unable to open database file"),
    ],
)
def test_a_configuration_it_cannot_use_exits_1_naming_it(
    tmp_path: Path, problem: str, complaint: str
) -> None:
    env = adaptor_environ(
        {
            "ILP_SIMLEDGER_ADDR": "unix:/nonexistent/ledger.sock",
            "ILP_SIMLEDGER_ACCOUNT": "ledger:alice",
            "ILP_ADAPTOR_STATE_DB": str(tmp_path / "state.db"),
            contract.ENV_ENGINE_ADDR: "unix:/nonexistent/engine.sock",
        }
    )
    if problem == "no engine address":
        del env[contract.ENV_ENGINE_ADDR]
    else:
        env["ILP_ADAPTOR_STATE_DB"] = str(tmp_path / "no-such-dir" / "state.db")
    done = subprocess.run(PYTHON_COMMAND, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert done.stdout == ""
    assert complaint in done.stderr
