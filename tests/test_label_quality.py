"""label-quality: cleanlab's scores on out-of-sample probabilities, with fold refits that cost a few Newton
steps from the fitted optimum instead of a cold L-BFGS fit each."""

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold

import influent as inf
from influent.methods import label_quality as lq


@pytest.fixture(scope="module")
def noisy_cancer():
    X, y = load_breast_cancer(return_X_y=True)
    X, y = X[:240], y[:240]
    flip = np.random.default_rng(0).random(len(y)) < 0.1
    return X, np.where(flip, 1 - y, y)


def test_scores_are_cleanlabs_on_the_folds_exact_optima(noisy_cancer):
    from cleanlab.rank import get_label_quality_scores

    X, y = noisy_cancer
    Z = (X - X.mean(0)) / X.std(0)
    train = inf.from_arrays(Z, y)
    model = inf.models.SklearnLogistic(C=0.5).fit(train)
    lq._CACHE.clear()
    s = inf.score(model, train, method="label-quality", kind="normalized-margin", cv=4, seed=3)
    # independent reference: scikit-learn fitted to convergence on each fold (C scaled as sklearn's own)
    proba = np.zeros((len(y), 2))
    for fit, held in StratifiedKFold(4, shuffle=True, random_state=3).split(Z, y):
        est = LogisticRegression(C=0.5, tol=1e-12, max_iter=100_000).fit(Z[fit], y[fit])
        proba[held] = est.predict_proba(Z[held])
    np.testing.assert_allclose(lq.out_of_sample_proba(model, train, 4, 3), proba, atol=1e-5)
    np.testing.assert_allclose(s.values, get_label_quality_scores(y, proba, method="normalized_margin"), atol=1e-5)


def test_fold_refits_do_not_rerun_lbfgs_to_convergence(noisy_cancer, monkeypatch):
    """Unscaled features (the README quick start's): each cold L-BFGS refit at the model's tolerance takes
    hundreds to thousands of iterations (12 s of label-quality on the whole unscaled breast-cancer set); warm-started Newton
    refits take one L-BFGS iteration per fold (834 in all before) and still land on each fold's optimum."""
    X, y = noisy_cancer
    X = X[:, :10]  # ten unscaled columns: a model fit of 0.1 s here
    train = inf.from_arrays(X, y)
    model = inf.models.SklearnLogistic().fit(train)
    iterations = []
    fit = LogisticRegression.fit

    def counted(self, *a, **k):
        out = fit(self, *a, **k)
        iterations.append(int(np.max(out.n_iter_)))
        return out

    monkeypatch.setattr(LogisticRegression, "fit", counted)
    lq._CACHE.clear()
    proba = lq.out_of_sample_proba(model, train, 5, 0)
    assert len(iterations) == 5 and sum(iterations) <= 5, iterations
    for fit_rows, held in StratifiedKFold(5, shuffle=True, random_state=0).split(X, y):
        part = model.refit(train.subset(fit_rows), warm_start=True)  # the fold's optimum, also warm-started
        assert lq._stationary(part, train.subset(fit_rows))
        np.testing.assert_allclose(proba[held], part.predict_proba(X[held]), atol=1e-6)
