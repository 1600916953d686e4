"""Import boundaries of the ``fedfusion`` package, read from the source with ``ast`` (nothing is imported).

1. Flower's non-public modules are imported only by the seam, ``fedfusion/flower_compat.py``: every other module
   uses Flower's public app API only (``flwr.app``, ``flwr.clientapp``, ``flwr.serverapp`` and their public
   ``strategy`` / ``mod`` submodules). Module-level, function-level and ``TYPE_CHECKING`` imports all count.
2. The secure-aggregation core imports nothing from fedfusion but ``fedfusion.errors`` (and ``fedfusion.protocol``
   when it exists): it is a library the adapters build on, not the other way round.
3. The package-level import graph (an edge ``fedfusion.site -> fedfusion.privacy`` when some module under
   ``fedfusion/site`` imports one under ``fedfusion/privacy``, at module or function level) has no cycle.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parents[1] / "fedfusion"
SEAM = "fedfusion.flower_compat"
PUBLIC_FLOWER = frozenset({"flwr.app", "flwr.clientapp", "flwr.serverapp", "flwr.serverapp.strategy",
                           "flwr.clientapp.mod"})
"""Flower's public app API. ``flwr.app.metadata``, ``flwr.clientapp.typing`` and the like are internal modules
even where the public package re-exports some of their names: import those names from the public package."""
SECAGG_CORE = ("config", "crypto", "masks", "messages", "quantize", "server", "shamir", "site")
"""Modules of ``fedfusion.secure_aggregation`` that make the Flower-free protocol (``wire_records`` adapts it)."""
SECAGG_CORE_MAY_IMPORT = ("fedfusion.errors", "fedfusion.protocol", "fedfusion.secure_aggregation")


@dataclass(frozen=True)
class Import:
    """One imported module (``from m import n`` gives ``m.n`` when that is a module, else ``m``)."""

    importer: str
    target: str
    line: int


def module_name(path: Path) -> str:
    """The dotted name of a source file under the package."""
    parts = list(path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def is_package(path: Path) -> bool:
    return path.name == "__init__.py"


def _fedfusion_module_exists(name: str) -> bool:
    relative = Path(*name.split("."))
    return (PACKAGE_DIR.parent / relative.with_suffix(".py")).is_file() or \
        (PACKAGE_DIR.parent / relative / "__init__.py").is_file()


def imports_of(path: Path) -> Iterator[Import]:
    """Every import in the file, at any depth (module level, functions, ``if TYPE_CHECKING``)."""
    importer = module_name(path)
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(importer, alias.name, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = importer.split(".") if is_package(path) else importer.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                source = ".".join([*base, node.module] if node.module else base)
            else:
                source = node.module or ""
            for alias in node.names:
                submodule = f"{source}.{alias.name}"
                if source.split(".")[0] == "fedfusion" and _fedfusion_module_exists(submodule):
                    yield Import(importer, submodule, node.lineno)
                else:
                    yield Import(importer, source, node.lineno)


def all_imports() -> list[Import]:
    return [imp for path in sorted(PACKAGE_DIR.rglob("*.py")) for imp in imports_of(path)]


def is_public_flower(module: str) -> bool:
    return module in PUBLIC_FLOWER


def test_only_the_seam_imports_flower_internals() -> None:
    offenders = [f"{imp.importer} (line {imp.line}) imports {imp.target}" for imp in all_imports()
                 if imp.target.split(".")[0] == "flwr" and imp.importer != SEAM and not is_public_flower(imp.target)]
    assert not offenders, (
        "only fedfusion/flower_compat.py may import Flower's non-public modules; route these through it:\n  "
        + "\n  ".join(offenders))


def test_the_seam_imports_flower_internals() -> None:
    """The seam exists and is where the internals are (a guard that the walk above sees function-level imports)."""
    targets = {imp.target for imp in all_imports() if imp.importer == SEAM}
    assert any(t.startswith("flwr.supercore") for t in targets)
    assert "flwr.simulation.run_simulation" in targets  # imported inside a function


def test_secure_aggregation_core_imports_no_other_fedfusion_package() -> None:
    offenders = [
        f"{imp.importer} (line {imp.line}) imports {imp.target}" for imp in all_imports()
        if imp.importer in {f"fedfusion.secure_aggregation.{m}" for m in SECAGG_CORE}
        and imp.target.split(".")[0] == "fedfusion"
        and not any(imp.target == a or imp.target.startswith(a + ".") for a in SECAGG_CORE_MAY_IMPORT)
    ]
    assert not offenders, "the secure-aggregation core must stay a library:\n  " + "\n  ".join(offenders)
    flower = [f"{imp.importer} imports {imp.target}" for imp in all_imports()
              if imp.importer in {f"fedfusion.secure_aggregation.{m}" for m in SECAGG_CORE}
              and imp.target.split(".")[0] == "flwr"]
    assert not flower, "the secure-aggregation core uses `cryptography` directly, not Flower:\n  " + "\n  ".join(flower)


def package_of(module: str) -> str:
    """The top-level unit of fedfusion a module belongs to: ``fedfusion.site.client_app`` -> ``fedfusion.site``."""
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 1 else parts[0]


def package_graph() -> dict[tuple[str, str], list[str]]:
    """Edges between fedfusion's top-level packages/modules, each with the imports that make it."""
    edges: dict[tuple[str, str], list[str]] = defaultdict(list)
    for imp in all_imports():
        if imp.target.split(".")[0] != "fedfusion":
            continue
        source, target = package_of(imp.importer), package_of(imp.target)
        if source != target:
            edges[(source, target)].append(f"{imp.importer}:{imp.line} -> {imp.target}")
    return edges


def strongly_connected(nodes: set[str], successors: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components with more than one node."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(successors.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
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

    for node in sorted(nodes):
        if node not in index:
            visit(node)
    return found


def shortest_cycle(component: list[str], successors: dict[str, set[str]]) -> list[str]:
    """A shortest cycle through the component's first node (breadth-first), for the message."""
    start = component[0]
    parents: dict[str, str] = {}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for nxt in sorted(successors.get(node, set()) & set(component)):
            if nxt == start:
                path = [node]
                while path[-1] != start:
                    path.append(parents[path[-1]])
                return [*reversed(path), start]
            if nxt not in parents:
                parents[nxt] = node
                queue.append(nxt)
    return component


def test_no_import_cycle_between_packages() -> None:
    edges = package_graph()
    successors: dict[str, set[str]] = defaultdict(set)
    for source, target in edges:
        successors[source].add(target)
    nodes = {n for edge in edges for n in edge}
    report = []
    for component in strongly_connected(nodes, successors):
        cycle = shortest_cycle(component, successors)
        lines = [f"cycle among {', '.join(component)}: " + " -> ".join(cycle)]
        for source in component:
            for target in sorted(successors[source] & set(component)):
                lines.append(f"  {source} -> {target}:")
                lines.extend(f"      {made_by}" for made_by in edges[(source, target)])
        report.append("\n".join(lines))
    assert not report, "import cycles between fedfusion packages:\n" + "\n".join(report)
