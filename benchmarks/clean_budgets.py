"""Design run for `clean`'s budgets above the estimated count (docs/cleaning.md, "Budgets above the count").

On the design sets only (digits and breast cancer, as benchmarks/cleaning.py builds them, same seeds, so
the same data and flips), `influent.clean(holdout="valid+cv")` is run once with every candidate budget
factor in `--factors`; each candidate of its table (action, ranking, budget) is also refit on the full noisy
training split by `clean` itself and scored on the test split (a side channel: `_Measure` also predicts the
test rows). The rules compared (which candidates each ranking's fixed sequence holds, how a winner is
picked among those that pass) are then replayed on the same tables, bounds and bootstrap: no rule sees the
test rows. One thread (``OMP_NUM_THREADS=1``), refits in process.

    OMP_NUM_THREADS=1 python benchmarks/clean_budgets.py --models logistic --out budgets_logistic.pkl
    OMP_NUM_THREADS=1 python benchmarks/clean_budgets.py --replay budgets_logistic.pkl,budgets_mlp.pkl
"""

from __future__ import annotations

import argparse
import pickle
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import cleaning as cb  # noqa: E402  (sets one thread, warnings off)

import influent as inf  # noqa: E402
import influent.actions.clean  # noqa: E402
cm = sys.modules["influent.actions.clean"]
from influent.data import Split  # noqa: E402

TEST: dict[str, Split] = {}


@dataclass
class _MeasureWithTest(cm._Measure):
    """`clean`'s validation measure plus the refit's test correctness (never read by `clean`)."""

    def __call__(self, model):
        out = super().__call__(model)
        t = TEST["split"]
        out["test"] = np.asarray(model.predict(t.X)).astype(str) == np.asarray(t.y).astype(str)
        return out


def run(names, models, factors, out):
    cm._Measure = _MeasureWithTest
    captured = {}
    evaluate = cm._evaluate

    def capture(cands, results, valid):
        captured["test"] = [None if r is None else float(np.mean(r["test"])) for r in results]
        captured["cands"] = [(c.action, c.ranking, c.spec, c.budget) for c in cands]
        return evaluate(cands, results, valid)

    cm._evaluate = capture
    boot = cm.paired_bootstrap

    def capture_boot(diff, n_boot, seed, **kw):
        captured["diff"] = diff.copy()
        return boot(diff, n_boot, seed, **kw)

    cm.paired_bootstrap = capture_boot
    cm.POOLED_FACTORS = tuple(factors)
    ref = pd.read_csv(HERE.parent / "docs" / "cleaning.csv")
    records, t0 = [], time.perf_counter()
    for name, kind, pattern, rate in cb.settings(names, models, False):
        parts = cb.load(name, 0, False, HERE / "results" / "text-embeddings")
        TEST["split"] = parts["test"]
        noisy, flipped = cb.corrupt(parts["train"], pattern, rate, 0, parts["train"])
        nvalid = cb.corrupt(parts["valid"], pattern, rate, 1000, parts["train"])[0]
        model = cb.make_model(kind).fit(noisy)
        acc = float(np.mean(np.asarray(model.predict(parts["test"].X)) == parts["test"].y))
        key = (ref.data == name) & (ref.model == kind) & (ref.pattern == pattern) & (ref.rate == rate)
        old = ref[key].set_index("method").test_acc.to_dict()
        t1 = time.perf_counter()
        res = cm.clean(model, noisy, nvalid, n_jobs=1, seed=0)
        secs = time.perf_counter() - t1
        counts = {"valid": int(res.n_issues)}
        if kind == "mlp":
            counts["no_valid"] = int(inf.find_label_issues(model, noisy)["is_issue"].sum())
            counts["cv"] = int(inf.find_label_issues(model, noisy, probabilities="cv")["is_issue"].sum())
        table = res.candidates.copy()
        table["test_acc"] = captured["test"]
        table["spec"] = [c[2] for c in captured["cands"]]
        table["rank_k"] = [c[1] for c in captured["cands"]]
        rows = [i for i in range(1, len(table)) if np.isfinite(table.loc[i, "accuracy_low"])]
        diff = captured.pop("diff", np.zeros((0, 0)))[:len(rows)] if rows else np.zeros((0, 0))
        records.append({"data": name, "model": kind, "pattern": pattern, "rate": rate, "noisy": acc,
                        "csv": old, "flips": int(flipped.sum()), "counts": counts, "table": table, "rows": rows, "diff": diff.astype(np.float32),
                        "chosen": f"{res.action} {res.budget}", "seconds": secs})
        print(f"{name}/{kind}/{pattern}/{rate:.0%}: noisy {acc:.3f} (csv {old.get('noisy', np.nan):.3f}) "
              f"chosen {res.action} {res.budget} counts {counts} flips {int(flipped.sum())} {secs:.0f}s "
              f"({time.perf_counter() - t0:.0f}s)", flush=True)
        with open(out, "wb") as f:
            pickle.dump(records, f)


def replay(table: pd.DataFrame, factors, order: str = "budget", pick: str = "gain") -> int:
    """The row a rule would choose from a run's candidates table: only candidates whose spec factor is in
    `factors`; `order` "budget" (the budget closest to the count first: trim@c, relabel@c, trim@1.5c, ...) or
    "action" (trim@c, trim@1.5c, ..., relabel@c, ...); `pick` "gain" (largest accuracy gain among those that
    passed) or "first" (the last one passed in the sequence: the largest budget that passed)."""
    rows = [i for i in range(1, len(table)) if table.loc[i, "spec"][1] in factors and np.isfinite(table.loc[i, "accuracy_low"])]
    passed = []
    for k in sorted({table.loc[i, "rank_k"] for i in rows}):
        mem = [i for i in rows if table.loc[i, "rank_k"] == k]
        a = {"trim": 0, "relabel": 1, "reweight": 2}
        key = ((lambda i: (table.loc[i, "spec"][1], a[table.loc[i, "action"]])) if order == "budget"
               else (lambda i: (a[table.loc[i, "action"]], table.loc[i, "spec"][1])))
        for i in sorted(mem, key=key):
            if table.loc[i, "accuracy_low"] > 0:
                passed.append(i)
            else:
                break
    if not passed:
        return 0
    if pick == "first":
        return passed[-1]
    return max(passed, key=lambda i: (table.loc[i, "accuracy_gain"], table.loc[i, "log_loss_gain"]))


def report(paths):
    recs = sum((pickle.load(open(p, "rb")) for p in paths), [])
    rules = {"old (c)": ((1.0,), "budget", "gain"), "c,1.5c": ((1.0, 1.5), "budget", "gain"),
             "c,1.5c,2c": ((1.0, 1.5, 2.0), "budget", "gain"), "c,2c": ((1.0, 2.0), "budget", "gain"),
             "c,1.5c byact": ((1.0, 1.5), "action", "gain"), "c,1.5c,2c byact": ((1.0, 1.5, 2.0), "action", "gain"),
             "c,1.5c last": ((1.0, 1.5), "budget", "first")}
    rows = []
    for r in recs:
        t = r["table"]
        noisy = t.loc[0, "test_acc"]
        cl, oracle = r["csv"].get("cleanlab", np.nan), r["csv"].get("oracle", np.nan)
        out = {"setting": f"{r['data']}/{r['model']}/{r['pattern']}/{r['rate']:.0%}", "rate": r["rate"],
               "flips": r["flips"], "count": r["counts"]["valid"], "cleanlab": cl, "oracle": oracle,
               "noisy_csv": r["csv"].get("noisy"), "noisy": r["noisy"], "base": noisy}
        for nm, (f, o, p) in rules.items():
            i = replay(t, f, o, p)
            out[nm] = t.loc[i, "test_acc"]
            out[nm + " act"] = f"{t.loc[i, 'action']} {int(t.loc[i, 'budget'])}"
        rows.append(out)
    df = pd.DataFrame(rows)
    noisy = df[df.rate > 0]
    print(df.drop(columns=[c for c in df.columns if c.endswith(" act")]).round(3).to_string())
    print()
    for nm in rules:
        gap = noisy.oracle - noisy.noisy
        ok = gap >= 0.01
        share = ((noisy[nm] - noisy.noisy) / gap)[ok].mean()
        cls = ((noisy.cleanlab - noisy.noisy) / gap)[ok].mean()
        below = int((noisy[nm] < noisy.cleanlab - 1e-12).sum())
        zero = df[df.rate == 0]
        print(f"{nm:16s} share {share:.3f} (cleanlab {cls:.3f}) below cleanlab {below}/{len(noisy)} "
              f"no-noise acts {list(zero[nm + ' act'])}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="digits,breast-cancer")
    ap.add_argument("--models", default="logistic")
    ap.add_argument("--factors", default="1.0,1.5,2.0")
    ap.add_argument("--out", default="budgets.pkl")
    ap.add_argument("--replay", default=None)
    a = ap.parse_args()
    if a.replay:
        report(a.replay.split(","))
    else:
        run(a.data.split(","), a.models.split(","), [float(x) for x in a.factors.split(",")], a.out)
