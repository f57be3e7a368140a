"""Streaming attribution: blocks on disk and top-k per test sample, against the dense `attribute` matrix."""

import numpy as np
import pytest
import zarr

import influent as inf
from influent.data.validate import InputError
from influent.api.stream import attribute_stream, explain


@pytest.mark.parametrize("method,opts", [("ip", {}), ("if", {"solver": "exact"})])
def test_blocks_and_topk_equal_the_dense_matrix(iris, tmp_path, method, opts):
    train, valid = iris
    model = inf.models.SklearnLogistic(C=1.0).fit(train)
    dense = inf.attribute(model, train, valid, method=method, **opts)
    top = attribute_stream(model, train, valid, tmp_path / "run", method=method, k=5, block=7, **opts)
    Z = np.asarray(zarr.open_array(str(tmp_path / "run" / "attribution.zarr"), mode="r")[:])
    assert np.allclose(Z, dense, rtol=1e-10, atol=1e-14)
    order = np.argsort(-dense, axis=0)
    assert np.array_equal(top.helpful_index, order[:5].T)
    assert np.allclose(top.helpful_value, np.take_along_axis(dense, order[:5], 0).T)
    low = np.argsort(dense, axis=0)[:5].T
    assert np.array_equal(top.harmful_index, low)
    assert np.all(np.diff(top.helpful_value, axis=1) <= 0) and np.all(np.diff(top.harmful_value, axis=1) >= 0)
    rows = explain(tmp_path / "run", 3)
    assert [r[0] for r in rows["helpful"]] == list(train.ids[order[:5, 3]])
    assert rows["harmful"][0][1] == pytest.approx(dense[:, 3].min())


def test_explain_cli_prints_the_rows_and_rejects_bad_input(iris, tmp_path, capsys):
    from influent.cli import main

    train, valid = iris
    model = inf.models.SklearnLogistic(C=1.0).fit(train)
    attribute_stream(model, train, valid, tmp_path / "run", method="ip", k=3, block=16)
    dense = inf.attribute(model, train, valid, method="ip")
    main(["explain", "--scores", str(tmp_path / "run"), "--test-row", "2"])
    out = capsys.readouterr().out
    best = train.ids[int(np.argmax(dense[:, 2]))]
    assert "most helpful" in out and "most harmful" in out and f"  1  {best}  " in out
    with pytest.raises(SystemExit) as exc:
        main(["explain", "--scores", str(tmp_path / "run"), "--test-row", str(len(valid))])
    assert exc.value.code == 2 and "--test-row must be in" in capsys.readouterr().err
    with pytest.raises(InputError, match="already holds outputs"):
        attribute_stream(model, train, valid, tmp_path / "run", method="ip")
