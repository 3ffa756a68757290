"""``ilp-host`` installed as a package (``pip install .``, not editable) and run from another
directory: the demo's own files come with the package, and the in-tree adaptors, which do not,
are found where the operator says (``--adaptors``) or refused with a clear message.

The install is offline and quick: no dependencies (``--no-deps``), no build isolation, and the
project's development environment's site-packages made visible to the fresh venv by a ``.pth``
line (grpcio and the rest; a plain path, so that environment's editable install of this very
project is not: the installed copy is what runs).
"""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh venv with the project installed into it; yields the venv."""
    root = tmp_path_factory.mktemp("inst")
    source = root / "source"  # a copy: a build writes build/ and *.egg-info beside its sources
    for name in ("host", "sdk"):
        shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    (purelib,) = (venv / "lib").glob("python3*/site-packages")
    (purelib / "dev-environment.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    pip = [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python")]
    subprocess.run(
        [
            *pip,
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            str(source),
        ],
        check=True,
        capture_output=True,
    )
    shutil.rmtree(source)  # nothing may come from the sources once installed
    yield venv
    shutil.rmtree(root, ignore_errors=True)


def run(venv: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "ILP_DEMO_ADAPTORS")}
    return subprocess.run(
        [str(venv / "bin" / "ilp-host"), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_installed_package_is_what_runs(installed: Path, tmp_path: Path) -> None:
    python = installed / "bin" / "python"
    code = "import host.demo.adaptors as a; print(a.__file__); print(a.languages())"
    where = subprocess.run(
        [str(python), "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert Path(where[0]).is_relative_to(installed), where
    assert where[1] == "['go', 'node', 'python', 'rust']"  # the table came with the package


def test_the_installed_demo_helps_from_anywhere(installed: Path, tmp_path: Path) -> None:
    done = run(installed, tmp_path, "demo", "--help")
    assert done.returncode == 0, done.stderr
    assert "--adaptors DIR" in done.stdout and "--alice-adaptor" in done.stdout


def test_without_adaptors_the_installed_demo_says_what_to_pass(
    installed: Path, tmp_path: Path
) -> None:
    done = run(installed, tmp_path, "demo", "--settlements", "1", "--dir", str(tmp_path / "d"))
    assert done.returncode == 2, done.stdout + done.stderr
    assert "no in-tree adaptors directory" in done.stderr
    assert str(tmp_path / "adaptors") in done.stderr  # where it looked
    assert "--adaptors DIR" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "d").exists(), "refused before anything started"


def test_the_installed_demo_settles_with_the_adaptors_it_is_given(
    installed: Path, tmp_path: Path
) -> None:
    done = run(
        installed, tmp_path, "demo", "--settlements", "1", "--adaptors", str(REPO / "adaptors")
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "the books reconcile" in done.stdout
    assert "starting alice's host with the python adaptor" in done.stdout
