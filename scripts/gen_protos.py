"""Regenerate the Python stubs in sdk/pb from proto/ (run: python scripts/gen_protos.py).

The stubs are committed so that installing the SDK needs no protoc. protoc writes imports as
``from ilphost.types.v1 import types_pb2``, which only resolve with proto/'s layout on sys.path;
they are rewritten here to ``from sdk.pb.ilphost...`` so the package stands alone. CI runs this
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
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "proto"
OUT_DIR = ROOT / "sdk" / "pb"
# Top-level proto packages whose imports are rewritten to live under sdk.pb.
PROTO_ROOTS = ("ilphost", "plugin")
IMPORT_RE = re.compile(rf"^(from|import) ({'|'.join(PROTO_ROOTS)})([. ])", re.MULTILINE)
PKG_DOC = '"""Generated from proto/ by scripts/gen_protos.py; do not edit."""\n'


def generate(out: Path) -> None:
    protos = sorted(str(p.relative_to(PROTO_DIR)) for p in PROTO_DIR.rglob("*.proto"))
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": bin_dir + os.pathsep + os.environ.get("PATH", "")}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{PROTO_DIR}",
            f"--python_out={out}",
            f"--grpc_python_out={out}",
            f"--mypy_out={out}",
            f"--mypy_grpc_out={out}",
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
    for path in out.rglob("*.py*"):
        text = path.read_text()
        path.write_text(IMPORT_RE.sub(r"\1 sdk.pb.\2\3", text))
    for directory in [out, *(d for d in out.rglob("*") if d.is_dir())]:
        (directory / "__init__.py").write_text(PKG_DOC)
    (out / "py.typed").write_text("")


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
    parser.add_argument("--check", action="store_true", help="fail if sdk/pb is stale")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        fresh = Path(tmp) / "pb"
        fresh.mkdir()
        generate(fresh)
        if args.check:
            stale = differences(fresh, OUT_DIR) if OUT_DIR.exists() else ["sdk/pb (missing)"]
            if stale:
                print(
                    "generated stubs are stale; run: python scripts/gen_protos.py", file=sys.stderr
                )
                for name in stale:
                    print(f"  {name}", file=sys.stderr)
                return 1
            print("generated stubs are fresh")
            return 0
        shutil.rmtree(OUT_DIR, ignore_errors=True)
        shutil.copytree(fresh, OUT_DIR)
    print(f"wrote {OUT_DIR.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
