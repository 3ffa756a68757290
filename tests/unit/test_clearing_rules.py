"""host.clearing_rules: the rules the engine and the connector share, and the layering they keep.

The rules' cases are in tests/engine/test_engine_policy.py (the engine applies them) and
tests/host/test_config_engine.py (the config file and the engine accept the same policies).
"""

from __future__ import annotations

import ast
from pathlib import Path

from host.clearing_rules import Policy, credit_allows, policy_problem
from host.connector.durable_clearing import AccountLimits

HOST = Path(__file__).resolve().parents[2] / "host"


def imported_modules(path: Path) -> set[str]:
    """Every module ``path`` imports, type-checking imports included."""
    modules: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module is not None and node.level == 0:
            modules.add(node.module)
    return modules


def test_the_connector_never_imports_the_engine() -> None:
    offenders = {
        path.name: sorted(name for name in imported_modules(path) if name.startswith("host.engine"))
        for path in sorted((HOST / "connector").glob("*.py"))
    }
    assert {name: found for name, found in offenders.items() if found} == {}


def test_the_rules_depend_on_no_part_of_the_host() -> None:
    assert not [name for name in imported_modules(HOST / "clearing_rules.py") if "host" in name]


def test_the_connector_limits_are_credit_limits() -> None:
    limits = AccountLimits(asset_scale=2, min_balance=-100, max_balance=50)
    policy = Policy(settle_threshold=-100, settle_to=0, min_balance=-100, max_balance=50)
    for balance, delta in [(0, 50), (0, 51), (0, -100), (0, -101), (-200, 10), (80, -1)]:
        assert credit_allows(balance, delta, limits) == credit_allows(balance, delta, policy)
    assert not credit_allows(0, 51, limits)
    assert credit_allows(-200, 10, limits)  # back toward the range after a limit was lowered


def test_a_coherent_policy_has_no_problem_and_a_broken_one_names_its_field() -> None:
    assert policy_problem(Policy(-10, -5, -20, 10)) is None
    broken = policy_problem(Policy(-10, -5, -20, -1))
    assert broken is not None and broken.field == "max_balance"
