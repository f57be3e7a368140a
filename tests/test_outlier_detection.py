"""Outlier gradient analysis [OGA], mislabel-detection metrics and the noisy-label experiment runner."""

import numpy as np
import pytest
import torch
from sklearn.ensemble import IsolationForest
from sklearn.metrics import roc_auc_score
from sklearn.svm import OneClassSVM

import influent as inf
from influent.evaluation import detection as detection_module
from influent.evaluation.class_detection import class_detection
from influent.evaluation.detection import detection
from influent.evaluation.noisy import flip_labels, noisy_label_experiment
from influent.grads import per_sample_grads
from influent.methods.outlier import GaussianProjection, class_forests, resolve_params


def _brute_grads(adapter, split):
    return per_sample_grads(adapter, *adapter.tensors(split), method="loop").numpy()


@pytest.fixture(scope="module")
def noisy_iris(iris):
    train, valid = iris
    y, flipped = flip_labels(train.y, 0.1, seed=0)
    return train.with_labels(y), valid, flipped


def test_l1_l2_detectors_equal_brute_force_norms(noisy_iris, small_mlp, digits_small):
    train, _, _ = noisy_iris
    model = inf.models.SklearnLogistic(C=1.0).fit(train)
    G = _brute_grads(model, train)  # linear model: every parameter is analysed
    for det, norm in (("l1", np.abs(G).sum(1)), ("l2", np.sqrt((G**2).sum(1)))):
        s = inf.score(model, train, method="outlier", detector=det)
        np.testing.assert_allclose(s.raw, norm, rtol=1e-9)
        np.testing.assert_allclose(s.values, -norm, rtol=1e-9)
    # neural net: the default subset is the last layer (factorised L2 path and dense L1 path agree with brute force)
    tr, _ = digits_small
    last = resolve_params(small_mlp, "auto")
    assert last.param_names() == ["2.weight", "2.bias"]
    Gl = _brute_grads(last, tr)
    np.testing.assert_allclose(inf.score(small_mlp, tr, method="outlier", detector="l2").raw,
                               np.sqrt((Gl**2).sum(1)), rtol=1e-9)
    np.testing.assert_allclose(inf.score(small_mlp, tr, method="outlier", detector="l1").raw, np.abs(Gl).sum(1), rtol=1e-9)
    Ga = _brute_grads(small_mlp, tr)
    np.testing.assert_allclose(inf.score(small_mlp, tr, method="outlier", detector="l1", params="all").raw,
                               np.abs(Ga).sum(1), rtol=1e-9)


def test_iforest_and_ocsvm_equal_sklearn_on_brute_force_gradients(noisy_iris):
    train, valid, flipped = noisy_iris
    model = inf.models.SklearnLogistic(C=1.0).fit(train)
    G, Gv = _brute_grads(model, train), _brute_grads(model, valid)
    s = inf.score(model, train, method="outlier", detector="iforest", seed=4, contamination=0.1)
    forest = IsolationForest(n_estimators=100, contamination=0.1, random_state=4).fit(G)
    np.testing.assert_allclose(s.raw, -forest.score_samples(G), rtol=1e-6)
    assert s.settings["n_flagged"] == int((forest.predict(G) == -1).sum()) == 10
    o = inf.score(model, train, target=valid, method="outlier", detector="ocsvm", nu=0.2)
    svm = OneClassSVM(nu=0.2, gamma="scale").fit(Gv)
    np.testing.assert_allclose(o.raw, -svm.decision_function(G), rtol=1e-6, atol=1e-9)
    # the flipped labels are the gradient outliers
    for sc in (s, o, inf.score(model, train, method="outlier", detector="l2")):
        assert roc_auc_score(flipped, sc.raw) > 0.9
    with pytest.raises(inf.InputError, match="needs a target"):
        inf.score(model, train, method="outlier", detector="ocsvm")
    with pytest.raises(inf.InputError, match="unknown detector"):
        inf.score(model, train, method="outlier", detector="lof")
    with pytest.raises(inf.InputError, match="does not take"):
        inf.score(model, train, method="outlier", detector="l2", nu=0.1)


def test_random_projection_is_seeded_and_blockwise(noisy_iris):
    train, _, _ = noisy_iris
    model = inf.models.SklearnLogistic(C=1.0).fit(train)
    G = _brute_grads(model, train)
    R = GaussianProjection(G.shape[1], 7, seed=2).matrix().numpy()
    gen = torch.Generator().manual_seed(2 * 1_000_003)
    np.testing.assert_array_equal(R, torch.randn(G.shape[1], 7, generator=gen, dtype=torch.float64).numpy())
    s = inf.score(model, train, method="outlier", detector="l1", project=7, seed=2)
    np.testing.assert_allclose(s.raw, np.abs(G @ R / np.sqrt(7)).sum(1), rtol=1e-9)
    # beyond the cache size the projection is regenerated block by block and is the same map
    big = GaussianProjection(10_000, 3, seed=1)
    x = torch.randn(4, 10_000, dtype=torch.float64)
    import influent.methods.outlier as outlier_mod
    old = outlier_mod._MAX_CACHED_PROJECTION
    try:
        outlier_mod._MAX_CACHED_PROJECTION = 0
        streamed = GaussianProjection(10_000, 3, seed=1)
        assert streamed._R is None
        torch.testing.assert_close(streamed(x), big(x), rtol=1e-10, atol=1e-10)
    finally:
        outlier_mod._MAX_CACHED_PROJECTION = old
    # norms are roughly preserved (Johnson-Lindenstrauss) with enough dimensions
    wide = GaussianProjection(G.shape[1], 2000, seed=0)
    ratio = np.linalg.norm(wide(torch.as_tensor(G)).numpy(), axis=1) / np.linalg.norm(G, axis=1)
    assert np.all(np.abs(ratio - 1) < 0.15)


def test_per_class_forests_detect_the_class(iris):
    train, valid = iris
    model = inf.models.SklearnLogistic(C=1.0).fit(train)
    det = class_forests(model, train, valid, seed=0)
    assert det.scores.shape == (len(valid), 3)
    Z, Zv = _brute_grads(model, train), _brute_grads(model, valid)
    Z, Zv = Z / np.linalg.norm(Z, axis=1, keepdims=True), Zv / np.linalg.norm(Zv, axis=1, keepdims=True)
    f1 = IsolationForest(random_state=0).fit(Z[train.y == 1])
    np.testing.assert_allclose(det.scores[:, 1], f1.score_samples(Zv), rtol=1e-6)
    assert det.accuracy(valid.y) >= 0.8  # measured 0.88; chance is 0.33
    raw = class_forests(model, train, valid, normalize=False, seed=0)
    assert raw.accuracy(valid.y) < det.accuracy(valid.y)
    A = inf.attribute(model, train, valid, method="outlier")
    assert A.shape == (len(train), len(valid))
    for c in range(3):
        np.testing.assert_allclose(A[train.y == c], np.broadcast_to(det.scores[:, c], ((train.y == c).sum(), len(valid))))
    with pytest.raises(inf.InputError, match="per-class forests"):
        inf.attribute(model, train, valid, method="outlier", detector="l2")


def _class_detection_loop(R, ytr, yte, k=None):
    """[OGA] / DataInf's protocol written out per test sample: sklearn AUC of the column against "same
    class", and the fraction of the class found among the k highest (k = class size by default)."""
    aucs, recalls = [], []
    for j in range(R.shape[1]):
        same = ytr == yte[j]
        aucs.append(roc_auc_score(same, R[:, j]))
        kk = same.sum() if k is None else k
        top = np.argsort(-R[:, j], kind="stable")[:kk]
        recalls.append(same[top].sum() / same.sum())
    return np.array(aucs), np.array(recalls)


def test_class_detection_metrics_against_a_loop(iris):
    rng = np.random.default_rng(0)
    ytr, yte = rng.integers(0, 4, 80), rng.integers(0, 4, 25)
    R = rng.normal(size=(80, 25)) + 1.5 * (ytr[:, None] == yte[None, :])
    R[:10] = np.round(R[:10])  # some ties
    rep = class_detection(R, ytr, yte)
    auc, rec = _class_detection_loop(R, ytr, yte)
    np.testing.assert_allclose(rep.per_test_auc, auc, rtol=1e-12)
    np.testing.assert_allclose(rep.per_test_recall, rec, rtol=1e-12)
    assert rep.auc == pytest.approx(auc.mean()) and rep.recall_std == pytest.approx(rec.std())
    assert 0.7 < rep.auc < 1.0  # informative but imperfect scores
    rep5 = class_detection(R, ytr, yte, k=5)
    np.testing.assert_allclose(rep5.per_test_recall, _class_detection_loop(R, ytr, yte, k=5)[1], rtol=1e-12)
    # per-class forests on iris: their relatedness matrix through the same metrics
    train, valid = iris
    model = inf.models.SklearnLogistic(C=1.0).fit(train)
    det = class_forests(model, train, valid, seed=0)
    R2 = det.relatedness(train.y)
    np.testing.assert_allclose(R2, inf.attribute(model, train, valid, method="outlier"))
    rep2 = class_detection(R2, train.y, valid.y)
    auc2, rec2 = _class_detection_loop(R2, train.y, valid.y)
    np.testing.assert_allclose(rep2.per_test_auc, auc2, rtol=1e-12)
    np.testing.assert_allclose(rep2.per_test_recall, rec2, rtol=1e-12)
    # a test sample whose class forest wins gets AUC 1 and recall 1 (its class ranks first, as a block)
    won = det.predicted == valid.y
    assert won.any() and np.all(rep2.per_test_auc[won] == 1) and np.all(rep2.per_test_recall[won] == 1)
    with pytest.raises(inf.InputError, match="shape"):
        class_detection(R[:, :3], ytr, yte)
    with pytest.raises(inf.InputError, match="test class"):
        class_detection(R, ytr, np.full(25, 9))


def test_detection_metrics_against_brute_force():
    rng = np.random.default_rng(0)
    noisy = rng.random(200) < 0.15
    values = rng.normal(size=200) - 1.5 * noisy
    d = detection(values, noisy)
    assert d.k == noisy.sum() and d.n_noisy == noisy.sum()
    assert d.auc == pytest.approx(roc_auc_score(noisy, -values))
    k_lowest = np.argsort(values)[:d.k]
    assert d.precision_at_k == pytest.approx(noisy[k_lowest].mean())
    assert d.recall_at_k == pytest.approx(noisy[k_lowest].sum() / noisy.sum())
    d10 = detection_module(values, noisy.astype(int), k=10)  # the module itself is callable
    assert d10.precision_at_k == pytest.approx(noisy[np.argsort(values)[:10]].mean())
    # a perfect ranking, NaN as least suspicious, and a Scores object
    perfect = np.where(noisy, -1.0, np.nan)
    s = inf.Scores(perfect, "x", np.arange(200))
    assert detection(s, noisy).auc == 1.0 and detection(s, noisy).precision_at_k == 1.0
    with pytest.raises(inf.InputError, match="both noisy and clean"):
        detection(values, np.zeros(200, dtype=bool))
    with pytest.raises(inf.InputError, match="is_noisy"):
        detection(values, noisy[:10])


def test_flip_labels_uniform_and_class_conditional():
    y = np.repeat(np.arange(5), 40)
    yu, mu = flip_labels(y, 0.2, "uniform", seed=1)
    assert mu.sum() == 40 and np.all(yu[mu] != y[mu]) and np.all(yu[~mu] == y[~mu])
    yc, mc = flip_labels(y, 0.2, "class-conditional", seed=1)
    assert mc.sum() == 40 and np.all(yc[mc] != y[mc])
    # class-conditional: every flipped sample of a class goes to the same class
    for c in range(5):
        assert len(np.unique(yc[mc & (y == c)])) <= 1
    assert len(np.unique(yu[mu])) > 1
    ys, ms = flip_labels(np.array(["a", "b"] * 10), 0.5, seed=0)
    assert set(ys) == {"a", "b"} and ms.sum() == 10
    with pytest.raises(inf.InputError, match="noise mode"):
        flip_labels(y, 0.1, "pairs")


def test_noisy_label_experiment_runner(cancer):
    train, valid = cancer
    test = valid
    res = noisy_label_experiment(inf.models.SklearnLogistic(C=1.0), train, valid, test,
                                 [("l2", "outlier", {"detector": "l2"}), "self-if"],
                                 noise=0.1, seed=0, random_repeats=2)
    t = res.table.set_index("label")
    assert res.budget == 30 == res.is_noisy.sum()
    assert list(t.index) == ["no trim", "l2", "self-if", "random", "oracle (drop flipped)"]
    # the runner's numbers are those of detection() and of a refit without the trimmed samples
    y_noisy = train.y.copy()
    y_noisy[res.is_noisy] = 1 - y_noisy[res.is_noisy]
    noisy = train.with_labels(y_noisy)
    fitted = inf.models.SklearnLogistic(C=1.0).fit(noisy)
    s = inf.score(fitted, noisy, method="outlier", detector="l2")
    assert t.loc["l2", "auc"] == pytest.approx(detection(s, res.is_noisy).auc)
    assert t.loc["l2", "test_acc"] == pytest.approx(fitted.refit(noisy.without(s.most_harmful(30))).accuracy(test))
    assert t.loc["l2", "auc"] > 0.9 and t.loc["self-if", "auc"] > 0.9
    assert "AUC" in res.format()
