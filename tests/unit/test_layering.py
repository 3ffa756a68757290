"""The layering that docs/architecture.md claims, checked on the imports of every module.

Each module of ``host`` and ``sdk`` is parsed with ``ast`` (nothing is imported); every
``import`` counts, also inside functions and ``if TYPE_CHECKING:`` blocks, because a cycle
hidden from the interpreter is still a cycle for the reader.

To add a rule, add a line to RULES. An import that breaks a rule for now, on purpose, goes to
KNOWN_EXCEPTIONS with its reason; the test fails once it is gone, so that the list stays true.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("host", "sdk")
#: Generated code follows protoc's layout, not ours.
GENERATED = ("sdk.pb",)

#: (who imports, what it may not import, why). Prefixes of dotted module names.
RULES: list[tuple[str, tuple[str, ...], str]] = [
    ("sdk", ("host",), "the SDK is the lower layer: adaptors install it without the host"),
    (
        "host.engine",
        (
            "host.connector",
            "host.store",
            "host.supervisor",
            "host.binding",
            "host.assembly",
            "host.app",
        ),
        "the engine is pure orchestration over its own ports (Store, SettlementPort)",
    ),
    (
        "host.connector",
        (
            "host.engine",
            "host.supervisor",
            "host.binding",
            "host.remote_connector",
            "host.assembly",
            "host.app",
        ),
        "the connector sees the engine only through its ports (host.connector.ports)",
    ),
    (
        "host.store",
        ("host.connector", "host.supervisor", "host.binding", "host.assembly", "host.app"),
        "a store implements the engine's Store; it knows nothing of who uses the engine",
    ),
    (
        "host.supervisor",
        (
            "host.engine",
            "host.connector",
            "host.store",
            "host.binding",
            "host.assembly",
            "host.app",
        ),
        "the supervisor runs processes and exposes their lifecycle and channels, nothing more",
    ),
    ("host.ilp", ("host.engine", "host.connector", "host.store"), "packets are plain data"),
]

#: Of the engine, a store may import its port and the row types the port speaks.
STORE_MAY_IMPORT_OF_ENGINE = ("host.engine.store", "host.engine.model")

#: (importer, imported) -> why it is allowed for now.
KNOWN_EXCEPTIONS: dict[tuple[str, str], str] = {}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path) -> set[str]:
    """The absolute module names ``path`` imports (``from a import b`` counts as ``a.b`` too,
    since ``b`` may be a module)."""
    tree = ast.parse(path.read_text(), str(path))
    package = module_name(path).rsplit(".", 1)[0] if path.name != "__init__.py" else None
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against the importing package
                anchor = (package or module_name(path)).split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def modules() -> dict[str, set[str]]:
    found = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            name = module_name(path)
            if not name.startswith(GENERATED):
                found[name] = imports_of(path)
    return found


def within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def violations(graph: dict[str, set[str]]) -> dict[tuple[str, str], str]:
    found: dict[tuple[str, str], str] = {}
    for importer, imported in graph.items():
        for target in imported:
            for owner, forbidden, why in RULES:
                if within(importer, owner) and any(within(target, f) for f in forbidden):
                    found.setdefault((importer, _module_of(target, graph)), why)
            if (
                within(importer, "host.store")
                and within(target, "host.engine")
                and not any(within(target, allowed) for allowed in STORE_MAY_IMPORT_OF_ENGINE)
                and _module_of(target, graph) not in STORE_MAY_IMPORT_OF_ENGINE
            ):
                found.setdefault(
                    (importer, _module_of(target, graph)),
                    "a store may import only the engine's Store protocol and its row types",
                )
    return found


def _module_of(target: str, graph: dict[str, set[str]]) -> str:
    """``target`` as a module of ours: ``host.engine.model.Policy`` -> ``host.engine.model``."""
    while target and target not in graph:
        target = target.rpartition(".")[0]
    return target


def test_every_layer_imports_only_what_the_architecture_allows() -> None:
    graph = modules()
    assert "host.engine.engine" in graph and "sdk.backoff" in graph  # the walk found the tree
    found = violations(graph)
    new = {pair: why for pair, why in found.items() if pair not in KNOWN_EXCEPTIONS}
    lines = [f"  {a} imports {b}: {why}" for (a, b), why in sorted(new.items())]
    assert not new, "imports against the layering (docs/architecture.md):\n" + "\n".join(lines)
    stale = sorted(set(KNOWN_EXCEPTIONS) - set(found))
    assert not stale, f"no longer imported, remove from KNOWN_EXCEPTIONS: {stale}"


def test_the_checker_sees_a_forbidden_import() -> None:
    """The rules bite: forbidden imports of a toy tree are all reported, allowed ones not."""
    graph: dict[str, set[str]] = {
        "host.connector.x": {"host.engine.model", "host.engine.model.Policy", "host.ilp"},
        "host.engine.model": set(),
        "host.engine.store": set(),
        "host.engine.outbox": set(),
        "host.ilp": set(),
        "host.store.y": {"host.engine.store", "host.engine.store.Store", "host.engine.outbox"},
        "host.supervisor.z": {"host.lifecycle", "host.store.y"},
        "host.lifecycle": set(),
        "sdk.w": {"host.ilp"},
    }
    assert set(violations(graph)) == {
        ("host.connector.x", "host.engine.model"),
        ("host.store.y", "host.engine.outbox"),
        ("host.supervisor.z", "host.store.y"),
        ("sdk.w", "host.ilp"),
    }


def test_the_store_protocol_has_one_home() -> None:
    """The engine owns its Store (the consumer owns the port); nothing re-exports it."""
    homes = [
        str(path.relative_to(REPO))
        for package in PACKAGES
        for path in sorted((REPO / package).rglob("*.py"))
        if "class Store(Protocol)" in path.read_text()
        or "class Transaction(Protocol)" in path.read_text()
    ]
    assert homes == ["host/engine/store.py"]
    graph = modules()
    for name in ("host.store", "host.engine.ports", "host.engine"):
        assert not any(within(target, "host.engine.store") for target in graph[name]), name
