"""The adaptor docs/sdk.md shows, run as written: its code saved as tiny_adaptor.py and the
page's own command, ``ilp-host conformance -- python tiny_adaptor.py``, passes."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "sdk.md").read_text()
COMMAND = "ilp-host conformance -- python tiny_adaptor.py"


def test_the_documented_adaptor_passes_the_documented_command(tmp_path: Path) -> None:
    (code,) = re.findall(r"```python\n(.*?)```", DOC, re.S)
    (tmp_path / "tiny_adaptor.py").write_text(code)
    assert f"\n{COMMAND}\n" in DOC
    # The virtualenv's bin first: its `python` has the sdk, as after `make setup`.
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    done = subprocess.run(
        COMMAND.split(), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 failed" in done.stdout, done.stdout
    # It pays, refuses what it must, and pays each key once.
    for check in ("send_money.idempotent", "send_money.key_conflict", "send_money.invalid"):
        assert re.search(rf"^PASS +{re.escape(check)} ", done.stdout, re.M), done.stdout
