"""host.demo.adaptors: the table of in-tree adaptors and where their directory is found."""

from __future__ import annotations

from pathlib import Path

import pytest

from host.demo.adaptors import (
    ENV_ADAPTORS,
    AdaptorsNotFound,
    adaptors_dir,
    ethereum_adaptor,
    languages,
    simledger_adaptor,
    source_tree,
    token_artifact,
)

REPO = Path(__file__).resolve().parents[2]


def test_from_a_checkout_the_adaptors_are_the_checkouts(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv(ENV_ADAPTORS, raising=False)
    monkeypatch.chdir(tmp_path)  # not from the current directory
    assert source_tree() == REPO
    assert adaptors_dir() == REPO / "adaptors"


def test_every_program_of_the_table_is_in_the_checkout() -> None:
    """After make setup: the scripts are in the tree, the Go and Rust binaries built."""
    adaptors = REPO / "adaptors"
    commands = [simledger_adaptor(language, adaptors) for language in languages()]
    commands.append(ethereum_adaptor(adaptors))
    for command in commands:
        named = [Path(part) for part in command.argv if part.startswith(str(adaptors))]
        assert named and all(path.is_file() for path in named), command
    assert token_artifact(adaptors).is_file()
    assert languages() == ["go", "node", "python", "rust"]


def test_a_given_directory_wins_and_must_hold_adaptors(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "simledger-python").mkdir()
    (tmp_path / "simledger-python" / "adaptor.py").touch()
    monkeypatch.setenv(ENV_ADAPTORS, str(REPO / "adaptors"))
    assert adaptors_dir(str(tmp_path)) == tmp_path
    with pytest.raises(AdaptorsNotFound) as missing:
        adaptors_dir(str(tmp_path / "elsewhere"))
    assert f"--adaptors ({tmp_path / 'elsewhere'})" in str(missing.value)


def test_the_environment_names_the_directory_when_no_option_does(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(ENV_ADAPTORS, str(tmp_path))
    with pytest.raises(AdaptorsNotFound) as missing:
        adaptors_dir()
    assert f"{ENV_ADAPTORS} ({tmp_path})" in str(missing.value)
    assert simledger_adaptor("go", tmp_path).argv == (f"{tmp_path}/simledger-go/bin/simledger-go",)
