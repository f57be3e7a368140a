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


def method_literals(path: Path, names: set[str]) -> list[tuple[str, int, str]]:
    """(scope, line, literal) of every string literal in `path` equal to one of `names`; docstrings are prose and
    not counted. scope: the dotted name of the innermost enclosing class or function (a decorator's arguments
    belong to the function it decorates), else the names a module-level assignment binds, else "<module>"."""
    tree = ast.parse(path.read_text(), str(path))
    docs = {id(n.body[0].value) for n in ast.walk(tree)
            if isinstance(n, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and n.body
            and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
    found = []

    def visit(node: ast.AST, scope: str) -> None:
        for child in ast.iter_child_nodes(node):
            inner = scope
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                inner = f"{scope}.{child.name}" if scope != "<module>" else child.name
            elif node is tree and isinstance(child, (ast.Assign, ast.AnnAssign)):
                targets = child.targets if isinstance(child, ast.Assign) else [child.target]
                inner = ",".join(n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)) or scope
            if isinstance(child, ast.Constant) and child.value in names and id(child) not in docs:
                found.append((scope, child.lineno, child.value))
            visit(child, inner)

    visit(tree, "<module>")
    return found


def registered_here(path: Path) -> set[str]:
    """The method names a module of `methods/` registers: the first argument of its `register_method` and
    `register_pairwise` calls (a literal, or a module-level name bound to one)."""
    tree = ast.parse(path.read_text(), str(path))
    bound = {t.id: n.value.value for n in tree.body if isinstance(n, ast.Assign) and isinstance(n.value, ast.Constant)
             for t in n.targets if isinstance(t, ast.Name)}
    out = set()
    for n in ast.walk(tree):
        if isinstance(n, ast.Call) and n.args and getattr(n.func, "id", None) in ("register_method", "register_pairwise"):
            a = n.args[0]
            out.add(a.value if isinstance(a, ast.Constant) else bound.get(getattr(a, "id", None)))
    return out


def test_no_method_name_below_the_method_layer():
    """Layers below `methods` (and the backends' planner) never name a registered method: what they need to know
    about a method comes from its registry declaration. String literals are read with `ast`; docstrings are
    prose and not counted."""
    from influent.methods import METHODS

    names = set(METHODS.names())
    below = LAYERS[:LAYERS.index("methods")]
    found = [f"{f.relative_to(ROOT)}:{line} {value!r}" for f in ROOT.rglob("*.py")
             if f.relative_to(ROOT).parts[0] in below for _, line, value in method_literals(f, names)]
    assert found == []


# String literals that equal a method name but name something else, as (module, scope, literal) (scope as in
# `method_literals`). Each is another concept that happens to share the word; a literal that means the method
# uses the registry's constant (`M.RANDOM`, ...) instead.
NOT_METHOD_NAMES = {
    # active-learning strategies: names in their own registry (`actions.active.STRATEGIES`), not methods
    ("actions/active.py", "random_priority", "random"),
    ("actions/active.py", "iv_priority", "iv"),
    ("actions/active.py", "fi_priority", "fi"),
    ("evaluation/active.py", "default_strategies", "fi"),
    ("evaluation/active.py", "default_strategies", "iv"),
    ("evaluation/active.py", "default_strategies", "random"),
    # find_label_issues' probabilities="loo": mislabel's leave-one-out probabilities (vs "cv"), not the method
    ("api/issues.py", "PROBABILITIES", "loo"),
    ("api/issues.py", "find_label_issues", "loo"),
    # a conformance case's sign="loo": rank-correlate with the leave-one-out effect (its own refits)
    ("evaluation/conformance.py", "SIGNS", "loo"),
    ("evaluation/conformance.py", "Case", "loo"),
    ("evaluation/conformance.py", "sign_statistic", "loo"),
    ("evaluation/conformance.py", "check_sign", "loo"),
    ("evaluation/conformance.py", "check_method", "loo"),
    # fairness trimming's "random" strategy: remove a random subset (beside "utility", "fairness", "both")
    ("evaluation/fairness.py", "STRATEGIES", "random"),
    ("evaluation/fairness.py", "fairness_trimming", "random"),
    # mislabel's option hessian="loo": the Newton step on the leave-one-out objective (vs "full")
    ("methods/mislabel.py", "leave_one_out", "loo"),
    ("methods/mislabel.py", "_shift", "loo"),
    ("methods/mislabel.py", "MislabelOptions", "loo"),
    ("methods/mislabel.py", "MislabelOptions.__post_init__", "loo"),
    ("methods/mislabel.py", "relabel_probabilities", "loo"),
    # the removal curve's "random" key in a run's record: random removals beside "harmful" and "helpful"
    ("runs/summary.py", "removal_curve", "random"),
    ("report/html.py", "summary_section", "random"),
    ("report/svg.py", "removal_chart", "random"),
    # the summary's flag rule "outlier": below the lower Tukey fence of the values (beside "negative", "count")
    ("runs/summary.py", "harmful_rule", "outlier"),
}


def test_no_method_name_outside_its_module_and_the_registry():
    """No module names a registered method as a string, except `methods/registry.py` (which declares the names
    and the role defaults) and, inside `methods/`, a module naming the methods it registers: everything else
    reads `methods.registry.M` and the spec's declarations. A literal that is another concept sharing the word
    is listed in `NOT_METHOD_NAMES` (and an entry there that matches nothing is stale)."""
    from influent.methods import METHODS

    names = set(METHODS.names())
    found, used = [], set()
    for f in sorted(ROOT.rglob("*.py")):
        rel = f.relative_to(ROOT).as_posix()
        if rel == "methods/registry.py":
            continue
        own = registered_here(f) if rel.startswith("methods/") else set()
        for scope, line, value in method_literals(f, names):
            if value in own:
                continue
            if (rel, scope, value) in NOT_METHOD_NAMES:
                used.add((rel, scope, value))
            else:
                found.append(f"{rel}:{line} ({scope}) {value!r}")
    assert found == []
    assert sorted(NOT_METHOD_NAMES - used) == []


def test_the_name_constants_are_the_registered_methods():
    from influent.methods import DEFAULT_ATTRIBUTION, DEFAULT_DETECTOR, DEFAULT_METHOD, METHODS, M

    constants = {k: v for k, v in vars(M).items() if not k.startswith("_")}
    assert sorted(constants.values()) == sorted(METHODS.names())
    assert all(k == v.upper().replace("-", "_") for k, v in constants.items()), constants
    assert METHODS[DEFAULT_ATTRIBUTION].pairwise is not None
    assert METHODS[DEFAULT_DETECTOR].says == "mislabelled"
    assert METHODS[DEFAULT_METHOD].needs_target
