"""The one removal curve (evaluation/curves.py) against a brute-force loop of refits, and its three callers
(the report's data, the trimming experiments, the evaluation protocol) against the same loop."""

import numpy as np
import pytest

import influent as inf
from influent.data.scores import Scores
from influent.evaluation.attribution import removal_curve as removal_table
from influent.evaluation.curves import removal_curve
from influent.evaluation.trimming import trim_curve
from influent.models.refit import Accuracy
from influent.runs.summary import removal_curve as report_curve
from influent.targets import Utility


@pytest.fixture(scope="module")
def case():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 110)
    X = rng.normal(size=(110, 3)) + 1.1 * (2 * y - 1)[:, None]
    y[:6] = 1 - y[:6]  # a few wrong labels, so that the order matters
    train, test = inf.from_arrays(X[:70], y[:70]), inf.from_arrays(X[70:], y[70:])
    model = inf.models.SklearnLogistic(C=1.0).fit(train)
    values = rng.standard_normal(70)
    values[[4, 9]] = np.nan  # NaN values are removed last from the lowest end
    return model, train, test, Scores(values, "r", train.ids)


def _brute(model, train, test, order, k):
    return model.refit(train.without(order[:k])).accuracy(test)


def test_curve_equals_refitting_by_hand(case):
    model, train, test, s = case
    counts = [0, 3, 10, 25]
    res = removal_curve(model, train, s, counts, Accuracy(test), ends=("lowest", "highest"), repeats=2, seed=7,
                        n_jobs=2)
    assert res.counts == counts
    for end, order in (("lowest", s.order()), ("highest", s.most_helpful(len(s)))):
        assert res.curves[end] == [_brute(model, train, test, order, k) for k in counts]
    assert s.order()[-2:].tolist() == [4, 9]  # NaN last: the lowest end is not the highest end reversed
    rng = np.random.default_rng(7)  # nested: the first k of one permutation per repeat
    perms = [rng.permutation(len(train)) for _ in range(2)]
    assert res.random == [[_brute(model, train, test, p, k) for k in counts] for p in perms]


def test_fresh_draws_at_zero_and_skipped_refits(case):
    model, train, test, s = case
    res = removal_curve(model, train, s, [0, 5, 5], Accuracy(test), repeats=2, nested=False, seed=1,
                        refit_at_zero=False)
    rng = np.random.default_rng(1)
    perms = [[rng.permutation(len(train)) for _ in range(2)] for _ in range(3)]
    assert res.random[0][0] == model.accuracy(test)  # k = 0 measures the model as given
    for r in range(2):
        assert res.random[r][1:] == [_brute(model, train, test, perms[j][r], 5) for j in (1, 2)]
    assert res.random[0][1] != res.random[0][2] or not np.array_equal(perms[1][0][:5], perms[2][0][:5])
    # a removal leaving one class: the refit raises InputError; with skip it is None, without it stops
    one = Scores(np.where(train.y == 1, -1.0, 1.0), "r", train.ids)
    k = int((train.y == 1).sum())
    res = removal_curve(model, train, one, [2, k], Accuracy(test), skip=(inf.InputError,))
    assert res.curves["lowest"] == [_brute(model, train, test, one.order(), 2), None]
    with pytest.raises(inf.InputError):
        removal_curve(model, train, one, [k], Accuracy(test))
    with pytest.raises(inf.InputError, match=r"counts must lie in \[0, 69\]"):
        removal_curve(model, train, s, [70], Accuracy(test))
    with pytest.raises(inf.InputError, match="end must be one of"):
        removal_curve(model, train, s, [1], Accuracy(test), ends=("worst",))


def test_callers_equal_refitting_by_hand(case):
    model, train, test, s = case
    # the trimming experiments: lowest end only, b = 0 is the model as given
    assert trim_curve(model, train, test, s, [0, 4, 12]) == [model.accuracy(test)] + [
        _brute(model, train, test, s.order(), k) for k in (4, 12)]
    # the evaluation protocol: fresh random draws per budget, mean and std
    df = removal_table(model, train, test, s, [0, 0.1], n_random=3, n_jobs=1, seed=2)
    rng = np.random.default_rng(2)
    draws = [[_brute(model, train, test, rng.permutation(70), k) for _ in range(3)] for k in (0, 7)]
    assert df["budget"].tolist() == [0, 7] and df["lowest"].tolist() == [_brute(model, train, test, s.order(), k) for k in (0, 7)]
    assert df["random_mean"].tolist() == pytest.approx([np.mean(d) for d in draws], abs=1e-15)
    assert df["random_std"].tolist() == pytest.approx([np.std(d) for d in draws], abs=1e-15)
    # the report: accuracy and target cost at both ends, random min/mean/max over nested orders
    ticks = []
    c = report_curve(model, train, test, s, [0.0, 0.1, 0.3], 2, 5, "utility", lambda d, t: ticks.append((d, t)))
    assert c["k"] == [0, 7, 21] and ticks[-1] == (12, 12)
    base = inf.models.SklearnLogistic(C=1.0, newton_steps=0)
    target = Utility(test).prepare(model)
    rng = np.random.default_rng(5)
    perms = [rng.permutation(70) for _ in range(2)]
    fit = lambda order, k: base.fit(train.without(order[:k]))
    for name, order in (("harmful", s.order()), ("helpful", s.most_helpful(70))):
        assert c[name]["accuracy"] == [fit(order, k).accuracy(test) for k in c["k"]]
        assert c[name]["cost"] == pytest.approx([target.evaluate(fit(order, k)) for k in c["k"]], abs=1e-12)
    acc = np.array([[fit(p, k).accuracy(test) for k in c["k"]] for p in perms])
    assert c["random"]["accuracy_min"] == acc.min(0).tolist() and c["random"]["accuracy_max"] == acc.max(0).tolist()
    assert c["random"]["accuracy"] == pytest.approx(acc.mean(0).tolist(), abs=1e-15)
