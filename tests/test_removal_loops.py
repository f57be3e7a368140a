"""The noisy-label experiment and the demo's comparison refit through the one removal curve
(`evaluation.curves.removal_curve`) and `refit_many`: their trims, random trims and oracle against a loop of
refits by hand, and the experiment's result independent of `n_jobs`."""

import numpy as np

import influent as inf
from influent.data.scores import Scores
from influent.evaluation.noisy import noisy_label_experiment
from influent.models.factory import build_model, fast_refit_model
from influent.runs.demo import demo_config, run_demo
from influent.runs.inputs import load_data


def test_noisy_experiment_trims_random_and_oracle_equal_refits_by_hand(cancer):
    train, valid = cancer
    test = valid
    model = inf.models.SklearnLogistic(C=1.0, newton_steps=0)
    methods = [("l2", "outlier", {"detector": "l2"})]
    res = noisy_label_experiment(model, train, valid, test, methods, noise=0.1, seed=3, random_repeats=3)
    t = res.table.set_index("label")
    flipped, k = res.is_noisy, res.budget
    noisy = train.with_labels(np.where(flipped, 1 - train.y, train.y))
    fitted = model.refit(noisy)
    s = res.scores["l2"]
    assert t.loc["l2", "test_acc"] == fitted.refit(noisy.without(s.most_harmful(k))).accuracy(test)
    rng = np.random.default_rng(3 + 1)  # the experiment's random trims: seed + 1
    drops = [rng.choice(len(train), k, replace=False) for _ in range(3)]
    accs = [fitted.refit(noisy.without(d)).accuracy(test) for d in drops]
    assert t.loc["random", "test_acc"] == float(np.mean(accs))
    assert t.loc["random", "precision_at_k"] == float(np.mean([flipped[d].mean() for d in drops]))
    assert len(set(accs)) > 1  # three different trims, not one repeated
    oracle = fitted.refit(noisy.without(np.flatnonzero(flipped))).accuracy(test)
    assert t.loc["oracle (drop flipped)", "test_acc"] == oracle
    # the refits run in worker processes give the same table
    par = noisy_label_experiment(model, train, valid, test, methods, noise=0.1, seed=3, random_repeats=3, n_jobs=2)
    cols = ["label", "auc", "precision_at_k", "recall_at_k", "test_acc"]
    assert par.table[cols].equals(res.table[cols])


def test_demo_comparison_equals_refits_by_hand(tmp_path):
    res = run_demo(tmp_path / "demo", compare=("if",))  # "random" not compared: the 3 random trims are shown
    rows = {r["method"]: r for r in res["rows"]}
    assert set(rows) == {"mislabel", "if", "random"}
    data = load_data(demo_config(tmp_path / "demo" / "data", "digits", "mislabel", 0))
    train, test = data.train, data.test
    refit = fast_refit_model(build_model("logistic", {"C": 0.1}, train, 0))
    flipped = np.asarray(data.clean).astype(str) != train.y.astype(str)
    budget = res["budget"]
    assert budget == flipped.sum() == 100
    s = Scores.load(tmp_path / "demo" / "scores.parquet")
    assert list(s.ids) == list(train.ids)
    assert rows["mislabel"]["test_acc_after_trim"] == refit.refit(train.without(s.most_harmful(budget))).accuracy(test)
    rng = np.random.default_rng(0)
    accs = [refit.refit(train.without(rng.choice(len(train), budget, replace=False))).accuracy(test) for _ in range(3)]
    assert rows["random"]["test_acc_after_trim"] == float(np.mean(accs))
    assert res["oracle_accuracy"] == refit.refit(train.without(np.flatnonzero(flipped))).accuracy(test)
    assert res["record"]["results"]["comparison_oracle_accuracy"] == res["oracle_accuracy"]
