import json

import numpy as np
import pytest

import influent as inf
from influent.actions.active import STRATEGIES, ActiveLearner


@pytest.fixture(scope="module")
def al_data():
    import influent.datasets as D

    d = D.load_digits()
    tr = d["train"]
    return tr.subset(range(40)), tr.subset(range(40, 160)), d["test"]


@pytest.mark.parametrize("strategy", ["random", "entropy", "margin", "iv"])
def test_batch_equal_to_pool_labels_everything(strategy, al_data):
    labeled, pool, test = al_data
    al = ActiveLearner(inf.models.SklearnLogistic(C=1.0, newton_steps=0), labeled, pool.subset(range(30)),
                       strategy=strategy, batch_size=30, rounds=1, test=test)
    hist = al.run()
    assert sorted(hist[0].picked) == sorted(pool.ids[:30].tolist())
    final, rest = al.current_sets()
    assert rest is None and len(final) == len(labeled) + 30
    # the oracle's labels are the pool's true labels
    pos = {v: i for i, v in enumerate(final.ids.tolist())}
    np.testing.assert_array_equal(final.y[[pos[i] for i in pool.ids[:30].tolist()]], pool.y[:30])


def test_resumed_run_continues_identically(tmp_path, al_data):
    labeled, pool, test = al_data
    make = lambda path, rounds: ActiveLearner(inf.models.SklearnLogistic(C=1.0, newton_steps=0), labeled, pool,
                                              strategy="random", batch_size=10, rounds=rounds, test=test,
                                              state_path=path, seed=7)
    full = make(tmp_path / "full.json", 4).run()
    make(tmp_path / "part.json", 2).run()  # stops after two rounds (+ its final fit)
    state = json.loads((tmp_path / "part.json").read_text())
    state["history"] = state["history"][:2]  # drop the final-fit record, as if interrupted after round 2
    (tmp_path / "part.json").write_text(json.dumps(state))
    resumed = make(tmp_path / "part.json", 4).run()
    assert [r.picked for r in resumed] == [r.picked for r in full]
    assert [r.test_accuracy for r in resumed] == [r.test_accuracy for r in full]


def test_uncertainty_strategies_pick_the_expected_samples(al_data):
    labeled, pool, _ = al_data
    model = inf.models.SklearnLogistic(C=1.0, newton_steps=0).fit(labeled)
    p = model.predict_proba(pool.X)
    ent = STRATEGIES["entropy"](model, labeled, pool, np.random.default_rng(0))
    np.testing.assert_allclose(ent, -(p * np.log(p)).sum(1), rtol=1e-9)
    srt = np.sort(p, 1)
    np.testing.assert_allclose(STRATEGIES["margin"](model, labeled, pool, None), srt[:, -2] - srt[:, -1])


def test_bad_settings_are_clear_errors(al_data):
    labeled, pool, _ = al_data
    with pytest.raises(inf.InputError, match="unknown strategy"):
        ActiveLearner(inf.models.SklearnLogistic(), labeled, pool, strategy="oracle-magic")
    with pytest.raises(inf.InputError, match="share ids"):
        ActiveLearner(inf.models.SklearnLogistic(), labeled, labeled)


def test_percentile_mean_equals_numpy_brute_force():
    from influent.actions.active import percentile_mean

    M = np.random.default_rng(0).normal(size=(37, 5))
    expected = []
    for col in M.T:
        lo, hi = np.percentile(col, [10, 90])
        expected.append(col[(col >= lo) & (col <= hi)].mean())
    np.testing.assert_allclose(percentile_mean(M), expected, rtol=1e-12)


def test_fi_active_strategy_matches_pairwise_fi(al_data):
    from influent.actions.active import percentile_mean
    from influent.methods.fi import fi_pairwise

    labeled, pool, test = al_data
    lab = labeled.subset(range(30))
    small_pool = pool.subset(range(12))
    model = inf.models.SklearnLogistic(C=1.0).fit(lab)
    prio = STRATEGIES["fi"](model, lab, small_pool, np.random.default_rng(0))
    pseudo = inf.Split(small_pool.X, model.predict(small_pool.X), ids=small_pool.ids)
    np.testing.assert_allclose(prio, percentile_mean(fi_pairwise(model, lab, pseudo)), rtol=1e-9)
    al = ActiveLearner(inf.models.SklearnLogistic(C=1.0), lab, small_pool, strategy="fi", batch_size=12, rounds=1)
    assert sorted(al.run()[0].picked) == sorted(small_pool.ids.tolist())
