"""Which adaptor program each side of the demo runs: the in-tree adaptors by name, from the
table shipped with this package (``adaptors.toml``), or any command the operator gives.

The in-tree adaptors are not part of the installed package: they are found in a directory of
adaptors, ``--adaptors DIR`` (or ``ILP_DEMO_ADAPTORS``), else the ``adaptors/`` of the source
tree this package was imported from (a checkout, editable install), else ``./adaptors``. An
installed host with none of these still runs the demo with ``--alice-adaptor``/``--bob-adaptor``.
"""

from __future__ import annotations

import os
import shlex
import tomllib
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Final

#: The environment variable naming the adaptors directory when ``--adaptors`` is not given.
ENV_ADAPTORS: Final = "ILP_DEMO_ADAPTORS"
#: A file every adaptors directory of this project has: how a candidate is recognised.
_MARKER: Final = Path("simledger-python") / "adaptor.py"


class AdaptorsNotFound(LookupError):
    """No adaptors directory: the message says where it looked and what to pass instead."""


@dataclass(frozen=True)
class AdaptorCommand:
    """What runs one side's adaptor: its command, the directory it runs in (None: the side's
    config directory), and how the demo names it."""

    label: str
    argv: tuple[str, ...]
    cwd: Path | None = None

    @classmethod
    def parse(cls, text: str, cwd: Path) -> AdaptorCommand:
        """A command line as a shell splits it, run from ``cwd`` (where the operator typed it,
        so relative paths mean what they meant there); ValueError if it is not one."""
        try:
            argv = tuple(shlex.split(text))
        except ValueError as exc:
            raise ValueError(f"{text!r}: {exc}") from exc
        if not argv:
            raise ValueError("the adaptor command is empty")
        program = argv[0]
        if "/" in program:  # the host resolves a relative program against its config directory
            argv = (str((cwd / program).absolute()), *argv[1:])
        return cls(f"adaptor {shlex.join(argv)!r}", argv, cwd.absolute())


@cache
def _table() -> dict[str, object]:
    text = resources.files(__package__ or "host.demo").joinpath("adaptors.toml").read_text()
    return tomllib.loads(text)


def languages() -> list[str]:
    """The languages of the in-tree simledger adaptors (``--alice``/``--bob`` choices)."""
    simledger = _table()["simledger"]
    assert isinstance(simledger, dict)
    return sorted(simledger)


def _entry(*keys: str) -> dict[str, object]:
    entry: object = _table()
    for key in keys:
        assert isinstance(entry, dict)
        entry = entry[key]
    assert isinstance(entry, dict)
    return entry


def _expand(template: str, adaptors: Path) -> str:
    return template.replace("{adaptors}", str(adaptors))


def simledger_adaptor(language: str, adaptors: Path) -> AdaptorCommand:
    """The in-tree simledger adaptor written in ``language`` (one of :func:`languages`)."""
    command = _entry("simledger", language)["command"]
    assert isinstance(command, list)
    return AdaptorCommand(f"{language} adaptor", tuple(_expand(p, adaptors) for p in command))


def ethereum_adaptor(adaptors: Path) -> AdaptorCommand:
    """The in-tree Ethereum adaptor."""
    command = _entry("ethereum")["command"]
    assert isinstance(command, list)
    return AdaptorCommand("ethereum adaptor", tuple(_expand(p, adaptors) for p in command))


def token_artifact(adaptors: Path) -> Path:
    """The demo token's compiled artifact (its bytecode), beside the Ethereum adaptor."""
    token = _entry("ethereum")["token"]
    assert isinstance(token, str)
    return Path(_expand(token, adaptors))


def source_tree() -> Path | None:
    """The checkout this package was imported from (it has ``adaptors/``), if it was."""
    root = Path(__file__).resolve().parents[2]
    return root if (root / "adaptors" / _MARKER).is_file() else None


def _candidates(given: str | None) -> list[tuple[str, Path]]:
    if given:
        return [("--adaptors", Path(given))]
    if os.environ.get(ENV_ADAPTORS):
        return [(ENV_ADAPTORS, Path(os.environ[ENV_ADAPTORS]))]
    tree = source_tree()
    found = [("the source tree", tree / "adaptors")] if tree else []
    return [*found, ("the current directory", Path("adaptors"))]


def adaptors_dir(given: str | None = None) -> Path:
    """The directory of the in-tree adaptors (see the module docstring), absolute;
    AdaptorsNotFound when there is none."""
    candidates = _candidates(given)
    for _, path in candidates:
        if (path / _MARKER).is_file():
            return path.absolute()
    looked = ", ".join(f"{where} ({path.absolute()})" for where, path in candidates)
    raise AdaptorsNotFound(
        f"no in-tree adaptors directory (looked in {looked}): pass --adaptors DIR (a checkout's "
        "adaptors/) or choose each side's program with --alice-adaptor and --bob-adaptor"
    )
