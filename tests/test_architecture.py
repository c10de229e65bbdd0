"""The package's floors: no import cycle between top-level subpackages, no package importing another's private names."""
import ast
from collections import defaultdict
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "netcompress"


def _imports():
    """(importing package, imported package, imported names) for every netcompress import, function-level too."""
    for path in SRC.rglob("*.py"):
        parts = list(path.relative_to(SRC.parent).with_suffix("").parts)  # ["netcompress", pkg, ...]
        package = parts[1] if len(parts) > 1 else "__init__"
        here = parts[:-1]  # the package holding the module (for __init__.py: the package itself)
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = here[:len(here) - node.level + 1]
                    target = base + (node.module.split(".") if node.module else [])
                else:
                    target = (node.module or "").split(".")
                names = [a.name for a in node.names]
            elif isinstance(node, ast.Import):
                for a in node.names:
                    yield package, a.name.split("."), []
                continue
            else:
                continue
            yield package, target, names


def _graph() -> dict[str, set[str]]:
    edges = defaultdict(set)
    for package, target, _ in _imports():
        if len(target) >= 2 and target[0] == "netcompress" and target[1] != package:
            edges[package].add(target[1])
    return edges


def test_top_level_packages_import_no_cycle():
    edges = _graph()
    state: dict[str, int] = {}

    def visit(node, stack):
        state[node] = 1
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                raise AssertionError("import cycle: " + " -> ".join(stack + [node, nxt]))
            if state.get(nxt) is None:
                visit(nxt, stack + [node])
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node, [])
    assert {"core"} >= edges.get("core", set()) - {"core"}, "core imports nothing of netcompress"
    assert "prune" not in edges.get("graph", set()), "graph/ knows nothing of pruning"


def test_no_package_imports_another_packages_private_names():
    bad = [(package, ".".join(target), name) for package, target, names in _imports()
           if len(target) >= 2 and target[0] == "netcompress" and target[1] != package
           for name in names if name.startswith("_")]
    assert not bad, bad
