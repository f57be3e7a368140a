"""Actions on scores: trim, relabel, reweight, coreset (exact mechanics against brute force)."""

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.datasets import load_digits

import influent as inf
from influent.actions.edit import LOG_COLUMNS, Edit, coreset, relabel, reweight, trim


def _scores(split, values, method="test"):
    return inf.Scores(np.asarray(values, dtype=float), method, split.ids)


@pytest.fixture(scope="module")
def binary():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 3))
    y = (X[:, 0] + 0.3 * rng.normal(size=60) > 0).astype(int)
    return inf.from_arrays(X, y, ids=np.arange(100, 160), name="toy")


def test_trim_and_coreset_follow_the_ranking(binary):
    v = np.random.default_rng(1).normal(size=len(binary))
    s = _scores(binary, v)
    e = trim(binary, s, 0.1)  # a fraction: round(0.1 * 60) = 6 samples
    low = np.argsort(v)[:6]
    assert e.action == "trim" and e.weights is None and len(e.log) == 6
    np.testing.assert_array_equal(e.log["id"], binary.ids[low])  # most harmful first
    np.testing.assert_array_equal(e.split.ids, np.delete(binary.ids, low))  # others, order kept
    np.testing.assert_array_equal(e.split.X, np.delete(binary.X, low, axis=0))
    np.testing.assert_allclose(e.log["value"], v[low])
    assert list(e.log.columns) == LOG_COLUMNS
    c = coreset(binary, s, 20)
    high = np.argsort(-v)[:20]
    np.testing.assert_array_equal(c.log["id"], binary.ids[high])
    np.testing.assert_array_equal(c.split.ids, np.sort(binary.ids[high]))
    assert trim(binary, s, 0).split.ids.tolist() == binary.ids.tolist()


def test_stratified_coreset_keeps_each_class_in_proportion(binary):
    """7 kept of 60: quotas by hand from the class sizes (largest remainders), the best of each class,
    the log most valuable first; the Diff-In task keeps the same samples."""
    from influent.actions import diffin_tasks

    v = np.random.default_rng(2).normal(size=len(binary))
    s = _scores(binary, v)
    n1 = int(binary.y.sum())
    exact = {0: 7 * (60 - n1) / 60, 1: 7 * n1 / 60}
    quota = {c: int(np.floor(e)) for c, e in exact.items()}
    quota[max(exact, key=lambda c: exact[c] - quota[c])] += 7 - sum(quota.values())
    want = [i for c in (0, 1) for i in sorted(np.flatnonzero(binary.y == c), key=lambda i: -v[i])[:quota[c]]]
    c = coreset(binary, s, 7, stratify=True)
    assert sorted(c.log["id"]) == sorted(binary.ids[want]) and list(c.log["value"]) == sorted(v[want], reverse=True)
    assert [int((binary.y[np.isin(binary.ids, c.split.ids)] == k).sum()) for k in (0, 1)] == [quota[0], quota[1]]
    task = diffin_tasks.coreset(None, binary, None, 7, scores=s, stratify=True, refit=False)
    assert task.kept.tolist() == sorted(want)


def test_relabel_binary_flips_and_multiclass_uses_the_model(binary):
    v = np.arange(len(binary), dtype=float)
    e = relabel(binary, _scores(binary, v), 5)
    np.testing.assert_array_equal(e.split.y[:5], 1 - binary.y[:5])
    np.testing.assert_array_equal(e.split.y[5:], binary.y[5:])
    np.testing.assert_array_equal(e.log["old_label"].astype(int), binary.y[:5])
    np.testing.assert_array_equal(e.log["new_label"].astype(int), 1 - binary.y[:5])

    X, y = load_digits(return_X_y=True)
    train = inf.from_arrays(X[:200] / 16, y[:200])
    model = inf.models.SklearnLogistic(C=1.0, newton_steps=0).fit(train)
    s = _scores(train, np.random.default_rng(0).normal(size=200))
    with pytest.raises(inf.InputError, match="pass the fitted model"):
        relabel(train, s, 10)
    e = relabel(train, s, 10, model=model)
    pos = s.most_harmful(10)
    proba = model.predict_proba(train.X[pos])
    proba[np.arange(10), train.y[pos]] = -1  # the current label is never chosen
    np.testing.assert_array_equal(e.split.y[pos], model.classes_[proba.argmax(1)])
    assert np.all(e.split.y[pos] != train.y[pos])
    assert (e.split.y != train.y).sum() == 10


def test_relabel_recovers_flipped_labels_given_the_noisy_ids():
    """Mechanics: 10% of digit labels flipped, the flipped ids given as the scores; relabelling with the
    noisy model's best other class restores the true label for >= 90% of them, and the refit improves."""
    X, y = load_digits(return_X_y=True)
    rng = np.random.default_rng(0)
    idx = rng.permutation(len(X))
    tr, te = idx[:1000], idx[1000:]
    y_true = y[tr]
    noisy = y_true.copy()
    flip = np.zeros(1000, bool)
    flip[rng.choice(1000, 100, replace=False)] = True
    noisy[flip] = (noisy[flip] + rng.integers(1, 10, flip.sum())) % 10
    train, test = inf.from_arrays(X[tr] / 16, noisy), inf.from_arrays(X[te] / 16, y[te])
    model = inf.models.SklearnLogistic(C=1.0, newton_steps=0).fit(train)
    oracle = _scores(train, np.where(flip, -1.0, 0.0), "oracle")
    e = relabel(train, oracle, int(flip.sum()), model=model)
    assert set(e.log["id"]) == set(train.ids[flip])
    recovered = float(np.mean(e.split.y[flip] == y_true[flip]))
    assert recovered >= 0.90, recovered
    np.testing.assert_array_equal(e.split.y[~flip], noisy[~flip])
    assert model.refit(e.split).accuracy(test) > model.accuracy(test)


def test_reweight_uniform_scores_gives_exactly_the_unweighted_model(binary, digits_small):
    e = reweight(binary, _scores(binary, np.full(len(binary), 0.37)), temperature=0.01)
    assert e.weights.dtype == np.float64 and np.all(e.weights == 1.0)
    plain = inf.models.SklearnLogistic(C=0.5).fit(binary)
    weighted = inf.models.SklearnLogistic(C=0.5).fit(e.split, sample_weight=e.weights)
    for a, b in zip(plain.params().values(), weighted.params().values()):
        assert torch.equal(a, b)
    train, _ = digits_small
    e = reweight(train, _scores(train, np.zeros(len(train))))
    cfg = inf.models.TrainConfig(epochs=20, batch_size=32, seed=3)
    mlp = lambda: inf.models.TabularMLP(hidden=(8,), dtype=torch.float64, train=cfg)
    a, b = mlp().fit(train), mlp().fit(e.split, sample_weight=e.weights)
    for pa, pb in zip(a.params().values(), b.params().values()):
        assert torch.equal(pa, pb)


def test_reweight_is_the_softmax_scaled_to_mean_one(binary):
    v = np.random.default_rng(2).normal(size=len(binary))
    e = reweight(binary, _scores(binary, v), temperature=0.5)
    expected = np.exp(v / 0.5) / np.exp(v / 0.5).sum() * len(v)
    np.testing.assert_allclose(e.weights, expected, rtol=1e-12)
    np.testing.assert_allclose(e.weights.mean(), 1.0, rtol=1e-14)
    np.testing.assert_allclose(e.log["weight"], e.weights)
    assert e.split is binary and len(e.log) == len(binary)
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(inf.InputError, match="temperature"):
            reweight(binary, _scores(binary, v), temperature=bad)
    with pytest.raises(inf.InputError, match=r"1 NaN value\(s\) of 60"):
        reweight(binary, _scores(binary, np.where(np.arange(len(v)) == 3, np.nan, v)))


def test_scores_must_belong_to_the_split(binary):
    v = np.zeros(len(binary))
    with pytest.raises(inf.InputError, match="ids do not match") as err:
        trim(binary, inf.Scores(v, "x", binary.ids[::-1]), 3)
    assert "\n" not in str(err.value)
    with pytest.raises(inf.InputError, match="hold 59 samples"):
        trim(binary, inf.Scores(v[:-1], "x", binary.ids[:-1]), 3)
    with pytest.raises(inf.InputError, match="larger than"):
        trim(binary, _scores(binary, v), 61)
    with pytest.raises(inf.InputError, match="nothing to train on"):
        trim(binary, _scores(binary, v), 60)


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_edit_log_saves_atomically(binary, tmp_path, suffix):
    v = np.random.default_rng(3).normal(size=len(binary))
    for e in (trim(binary, _scores(binary, v), 4), relabel(binary, _scores(binary, v), 4),
              reweight(binary, _scores(binary, v))):
        path = e.save(tmp_path / f"{e.action}{suffix}")
        back = pd.read_csv(path) if suffix == ".csv" else pd.read_parquet(path)
        assert list(back.columns) == LOG_COLUMNS and len(back) == len(e.log)
        np.testing.assert_array_equal(back["id"], e.log["id"])
        np.testing.assert_allclose(back["value"], e.log["value"])
        np.testing.assert_allclose(back["weight"], e.log["weight"].astype(float))
        if e.action == "relabel":
            np.testing.assert_array_equal(back["new_label"].astype(int), e.log["new_label"].astype(int))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"{a}{suffix}" for a in ("trim", "relabel", "reweight"))
    with pytest.raises(inf.InputError, match="unsupported file type"):
        e.save(tmp_path / "log.json")
    assert isinstance(e, Edit)
