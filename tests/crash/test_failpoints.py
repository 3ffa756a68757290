"""sdk.failpoints: an armed hit kills its own process with SIGKILL, once per once-directory."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from sdk import failpoints

POINT = failpoints.ENGINE_AFTER_DEBIT
# Prints before and after the hit: "after" proves the process went on.
SCRIPT = (
    "from sdk import failpoints\n"
    "print('before', flush=True)\n"
    f"failpoints.hit({POINT!r})\n"
    "print('after', flush=True)\n"
)


def run(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("ILP_FAILPOINTS")}
    return subprocess.run(
        [sys.executable, "-c", SCRIPT],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_parse_ignores_blanks() -> None:
    assert failpoints.parse(" a, ,b ,,") == frozenset({"a", "b"})
    assert failpoints.parse("") == frozenset()


def test_every_name_is_documented() -> None:
    doc = failpoints.__doc__ or ""
    assert all(f"``{name}``" in doc for name in failpoints.NAMES)


def test_unarmed_hit_does_nothing() -> None:
    done = run({failpoints.ENV_FAILPOINTS: "engine.after-credit"})
    assert (done.returncode, done.stdout) == (0, "before\nafter\n")
    assert "failpoint" not in done.stderr


def test_armed_hit_kills_with_sigkill_and_says_where() -> None:
    done = run({failpoints.ENV_FAILPOINTS: f"engine.after-credit,{POINT}"})
    assert done.returncode == -signal.SIGKILL
    assert done.stdout == "before\n"
    assert done.stderr == f"failpoint {POINT}\n"


def test_once_directory_spends_the_failpoint(tmp_path: Path) -> None:
    env = {failpoints.ENV_FAILPOINTS: POINT, failpoints.ENV_ONCE_DIR: str(tmp_path)}
    first = run(env)
    assert first.returncode == -signal.SIGKILL
    assert (tmp_path / POINT).exists()
    second = run(env)
    assert (second.returncode, second.stdout) == (0, "before\nafter\n")


@pytest.mark.parametrize("value", ["engine.after-debt", "nothing"])
def test_unknown_name_is_reported(value: str) -> None:
    done = run({failpoints.ENV_FAILPOINTS: value})
    assert done.returncode == 0
    assert f"unknown name(s) {value}" in done.stderr
