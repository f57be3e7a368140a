"""The package has no import cycle, not even through imports inside functions, and each layer imports only
the layers below it (docs/design.md). The walk reads every `import` statement of every module with `ast`."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "src" / "influent"

# lowest first; a package may import from packages before it (and itself), never after it
LAYERS = ["data", "models", "grads", "backends", "curvature", "targets", "methods", "api", "actions", "evaluation",
          "report", "runs", "cli"]


def modules() -> dict[str, tuple[Path, bool]]:
    out = {}
    for f in ROOT.rglob("*.py"):
        parts = list(f.relative_to(ROOT.parent).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        out[".".join(parts[:-1] if is_pkg else parts)] = (f, is_pkg)
    return out


def import_graph() -> dict[str, set[str]]:
    """module -> the influent modules it imports (a name imported from a package counts as the submodule
    when one exists by that name, else as the package's __init__)."""
    mods = modules()

    def resolve(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    graph = {}
    for mod, (path, is_pkg) in mods.items():
        base = mod if is_pkg else mod.rpartition(".")[0]
        deps = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                deps |= {resolve(a.name) for a in node.names if a.name.split(".")[0] == "influent"}
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    parts = base.split(".")
                    target = ".".join(parts[:len(parts) - node.level + 1] + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                if target.split(".")[0] != "influent":
                    continue
                for a in node.names:
                    sub = f"{target}.{a.name}"
                    deps.add(sub if sub in mods else resolve(target))
        deps.discard(None)
        deps.discard(mod)
        graph[mod] = deps
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_walk_sees_function_level_imports():
    graph = import_graph()
    assert "influent.runs.pipeline" in graph["influent.cli"]  # imported inside a command function
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycle_between_modules():
    assert cycles(import_graph()) == []


def layer(mod: str) -> str:
    parts = mod.split(".")
    return parts[1] if len(parts) > 1 else "influent"


def test_each_layer_imports_only_the_layers_below_it():
    rank = {name: i for i, name in enumerate(LAYERS)}
    top = {p.stem for p in ROOT.iterdir() if p.suffix == ".py" or (p / "__init__.py").exists()} - {"__init__", "__pycache__"}
    assert top == set(LAYERS), f"top-level modules and packages {sorted(top)} differ from the layers {LAYERS}"
    upward = sorted((mod, dep) for mod, deps in import_graph().items() if layer(mod) in rank
                    for dep in deps if layer(dep) in rank and rank[layer(dep)] > rank[layer(mod)])
    assert upward == [], upward


def test_no_method_name_below_the_method_layer():
    """Layers below `methods` (and the backends' planner) never name a registered method: what they need to know
    about a method comes from its registry declaration. String literals are read with `ast`; docstrings are
    prose and not counted."""
    from influent.methods import METHODS

    names = set(METHODS.names())
    below = LAYERS[:LAYERS.index("methods")]
    found = []
    for f in ROOT.rglob("*.py"):
        if f.relative_to(ROOT).parts[0] not in below:
            continue
        tree = ast.parse(f.read_text(), str(f))
        docs = {id(n.body[0].value) for n in ast.walk(tree)
                if isinstance(n, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and n.body
                and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
        found += [f"{f.relative_to(ROOT)}:{n.lineno} {n.value!r}" for n in ast.walk(tree)
                  if isinstance(n, ast.Constant) and n.value in names and id(n) not in docs]
    assert found == []
