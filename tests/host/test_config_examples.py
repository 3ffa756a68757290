"""Every configuration the repository shows loads: the example files, and the TOML of the docs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from host.config import load_config, read_config

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").rglob("*.toml"))
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCKS = [
    pytest.param(block, id=f"{doc.name}-{index}")
    for doc in DOCS
    for index, block in enumerate(re.findall(r"```toml\n(.*?)```", doc.read_text(), re.S))
]


def test_there_are_examples_and_blocks() -> None:
    assert len(EXAMPLES) >= 3
    assert len(BLOCKS) >= 4


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda path: path.name)
def test_every_example_file_loads(path: Path) -> None:
    config = read_config(path)
    assert config.source == str(path)


@pytest.mark.parametrize("block", BLOCKS)
def test_every_toml_block_of_the_docs_loads(block: str) -> None:
    """A block shows part of a file: it loads once given the adaptors its accounts name, and
    tokens where it writes "…"."""
    defined = set(re.findall(r'^name = "([^"]+)"', block, re.M))
    named = set(re.findall(r'^adaptor = "([^"]+)"', block, re.M)) - defined
    adaptors = "".join(f'[[adaptor]]\nname = "{name}"\ncommand = ["x"]\n' for name in named)
    tokens = iter(range(1000))
    text = re.sub('"…"', lambda _: f'"placeholder-token-{next(tokens)}"', block)
    load_config(adaptors + text, Path("/srv/ilp"))
