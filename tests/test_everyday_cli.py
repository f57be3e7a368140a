"""Issue 23, defaults for real data on the command line: standardised features by default for the built-in
models (item 9), --valid only for methods that measure a target (item 10)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

import influent as inf
from helpers import run_cli

SCALES = np.array([1.0, 1000.0, 0.01])


@pytest.fixture(scope="module")
def raw_dir(tmp_path_factory):
    """Unscaled features (scales 1, 1000, 0.01), binary label, 80 train / 40 valid / 40 test rows."""
    d = tmp_path_factory.mktemp("raw")
    rng = np.random.default_rng(0)
    Z = rng.normal(size=(160, 3))
    y = (Z @ np.array([1.0, -1.0, 0.5]) + 0.7 * rng.normal(size=160) > 0).astype(int)
    X = Z * SCALES + np.array([0.0, 5000.0, 0.1])
    for name, rows in (("train", slice(0, 80)), ("valid", slice(80, 120)), ("test", slice(120, 160))):
        df = pd.DataFrame(X[rows], columns=["a", "b", "c"])
        df["y"] = y[rows]
        df.to_csv(d / f"{name}.csv", index=False)
    return d


def _standardized(d, name, mu, sd):
    df = pd.read_csv(d / f"{name}.csv")
    X = df[["a", "b", "c"]].to_numpy(np.float32)
    return inf.from_arrays(((X - mu) / sd).astype(np.float32), df["y"].to_numpy(), name=name)


def test_logistic_standardizes_by_default_with_train_statistics(raw_dir, tmp_path, capsys):
    out = tmp_path / "run"
    code, _, err = run_cli(["score", "--train", raw_dir / "train.csv", "--valid", raw_dir / "valid.csv", "--label", "y",
                            "--method", "if", "--out", out], capsys)
    assert code == 0, err
    rec = json.loads((out / "run.json").read_text())
    assert rec["config"]["standardize"] is True
    X = pd.read_csv(raw_dir / "train.csv")[["a", "b", "c"]].to_numpy(np.float32)
    mu, sd = X.mean(0), X.std(0)
    train, valid = _standardized(raw_dir, "train", mu, sd), _standardized(raw_dir, "valid", mu, sd)
    model = inf.models.SklearnLogistic().fit(train)
    want = inf.score(model, train, inf.targets.Utility(valid), method="if")
    np.testing.assert_allclose(inf.Scores.load(out / "scores.parquet").values, want.values, rtol=1e-6, atol=1e-12)
    # the report shows the data as given, not z-scores
    row = rec["results"]["samples"]["harmful"][0]
    feats = {name: value for name, value, _ in row["features"]}
    np.testing.assert_allclose(feats["b"], X[row["position"], 1], rtol=1e-6)
    assert abs(feats["b"]) > 100


def test_no_standardize_keeps_the_data_as_given(raw_dir, tmp_path, capsys):
    out = tmp_path / "run"
    code, _, err = run_cli(["score", "--train", raw_dir / "train.csv", "--valid", raw_dir / "valid.csv", "--label", "y",
                            "--method", "self-if", "--no-standardize", "--C", "0.01", "--no-curve", "--out", out], capsys)
    assert code == 0, err
    assert json.loads((out / "run.json").read_text())["config"]["standardize"] is False
    train = inf.from_file(raw_dir / "train.csv", "y", name="train")
    model = inf.models.SklearnLogistic(C=0.01).fit(train)
    want = inf.score(model, train, method="self-if")
    np.testing.assert_allclose(inf.Scores.load(out / "scores.parquet").values, want.values, rtol=1e-5)


@pytest.mark.parametrize("method", ["mislabel", "self-if", "outlier"])
def test_methods_without_a_target_need_no_valid(raw_dir, tmp_path, capsys, method):
    out = tmp_path / "run"
    code, _, err = run_cli(["score", "--train", raw_dir / "train.csv", "--test", raw_dir / "test.csv", "--label", "y",
                            "--method", method, "--no-curve", "--out", out], capsys)
    assert code == 0, err
    rec = json.loads((out / "run.json").read_text())
    assert rec["config"]["valid"] is None and rec["results"]["summary"]["n_valid"] is None
    assert len(inf.Scores.load(out / "scores.parquet")) == 80
    assert "no validation split" in (out / "report.html").read_text()
    # acting on such a run re-reads its inputs without a validation file
    code, _, err = run_cli(["trim", "--scores", out, "--budget", "3", "--out", tmp_path / "trimmed.csv"], capsys)
    assert code == 0, err
    assert len(pd.read_csv(tmp_path / "trimmed.csv")) == 77


def test_a_method_with_a_target_names_valid(raw_dir, tmp_path, capsys):
    code, _, err = run_cli(["score", "--train", raw_dir / "train.csv", "--label", "y", "--method", "if",
                            "--out", tmp_path / "run"], capsys)
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and "--valid" in err and "'if'" in err
    assert not (tmp_path / "run").exists()


# ---- item 8: categorical columns ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cat_dir(tmp_path_factory):
    """Text columns `color` (valid/test hold a level train lacks: purple) and `city` beside a number."""
    d = tmp_path_factory.mktemp("cat")
    rng = np.random.default_rng(0)

    def table(n, colors):
        df = pd.DataFrame({"age": rng.integers(20, 70, n), "color": rng.choice(colors, n),
                           "city": rng.choice(["Oslo", "Rome"], n)})
        df["y"] = ((df.color == "red") ^ (rng.random(n) < 0.2)).astype(int)
        return df

    table(90, ["red", "green", "blue"]).to_csv(d / "train.csv", index=False)
    table(30, ["red", "green", "purple"]).to_csv(d / "valid.csv", index=False)
    return d


def test_text_columns_are_one_hot_encoded_and_the_mapping_saved(cat_dir, tmp_path, capsys):
    out = tmp_path / "run"
    code, _, err = run_cli(["score", "--train", cat_dir / "train.csv", "--valid", cat_dir / "valid.csv",
                            "--test", cat_dir / "valid.csv", "--label", "y", "--method", "if", "--no-standardize",
                            "--no-curve", "--out", out], capsys)
    assert code == 0, err
    assert "one-hot encoded 2 text column(s): color (3 levels), city (2 levels)" in err
    valid_df = pd.read_csv(cat_dir / "valid.csv")
    n_purple = int((valid_df.color == "purple").sum())
    assert n_purple > 0 and f"valid: levels not seen in train ({n_purple} in 'color') are encoded as all zeros" in err
    rec = json.loads((out / "run.json").read_text())
    assert rec["data"]["train"]["one_hot"] == {"features": ["age", "color", "city"],
                                               "levels": {"color": ["blue", "green", "red"], "city": ["Oslo", "Rome"]}}
    assert rec["data"]["valid"]["unseen_levels"] == {"color": n_purple}

    # independent answer: the same encoding by hand, scored through the library
    def by_hand(df):
        X = np.column_stack([df.age] + [(df.color == v) for v in ("blue", "green", "red")]
                            + [(df.city == v) for v in ("Oslo", "Rome")]).astype(np.float32)
        return X, df.y.to_numpy()

    train_df = pd.read_csv(cat_dir / "train.csv")
    train, valid = inf.from_arrays(*by_hand(train_df)), inf.from_arrays(*by_hand(valid_df))
    assert (valid.X[(valid_df.color == "purple").to_numpy(), 1:4] == 0).all()
    model = inf.models.SklearnLogistic().fit(train)
    want = inf.score(model, train, inf.targets.Utility(valid), method="if")
    np.testing.assert_allclose(inf.Scores.load(out / "scores.parquet").values, want.values, rtol=1e-5, atol=1e-10)
    # the run's actions write the original rows, text columns as given
    code, _, err = run_cli(["trim", "--scores", out, "--budget", "4", "--out", tmp_path / "t.csv"], capsys)
    assert code == 0, err
    trimmed = pd.read_csv(tmp_path / "t.csv")
    assert list(trimmed.columns) == ["age", "color", "city", "y"] and len(trimmed) == 86


def test_too_many_text_values_is_one_line(cat_dir, tmp_path, capsys):
    df = pd.read_csv(cat_dir / "train.csv")
    df["name"] = [f"person {i}" for i in range(len(df))] * 1
    df = pd.concat([df] * 2, ignore_index=True)
    df["name"] = [f"person {i}" for i in range(len(df))]
    df.to_csv(tmp_path / "names.csv", index=False)
    code, _, err = run_cli(["score", "--train", tmp_path / "names.csv", "--label", "y", "--method", "self-if",
                            "--out", tmp_path / "run"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "column 'name' has 180 distinct text values" in err and "--drop name" in err


# ---- item 13: what a person can act on ---------------------------------------------------------------------
def test_scores_file_carries_label_prediction_and_probabilities(raw_dir, tmp_path, capsys):
    out = tmp_path / "run"
    code, _, err = run_cli(["score", "--train", raw_dir / "train.csv", "--label", "y", "--method", "mislabel",
                            "--no-standardize", "--C", "0.01", "--out", out], capsys)
    assert code == 0, err
    df = pd.read_parquet(out / "scores.parquet")
    train = inf.from_file(raw_dir / "train.csv", "y", name="train")
    model = inf.models.SklearnLogistic(C=0.01).fit(train)
    P = model.predict_proba(train)
    assert list(df.columns[-4:]) == ["label", "predicted", "p_predicted", "p_label"]
    np.testing.assert_array_equal(df["label"], train.y)
    np.testing.assert_array_equal(df["predicted"], P.argmax(1))  # classes 0, 1
    np.testing.assert_allclose(df["p_predicted"], P.max(1), rtol=1e-6)
    np.testing.assert_allclose(df["p_label"], P[np.arange(len(P)), train.y], rtol=1e-6)
    back = inf.Scores.load(out / "scores.parquet")  # the library reads the columns back
    np.testing.assert_array_equal(back.columns["label"], train.y)


def _lines(text, kind):
    part = text.split("most helpful")[1].split("most harmful")[0] if kind == "helpful" else text.split("most harmful")[1]
    return [ln for ln in part.splitlines()[1:] if ln.startswith("  ")]


@pytest.mark.parametrize("topk", [False, True])
def test_explain_prints_the_training_rows_with_or_without_topk(raw_dir, tmp_path, capsys, topk):
    out = tmp_path / "run"
    code, _, err = run_cli(["score", "--train", raw_dir / "train.csv", "--valid", raw_dir / "valid.csv", "--test",
                            raw_dir / "test.csv", "--label", "y", "--method", "if", "--no-standardize", "--C", "0.01",
                            "--no-curve", "--out", out] + (["--topk", "5"] if topk else []), capsys)
    assert code == 0, err
    assert (out / "attribution").exists() == topk
    code, text, err = run_cli(["explain", "--scores", out, "--test-row", 2, "--test-row", 7, "--k", 3], capsys)
    assert code == 0, err
    train_df, test_df = pd.read_csv(raw_dir / "train.csv"), pd.read_csv(raw_dir / "test.csv")
    train = inf.from_file(raw_dir / "train.csv", "y", name="train")
    test = inf.from_file(raw_dir / "test.csv", "y", name="test")
    model = inf.models.SklearnLogistic(C=0.01).fit(train)
    dense = inf.attribute(model, train, test, method="if")  # the independent answer: every test column
    blocks = text.split("test row ")[1:]
    assert [b.split(" ")[0] for b in blocks] == ["2", "7"]
    for j, block in zip((2, 7), blocks):
        assert f"label {test_df.y[j]}): a={test_df.a[j]}, b={test_df.b[j]}, c={test_df.c[j]}" in block
        for kind, order in (("helpful", np.argsort(-dense[:, j])), ("harmful", np.argsort(dense[:, j]))):
            lines = _lines(block, kind)
            assert len(lines) == 3
            for rank, (line, i) in enumerate(zip(lines, order[:3]), 1):
                assert line.startswith(f"  {rank:3d}  {i}  ")
                assert f"label {train_df.y[i]}  a={train_df.a[i]}, b={train_df.b[i]}, c={train_df.c[i]}" in line
                assert float(line.split()[2]) == pytest.approx(dense[i, j], rel=1e-4)


def test_explain_shows_text_rows(tmp_path, capsys):
    rng = np.random.default_rng(1)
    words = np.array(["good film", "bad plot", "fine acting", "dull story"])
    for name, n in (("train", 40), ("test", 6)):
        df = pd.DataFrame({"x1": rng.normal(size=n), "x2": rng.normal(size=n), "review": rng.choice(words, n)})
        df["y"] = (df.x1 > 0).astype(int)
        df.to_csv(tmp_path / f"{name}.csv", index=False)
    out = tmp_path / "run"
    code, _, err = run_cli(["score", "--train", tmp_path / "train.csv", "--test", tmp_path / "test.csv", "--label", "y",
                            "--text", "review", "--method", "self-if", "--no-curve", "--out", out], capsys)
    assert code == 0, err
    code, text, err = run_cli(["explain", "--scores", out, "--test-row", 0, "--k", 2], capsys)
    assert code == 0, err
    assert "no pairwise form" in err  # self-if: the gradient inner product stands in, as with --topk
    test_df = pd.read_csv(tmp_path / "test.csv")
    assert f"label {test_df.y[0]}): '{test_df.review[0]}'" in text
    assert all(any(f"'{w}'" in ln for w in words) for ln in _lines(text, "helpful") + _lines(text, "harmful"))


# ---- item 3 on the command line: one line, exit 2, nothing written -----------------------------------------
def test_diverged_training_duplicate_header_and_nan_scores_are_one_line(raw_dir, tmp_path, capsys):
    code, _, err = run_cli(["score", "--train", raw_dir / "train.csv", "--label", "y", "--model", "mlp", "--lr", "1e8",
                            "--method", "self-if", "--out", tmp_path / "a"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "training diverged" in err and "--lr" in err
    assert not (tmp_path / "a").exists()
    (tmp_path / "dup.csv").write_text(pd.read_csv(raw_dir / "train.csv").to_csv(index=False)
                                      .replace("a,b,c,y", "a,b,a,y", 1))
    code, _, err = run_cli(["score", "--train", tmp_path / "dup.csv", "--label", "y", "--method", "self-if",
                            "--out", tmp_path / "b"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "duplicate column name(s) ['a']" in err
    out = tmp_path / "run"
    assert run_cli(["score", "--train", raw_dir / "train.csv", "--label", "y", "--method", "self-if", "--no-curve",
                    "--out", out], capsys)[0] == 0
    s = inf.Scores.load(out / "scores.parquet")
    inf.Scores(np.full(len(s), np.nan), s.method, s.ids, settings=s.settings).save(out / "scores.parquet")
    code, _, err = run_cli(["trim", "--scores", out, "--budget", "5", "--out", tmp_path / "t.csv"], capsys)
    assert code == 2 and "80 NaN value(s) of 80" in err and not (tmp_path / "t.csv").exists()


def test_select_encodes_the_pool_like_the_training_table(cat_dir, tmp_path, capsys):
    pool = pd.read_csv(cat_dir / "valid.csv").drop(columns="y")
    pool.to_csv(tmp_path / "pool.csv", index=False)
    code, _, err = run_cli(["select", "--train", cat_dir / "train.csv", "--pool", tmp_path / "pool.csv", "--label", "y",
                            "--budget", 3, "--out", tmp_path / "chosen.csv"], capsys)
    assert code == 0, err
    chosen = pd.read_csv(tmp_path / "chosen.csv")
    assert len(chosen) == 3 and set(chosen.color) <= set(pool.color)


def test_badly_scaled_logistic_without_standardize_gets_a_one_line_note(tmp_path, capsys):
    from sklearn.datasets import load_breast_cancer

    X, y = load_breast_cancer(return_X_y=True)
    df = pd.DataFrame(X[:120], columns=[f"f{j}" for j in range(30)])
    df["y"] = y[:120]
    df.to_csv(tmp_path / "raw.csv", index=False)
    args = ["score", "--train", tmp_path / "raw.csv", "--label", "y", "--method", "self-if", "--no-curve"]
    code, _, err = run_cli(args + ["--no-standardize", "--out", tmp_path / "a"], capsys)
    assert code == 0, err
    notes = [ln for ln in err.splitlines() if ln.startswith("note: SklearnLogistic: lbfgs needed")]
    assert len(notes) == 1 and "pass --standardize" in notes[0] and "UserWarning" not in err
    code, _, err = run_cli(args + ["--out", tmp_path / "b"], capsys)  # the default: standardised, no note
    assert code == 0 and "lbfgs needed" not in err
