"""Regenerate the Python stubs in sdk/pb and host/pb from proto/ (python scripts/gen_protos.py).

The stubs are committed so that installing the SDK needs no protoc. They are split by owner:
the packages an adaptor author needs (the adaptor and engine services, the shared types,
go-plugin's services, the Ethereum adaptor's peer messages) go to sdk/pb; the host's own
(its admin API, the connector service, the simulated ledger) go to host/pb, so the SDK ships
nothing an adaptor cannot use. protoc writes imports as ``from ilphost.types.v1 import
types_pb2``, which only resolve with proto/'s layout on sys.path; they are rewritten here to
``from sdk.pb.ilphost...`` or ``from host.pb.ilphost...``, after the package's owner. CI runs this
script and fails when the committed stubs differ (``--check``).
"""

from __future__ import annotations

import argparse
import filecmp
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path, PurePosixPath

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "proto"
# Where each owner's stubs live, as a path in the repository and as a Python package.
OUTPUTS = {"sdk": ROOT / "sdk" / "pb", "host": ROOT / "host" / "pb"}
# Proto packages (as directories under proto/) that are the host's; every other one is the SDK's.
HOST_PACKAGES = ("ilphost/admin", "ilphost/connector", "ilphost/simledger")
# Top-level proto packages whose imports are rewritten to their owner's package.
PROTO_ROOTS = ("ilphost", "plugin")
IMPORT_RE = re.compile(
    rf"^(from|import) ((?:{'|'.join(PROTO_ROOTS)})(?:\.\w+)*)([. ])", re.MULTILINE
)
PKG_DOC = '"""Generated from proto/ by scripts/gen_protos.py; do not edit."""\n'


def owner(relative: PurePosixPath) -> str:
    """Whose stubs a generated path is (relative to the output root: ilphost/admin/v1/x.py)."""
    text = relative.as_posix()
    return "host" if any(text.startswith(p + "/") for p in HOST_PACKAGES) else "sdk"


def _rewrite_import(match: re.Match[str]) -> str:
    keyword, module, tail = match.groups()
    package = owner(PurePosixPath(module.replace(".", "/") + "/"))
    return f"{keyword} {package}.pb.{module}{tail}"


def generate(out: dict[str, Path]) -> None:
    """Write every owner's stubs into ``out[owner]`` (existing, empty directories)."""
    protos = sorted(str(p.relative_to(PROTO_DIR)) for p in PROTO_DIR.rglob("*.proto"))
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": bin_dir + os.pathsep + os.environ.get("PATH", "")}
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp)
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "grpc_tools.protoc",
                f"-I{PROTO_DIR}",
                f"--python_out={raw}",
                f"--grpc_python_out={raw}",
                f"--mypy_out={raw}",
                f"--mypy_grpc_out={raw}",
                *protos,
            ],
            check=False,
            env=env,
            cwd=ROOT,
            capture_output=True,  # protoc-gen-mypy narrates every file on stderr
        )
        if result.returncode != 0:
            sys.stderr.write(result.stderr.decode(errors="replace"))
            raise SystemExit(f"protoc failed with exit code {result.returncode}")
        for path in sorted(raw.rglob("*.py*")):
            relative = PurePosixPath(path.relative_to(raw).as_posix())
            target = out[owner(relative)] / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(IMPORT_RE.sub(_rewrite_import, path.read_text()))
    for root in out.values():
        for directory in [root, *(d for d in root.rglob("*") if d.is_dir())]:
            (directory / "__init__.py").write_text(PKG_DOC)
        (root / "py.typed").write_text("")


def differences(a: Path, b: Path) -> list[str]:
    files_a = {p.relative_to(a) for p in a.rglob("*") if p.is_file()}
    files_b = {p.relative_to(b) for p in b.rglob("*") if p.is_file()}
    diff = sorted(str(p) for p in files_a ^ files_b)
    diff += sorted(
        str(p) for p in files_a & files_b if not filecmp.cmp(a / p, b / p, shallow=False)
    )
    return diff


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if sdk/pb or host/pb is stale")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        fresh = {name: Path(tmp) / name for name in OUTPUTS}
        for directory in fresh.values():
            directory.mkdir()
        generate(fresh)
        if args.check:
            stale = []
            for name, committed in OUTPUTS.items():
                where = committed.relative_to(ROOT)
                if not committed.exists():
                    stale.append(f"{where} (missing)")
                    continue
                stale += [f"{where}/{p}" for p in differences(fresh[name], committed)]
            if stale:
                print(
                    "generated stubs are stale; run: python scripts/gen_protos.py", file=sys.stderr
                )
                for name in stale:
                    print(f"  {name}", file=sys.stderr)
                return 1
            print("generated stubs are fresh")
            return 0
        for name, committed in OUTPUTS.items():
            shutil.rmtree(committed, ignore_errors=True)
            shutil.copytree(fresh[name], committed)
            print(f"wrote {committed.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
