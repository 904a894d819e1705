"""The layout holds: a module imports only from its own stage or earlier ones, nothing imports the lab, no cycles.

The lab (`references/`, beside the package and not in the wheel) is the last floor: it may import the package,
the package never imports it.

Imports are read from the source (function-local ones included: they hide circles as well as top-level ones).
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "lit_garbage"
LAB = REPO / "references"
# Stages in the order of a model's life; a module may import its own stage and the ones before it.
STAGES = ["", "data", "models", "training", "int8", "inference", "export", "evaluation", "serve", "audit",
          "commands", "references"]
ROOTS = ("lit_garbage", "references")
ENTRY_POINTS = {"lit_garbage.__main__": "commands"}  # `python -m lit_garbage` is the command


def _modules() -> dict[str, Path]:
    out = {}
    for path in [*PACKAGE.rglob("*.py"), *LAB.rglob("*.py")]:
        parts = path.relative_to(REPO).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """Project modules `name` imports (`from lit_garbage.x import y` counts as lit_garbage.x.y when that is a module)."""
    found = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        found |= {t for t in targets if t.split(".")[0] in ROOTS and t != name}
    return {t for t in found if t in known}


def _stage(module: str) -> str:
    if module in ENTRY_POINTS:
        return ENTRY_POINTS[module]
    parts = module.split(".")
    if parts[0] == "references":
        return "references"
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in STAGES) else ""


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {name: _imports(name, path, known) for name, path in modules.items()}


def test_every_module_belongs_to_a_stage():
    assert {_stage(m) for m in _graph()} <= set(STAGES)


def test_no_module_imports_a_later_stage_and_nothing_imports_the_lab():
    upward = []
    for module, imported in _graph().items():
        for target in imported:
            if STAGES.index(_stage(target)) > STAGES.index(_stage(module)):
                upward.append(f"{module} ({_stage(module) or 'top'}) -> {target} ({_stage(target)})")
    assert not upward, "imports against the stage order:\n" + "\n".join(sorted(upward))


def test_the_import_graph_has_no_cycles():
    graph = _graph()
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    assert not cycles, f"import cycles: {cycles}"


def test_the_checker_sees_function_local_imports():
    """The graph includes imports inside functions (the backends' lazy torch-side import, for one)."""
    graph = _graph()
    assert "lit_garbage.training.checkpoints" in graph["lit_garbage.inference.backends"]
    assert "lit_garbage.models.keras_backbone" in graph["lit_garbage.models.network"]


def test_the_lab_is_outside_the_package_and_seen_by_the_checker():
    """The lab moved out of the wheel: nothing of it is left inside the package, and the graph still reads it."""
    assert not (PACKAGE / "lab").exists()
    graph = _graph()
    assert "references.cv_tables" in graph["references.cv"]
    assert _stage("references.cv") == "references"


def test_the_format_rows_name_code_their_users_may_import():
    """`lit_garbage.formats` names each runtime's code as "module:attribute", imported where it is used: the
    backend by inference, the facts writer by export, the facts reader by `artifacts` (the package's top)."""
    from lit_garbage.formats import RUNTIMES

    modules = _modules()
    users = {"backend": "inference", "writer": "export", "reader": ""}
    for runtime in RUNTIMES.values():
        for role, user in users.items():
            name = getattr(runtime, role)
            if name is None:
                continue
            module = name.partition(":")[0]
            assert module in modules, f"{runtime.kind} {role}: {name} names no module of the project"
            assert STAGES.index(_stage(module)) <= STAGES.index(user), \
                f"{runtime.kind} {role}: {name} lies on a later floor than its user ({user or 'top'})"
