"""Random projections of per-sample gradients (grads/projection.py) and the methods that take them."""

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

import influent as inf
from influent.data.validate import InputError
from influent.grads import GradientSource
from influent.grads.projection import Projection, make_projection


@pytest.mark.parametrize("kind", ["gaussian", "rademacher", "sparse"])
def test_inner_products_are_unbiased_and_jl(kind):
    """Over 200 independent seeds the mean of <Pg, Ph> is within 4 standard errors of <g, h>, and one
    sketch at k=2048 keeps every pairwise distance of 20 points within 15% (JL)."""
    gen = torch.Generator().manual_seed(1)
    g, h = torch.randn(2, 300, generator=gen, dtype=torch.float64)
    h = 0.6 * g + 0.8 * h  # correlated, so the inner product is far from 0
    vals = []
    for seed in range(200):
        P = Projection(300, 64, kind, seed)
        Pg, Ph = P(torch.stack([g, h]))
        vals.append(float(Pg @ Ph))
    vals = np.array(vals)
    se = vals.std(ddof=1) / np.sqrt(len(vals))
    assert abs(vals.mean() - float(g @ h)) < 4 * se
    assert vals.std() < 0.5 * abs(float(g @ h))  # a real sketch, not noise
    X = torch.randn(20, 5000, generator=gen, dtype=torch.float64)
    Z = Projection(5000, 2048, kind, 3)(X)
    d0 = torch.cdist(X, X)[np.triu_indices(20, 1)]
    d1 = torch.cdist(Z, Z)[np.triu_indices(20, 1)]
    ratio = d1 / d0
    assert float(ratio.min()) > 0.85 and float(ratio.max()) < 1.15


@pytest.mark.parametrize("kind", ["gaussian", "rademacher", "sparse"])
def test_blockwise_regeneration_equals_cached(kind, monkeypatch):
    import influent.grads.projection as proj

    X = torch.randn(7, 9000, dtype=torch.float64)
    cached = Projection(9000, 40, kind, 5)(X)
    monkeypatch.setattr(proj, "_MAX_CACHED", 0)
    streamed = Projection(9000, 40, kind, 5)
    assert kind == "sparse" or streamed._R is None
    assert torch.allclose(streamed(X), cached, atol=1e-12)
    # P^T assembled by columns matches the action on vectors
    PT = torch.cat([streamed.transpose_block(s, min(40, s + 16)) for s in range(0, 40, 16)], dim=1)
    assert torch.allclose(X @ PT, cached, atol=1e-12)


def test_same_seed_same_sketch_other_seed_other_sketch():
    X = torch.randn(3, 100, dtype=torch.float64)
    a, b, c = (Projection(100, 16, "sparse", s)(X) for s in (0, 0, 1))
    assert torch.equal(a, b) and not torch.allclose(a, c)
    nnz = (Projection(100, 16, "sparse", 0, nnz=4).transpose_block(0, 16) != 0).sum(1)
    assert torch.all(nnz == 4)  # one non-zero per block of rows, four blocks


@pytest.mark.parametrize("kind", ["gaussian", "sparse"])
def test_chunked_equals_unchunked_and_factorised_equals_rows(small_mlp, digits_small, kind):
    train, valid = digits_small
    spec = {"kind": kind, "dim": 64, "seed": 2}
    one = GradientSource(small_mlp, train, chunk_size=len(train), projection=spec).matrix()
    many = GradientSource(small_mlp, train, chunk_size=17, projection=spec).matrix()
    assert one.shape == (len(train), 64)
    assert torch.allclose(one, many, atol=1e-12)
    loop = GradientSource(small_mlp, train, chunk_size=33, method="loop", projection=spec).matrix()
    assert torch.allclose(one, loop, atol=1e-10)  # factorised (dense kinds) vs per-sample rows
    full = GradientSource(small_mlp, train, chunk_size=40).matrix()
    P = make_projection(spec, full.shape[1])
    assert torch.allclose(one, P(full), atol=1e-10)


def test_projected_ip_and_tracin_are_the_projected_inner_products(small_mlp, digits_small):
    train, valid = digits_small
    spec = {"kind": "sparse", "dim": 128, "seed": 0}
    s = inf.score(small_mlp, train, valid, method="ip", projection=spec, chunk_size=50)
    G = GradientSource(small_mlp, train, 50).matrix()
    P = make_projection(spec, G.shape[1])
    v = inf.targets.Utility(valid)
    v.prepare(small_mlp)
    expect = (P(G) @ P.vectors(v.grad(small_mlp))).numpy()
    assert np.allclose(s.values, expect, atol=1e-10)
    assert s.settings["projection"] == spec
    exact = inf.score(small_mlp, train, valid, method="ip").values
    assert spearmanr(s.values, exact)[0] > 0.8
    A = inf.attribute(small_mlp, train, valid, method="ip", projection=spec)
    assert np.allclose(A, (P(G) @ P(GradientSource(small_mlp, valid, 50).matrix()).T).numpy(), atol=1e-10)


def test_projected_if_with_square_projection_is_the_exact_if(iris):
    """With k = p, an invertible Gaussian P and no damping, P^T (P H P^T)^-1 P = H^-1."""
    train, valid = iris
    model = inf.models.SklearnLogistic(C=1.0).fit(train)
    p = model.n_params()
    exact = inf.score(model, train, valid, method="if", solver="exact")
    proj = inf.score(model, train, valid, method="if", projection={"kind": "gaussian", "dim": p, "seed": 0})
    assert np.allclose(proj.values, exact.values, rtol=1e-6, atol=1e-9 * np.abs(exact.values).max())
    A = inf.attribute(model, train, valid, method="if", projection={"kind": "gaussian", "dim": p})
    B = inf.attribute(model, train, valid, method="if", solver="exact")
    assert np.allclose(A, B, atol=1e-7 * np.abs(B).max())
    low = inf.score(model, train, valid, method="if", projection={"kind": "sparse", "dim": p // 2}).values
    assert not np.allclose(low, exact.values, rtol=1e-3)  # a real projection changes the answer


def test_projected_if_builds_p_h_pt_from_hvps_on_an_mlp(small_mlp, digits_small):
    """The HVP route (no closed-form Hessian) equals P H P^T from the explicit Hessian."""
    from influent.curvature import CurvatureContext
    from influent.methods.projected import projected_hessian
    from influent.methods.influence import IFOptions
    from influent.methods.registry import Job

    train, valid = digits_small
    spec = {"kind": "rademacher", "dim": 24, "seed": 1}
    job = Job(small_mlp, train, None, IFOptions(projection=spec), 80)
    src = job.source()
    Hk = projected_hessian(job, src)
    H = CurvatureContext(small_mlp, train, 0.0, 80).hessian()
    P = src.projection
    assert torch.allclose(Hk, P.vectors(P.vectors(H).T), atol=1e-8)
    s = inf.score(small_mlp, train, valid, method="if", projection=spec, damping=0.05)
    v = inf.targets.Utility(valid)
    v.prepare(small_mlp)
    Hd = P.vectors(P.vectors(H).T) + 0.05 * torch.eye(24, dtype=H.dtype)
    G = GradientSource(small_mlp, train, 80).matrix()
    expect = P(G) @ torch.linalg.solve(Hd, P.vectors(v.grad(small_mlp))) / len(train)
    assert np.allclose(s.values, expect.numpy(), atol=1e-10 * float(expect.abs().max()) + 1e-14)
    assert s.settings["damping"] == 0.05


def test_outlier_detectors_take_a_projection(small_mlp, digits_small):
    train, _ = digits_small
    spec = {"kind": "gaussian", "dim": 32, "seed": 0}
    l2 = inf.score(small_mlp, train, method="outlier", detector="l2", params="all", projection=spec)
    G = GradientSource(small_mlp, train, 64).matrix()
    Z = make_projection(spec, G.shape[1])(G)
    assert np.allclose(l2.raw, Z.norm(dim=1).numpy(), atol=1e-10)
    forest = inf.score(small_mlp, train, method="outlier", params="all", projection=spec)
    assert forest.raw.shape == (len(train),) and np.unique(forest.raw).size > 100


def test_bad_projection_options_are_one_line_errors(small_mlp, digits_small):
    train, valid = digits_small
    for spec, msg in [({"kind": "fft", "dim": 8}, "unknown projection kind"), ({"kind": "sparse"}, "needs a dim"),
                      ({"dim": 0}, "positive"), (8, "must be a mapping"), ({"dim": 8, "k": 2}, "unknown")]:
        with pytest.raises(InputError, match=msg):
            inf.score(small_mlp, train, valid, method="ip", projection=spec)
    with pytest.raises(InputError, match=r"method 'fi' does not take option\(s\) \['projection'\]"):
        inf.score(small_mlp, train, valid, method="fi", projection={"dim": 8})


def test_projected_tracin_sums_projected_products_over_checkpoints(digits_small):
    train, valid = digits_small
    rec = inf.models.TrainingRecorder(every=20)
    m = inf.models.TabularMLP(hidden=(8,), dtype=torch.float64,
                              train=inf.models.TrainConfig(optimizer="sgd", lr=0.5, epochs=40)).fit(train, recorder=rec)
    spec = {"kind": "sparse", "dim": 50, "seed": 4}
    s = inf.score(m, train, valid, method="tracin", projection=spec)
    P = make_projection(spec, m.n_params())
    expect = np.zeros(len(train))
    for ck in rec.checkpoints:
        at = m.with_params(ck.params)
        v = inf.targets.Utility(valid)
        v.prepare(at)
        expect += ck.lr * (P(GradientSource(at, train, 64).matrix()) @ P.vectors(v.grad(at))).numpy()
    assert len(rec.checkpoints) >= 2
    assert np.allclose(s.values, expect, atol=1e-10)
    self_t = inf.score(m, train, method="self-tracin", projection=spec, over="checkpoints")
    sq = sum(ck.lr * (P(GradientSource(m.with_params(ck.params), train, 64).matrix()) ** 2).sum(1).numpy()
             for ck in rec.checkpoints)
    assert np.allclose(self_t.raw, sq, atol=1e-10)


def test_projected_rows_in_a_gradient_store(small_mlp, digits_small, tmp_path):
    """A store keyed with the projection holds the (n, k) rows; another projection gets another key."""
    train, valid = digits_small
    spec = {"kind": "sparse", "dim": 32, "seed": 0}
    a = inf.score(small_mlp, train, valid, method="ip", projection=spec, store=tmp_path, chunk_size=40)
    b = inf.score(small_mlp, train, valid, method="ip", projection=spec, chunk_size=40)
    assert np.allclose(a.values, b.values, atol=1e-12)
    src = GradientSource(small_mlp, train, 40, store=tmp_path, projection=spec)
    assert src.store.is_complete() and src.store.p == 32
    other = GradientSource(small_mlp, train, 40, store=tmp_path, projection={**spec, "seed": 1})
    assert other.store.path != src.store.path and not other.store.is_complete()


def test_projection_none_is_the_default_for_every_method(iris):
    """projection=None (no projection) is accepted by a method without a projection option, as before typed
    options, and gives the same scores as leaving it out."""
    train, _ = iris
    model = inf.models.SklearnLogistic(C=1.0).fit(train)
    a = inf.score(model, train, method="self-if", projection=None)
    assert np.array_equal(a.values, inf.score(model, train, method="self-if").values)
