"""The shape of the code, checked: no import cycles, dependencies that point one way, SQL only in
stores, handlers without the ORM, services without HTTP, declared event types, small modules.

Everything here reads the source with ``ast``; nothing is imported, so a violation is reported
with its file and line even when the module would not import.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "mdm"

# Lowest first. A module may import its own unit or a unit of a LOWER rank, never a higher one.
# Units are packages (``mdm.ios``) or top-level modules (``mdm.config``). Same-rank units must
# not import each other either.
LAYERS: list[tuple[str, ...]] = [
    ("mdm", "mdm.config_template", "mdm.logs"),
    ("mdm.config",),
    ("mdm.config_load",),
    ("mdm.config_reload",),
    ("mdm.db",),
    ("mdm.core",),
    ("mdm.server",),
    ("mdm.api",),
    ("mdm.pki",),
    ("mdm.push",),
    ("mdm.scep",),
    ("mdm.enroll",),
    ("mdm.policies",),  # KES policies: below the platforms that deliver them
    # reporting reads the core outbox, never a platform
    ("mdm.ios", "mdm.kes", "mdm.reporting", "mdm.eas", "mdm.adcs"),
    ("mdm.config_sections", "mdm.schema", "mdm.plugins"),
    ("mdm.events_doc",),  # docs/events.md, rendered from the composed build's event catalog
    ("mdm.sim", "mdm.devfakes"),  # device simulators and the contract fakes of outside services
    ("mdm.bench",),
    ("mdm.cli", "mdm.testing"),
    ("mdm.__main__",),
]
RANK = {unit: rank for rank, units in enumerate(LAYERS) for unit in units}
FEATURES = ("ios", "kes", "policies", "enroll", "scep", "pki", "reporting", "eas")
STATEMENTS = {"select", "insert", "update", "delete", "text"}
SESSION_CALLS = {"add", "add_all", "get", "delete", "execute", "scalar", "scalars", "merge", "stream"}
SESSION_NAMES = {"session", "sess", "s", "conn", "connection"}


@dataclass(frozen=True)
class Module:
    name: str
    path: Path
    tree: ast.Module

    @property
    def basename(self) -> str:
        return self.path.stem

    @property
    def unit(self) -> str:
        parts = self.name.split(".")
        if len(parts) == 1:
            return "mdm"
        if self.path.name == "__init__.py" or len(parts) > 2:
            return ".".join(parts[:2])
        return self.name

    @property
    def relative(self) -> str:
        return str(self.path.relative_to(ROOT.parent))


def _modules() -> dict[str, Module]:
    found: dict[str, Module] = {}
    for path in sorted(ROOT.rglob("*.py")):
        if "migrations" in path.parts:
            continue
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = Module(name, path, ast.parse(path.read_text(), str(path)))
    return found


MODULES = _modules()


def _imports(module: Module) -> Iterator[tuple[str, int]]:
    """(imported mdm module, line) for every import, including those inside functions."""
    package = module.name if module.path.name == "__init__.py" else module.name.rpartition(".")[0]
    for node in ast.walk(module.tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in MODULES:
                    yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            for alias in node.names:
                full = f"{base}.{alias.name}"
                if full in MODULES:
                    yield full, node.lineno
                elif base in MODULES:
                    yield base, node.lineno


GRAPH = {name: {target for target, _ in _imports(module)} - {name} for name, module in MODULES.items()}


def _cycles() -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for start in GRAPH:
        if start in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(start, iter(sorted(GRAPH[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(GRAPH[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_the_checker_sees_the_code() -> None:
    assert len(MODULES) > 100 and "mdm.server.runtime" in MODULES
    assert "mdm.server.context" in GRAPH["mdm.server.runtime"]


def test_no_import_cycles() -> None:
    assert _cycles() == []


def test_a_planted_cycle_is_found(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(GRAPH, "mdm.config", GRAPH["mdm.config"] | {"mdm.server.runtime"})
    assert any("mdm.config" in c and "mdm.server.runtime" in c for c in _cycles())


def test_every_unit_has_a_layer() -> None:
    assert {m.unit for m in MODULES.values()} - set(RANK) == set()


def test_dependencies_point_one_way() -> None:
    wrong = []
    for module in MODULES.values():
        for target, line in _imports(module):
            src, dst = module.unit, MODULES[target].unit
            if src != dst and RANK[dst] >= RANK[src]:
                wrong.append(f"{module.relative}:{line}: {src} imports {target} ({dst} is not below it)")
    assert wrong == []


def _sqlalchemy_names(module: Module) -> dict[str, str]:
    """Local name -> sqlalchemy name, for names imported from sqlalchemy (or the module alias)."""
    names: dict[str, str] = {}
    for node in ast.walk(module.tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "sqlalchemy":
            for alias in node.names:
                names[alias.asname or alias.name] = alias.name
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "sqlalchemy":
                    names[alias.asname or alias.name] = "sqlalchemy"
    return names


def _may_hold_sql(module: Module) -> bool:
    return (
        module.basename.startswith("store")
        or module.basename == "tables"
        or module.name.startswith("mdm.db.")
        or module.name == "mdm.db"
    )


def _sql_outside_stores(module: Module) -> list[str]:
    names = _sqlalchemy_names(module)
    found = []
    for node in ast.walk(module.tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if isinstance(func, ast.Name) and names.get(func.id) in STATEMENTS:
            found.append(f"{module.relative}:{node.lineno}: {func.id}(...) statement")
        elif isinstance(func, ast.Attribute):
            owner = func.value
            if not isinstance(owner, ast.Name):
                continue
            if names.get(owner.id) == "sqlalchemy" and func.attr in STATEMENTS:
                found.append(f"{module.relative}:{node.lineno}: {owner.id}.{func.attr}(...) statement")
            elif owner.id in SESSION_NAMES and func.attr in SESSION_CALLS:
                found.append(f"{module.relative}:{node.lineno}: {owner.id}.{func.attr}(...) outside a store")
    return found


def test_sql_is_built_only_in_stores_tables_and_db() -> None:
    found = [line for m in MODULES.values() if not _may_hold_sql(m) for line in _sql_outside_stores(m)]
    assert found == []


def test_the_sql_check_catches_a_statement() -> None:
    code = "from sqlalchemy import select\nasync def f(session):\n    await session.execute(select(1))\n"
    planted = Module("mdm.ios.service", ROOT / "ios" / "service.py", ast.parse(code))
    assert len(_sql_outside_stores(planted)) == 2


def _imported_modules(module: Module) -> Iterator[tuple[str, int]]:
    for node in ast.walk(module.tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom) and node.module:
            yield node.module, node.lineno
            for alias in node.names:
                yield f"{node.module}.{alias.name}", node.lineno


def _is_orm(name: str) -> bool:
    return (
        name.split(".")[0] == "sqlalchemy"
        or name.startswith("mdm.db.models")
        or name.endswith(".tables")
        or ".tables." in name
    )


def test_handlers_do_not_touch_the_orm() -> None:
    found = [
        f"{m.relative}:{line}: imports {name}"
        for m in MODULES.values()
        if m.basename.startswith("handlers")
        for name, line in _imported_modules(m)
        if _is_orm(name)
    ]
    assert found == []


def test_services_know_nothing_of_http_or_the_server() -> None:
    found = [
        f"{m.relative}:{line}: imports {name}"
        for m in MODULES.values()
        if m.basename.startswith("service") and m.name != "mdm.pki.services"
        for name, line in _imported_modules(m)
        if name.split(".")[0] == "aiohttp" or name.startswith("mdm.server.context")
    ]
    assert found == []


@pytest.mark.parametrize("feature", FEATURES)
def test_every_feature_has_the_shape(feature: str) -> None:
    files = {p.stem for p in (ROOT / feature).glob("*.py")}
    for prefix in ("handlers", "service", "store"):
        assert any(f.startswith(prefix) for f in files), f"mdm/{feature} has no {prefix}*.py"
    assert {"tables", "plugin"} <= files


def test_core_and_api_have_their_part_of_the_shape() -> None:
    assert any(p.stem.startswith("store") for p in (ROOT / "core").glob("*.py"))
    assert {"handlers", "plugin"} <= {p.stem for p in (ROOT / "api").glob("*.py")}


def test_no_product_module_exceeds_500_lines() -> None:
    long = {m.relative: n for m in MODULES.values() if (n := len(m.path.read_text().splitlines())) > 500}
    assert long == {}


def test_nothing_registers_itself_in_a_global_registry() -> None:
    """Seams are passed in: the old import-time registries are gone."""
    gone = {"register_section", "register_translator", "register_renewer", "register_source",
            "route_installer", "startup_hook", "shutdown_hook", "EXTENSIONS", "_HOT"}
    found = [
        f"{m.relative}:{getattr(node, 'lineno', 0)}: {name}"
        for m in MODULES.values()
        for node in ast.walk(m.tree)
        for name in [node.id if isinstance(node, ast.Name) else node.attr if isinstance(node, ast.Attribute)
                     else node.name if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) else None]
        if name in gone
    ]
    assert found == []


def test_client_cert_listeners_are_defined_once() -> None:
    found = [
        m.relative
        for m in MODULES.values()
        for node in ast.walk(m.tree)
        if isinstance(node, ast.Assign)
        and any(isinstance(t, ast.Name) and t.id == "CLIENT_CERT_LISTENERS" for t in node.targets)
    ]
    assert len(found) == 1, found


def _emit_calls(module: Module) -> Iterator[ast.Call]:
    for node in ast.walk(module.tree):
        if isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Attribute):
                name = func.attr
                owner = func.value.id if isinstance(func.value, ast.Name) else "?"
            else:
                name, owner = (func.id if isinstance(func, ast.Name) else ""), ""
            if name == "emit" and owner in {"events", ""} and len(node.args) >= 2:
                yield node


def test_every_emit_names_a_declared_type() -> None:
    """``emit(session, TYPE, ...)``: TYPE is a name, never a string made up at the call site."""
    bad = [
        f"{m.relative}:{call.lineno}"
        for m in MODULES.values()
        if m.name != "mdm.core.events"
        for call in _emit_calls(m)
        if not isinstance(call.args[1], ast.Name | ast.Attribute)
    ]
    assert bad == []
    assert sum(1 for m in MODULES.values() for _ in _emit_calls(m)) >= 35


def test_event_types_are_declared_only_in_catalog_modules() -> None:
    found = [
        f"{m.relative}:{node.lineno}"
        for m in MODULES.values()
        if not m.basename.startswith("event_types") and m.name != "mdm.core.events"
        for node in ast.walk(m.tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "EventType"
    ]
    assert found == []


async def test_emit_refuses_an_undeclared_type_and_an_unknown_body_field() -> None:
    """The catalog is enforced at run time too: a made-up type or a field its model lacks raises
    before anything is added to the transaction."""
    from mdm.core import events
    from mdm.core.event_types import DEVICE_DELETED
    from mdm.db.models import Severity

    class Session:
        added: list[object] = []

        def add(self, item: object) -> None:
            self.added.append(item)

    session = Session()
    made_up = events.EventType.__new__(events.EventType)
    object.__setattr__(made_up, "name", "made_up")
    object.__setattr__(made_up, "severity", Severity.INFO)
    object.__setattr__(made_up, "body", events.EventBody)
    object.__setattr__(made_up, "description", "not in any catalog module")
    with pytest.raises(events.UndeclaredEvent, match="not declared"):
        events.emit(session, made_up)  # type: ignore[arg-type]
    with pytest.raises(events.UndeclaredEvent, match="not declared"):
        events.emit(session, "device_deleted")  # type: ignore[arg-type]
    with pytest.raises(events.UndeclaredEvent, match="body does not match"):
        events.emit(session, DEVICE_DELETED, device_id=1, no_such_field=1)  # type: ignore[arg-type]
    assert session.added == []
    with pytest.raises(ValueError, match="declared twice"):
        events.EventType("device_deleted", Severity.INFO, events.EventBody, "again")


def test_every_declared_event_type_is_unique_and_described() -> None:
    import importlib

    from mdm.core.events import EventType

    for module in MODULES.values():
        if module.basename.startswith("event_types"):
            importlib.import_module(module.name)
    declared = EventType.declared
    assert len(declared) >= 35
    for name, kind in declared.items():
        assert kind.name == name and kind.description.strip(), name
