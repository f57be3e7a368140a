"""HFAdapter on a small BERT built from a config (random weights, nothing downloaded), plain and LoRA.

References are brute force through the Hugging Face model itself: one backward pass per example on
the example's own unpadded tokens (so padding and the attention mask are checked too).
"""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers", reason="text extras not installed: pip install 'influent[text]'")
peft = pytest.importorskip("peft", reason="text extras not installed: pip install 'influent[text]'")

import influent  # noqa: E402
from influent.data import InputError, Split  # noqa: E402
from influent.grads import GradientSource  # noqa: E402
from influent.models.hf import HFAdapter, require_transformers  # noqa: E402
from helpers import rel_max as rel  # noqa: E402

N, L, K = 10, 9, 3


def small_bert(seed: int = 0, lora: bool = True, r: int = 2, targets=("query",)):
    torch.manual_seed(seed)
    cfg = transformers.BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                  intermediate_size=64, max_position_embeddings=32, num_labels=K, pad_token_id=0)
    model = transformers.BertForSequenceClassification(cfg).double()
    if not lora:
        return model
    pm = peft.get_peft_model(model, peft.LoraConfig(r=r, lora_alpha=2 * r, target_modules=list(targets),
                                                    lora_dropout=0.1, task_type="SEQ_CLS"))
    with torch.no_grad():  # LoRA starts with B = 0; make both matrices non-zero so both gradients are
        for n, p in pm.named_parameters():
            if "lora_" in n:
                p.normal_(0, 0.3)
    return pm


def token_split(n: int = N, seed: int = 0, length: int = L) -> tuple[Split, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.integers(1, 100, (n, length))
    lens = rng.integers(2, length + 1, n)
    lens[0] = length
    for i in range(n):
        X[i, lens[i]:] = 0
    return Split(X, rng.integers(0, K, n)), lens


def brute_grads(model, split: Split, lens: np.ndarray, names: list[str]) -> torch.Tensor:
    """(n, p) one backward per example on its unpadded tokens, straight through the HF model."""
    table = dict(model.named_parameters())
    leaves = [table[n[len("model."):]] for n in names]
    rows = []
    model.eval()
    for i in range(len(split)):
        ids = torch.as_tensor(split.X[i, :lens[i]], dtype=torch.long)[None]
        loss = torch.nn.functional.cross_entropy(model(input_ids=ids).logits, torch.tensor([int(split.y[i])]))
        rows.append(torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, leaves)]))
    return torch.stack(rows)


@pytest.fixture(scope="module")
def setup():
    model = small_bert()
    train, lens = token_split()
    valid, vlens = token_split(6, seed=1)
    return model, HFAdapter(model, params="lora"), train, lens, valid, vlens


def test_lora_params_are_exactly_the_lora_matrices(setup):
    model, adapter, *_ = setup
    want = [n for n, p in model.named_parameters() if p.requires_grad and "lora_" in n]
    assert [n[len("model."):] for n in adapter.param_names()] == want
    assert any("classifier" in n for n, p in model.named_parameters() if p.requires_grad)  # trainable, not analysed
    assert adapter.fitted and list(adapter.classes_) == list(range(K))


def test_lora_per_sample_grads_match_brute_force_with_padding(setup):
    model, adapter, train, lens, *_ = setup
    src = GradientSource(adapter, train, chunk_size=4)
    assert src.factorised  # LoRA's matrices go through the linear-layer path over tokens
    ref = brute_grads(model, train, lens, adapter.param_names())
    assert rel(src.matrix(), ref) < 1e-5
    assert rel(src.sq_norms(), (ref**2).sum(1)) < 1e-5
    V = torch.randn(ref.shape[1], 3, dtype=torch.float64)
    assert rel(src.dot(V), ref @ V) < 1e-5
    loop = GradientSource(adapter, train, method="loop").matrix()  # the engine's own loop fallback
    assert rel(loop, ref) < 1e-5


def test_ip_scores_on_lora_params_match_brute_force(setup):
    model, adapter, train, lens, valid, vlens = setup
    scores = influent.score(adapter, train, valid, method="ip")
    names = adapter.param_names()
    ref = brute_grads(model, train, lens, names) @ brute_grads(model, valid, vlens, names).mean(0)
    assert rel(torch.as_tensor(scores.values), ref) < 1e-5
    pair = influent.attribute(adapter, train, valid, method="ip")
    ref_pair = brute_grads(model, train, lens, names) @ brute_grads(model, valid, vlens, names).T
    assert rel(torch.as_tensor(pair), ref_pair) < 1e-5


def test_token_gram_form_on_a_full_linear_layer():
    """Short sequences and a full 32x32 layer: the Gram uses token products, not per-sample blocks."""
    model = small_bert(lora=False)
    train, lens = token_split(8, seed=2, length=3)
    adapter = HFAdapter(model, params=["bert.encoder.layer.1.attention.self.query"])
    assert adapter.param_names() == ["model.bert.encoder.layer.1.attention.self.query.weight",
                                     "model.bert.encoder.layer.1.attention.self.query.bias"]
    src = GradientSource(adapter, train)
    assert src.factorised
    ref = brute_grads(model, train, lens, adapter.param_names())
    assert rel(src.gram(src), ref @ ref.T) < 1e-5
    assert rel(src.matrix(), ref) < 1e-5


def test_ekfac_on_lora_layers_against_exact_ggn(setup):
    """EK-FAC's eigenvalues are the exact GGN's diagonal in the K-FAC eigenbasis, layer by layer; and its
    Frobenius error to the GGN block is at most K-FAC's."""
    from influent.curvature import CurvatureContext, make_solver

    model, adapter, train, lens, *_ = setup
    names = adapter.param_names()
    table = dict(model.named_parameters())
    leaves = [table[n[len("model."):]] for n in names]
    p = sum(x.numel() for x in leaves)
    ggn = torch.zeros(p, p, dtype=torch.float64)
    for i in range(len(train)):  # J_i^T (diag(s) - s s^T) J_i, J_i from the model on unpadded tokens
        ids = torch.as_tensor(train.X[i, :lens[i]], dtype=torch.long)[None]
        logits = model(input_ids=ids).logits[0]
        J = torch.stack([torch.cat([g.reshape(-1) for g in torch.autograd.grad(logits[k], leaves, retain_graph=True)])
                         for k in range(K)])
        s = torch.softmax(logits.detach(), 0)
        ggn += J.T @ (torch.diag(s) - torch.outer(s, s)) @ J
    ggn /= len(train)
    ctx = CurvatureContext(adapter, train, 0.0, 4)
    ek = make_solver("ekfac").fit(ctx)
    kf = make_solver("kfac").fit(ctx)
    eye = torch.eye(p, dtype=torch.float64)
    M_ek, M_kf = ek.matvec(eye), kf.matvec(eye)
    for layer in ek.layers_:
        sl = layer.w
        Q = torch.kron(ek.QS_[layer.name], ek.QA_[layer.name])
        diag = torch.diagonal(Q.T @ ggn[sl, sl] @ Q).reshape(layer.d_out, layer.d_in)
        assert rel(ek.evals_[layer.name], diag) < 1e-8
        block = ggn[sl, sl]
        assert torch.linalg.norm(M_ek[sl, sl] - block) <= torch.linalg.norm(M_kf[sl, sl] - block) * (1 + 1e-9)
        assert torch.linalg.norm(M_ek[sl, sl] - block) < torch.linalg.norm(block)


def test_every_method_runs_on_lora(setup):
    """IF with the CG/LiSSA/DataInf/EK-FAC solvers, IP Ensemble, TracIn, outlier gradients, Diff-In."""
    model, adapter, train, lens, valid, _ = setup
    exact = influent.score(adapter, train, valid, method="if", solver="exact", damping=1e-2).values
    cg = influent.score(adapter, train, valid, method="if", solver="cg", damping=1e-2,
                        solver_options={"tol": 1e-10, "max_iter": 500}).values
    assert np.allclose(cg, exact, rtol=1e-5, atol=1e-8 * np.abs(exact).max())
    for solver, opts in (("lissa", {"depth": 30, "repeats": 1}), ("datainf", {}), ("ekfac", {})):
        v = influent.score(adapter, train, valid, method="if", solver=solver, damping=1e-2, solver_options=opts).values
        assert v.shape == (N,) and np.all(np.isfinite(v))
        assert np.corrcoef(v, exact)[0, 1] > 0.5, solver
    from influent.models import TrainingRecorder

    rec = TrainingRecorder()
    rec.record(adapter, 1, 0.1)
    tr = influent.score(adapter, train, valid, method="tracin", checkpoints=rec.checkpoints).values
    ip = influent.score(adapter, train, valid, method="ip").values
    assert np.allclose(tr, 0.1 * ip, rtol=1e-10, atol=1e-14)
    # IP Ensemble's dropout members mask the classifier's input (pooled, no token axis: any length fits)
    pooled = [n for n, m in adapter.module.named_modules() if isinstance(m, torch.nn.Dropout)][-1]
    assert adapter.ensemble_dropout_points() == [pooled] == ["model.base_model.model.dropout"]
    for method, opts in (("ip-ensemble", {}), ("ip-ensemble", {"mode": "dropout"}), ("outlier", {}),
                         ("self-if", {"damping": 1e-2, "solver": "ekfac"}), ("diffin", {"checkpoints": rec.checkpoints})):
        res = influent.score(adapter, train, None if method in ("outlier", "self-if") else valid, method=method, **opts)
        assert res.values.shape == (N,) and np.all(np.isfinite(res.values)), method
        if method == "ip-ensemble":  # the default is [IP]'s parameter dropout; activation dropout on request
            assert res.settings["member_mode"] == opts.get("mode", "param-dropout")


def test_checkpoint_copies_share_the_frozen_base(setup):
    model, adapter, train, _, valid, _ = setup
    names = adapter.param_names()
    other = adapter.with_params({n: torch.zeros_like(v) for n, v in adapter.params().items()})
    mine, theirs = dict(adapter.module.named_parameters()), dict(other.module.named_parameters())
    frozen = [n for n, p in mine.items() if not p.requires_grad]
    assert frozen and all(theirs[n] is mine[n] for n in frozen)
    assert all(theirs[n].abs().max() == 0 and mine[n].abs().max() > 0 for n in names)
    assert np.allclose(influent.score(other, train, valid, method="ip").values, 0.0)  # all LoRA zero: B = 0


def test_the_model_is_left_as_it_was(setup):
    model, adapter, train, _, valid, _ = setup
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    model.train()
    influent.score(adapter, train, valid, method="ip")
    assert model.training and all(torch.equal(before[n], p) for n, p in model.named_parameters())


def test_bad_inputs_are_one_line_errors(setup, monkeypatch):
    model, adapter, *_ = setup
    with pytest.raises(InputError, match="no trainable LoRA"):
        HFAdapter(small_bert(lora=False), params="lora")
    with pytest.raises(InputError, match="match no trainable parameter"):
        HFAdapter(model, params=["nope"])
    with pytest.raises(InputError, match="token ids"):
        adapter.check_split(Split(np.full((3, 4), 0.5), np.zeros(3)))
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(InputError, match=r"pip install 'influent\[text\]'"):
        require_transformers()


def word_tokenizer():
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "the", "cat", "sat", "on", "mat", "a"]
    return transformers.BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)})


def test_from_texts_pads_to_the_longest_text():
    tok = word_tokenizer()
    split = influent.from_texts(["the cat sat", "a cat sat on the mat", "cat"], ["x", "y", "x"], tok, max_length=6)
    assert split.X.shape == (3, 6)  # [CLS] + 6 words + [SEP] truncated to 6
    assert split.X[0].tolist() == [2, 4, 5, 6, 3, 0] and split.X[2].tolist() == [2, 5, 3, 0, 0, 0]
    assert list(split.y) == ["x", "y", "x"]
    with pytest.raises(InputError, match="not a string"):
        influent.from_texts(["ok", 3], [0, 1], tok)


def test_float32_lora_grads_and_ip_within_1e5_of_brute_force():
    model = small_bert().float()
    train, lens = token_split()
    valid, vlens = token_split(6, seed=1)
    adapter = HFAdapter(model, params="lora")
    names = adapter.param_names()
    ref = brute_grads(model, train, lens, names).double()
    assert rel(GradientSource(adapter, train).matrix().double(), ref) < 1e-5
    ip = torch.as_tensor(influent.score(adapter, train, valid, method="ip").values).double()
    assert rel(ip, ref @ brute_grads(model, valid, vlens, names).double().mean(0)) < 1e-5


def test_refit_in_another_dtype_leaves_the_models_weights():
    from influent.models import TrainConfig

    model = small_bert(seed=5).float()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    train, _ = token_split(6, seed=6)
    adapter = HFAdapter(model, dtype=torch.float64, train=TrainConfig(lr=1e-2, epochs=2, batch_size=3))
    refit = adapter.refit(train)
    assert all(p.dtype == torch.float32 and torch.equal(before[n], p) for n, p in model.named_parameters())
    assert all(p.dtype == torch.float64 for p in refit.module.parameters())
    moved = [n for n, p in refit.module.named_parameters() if p.requires_grad
             and not torch.equal(p.float(), before[n[len("model."):]])]
    assert moved and all(".lora_" in n or "classifier" in n for n in moved)


def test_mislabel_auto_on_a_lora_model_analyses_the_classifier_head():
    """params='auto' on a LoRA model (its own choice: the adapters) means the classification head for mislabel,
    the same scores as asking for the last layer by name (before: a 463-character error)."""
    adapter = HFAdapter(small_bert(), params="lora")
    split, _ = token_split(24)
    auto = influent.score(adapter, split, None, method="mislabel")
    last = influent.score(adapter, split, None, method="mislabel", params="last")
    np.testing.assert_allclose(auto.values, last.values, rtol=1e-10)
    assert np.isfinite(auto.values).all()
