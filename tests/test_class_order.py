"""Issue 23 item 1: `classes=` in any order (unsorted, strings, non-contiguous) maps each label to the output
column of its class. The independent answer: the same network with its output rows permuted so that the
classes are sorted gives the same scores."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import influent as inf
from influent.data import InputError, Split
from influent.models import SklearnLogistic, TorchAdapter


@pytest.mark.parametrize("classes, y, codes", [
    ([1, 0], [0, 1, 0, 1], [1, 0, 1, 0]),
    (["good", "bad"], ["bad", "good", "good"], [1, 0, 0]),
    ([0, 2, 1], [0, 1, 2, 1], [0, 2, 1, 2]),
    ([10, 3, 7], [3, 7, 10], [1, 2, 0]),
    ([0, 1, 2], [2, 0, 1, 1], [2, 0, 1, 1]),  # consecutive integer classes: the code is the label itself
    ([3, 4, 5], [5, 3, 4], [2, 0, 1]),
])
def test_encode_gives_the_position_of_each_class(classes, y, codes):
    net = torch.nn.Linear(2, len(classes))
    model = TorchAdapter(net, classes=classes)
    assert model.encode(np.asarray(y)).tolist() == codes
    from influent.data.validate import class_codes

    assert class_codes(np.asarray(y), np.asarray(classes)).tolist() == codes
    with pytest.raises(InputError, match="unknown label"):
        model.encode(np.asarray([classes[0], 99 if not isinstance(classes[0], str) else "ugly"]))
    if not isinstance(classes[0], str):  # below the smallest class, inside the classes' range but missing
        with pytest.raises(InputError, match="unknown label"):
            model.encode(np.asarray([min(classes) - 1]))
        gap = sorted(set(range(min(classes), max(classes) + 1)) - set(classes))
        if gap:
            with pytest.raises(InputError, match="unknown label"):
                model.encode(np.asarray(gap))


def _data(classes, n=40, d=3, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    y = np.asarray(classes)[rng.integers(0, len(classes), n)]
    y[: len(classes)] = classes  # every class present
    return Split(X, y, name="train"), Split(rng.normal(size=(12, d)), np.asarray(classes)[rng.integers(0, len(classes), 12)],
                                            name="valid")


@pytest.mark.parametrize("classes", [[1, 0], ["good", "bad"], [0, 2, 1]])
@pytest.mark.parametrize("method", ["mislabel", "if"])
def test_scores_equal_a_model_with_sorted_classes(classes, method):
    train, valid = _data(classes)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.Tanh(), torch.nn.Linear(5, len(classes))).double()
    perm = np.argsort(np.asarray(classes))  # sorted class j is output row perm[j] of `net`
    twin = torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.Tanh(), torch.nn.Linear(5, len(classes))).double()
    twin.load_state_dict(net.state_dict())
    with torch.no_grad():
        twin[2].weight.copy_(net[2].weight[torch.as_tensor(perm)])
        twin[2].bias.copy_(net[2].bias[torch.as_tensor(perm)])
    a = TorchAdapter(net, classes=classes, weight_decay=1e-2, params="last")
    b = TorchAdapter(twin, classes=sorted(classes), weight_decay=1e-2, params="last")
    opts = {"solver": "exact", "damping": 1e-3} if method == "if" else {}
    sa = inf.score(a, train, valid if method == "if" else None, method=method, **opts)
    sb = inf.score(b, train, valid if method == "if" else None, method=method, **opts)
    np.testing.assert_allclose(sa.values, sb.values, rtol=1e-6, atol=1e-9)
    assert np.isfinite(sa.values).all()
    # predictions name the class of the output column
    np.testing.assert_array_equal(a.predict(train.X), b.predict(train.X))


@pytest.mark.parametrize("labels", [["good", "bad"], [0, 2, 5]])
def test_sklearn_logistic_string_and_gapped_labels_equal_integer_codes(labels):
    train, valid = _data(labels, n=60)
    codes = lambda s: Split(s.X, np.searchsorted(np.sort(labels), s.y), name=s.name)  # sorted: sklearn's order
    m = SklearnLogistic(C=1.0).fit(train)
    m0 = SklearnLogistic(C=1.0).fit(codes(train))
    for method in ("if", "mislabel"):
        s = inf.score(m, train, valid if method == "if" else None, method=method)
        s0 = inf.score(m0, codes(train), codes(valid) if method == "if" else None, method=method)
        np.testing.assert_allclose(s.values, s0.values, rtol=1e-6, atol=1e-10)


def test_classes_must_be_distinct():
    with pytest.raises(InputError, match="classes"):
        TorchAdapter(torch.nn.Linear(2, 2), classes=[0, 0])


def test_hf_adapter_unsorted_classes_encode_and_score():
    transformers = pytest.importorskip("transformers")
    from influent.models.hf import HFAdapter

    torch.manual_seed(0)
    cfg = transformers.BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                  intermediate_size=32, max_position_embeddings=16, num_labels=3, pad_token_id=0)
    net = transformers.BertForSequenceClassification(cfg).double()
    model = HFAdapter(net, classes=["c", "a", "b"], params="last")
    rng = np.random.default_rng(0)
    train = Split(rng.integers(1, 50, (9, 6)), np.asarray(["a", "b", "c"] * 3), name="train")
    assert model.encode(train.y).tolist() == [1, 2, 0] * 3
    s = inf.score(model, train, method="mislabel")
    assert np.isfinite(s.values).all() and len(s.values) == 9


def test_tabular_mlp_gapped_labels_fit_and_mislabel():
    from influent.models import TabularMLP, TrainConfig

    train, _ = _data([5, 0, 9], n=45)
    m = TabularMLP(hidden=(4,), train=TrainConfig(epochs=5)).fit(train)
    assert m.classes_.tolist() == [0, 5, 9]
    assert m.encode(np.asarray([9, 0, 5])).tolist() == [2, 0, 1]
    assert np.isfinite(inf.score(m, train, method="mislabel").values).all()
