"""docs/peering.md's worked example, run exactly as written: a parent and a child host
(examples/peering/), the child learning its address by ILDCP, packets both ways, the books
and the learned route shown by the CLI. Real `ilp-host run` processes on loopback.
"""

from __future__ import annotations

import re
import shlex
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.polling import wait_until

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "peering.md"
ILP_HOST = str(Path(sys.executable).parent / "ilp-host")
DEADLINE = 60.0


def example_commands() -> list[str]:
    text = DOC.read_text(encoding="utf-8")
    block = re.search(
        r"<!-- peering-example:begin -->\n```sh\n(.*?)```\n<!-- peering-example:end -->",
        text,
        re.DOTALL,
    )
    assert block is not None, "docs/peering.md lost its example block"
    return [line for line in block.group(1).splitlines() if line.strip()]


def run(command: str) -> subprocess.CompletedProcess[str]:
    args = shlex.split(command)
    assert args[0] == "ilp-host", command
    return subprocess.run(
        [ILP_HOST, *args[1:]], cwd=REPO, capture_output=True, text=True, timeout=60
    )


def until(command: str, check: str) -> str:
    """Run ``command`` until its output holds ``check`` (the hosts are starting); its output."""
    result = wait_until(
        lambda: run(command),
        f"{command!r} to print {check!r}",
        timeout=DEADLINE,
        interval=0.3,
        done=lambda result: result.returncode == 0 and check in result.stdout,
    )
    return result.stdout


def test_the_worked_example_works_as_written(tmp_path: Path) -> None:
    # The example keeps its books in var/peering/ (as the doc says): start from none.
    shutil.rmtree(REPO / "var" / "peering", ignore_errors=True)
    commands = example_commands()
    background = [line.removesuffix(" &") for line in commands if line.endswith(" &")]
    foreground = [line for line in commands if not line.endswith(" &")]
    assert len(background) == 2 and len(foreground) == 5, commands
    hosts = []
    try:
        for index, command in enumerate(background):
            args = shlex.split(command)
            with (tmp_path / f"host{index}.log").open("wb") as log:
                hosts.append(
                    subprocess.Popen(
                        [ILP_HOST, *args[1:]],
                        cwd=REPO,
                        stdout=log,
                        stderr=log,
                        stdin=subprocess.DEVNULL,
                    )
                )
        peers_of_child, send_up, send_down, peers_of_parent, routes_of_child = foreground
        out = until(peers_of_child, "address test.parent.child (from parent parent by ILDCP)")
        assert re.search(r"\nparent +parent +- +http://127\.0\.0\.1:17781/", out), out
        for command in (send_up, send_down):
            result = run(command)
            assert result.returncode == 0, (command, result.stdout, result.stderr)
            assert "rejected   0" in result.stdout, result.stdout
        out = run(peers_of_parent).stdout
        assert re.search(r"\nchild +child +test\.parent\.child +\S+ +2\.60 +READY", out), out
        out = until(routes_of_child, "test.parent        parent    learned  test.parent")
        assert '"" (default)       parent    local' in out, out
    finally:
        for host in hosts:
            host.send_signal(signal.SIGTERM)
        for host in hosts:
            try:
                host.wait(timeout=20)
            except subprocess.TimeoutExpired:
                host.kill()
                host.wait()
        if any(host.returncode not in (0, -signal.SIGTERM) for host in hosts):
            logs = [p.read_text(errors="replace")[-2000:] for p in tmp_path.glob("*.log")]
            raise AssertionError(f"a host did not stop cleanly: {logs}")
