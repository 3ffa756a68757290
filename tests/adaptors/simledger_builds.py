"""The in-tree adaptors of the simulated ledger, one per language, as commands a test can run.

Each is what ``make setup`` installs or builds; Go's is rebuilt here with ``go build`` when go is
installed (quick when nothing changed, so a test never runs a stale binary). One that cannot be
run skips the test locally and fails it in CI, where ``make setup`` must have made it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
GO_DIR = REPO / "adaptors" / "simledger-go"
GO_BINARY = GO_DIR / "bin" / "simledger-go"
NODE_DIR = REPO / "adaptors" / "simledger-node"
RUST_BINARY = REPO / "adaptors" / "simledger-rust" / "target" / "debug" / "simledger-rust"
PYTHON_COMMAND = (sys.executable, str(REPO / "adaptors" / "simledger-python" / "adaptor.py"))
#: The languages, in the order the parametrised tests run them.
LANGUAGES = ("python", "node", "go", "rust")


def unavailable(message: str) -> None:
    """Skip (fail in CI) the test that needs an adaptor that is not there."""
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@cache
def _go_build() -> str:
    """The stderr of a failed ``go build``, or "" once it built (once per session)."""
    result = subprocess.run(
        ["go", "build", "-o", "bin/simledger-go", "."],
        cwd=GO_DIR,
        env={**os.environ, "GOTOOLCHAIN": "local"},
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )
    return "" if result.returncode == 0 else result.stderr[-4000:] or "go build failed"


def go_binary() -> Path:
    """The Go adaptor, rebuilt when go is here, else the one ``make setup`` built."""
    if shutil.which("go") is None:
        if not GO_BINARY.exists():
            unavailable("go is not installed: cannot build adaptors/simledger-go (make setup)")
        return GO_BINARY
    failure = _go_build()
    if failure:
        pytest.fail(f"go build in adaptors/simledger-go failed:\n{failure}")
    return GO_BINARY


def rust_binary() -> Path:
    if not RUST_BINARY.is_file():
        unavailable("adaptors/simledger-rust is not built: run make setup")
    return RUST_BINARY


def node_command() -> tuple[str, ...]:
    if shutil.which("node") is None:
        unavailable("node is not installed: run make setup")
    if not (NODE_DIR / "node_modules").is_dir():
        unavailable("adaptors/simledger-node/node_modules is missing: run make setup")
    return ("node", str(NODE_DIR / "adaptor.js"))


def command(language: str) -> tuple[str, ...]:
    """The command that runs the simledger adaptor written in ``language``."""
    if language == "python":
        return PYTHON_COMMAND
    if language == "node":
        return node_command()
    if language == "go":
        return (str(go_binary()),)
    if language == "rust":
        return (str(rust_binary()),)
    raise ValueError(f"no simledger adaptor in {language!r}")
