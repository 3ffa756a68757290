"""The constants docs/protocol.md names are the ones in code."""

from __future__ import annotations

import re
from pathlib import Path

from sdk import contract
from sdk.handshake import Handshake, parse

DOC = (Path(__file__).resolve().parents[2] / "docs" / "protocol.md").read_text()


def test_cookie_in_docs() -> None:
    row = f"| `{contract.MAGIC_COOKIE_KEY}` | `{contract.MAGIC_COOKIE_VALUE}` |"
    assert row in DOC


def test_environment_variables_in_docs() -> None:
    for name in (
        contract.ENV_PROTOCOL_VERSIONS,
        contract.ENV_CLIENT_CERT,
        contract.ENV_MIN_PORT,
        contract.ENV_MAX_PORT,
        contract.ENV_UNIX_SOCKET_DIR,
        contract.ENV_TRANSPORT,
        contract.ENV_ENGINE_ADDR,
        contract.ENV_ADAPTOR_NAME,
    ):
        assert f"`{name}`" in DOC, name


def test_documented_env_table_has_no_unknown_names() -> None:
    table = DOC.split("## 2.")[1].split("## 3.")[0]
    documented = set(re.findall(r"^\| `([A-Z_]+)`", table, re.MULTILINE))
    documented |= set(re.findall(r"`(PLUGIN_[A-Z_]+)`", table))
    known = {v for k, v in vars(contract).items() if k.startswith("ENV_")}
    known.add(contract.MAGIC_COOKIE_KEY)
    assert documented <= known


def test_health_service_and_protocol_in_docs() -> None:
    assert f"service name `{contract.HEALTH_SERVICE}` must be `SERVING`" in DOC
    assert f"`PROTOCOL` is `{contract.HANDSHAKE_PROTOCOL}`" in DOC
    assert f"`CORE` is `{contract.CORE_PROTOCOL_VERSION}`" in DOC
    assert f"This release defines version `{max(contract.CONTRACT_VERSIONS)}`" in DOC
    assert f"up to {contract.MAX_DATA_BYTES} bytes" in DOC


def test_documented_handshake_examples_parse() -> None:
    examples = re.findall(r"^(1\|1\|(?:unix|tcp)\|[^\n]*)$", DOC, re.MULTILINE)
    assert len(examples) == 2
    unix = parse(examples[0], contract.CONTRACT_VERSIONS)
    assert unix == Handshake(1, "unix", "/tmp/ilph1234/memory/adaptor.sock")
    assert unix.line() == examples[0]
    assert parse(examples[1].replace("...", ""), contract.CONTRACT_VERSIONS).network == "tcp"


def test_documented_transition_table_is_the_code_table() -> None:
    from sdk.connectivity import TRANSITIONS, Connectivity

    block = DOC.split("Only these moves are legal:")[1].split("```")[1]
    documented: dict[str, set[str]] = {}
    for line in block.strip().splitlines():
        source, targets = (part.strip() for part in line.split("->"))
        documented[source] = (
            set() if targets == "(none)" else {t.strip() for t in targets.split(",")}
        )
    assert documented == {s.name: {t.name for t in targets} for s, targets in TRANSITIONS.items()}
    assert set(documented) == {c.name for c in Connectivity}


def test_the_grammar_of_ids_and_keys_is_the_code_s() -> None:
    table = DOC.split("### Ids, keys and amounts")[1].split("###")[0]
    assert "`[A-Za-z0-9._~-]`" in table and contract.ACCOUNT_ID.pattern.startswith(
        "[A-Za-z0-9._~-]{1,128}"
    )
    assert "0x20 to 0x7E: **the space is included**" in table
    assert contract.IDEMPOTENCY_KEY.pattern == r"[\x20-\x7e]{1,128}"
    assert "1 to 255 printable ASCII characters without the space, 0x21 to 0x7E" in table
    assert contract.SETTLEMENT_ID.pattern == r"[\x21-\x7e]{1,255}"
    assert f"at most {contract.MAX_AMOUNT_DIGITS} digits" in table
    assert f"0 to {contract.MAX_SCALE}" in table
