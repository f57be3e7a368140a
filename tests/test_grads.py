import numpy as np
import pytest
import torch

import influent as inf
from influent.grads import GradientSource, per_sample_grads


def _rel(a, b):
    return float((a - b).abs().max() / b.abs().max())


def test_vmap_loop_factorised_agree(small_mlp, digits_small):
    train, valid = digits_small
    X, t = small_mlp.tensors(train)
    Gv = per_sample_grads(small_mlp, X, t, method="vmap")
    Gl = per_sample_grads(small_mlp, X, t, method="loop")
    Gf = GradientSource(small_mlp, train, chunk_size=37, method="factorised").matrix()
    assert _rel(Gl, Gv) < 1e-6 and _rel(Gf, Gv) < 1e-6
    # products through the factors equal products of the explicit matrices
    src, vsrc = GradientSource(small_mlp, train, chunk_size=50), GradientSource(small_mlp, valid)
    assert src.factorised
    V = torch.randn(src.p, 3, dtype=torch.float64)
    assert _rel(src.dot(V), Gv @ V) < 1e-6
    Gvalid = per_sample_grads(small_mlp, *small_mlp.tensors(valid))
    assert _rel(src.gram(vsrc), Gv @ Gvalid.T) < 1e-6
    assert _rel(src.sq_norms(), (Gv**2).sum(1)) < 1e-6


def test_loop_fallback_for_modules_vmap_cannot_take(digits_small):
    """A module calling .item() inside forward cannot be vmapped: auto falls back to the loop."""
    train, _ = digits_small

    class Odd(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(64, 4)

        def forward(self, x):
            scale = 1.0 + 0.0 * float(x.abs().max().item())
            return self.lin(x) * scale

    m = inf.models.TorchAdapter(Odd(), dtype=torch.float64, train=inf.models.TrainConfig(epochs=5)).fit(train)
    X, t = m.tensors(train.subset(range(10)))
    with pytest.raises(RuntimeError):
        per_sample_grads(m, X, t, method="vmap")
    G = per_sample_grads(m, X, t, method="auto")
    ref = per_sample_grads(m, X, t, method="loop")
    assert torch.equal(G, ref) and G.shape == (10, 64 * 4 + 4)


def test_last_layer_subset_matches_columns_of_full(small_mlp, digits_small):
    train, _ = digits_small
    full = GradientSource(small_mlp, train).matrix()
    last = small_mlp.clone()
    last.module, last.classes_, last.params_spec = small_mlp.module, small_mlp.classes_, "last"
    sub = GradientSource(last, train).matrix()
    assert _rel(sub, full[:, -sub.shape[1]:]) < 1e-12


def test_store_resumes_after_interruption(tmp_path, small_mlp, digits_small):
    train, valid = digits_small
    ref = inf.score(small_mlp, train, target=valid, method="ip")
    src = GradientSource(small_mlp, train, chunk_size=32, store=tmp_path / "g")
    src.fill_store(stop_after=2)  # interrupted after two of five chunks
    assert len(src.store.missing()) == 3
    calls = []
    again = GradientSource(small_mlp, train, chunk_size=32, store=tmp_path / "g", progress=lambda d, n: calls.append(n))
    assert len(again.store.missing()) == 3
    again.fill_store()
    assert calls[-1] == 3 and again.store.is_complete()
    s = inf.score(small_mlp, train, target=valid, method="ip", store=tmp_path / "g", chunk_size=32)
    np.testing.assert_allclose(s.values, ref.values, rtol=1e-12, atol=1e-14)
    # a different model never reads the stale rows
    other = small_mlp.with_params({k: v + 1 for k, v in small_mlp.params().items()})
    assert GradientSource(other, train, chunk_size=32, store=tmp_path / "g").store.path != again.store.path


@pytest.mark.parametrize("chunk", [1, 64])
@pytest.mark.parametrize("k", [1, 3, 20])
def test_factor_dot_equals_explicit_gradient_products(digits_small, k, chunk):
    """Products through the factors (the (B, k, d_out) form for k <= d_in, the weight-gradient form for
    k > d_in) equal the explicit per-sample gradients times the directions, float64, for a layer with and
    one without a bias; in blocks of `factor_block_rows` rows (chunk 1: blocks of a few rows, 64: one)."""
    train, _ = digits_small
    torch.manual_seed(1)
    net = torch.nn.Sequential(torch.nn.Linear(64, 16), torch.nn.Tanh(), torch.nn.Linear(16, 10, bias=False))
    m = inf.models.TorchAdapter(net, dtype=torch.float64, classes=np.arange(10))
    src = GradientSource(m, train, chunk_size=chunk)
    assert src.factorised
    blocks = src._factor_slices(k)
    assert (len(blocks) > 10) == (chunk == 1) and blocks[0].stop - blocks[0].start >= chunk
    assert _rel(src.sq_norms(), (per_sample_grads(m, *m.tensors(train)) ** 2).sum(1)) < 1e-12
    G = per_sample_grads(m, *m.tensors(train), method="loop")
    V = torch.randn(src.p, k, dtype=torch.float64)
    assert _rel(src.dot(V), G @ V) < 1e-12
    assert _rel(src.dot(V[:, 0]), G @ V[:, 0]) < 1e-12


class _Custom(torch.nn.Module):  # a forward of its own: not a chain the fused pass may run
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(6, 3)

    def forward(self, x):
        return self.lin(x) * 1.0


@pytest.mark.parametrize("case", ["linear-ce", "linear-bce", "linear-mse", "last", "first-nested", "bias-only"])
def test_fused_dot_equals_explicit_gradient_products(case):
    """The fused pass (one product per layer for the forward and V a) gives the explicit per-sample gradients
    times the directions, float64: a model that is one nn.Linear (closed-form delta, three losses), a network
    analysed at its last layer, at its first layer inside a nested Sequential (a backward pass), at a bias."""
    from influent.grads.linear import fused_dot, linear_layers

    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 6))
    torch.manual_seed(0)
    loss, params, y = "cross_entropy", "all", np.arange(40) % 3
    if case.startswith("linear"):
        net = torch.nn.Linear(6, 1 if case != "linear-ce" else 3)
        loss = {"linear-ce": "cross_entropy", "linear-bce": "bce", "linear-mse": "mse"}[case]
        y = rng.normal(size=40) if loss == "mse" else (np.arange(40) % (3 if loss == "cross_entropy" else 2))
    else:
        net = torch.nn.Sequential(torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.Tanh()), torch.nn.Linear(5, 3))
        params = {"last": ["1.weight", "1.bias"], "first-nested": ["0.0.weight", "0.0.bias"],
                  "bias-only": ["0.0.bias", "1.bias"]}[case]
    classes = None if loss == "mse" else np.unique(y)
    m = inf.models.TorchAdapter(net, dtype=torch.float64, loss=loss, classes=classes, params=params)
    train = inf.from_arrays(X, y)
    src = GradientSource(m, train, chunk_size=7)
    G = per_sample_grads(m, *m.tensors(train), method="loop")
    V = torch.randn(src.p, 2, dtype=torch.float64)
    stacked, i0 = {}, 0
    for name, p in src.like.items():
        stacked[name] = V[i0:i0 + p.numel()].T.reshape(2, *p.shape)
        i0 += p.numel()
    got = fused_dot(m, *m.tensors(train), linear_layers(m), stacked)
    assert got is not None and _rel(got, G @ V) < 1e-12
    assert _rel(src.dot(V), G @ V) < 1e-12
    h = m._require_fitted().register_forward_hook(lambda mod, inp, out: None)  # a hook the fused pass would skip
    assert fused_dot(m, *m.tensors(train), linear_layers(m), stacked) is None
    h.remove()
    other = inf.models.TorchAdapter(_Custom().double(), dtype=torch.float64, classes=np.arange(3))
    assert fused_dot(other, *other.tensors(inf.from_arrays(X, np.arange(40) % 3)), linear_layers(other),
                     {"lin.weight": torch.zeros(1, 3, 6, dtype=torch.float64),
                      "lin.bias": torch.zeros(1, 3, dtype=torch.float64)}) is None


def test_factor_blocks_grow_only_when_the_analysed_layers_are_the_whole_model(digits_small):
    """A linear head on a network keeps `chunk_size` rows per block (its forward pass holds activations the
    row width does not count); analysing every layer of an all-linear network lets the blocks grow."""
    train, _ = digits_small
    torch.manual_seed(1)
    net = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.Tanh(), torch.nn.Linear(32, 10))
    head = inf.models.TorchAdapter(net, dtype=torch.float64, classes=np.arange(10), params="last")
    whole = inf.models.TorchAdapter(net, dtype=torch.float64, classes=np.arange(10))
    head_blocks = GradientSource(head, train, chunk_size=8)._factor_slices(1)
    assert max(b.stop - b.start for b in head_blocks) == 8
    assert max(b.stop - b.start for b in GradientSource(whole, train, chunk_size=8)._factor_slices(1)) > 8


@pytest.mark.parametrize("projection", [None, {"kind": "sparse", "dim": 8}, {"kind": "gaussian", "dim": 8}])
@pytest.mark.parametrize("method", ["auto", "vmap"])
def test_gradient_source_follows_the_model_device(projection, method):
    """Every product is made on the model's device. No GPU here: a model on PyTorch's "meta" device stands
    in for one, since any tensor created on the CPU regardless of the model's device fails to mix with it."""
    X, y = np.random.default_rng(0).normal(size=(50, 6)), np.arange(50) % 3
    train = inf.from_arrays(X, y)
    net = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.Tanh(), torch.nn.Linear(5, 3)).double().to("meta")
    m = inf.models.TorchAdapter(net, dtype=torch.float64, classes=np.arange(3))
    src = GradientSource(m, train, chunk_size=16, projection=projection, method=method)
    other = GradientSource(m, train, chunk_size=16, projection=projection, method=method)
    k = src.p
    V = torch.randn(src.p_params, 2, dtype=torch.float64)  # a direction from the CPU is moved to the device
    for out, shape in ((src.dot(V), (50, 2)), (src.sq_norms(), (50,)), (src.gram(other), (50, 50)),
                       (src.matrix(), (50, k))):
        assert out.device.type == "meta" and tuple(out.shape) == shape


@pytest.mark.parametrize("loss,K", [("cross_entropy", 3), ("bce", 1), ("mse", 2)])
def test_closed_form_output_gradient_equals_autograd(loss, K):
    """`models.base.output_grad` (the factorised path's delta when the analysed layer is the output layer)
    equals autograd of the per-sample loss with respect to the outputs."""
    from influent.models.base import loss_from_outputs, output_grad

    g = torch.Generator().manual_seed(0)
    out = torch.randn(7, K, generator=g, dtype=torch.float64, requires_grad=True)
    t = {"cross_entropy": torch.randint(0, K, (7,), generator=g), "bce": torch.randint(0, 2, (7,), generator=g).double(),
         "mse": torch.randn(7, K, generator=g, dtype=torch.float64)}[loss]
    auto, = torch.autograd.grad(loss_from_outputs(loss, out, t).sum(), out)
    assert torch.allclose(output_grad(loss, out.detach(), t), auto, atol=1e-14)
