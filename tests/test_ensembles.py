"""Model ensembles in `score`/`attribute` (api/ensemble.py), seeded refits (`refit_many(reseed=True)`),
`Scores.stderr`, the margin target, and the report's count of stable rankings."""

import numpy as np
import pytest
import torch
from torch import nn

import influent as inf
from helpers import one_thread  # noqa: F401  (one torch thread for this module)
from influent.api.ensemble import Running, fit_members
from influent.evaluation.attribution import lds_ground_truth, lds_score
from influent.models.refit import reseeded
from influent.targets import Margin, margins


def _mlp(epochs=40, **kw):
    return inf.models.TabularMLP(hidden=(6,), dtype=torch.float64, weight_decay=1e-3,
                                 train=inf.models.TrainConfig(epochs=epochs, lr=1e-2), **kw)


@pytest.fixture(scope="module")
def data(digits_small):
    train, valid = digits_small
    return train.subset(np.arange(80)), valid.subset(np.arange(30))


def _grads(adapter, split, fn):
    """(n, p) per-sample gradients of fn(adapter, params, X_i, t_i) by a plain autograd loop."""
    X, t = adapter.tensors(split)
    names = adapter.param_names()
    rows = []
    for i in range(len(split)):
        params = {n: p.detach().clone().requires_grad_(True) for n, p in adapter.params().items()}
        g = torch.autograd.grad(fn(adapter, params, X[i:i + 1], t[i:i + 1]).sum(), [params[n] for n in names])
        rows.append(torch.cat([x.reshape(-1) for x in g]))
    return torch.stack(rows).numpy()


def _loss(a, params, X, t):
    return a.per_sample_loss(params, X, t)


def test_identical_members_equal_the_single_model(data):
    train, valid = data
    m = _mlp().fit(train)
    one = inf.score(m, train, valid, "if")
    two = inf.score([m, m], train, valid, "if")
    np.testing.assert_allclose(two.values, one.values, rtol=1e-12, atol=0)
    np.testing.assert_array_equal(two.stderr, 0.0)
    assert one.stderr is None and two.settings["ensemble"]["members"] == 2
    np.testing.assert_allclose(inf.attribute([m, m, m], train, valid, "ip"), inf.attribute(m, train, valid, "ip"),
                               rtol=1e-12, atol=0)


def test_ensemble_k_equals_refits_by_hand_and_stderr_is_the_spread(data, monkeypatch):
    import influent.api.ensemble as ens

    monkeypatch.setattr(ens, "DEFAULT_CHECKPOINTS", 1)  # the trained models only (checkpoints: tests below)
    train, valid = data
    model = _mlp(epochs=15).fit(train)
    s = inf.score(model, train, valid, "ip", ensemble=3, seed=5, ensemble_jobs=1)  # refit_many: any n_jobs, same
    by_hand = [reseeded(model, 5 + k).fit(train) for k in range(3)]
    vals = np.stack([inf.score(m, train, valid, "ip").values for m in by_hand])
    np.testing.assert_allclose(s.values, vals.mean(0), rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(s.stderr, vals.std(0, ddof=1) / np.sqrt(3), rtol=1e-8, atol=1e-15)
    assert s.stderr.max() > 0  # the members differ: each has its own seed
    assert s.settings["ensemble"]["seeds"] == [5, 6, 7]
    A = inf.attribute(model, train, valid, "ip", ensemble=3, seed=5, ensemble_jobs=1)
    np.testing.assert_allclose(A, np.mean([inf.attribute(m, train, valid, "ip") for m in by_hand], 0), rtol=1e-10)


def test_reseeded_user_module_draws_fresh_initial_weights(data):
    """A user's own module: member s starts from the module's layers re-initialised under seed s, exactly as
    a module built by hand after torch.manual_seed(s), and trains with data-order seed s."""
    train, _ = data

    def net():
        return nn.Sequential(nn.Linear(64, 5), nn.ReLU(), nn.Linear(5, 4))

    cfg = inf.models.TrainConfig(epochs=5, lr=1e-2, batch_size=16)
    user = inf.models.TorchAdapter(net(), train=cfg, fitted=False)
    (member,) = fit_members(user, train, 1, seed=7, n_jobs=1)
    torch.manual_seed(7)
    by_hand = inf.models.TorchAdapter(net(), train=inf.models.TrainConfig(epochs=5, lr=1e-2, batch_size=16, seed=7),
                                      fitted=False).fit(train)
    for (n, a), b in zip(member.params().items(), by_hand.params().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=n)
    plain = user.refit(train)  # without reseeding every refit starts from the same weights
    assert not torch.equal(plain.params()["0.weight"], member.params()["0.weight"])
    assert user.train_config.seed == 0 and not user.fitted  # the user's adapter is unchanged


def test_checkpoint_ensemble_averages_gradient_products_at_each_checkpoint(data):
    train, valid = data
    rec = inf.models.TrainingRecorder(every=10)
    model = _mlp(epochs=30).fit(train, recorder=rec)
    A = inf.attribute(model, train, valid, "ip", ensemble="checkpoints")
    want = []
    for ck in rec.checkpoints:
        at = model.with_params(ck.params)
        want.append(_grads(at, train, _loss) @ _grads(at, valid, _loss).T)
    np.testing.assert_allclose(A, np.mean(want, 0), rtol=1e-9, atol=1e-12)
    with pytest.raises(inf.InputError, match="needs training checkpoints"):
        inf.attribute(_mlp(epochs=2).fit(train), train, valid, "ip", ensemble="checkpoints")
    with pytest.raises(inf.InputError, match="either a list of models or ensemble"):
        inf.score([model], train, valid, "ip", ensemble=2)


def test_running_mean_and_stderr_match_numpy():
    rng = np.random.default_rng(0)
    xs = rng.normal(size=(7, 5, 3))
    r = Running()
    for x in xs:
        r.add(x)
    np.testing.assert_allclose(r.mean, xs.mean(0), rtol=1e-12)
    np.testing.assert_allclose(r.stderr(), xs.std(0, ddof=1) / np.sqrt(7), rtol=1e-12)


def test_running_groups_each_models_checkpoints_into_one_member():
    """group=3: 4 models x 3 checkpoints; the mean is over all 12, the standard error over the 4 model means."""
    xs = np.random.default_rng(1).normal(size=(12, 5))
    r = Running(group=3)
    for x in xs:
        r.add(x)
    per_model = xs.reshape(4, 3, 5).mean(1)
    assert r.n == 4
    np.testing.assert_allclose(r.mean, xs.mean(0), rtol=1e-12)
    np.testing.assert_allclose(r.stderr(), per_model.std(0, ddof=1) / 2, rtol=1e-12)


def test_stderr_round_trips_and_old_files_load(tmp_path):
    s = inf.Scores(np.array([0.3, -1.0, 2.0]), "if", np.array([4, 5, 6]), stderr=np.array([0.1, 0.2, 0.0]))
    for name in ("s.parquet", "s.csv"):
        back = inf.Scores.load(s.save(tmp_path / name))
        np.testing.assert_array_equal(back.stderr, s.stderr)
    old = inf.Scores(np.array([1.0, 2.0]), "if", np.array([1, 2]))
    assert inf.Scores.load(old.save(tmp_path / "old.parquet")).stderr is None
    with pytest.raises(inf.InputError, match="stderr"):
        inf.Scores(np.zeros(3), "if", np.arange(3), stderr=np.zeros(2))


def _neg_margin(a, params, X, t):
    """-log(p_y / (1 - p_y)) from the class probabilities, formed by hand."""
    out = a.outputs(params, X)
    if a.loss == "bce":
        p1 = torch.sigmoid(out[:, 0])
        p = torch.where(t.reshape(-1) > 0.5, p1, 1 - p1)
    else:
        p = torch.softmax(out, 1).gather(1, t.reshape(-1, 1))[:, 0]
    return -torch.log(p / (1 - p))


@pytest.mark.parametrize("data_name", ["cancer", "iris"])  # bce (one logit) and softmax cross-entropy
def test_margin_target_is_the_gradient_of_minus_the_margin(data_name, request):
    """attribute(target='margin') with 'ip' = g_i . grad(-margin_j); score with the Margin target =
    g_i . grad(mean_j -margin_j); the margin formed by hand from p."""
    train, valid = request.getfixturevalue(data_name)
    train, valid = train.subset(np.arange(60)), valid.subset(np.arange(20))
    m = inf.models.SklearnLogistic(C=1.0).fit(train)
    G, Gm = _grads(m, train, _loss), _grads(m, valid, _neg_margin)
    A = inf.attribute(m, train, valid, "ip", target="margin")
    np.testing.assert_allclose(A, G @ Gm.T, rtol=1e-7, atol=1e-12)
    s = inf.score(m, train, Margin(valid), "ip")
    np.testing.assert_allclose(s.values, G @ Gm.mean(0), rtol=1e-7, atol=1e-12)
    X, t = m.tensors(valid)
    torch.testing.assert_close(-margins(m, m.params(), X, t), _neg_margin(m, m.params(), X, t))
    with pytest.raises(inf.InputError, match="target"):
        inf.attribute(m, train, valid, "ip", target="accuracy")


def test_lds_of_exact_influence_on_a_convex_model_is_high(cancer):
    """The sign convention end to end: attributions (rise of the test loss when removed) summed over a
    half predict minus its retrained test loss, so the exact influence of a convex model scores high."""
    train, valid = cancer
    train, test = train.subset(np.arange(120)), valid.subset(np.arange(40))
    m = inf.models.SklearnLogistic(C=0.3).fit(train)
    truth = lds_ground_truth(m, train, test, n_subsets=16, n_jobs=1, seed=2)
    A = inf.attribute(m, train, test, "if")
    assert lds_score(A, truth).score > 0.6
    assert lds_score(-A, truth).score < -0.6


def test_stability_counts_extremes_whose_interval_excludes_the_median():
    from influent.runs.summary import stability

    v = np.array([-5.0, -4.0, -3.0, 0.0, 0.1, 0.2, 3.0, 4.0, 9.0])
    se = np.array([1.0, 3.0, 0.5, 0.0, 0.0, 0.0, 2.0, 0.1, 0.1])
    s = inf.Scores(v, "if", np.arange(9), stderr=se, settings={"ensemble": {"members": 5}})
    st = stability(s, 3)
    med = 0.1  # lowest three: -5 + 1.96 < 0.1 yes, -4 + 5.88 no, -3 + 0.98 yes; highest: 9, 4 yes, 3 - 3.92 no
    assert st["median"] == med and (st["harmful"], st["helpful"], st["members"]) == (2, 2, 5)
    assert stability(inf.Scores(v, "if", np.arange(9)), 3) is None


def test_cli_ensemble_saves_stderr_and_the_report_counts_stable_rankings(data_dir, tmp_path, capsys):
    import json

    from helpers import run_cli

    out = tmp_path / "run"
    code, _, err = run_cli(["score", "--train", data_dir / "train.csv", "--valid", data_dir / "valid.csv", "--label",
                            "y", "--model", "mlp", "--hidden", "4", "--epochs", "20", "--ensemble", "2",
                            "--no-curve", "--top", "5", "--out", out], capsys)
    assert code == 0, err
    s = inf.Scores.load(out / "scores.parquet")
    ens = s.settings["ensemble"]  # two models x DEFAULT_CHECKPOINTS (3) checkpoints spread over each run
    assert s.stderr is not None and s.stderr.max() > 0 and (ens["models"], ens["members"]) == (2, 6)
    stable = json.loads((out / "run.json").read_text())["results"]["summary"]["stable"]
    from influent.runs.summary import stability

    assert stable == json.loads(json.dumps(stability(s, 5)))
    assert "Ensemble." in (out / "report.html").read_text()
    code, _, err = run_cli(["score", "--train", data_dir / "train.csv", "--valid", data_dir / "valid.csv",
                            "--label", "y", "--ensemble", "-1", "--out", tmp_path / "bad"], capsys)
    assert code == 2 and "--ensemble" in err


def test_members_record_their_own_checkpoints(data):
    train, _ = data
    model = _mlp(epochs=6)
    members = fit_members(model, train, 2, seed=3, n_jobs=1, record_every=5)
    for s, m in enumerate(members):
        by_hand = reseeded(model, 3 + s)
        rec = inf.models.TrainingRecorder(every=5)
        by_hand.fit(train, recorder=rec)
        assert [c.step for c in m.recorder_.checkpoints] == [c.step for c in rec.checkpoints]
        for a, b in zip(m.recorder_.checkpoints, rec.checkpoints):
            for n in a.params:
                torch.testing.assert_close(a.params[n], b.params[n], rtol=0, atol=0)


def test_spread_picks_checkpoints_evenly_over_the_whole_run():
    from types import SimpleNamespace as C

    from influent.api.ensemble import spread

    ck = [C(step=s) for s in range(1, 21)]
    assert [c.step for c in spread(ck, 4)] == [5, 10, 15, 20]
    assert [c.step for c in spread(ck[::-1], 1)] == [20]  # sorted by step; the last is the trained model
    odd = [C(step=s) for s in (3, 6, 9, 12, 14)]  # every 3 steps, plus the run's last step
    assert [c.step for c in spread(odd, 2)] == [6, 14]
    assert [c.step for c in spread(odd, 9)] == [3, 6, 9, 12, 14]  # fewer recorded than asked: all of them


def test_ensemble_of_models_x_checkpoints_equals_refits_and_checkpoints_by_hand(data):
    """Ensemble(models=2, checkpoints=4): each refit (seed 3 + s, as ensemble=k) recorded during its own run;
    the mean over the 2 x 4 gradient products at steps 5, 10, 15, 20 of the 20 full-batch steps."""
    from influent.api.ensemble import Ensemble

    train, valid = data
    model = _mlp(epochs=20).fit(train)
    A = inf.attribute(model, train, valid, "ip", ensemble=Ensemble(models=2, checkpoints=4), seed=3, ensemble_jobs=1)
    want = []
    for s in range(2):
        rec = inf.models.TrainingRecorder(every=1)
        run = reseeded(model, 3 + s).fit(train, recorder=rec)
        for ck in rec.checkpoints:
            if ck.step in (5, 10, 15, 20):
                at = run.with_params(ck.params)
                want.append(_grads(at, train, _loss) @ _grads(at, valid, _loss).T)
    assert len(want) == 8
    np.testing.assert_allclose(A, np.mean(want, 0), rtol=1e-9, atol=1e-12)
    s = inf.score(model, train, valid, "ip", ensemble=Ensemble(models=2, checkpoints=4), seed=3, ensemble_jobs=1)
    assert s.settings["ensemble"]["members"] == 8 and s.settings["ensemble"]["seeds"] == [3, 4]
    assert model.recorder_ is None and model.train_config.seed == 0  # the user's model is unchanged


def test_ensemble_with_one_checkpoint_per_model_is_the_plain_ensemble(data):
    """checkpoints=1 is the trained model of each refit; with identical members (one model) it is the single
    refit's attribution."""
    from influent.api.ensemble import Ensemble

    train, valid = data
    model = _mlp(epochs=10).fit(train)
    A = inf.attribute(model, train, valid, "if", ensemble=Ensemble(models=1, checkpoints=1), seed=4, ensemble_jobs=1)
    by_hand = inf.attribute(reseeded(model, 4).fit(train), train, valid, "if")
    np.testing.assert_allclose(A, by_hand, rtol=1e-10, atol=1e-14)
    with pytest.raises(inf.InputError, match="Ensemble.checkpoints"):
        Ensemble(models=2, checkpoints=0)


def test_checkpoint_ensemble_needs_a_model_trained_by_steps(data):
    from influent.api.ensemble import Ensemble

    train, valid = data
    logistic = inf.models.SklearnLogistic(C=1.0).fit(train)
    with pytest.raises(inf.InputError, match="trained by steps"):
        inf.attribute(logistic, train, valid, "ip", ensemble=Ensemble(models=2, checkpoints=3), ensemble_jobs=1)


def test_default_checkpoints_per_model_switches_ensemble_k(data, monkeypatch):
    """With DEFAULT_CHECKPOINTS = 3 (the default), ensemble=k is Ensemble(models=k, checkpoints=3) for a torch
    model and stays k plain refits for a model not trained by steps; with 1 it is k plain refits."""
    import influent.api.ensemble as ens

    train, valid = data
    model = _mlp(epochs=12).fit(train)
    assert ens.DEFAULT_CHECKPOINTS == 3
    monkeypatch.setattr(ens, "DEFAULT_CHECKPOINTS", 1)
    plain = inf.attribute(model, train, valid, "ip", ensemble=2, seed=1, ensemble_jobs=1)
    monkeypatch.setattr(ens, "DEFAULT_CHECKPOINTS", 3)
    A = inf.attribute(model, train, valid, "ip", ensemble=2, seed=1, ensemble_jobs=1)
    explicit = inf.attribute(model, train, valid, "ip", ensemble=ens.Ensemble(models=2, checkpoints=3), seed=1,
                             ensemble_jobs=1)
    np.testing.assert_allclose(A, explicit, rtol=1e-12, atol=0)
    assert np.abs(A - plain).max() > 1e-6  # the checkpoints moved it
    logistic = inf.models.SklearnLogistic(C=1.0)
    members, info = ens.members_of(logistic, train, 2, seed=0, n_jobs=1)
    assert len(members) == 2 and info["kind"] == "refits"


def test_given_models_expand_into_their_own_recorded_checkpoints(data):
    """attribute([m0, m1], ..., ensemble=Ensemble(checkpoints=2)): each user model's own recorder, spread."""
    from influent.api.ensemble import Ensemble

    train, valid = data
    runs = []
    for s in range(2):
        rec = inf.models.TrainingRecorder(every=1)
        runs.append((reseeded(_mlp(epochs=8), s).fit(train, recorder=rec), rec))
    A = inf.attribute([m for m, _ in runs], train, valid, "ip", ensemble=Ensemble(checkpoints=2))
    want = [inf.attribute(m.with_params(ck.params), train, valid, "ip")
            for m, rec in runs for ck in rec.checkpoints if ck.step in (4, 8)]
    assert len(want) == 4
    np.testing.assert_allclose(A, np.mean(want, 0), rtol=1e-12, atol=0)
    with pytest.raises(inf.InputError, match="no recorded checkpoints"):
        inf.attribute([_mlp(epochs=2).fit(train)], train, valid, "ip", ensemble=Ensemble(checkpoints=2))
