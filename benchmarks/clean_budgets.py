"""Design run for `clean`'s budgets above the estimated count (docs/cleaning.md, "Budgets above the count").

On the design sets only (digits and breast cancer, as benchmarks/cleaning.py builds them, same seeds, so
the same data and flips), `influent.clean(holdout="valid+cv")` is run once with every candidate budget
factor in `--factors`; each candidate of its table (action, ranking, budget) is also refit on the full noisy
training split by `clean` itself and scored on the test split (a side channel: `_Measure` also predicts the
test rows). The rules compared (`RULES`: which budgets, which guard) are then replayed by `clean`'s own
`decide` on the captured per-row evidence (the same bootstrap seed): no rule sees the test rows. The run's
own choice used factors 1, 1.5, 2 with the sequence guard (the step-down guard did not exist yet). One thread (``OMP_NUM_THREADS=1``), refits in process.

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


RULES = {  # name: (budget factors, guard) replayed with `clean`'s own `decide` on the captured evidence
    "count, sequence (earlier default)": ((1.0,), "sequence"),
    "1, 1.5, 2 x count, sequence": ((1.0, 1.5, 2.0), "sequence"),
    "count, step-down": ((1.0,), "stepdown"),
    "1, 1.5 x count, step-down": ((1.0, 1.5), "stepdown"),
    "1, 2 x count, step-down": ((1.0, 2.0), "stepdown"),
    "1, 1.5, 2 x count, step-down (new default)": ((1.0, 1.5, 2.0), "stepdown"),
}


def replay(rec: dict, factors, guard: str) -> int:
    """The row `clean`'s `decide` picks from a run's candidates when only the budgets `factors` x the count
    are tried and `guard` keeps the choice honest (evidence "accuracy", level 0.95, the run's seed)."""
    t = rec["table"].copy()
    rows = [i for i in rec["rows"] if t.loc[i, "spec"][1] in factors]
    acc = np.zeros((len(t), rec["diff"].shape[1] if rec["rows"] else 1))
    for j, i in enumerate(rec["rows"]):
        acc[i] = rec["diff"][j]
    ranks = [int(k) for k in t["rank_k"]]
    pick, _ = cm.decide(t, {"accuracy": acc, "log_loss": np.zeros_like(acc)}, rows, ranks, rec["counts"]["valid"],
                        guard=guard, evidence="accuracy", level=0.95, n_boot=2000, seed=0)
    return pick


def report(paths):
    recs = sum((pickle.load(open(p, "rb")) for p in paths), [])
    rows = []
    for r in recs:
        t = r["table"]
        out = {"setting": f"{r['data']}/{r['model']}/{r['pattern']}/{r['rate']:.0%}", "rate": r["rate"],
               "noisy": r["noisy"], "oracle": r["csv"].get("oracle", np.nan), "cleanlab": r["csv"].get("cleanlab", np.nan)}
        for nm, (f, g) in RULES.items():
            i = replay(r, f, g)
            out[nm] = t.loc[i, "test_acc"]
            out["action: " + nm] = f"{t.loc[i, 'action']} {int(t.loc[i, 'budget'])}"
        out["run's choice"] = r["chosen"]
        rows.append(out)
    df = pd.DataFrame(rows)
    pd.set_option("display.width", 250)
    print(df.round(3).to_string())
    noisy = df[df.rate > 0]
    gap = noisy.oracle - noisy.noisy
    ok = gap >= 0.01
    print("\n| rule | mean gap share | below cleanlab | no noise: actions |\n| --- | --- | --- | --- |")
    print(f"| cleanlab | {((noisy.cleanlab - noisy.noisy) / gap)[ok].mean():.2f} | | |")
    for nm in RULES:
        share = ((noisy[nm] - noisy.noisy) / gap)[ok].mean()
        below = int((noisy[nm] < noisy.cleanlab - 1e-12).sum())
        acts = df[df.rate == 0]["action: " + nm].str.split().str[0].value_counts().to_dict()
        print(f"| {nm} | {share:.2f} | {below} of {len(noisy)} | {acts} |")


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
