"""First contact: a fresh install without the optional dependencies works, and the CLI starts fast.

Each case runs in a subprocess so that the modules it imports are its own.
"""

import subprocess
import sys
import textwrap
from pathlib import Path

SRC = str(Path(__file__).resolve().parents[1] / "src")

BLOCK = textwrap.dedent("""
    import sys
    class Block:
        def find_spec(self, name, path=None, target=None):
            if name.split('.')[0] in {blocked!r}:
                raise ModuleNotFoundError(f"No module named {{name!r}}")
    sys.meta_path.insert(0, Block())
""")


def _python(code: str, blocked=(), flags=()) -> subprocess.CompletedProcess:
    prog = BLOCK.format(blocked=set(blocked)) + textwrap.dedent(code)
    env = {"PYTHONPATH": SRC, "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, *flags, "-c", prog], capture_output=True, text=True, env=env, timeout=300)


def test_package_and_every_method_import_without_optional_dependencies():
    r = _python("""
        import influent, influent.methods, influent.cli, influent.runs.pipeline, influent.runs.demo, influent.report
        print(len(influent.methods.METHODS))
    """, blocked=("cleanlab", "matplotlib", "ray", "dattri", "captum", "transformers", "curvlinops"))
    assert r.returncode == 0, r.stderr
    assert int(r.stdout.split()[-1]) >= 10


def test_label_quality_without_cleanlab_is_one_line_naming_the_install_command():
    r = _python("""
        import numpy as np
        from influent.cli import main
        import influent as inf
        X = np.random.default_rng(0).normal(size=(40, 3)); y = (X[:, 0] > 0).astype(int)
        m = inf.models.SklearnLogistic().fit(inf.from_arrays(X, y))
        try:
            inf.score(m, inf.from_arrays(X, y), method="label-quality")
        except inf.InputError as e:
            print("ERR", e)
    """, blocked=("cleanlab",))
    assert r.returncode == 0, r.stderr
    line = [ln for ln in r.stdout.splitlines() if ln.startswith("ERR")]
    assert len(line) == 1 and "pip install" in line[0] and "cleanlab" in line[0]


def test_cli_help_imports_neither_torch_nor_sklearn():
    r = _python("""
        import sys
        from influent.cli import main
        try:
            main(["--help"])
        except SystemExit as e:
            assert e.code in (0, None), e.code
        heavy = sorted(m for m in ("torch", "sklearn", "scipy", "zarr") if m in sys.modules)
        print("HEAVY", heavy)
    """)
    assert r.returncode == 0, r.stderr
    assert "Usage" in r.stdout
    assert r.stdout.strip().splitlines()[-1] == "HEAVY []"


def test_exact_gauss_newton_prints_no_torch_deprecation_warnings():
    """torch's forward-mode AD loads jit-scripted decompositions on first use (18 warnings in torch 2.13);
    influent filters exactly those, even where deprecation warnings are shown (``python -W default``, as
    under pytest or ``-X dev``)."""
    r = _python("""
        import numpy as np, torch, influent as inf
        rng = np.random.default_rng(0)
        X = rng.normal(size=(40, 3)); y = (X[:, 0] > 0).astype(int)
        tr = inf.from_arrays(X, y)
        m = inf.models.TabularMLP(hidden=(4,), dtype=torch.float64, train=inf.models.TrainConfig(epochs=5)).fit(tr)
        s = inf.score(m, tr, target=tr, method="if", solver="exact", solver_options={"curvature": "ggn"}, damping=1e-3)
        print("OK", np.isfinite(s.values).all())
    """, flags=("-W", "default"))
    assert r.returncode == 0, r.stderr
    assert "OK True" in r.stdout
    assert "jit" not in r.stderr and "Warning" not in r.stderr, r.stderr
