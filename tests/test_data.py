import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

import influent as inf
from influent.data import InputError, from_file, from_frame


def test_split_from_frame_and_arrow_agree():
    df = pd.DataFrame({"a": [1.0, 2, 3, 4], "b": [0.5, 0.1, 0.2, 0.3], "label": ["x", "y", "x", "y"], "g": [0, 1, 0, 1]})
    s1 = from_frame(df, label="label", group="g")
    s2 = from_frame(pa.Table.from_pandas(df), label="label", group="g")
    assert s1.X.shape == (4, 2) and s1.columns == ["a", "b"]
    np.testing.assert_array_equal(s1.X, s2.X)
    np.testing.assert_array_equal(s1.group, [0, 1, 0, 1])
    assert s1.fingerprint() == s2.fingerprint()


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_from_file_tables(tmp_path, suffix):
    df = pd.DataFrame({"f1": np.arange(5.0), "f2": np.ones(5), "y": [0, 1, 0, 1, 1]})
    p = tmp_path / f"d{suffix}"
    df.to_csv(p, index=False) if suffix == ".csv" else df.to_parquet(p)
    s = from_file(p, label="y")
    assert len(s) == 5 and s.n_features == 2
    np.testing.assert_array_equal(s.y, [0, 1, 0, 1, 1])


def test_from_file_npz(tmp_path):
    p = tmp_path / "d.npz"
    np.savez(p, X=np.random.rand(6, 3), y=np.array([0, 1, 2, 0, 1, 2]))
    s = from_file(p, label="y")
    assert s.X.shape == (6, 3)


def test_one_table_reader_for_every_format_and_one_line_errors(tmp_path):
    """read_table returns what pandas/numpy wrote (a frame; NPZ: its arrays) and fails in one line."""
    from influent.data.io import read_table

    df = pd.DataFrame({"a": [1.5, 2.0, -3.0], "id": ["u", "v", "w"]})
    df.to_csv(tmp_path / "t.csv", index=False)
    df.to_csv(tmp_path / "t.tsv", index=False, sep="\t")
    df.to_parquet(tmp_path / "t.parquet")
    for suffix in (".csv", ".tsv", ".parquet"):
        pd.testing.assert_frame_equal(read_table(tmp_path / f"t{suffix}"), df)
    np.savez(tmp_path / "t.npz", X=np.eye(3), y=np.arange(3))
    arrays = read_table(tmp_path / "t.npz")
    assert sorted(arrays) == ["X", "y"] and np.array_equal(arrays["X"], np.eye(3))
    (tmp_path / "bad.parquet").write_bytes((tmp_path / "t.parquet").read_bytes()[:40])
    (tmp_path / "bad.npz").write_bytes(b"PK\x03\x04 not a zip")
    (tmp_path / "t.xlsx").write_bytes(b"")
    cases = [(lambda: read_table(tmp_path / "none.csv", "train"), "train: file not found"),
             (lambda: read_table(tmp_path, "train"), "is a directory, expected a CSV, Parquet or NPZ file"),
             (lambda: read_table(tmp_path / "t.xlsx", "train"), "unsupported file type '.xlsx'; use .csv, .parquet or .npz"),
             (lambda: read_table(tmp_path / "t.npz", "scores", kinds=("parquet", "csv")), "use .parquet or .csv"),
             (lambda: read_table(tmp_path / "bad.parquet", "t", advice="run it again"), "cannot read"),
             (lambda: read_table(tmp_path / "bad.npz", "pool"), "pool: cannot read"),
             (lambda: inf.Scores.load(tmp_path / "bad.parquet"), "truncated? run influent score again")]
    for make, message in cases:
        with pytest.raises(InputError) as err:
            make()
        assert message in str(err.value) and "\n" not in str(err.value), str(err.value)
    with pytest.raises(InputError, match="; run it again$"):
        read_table(tmp_path / "bad.parquet", "t", advice="run it again")


@pytest.mark.parametrize("make, message", [
    (lambda: inf.from_arrays(np.array([[1.0, np.nan]]), [0]), "NaN"),
    (lambda: inf.from_arrays(np.zeros((0, 3)), []), "empty"),
    (lambda: inf.from_arrays(np.zeros((3, 2)), [0, 1]), "2 labels for 3 samples"),
    (lambda: inf.from_arrays(np.zeros(3), [0, 1, 0]), "expected shape"),
    (lambda: inf.from_arrays(np.array([["a", "b"]]), [0]), "numeric"),
    (lambda: inf.from_arrays(np.zeros((2, 2)), [0, 1], ids=[1, 1]), "not unique"),
    (lambda: from_frame(pd.DataFrame({"a": [1.0], "y": [0]}), label="z"), "unknown column"),
    (lambda: from_frame(pd.DataFrame({"a": ["u"], "y": [0]}), label="y"), "non-numeric"),
    (lambda: from_frame(pd.DataFrame({"a": [np.nan, 1.0], "y": [0, 1]}), label="y"), "missing values"),
    (lambda: from_file("/nonexistent/file.csv"), "file not found"),
])
def test_bad_input_one_line_errors(make, message):
    with pytest.raises(InputError) as err:
        make()
    assert message in str(err.value) and "\n" not in str(err.value)


def test_subset_keeps_ids():
    s = inf.from_arrays(np.arange(10.0).reshape(5, 2), [0, 1, 0, 1, 0], ids=[10, 11, 12, 13, 14])
    w = s.without([1, 3])
    np.testing.assert_array_equal(w.ids, [10, 12, 14])
    np.testing.assert_array_equal(w.X[:, 0], [0, 4, 8])
