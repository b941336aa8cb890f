"""One import direction: every module imports only its own layer's modules and the layers below, never in a
circle, and nothing outside ``segedge/cli`` (and ``python -m segedge``) imports the CLI. An AST walk, so imports
inside functions count. The top package ``segedge`` only re-exports lazily (by name), so it sits outside the layers."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "segedge"

# top first; a layer may import itself and anything after it
LAYERS = (
    ("cli",),
    ("flows",),
    ("verify",),
    ("backends",),
    ("graph", "train"),
    ("models", "data"),
    ("core",),
)


def layer_of(module: str) -> int | None:
    parts = module.split(".")
    if len(parts) < 2 or parts[0] != "segedge":
        return None
    for level, folders in enumerate(LAYERS):
        if parts[1] in folders:
            return level
    return None


def module_name(path: Path, root: Path = PACKAGE) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, root: Path = PACKAGE) -> set[str]:
    """segedge modules ``path`` imports, anywhere in the file (``from x import y`` may name a module y)."""
    me = module_name(path, root)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.add(target)
            found.update(f"{target}.{a.name}" for a in node.names)
    modules = {module_name(p, root) for p in root.rglob("*.py")}
    return {m for m in found if m in modules and m != me}


def import_graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    return {module_name(p, root): imports_of(p, root) for p in sorted(root.rglob("*.py"))}


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    wrong = []
    for module, deps in graph.items():
        mine = layer_of(module)
        for dep in deps:
            theirs = layer_of(dep)
            if dep.startswith("segedge.cli") and not module.startswith(("segedge.cli", "segedge.__main__")):
                wrong.append(f"{module} imports the CLI ({dep})")
            elif mine is not None and theirs is not None and theirs < mine:
                wrong.append(f"{module} ({'/'.join(LAYERS[mine])}) imports {dep} ({'/'.join(LAYERS[theirs])}), a layer above")
    return sorted(wrong)


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Import cycles between modules (depth-first search for back edges)."""
    found, state, stack = [], {}, []

    def visit(node: str) -> None:
        state[node] = "open"
        stack.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == "open":
                found.append(stack[stack.index(dep):] + [dep])
            elif dep not in state:
                visit(dep)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return found


def test_every_module_sits_in_a_layer():
    graph = import_graph()
    loose = [m for m in graph if m != "segedge" and m != "segedge.__main__" and layer_of(m) is None]
    assert loose == [], f"modules outside the layers {LAYERS}: {loose}"


def test_no_module_imports_a_layer_above_or_the_cli():
    assert upward_imports(import_graph()) == []


def test_no_import_circles():
    assert circles(import_graph()) == []


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "segedge"
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    for folder in [root, *[p for p in root.rglob("*") if p.is_dir()]]:
        (folder / "__init__.py").touch()
    return root


def test_the_walk_finds_an_upward_import_inside_a_function(tmp_path):
    root = _tree(tmp_path, {
        "core/errors.py": "def f():\n    from segedge.flows.export import x\n",
        "flows/export.py": "from segedge.core import errors\n",
    })
    assert upward_imports(import_graph(root)) == [
        "segedge.core.errors (core) imports segedge.flows.export (flows), a layer above"]


def test_the_walk_finds_a_circle_and_a_cli_import(tmp_path):
    root = _tree(tmp_path, {
        "verify/a.py": "from segedge.verify import b\n",
        "verify/b.py": "import segedge.verify.a\n",
        "flows/c.py": "from segedge.cli.args import size\n",
        "cli/args.py": "",
    })
    graph = import_graph(root)
    assert circles(graph) == [["segedge.verify.a", "segedge.verify.b", "segedge.verify.a"]]
    assert upward_imports(graph) == ["segedge.flows.c imports the CLI (segedge.cli.args)"]


@pytest.mark.parametrize("name", sorted(__import__("segedge").__all__))
def test_public_api_names_resolve(name):
    import segedge

    assert getattr(segedge, name) is not None
