"""The inputs of a run: its training/validation/test tables read into `Split`s (`Data`), the unlabeled
pool of `influent select`, and the rows an action writes back."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
import numpy as np
import pandas as pd
from ..data import Split, from_frame, read_table
from ..data.encode import OneHot
from ..data.validate import InputError, check_columns, check_feature_shape
from ..data.scores import jsonable
from .config import RunConfig, file_sha256


# ---- data ----------------------------------------------------------------------------------------------
@dataclass
class Data:
    """The splits of a run, what is kept aside for the report, and where each split came from.

    Attributes
    ----------
    train, valid, test : `Split`s (valid/test may be None)
    text : (n_train,) raw text of each training row, or None
    clean : (n_train,) known clean label of each training row, or None
    frames : role -> the table as read (pandas) or the NPZ arrays, for writing edited copies
    files : role -> {"path", "sha256", "rows", "fingerprint"}
    image_shape : shape of one sample as an image, or None
    raw_X : the training features as the user gave them when the model sees transformed ones
        (``--standardize``), so that the report shows the data, not z-scores; None otherwise
    encoding : the one-hot encoding of the training table's text feature columns (`OneHot`), or None
    notes : lines for the user about what reading did (columns encoded, unseen levels)
    unseen : role -> text column -> rows of valid/test whose level train lacks (encoded as all zeros)
    """

    train: Split
    valid: Split | None = None
    test: Split | None = None
    text: np.ndarray | None = None
    clean: np.ndarray | None = None
    frames: dict[str, Any] = field(default_factory=dict)
    files: dict[str, dict[str, Any]] = field(default_factory=dict)
    image_shape: tuple[int, ...] | None = None
    raw_X: np.ndarray | None = None
    encoding: OneHot | None = None
    notes: list[str] = field(default_factory=list)
    unseen: dict[str, dict[str, int]] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        return jsonable(self.files)


def read_split(path: str, role: str, cfg: RunConfig, like: Split | None, encoding: OneHot | None = None,
               progress: Any = None) -> tuple[Split, dict[str, Any], Any, OneHot | None]:
    """One split from a file; `like` (the training split) fixes the features of valid/test, and `encoding`
    (the training table's one-hot encoding of its text columns) is applied to them. Returns the split, the
    columns kept aside (text, clean label), the table as read, and the encoding (fitted here for train:
    every non-numeric feature column is one-hot encoded; None when there is none). `progress(done, total)`
    follows the embedding of texts (``--encoder``)."""
    p = Path(path)
    aside = [c for c in (cfg.text_column, cfg.clean_label_column) if c]
    extras: dict[str, Any] = {}
    if cfg.encoder and (p.suffix.lower() == ".npz" or not cfg.text_column):
        raise InputError("--encoder embeds the column named by --text-column of a CSV or Parquet file; pass both")
    table = read_table(p, role)
    if isinstance(table, dict):
        arrays = table
        wanted = ["X", cfg.label] + [c for c in (cfg.group, cfg.id_column) if c] + (aside if like is None else [])
        check_columns(list(arrays), wanted, role)
        split = Split(arrays["X"], arrays[cfg.label], arrays.get(cfg.group) if cfg.group else None,
                      arrays.get(cfg.id_column) if cfg.id_column else None, role)
        extras = {c: arrays[c] for c in aside if c in arrays}
        frame: Any = arrays
    else:
        df = table
        wanted = [cfg.label] + [c for c in (cfg.group, cfg.id_column) if c]
        if like is None:
            wanted += aside + list(cfg.drop)
        check_columns(list(df.columns), wanted, role)
        reserved = {cfg.label, cfg.group, cfg.id_column, *aside, *cfg.drop}
        features = like.columns if like is not None and like.columns is not None else \
            [c for c in df.columns if c not in reserved]
        if cfg.encoder and cfg.model == "lora":  # fine-tuning: the token ids of the text column, train's length
            from ..data.text import tokenized_frame

            split = tokenized_frame(df, cfg.text_column, cfg.label, cfg.group, cfg.id_column, cfg.encoder,
                                    int(cfg.model_options.get("max_length", 128)),
                                    None if like is None else like.X.shape[1], role)
        elif cfg.encoder:  # text data: the sentence embeddings of the text column are the features
            from ..data.text import embedded_frame

            split = embedded_frame(df, cfg.text_column, cfg.label, cfg.group, cfg.id_column, cfg.encoder,
                                   cfg.embed_cache, role, progress)
        else:
            if like is None and len(df):
                encoding = OneHot.fit(df, features, role)
                encoding = encoding if encoding.levels else None
            elif encoding is not None:
                check_columns(list(df.columns), encoding.features, role)
            if encoding is not None:
                df_x, features = encoding.transform(df, role), encoding.columns
            else:
                df_x = df
            split = from_frame(df_x, cfg.label, cfg.group, cfg.id_column, features, role)
        extras = {c: df[c].to_numpy() for c in aside if c in df.columns}
        frame = df
    if like is not None:
        check_feature_shape(split.X, like.X, role)
    return split, extras, frame, encoding


def check_valid_given(cfg: RunConfig, valid: Any) -> None:
    """A one-line `InputError` naming --valid when the run's method measures a target (its registry entry's
    `needs_target`) and no validation data is given; methods without a target (self-influence, outlier and
    label-error detectors) run without it."""
    from ..methods import METHODS

    METHODS.check(cfg.method)
    if not valid and METHODS[cfg.method].needs_target:
        raise InputError(f"method {cfg.method!r} measures its target on validation data: pass --valid FILE")


def load_data(cfg: RunConfig, progress: Any = None) -> Data:
    """Read the files named by `cfg` into `Split`s (validated: one-line `InputError` on bad input);
    `progress(done, total)` follows the embedding of each split's texts (``--encoder``)."""
    if not cfg.train:
        raise InputError("no training data: pass --train FILE")
    check_valid_given(cfg, cfg.valid)
    train, extras, frame, encoding = read_split(cfg.train, "train", cfg, None, progress=progress)
    data = Data(train, frames={"train": frame}, encoding=encoding)
    if encoding is not None:
        data.notes.append(encoding.note())
    data.text = extras.get(cfg.text_column) if cfg.text_column else None
    data.clean = extras.get(cfg.clean_label_column) if cfg.clean_label_column else None
    if data.clean is not None:
        from ..data.validate import check_labels

        data.clean = check_labels(data.clean, len(train), f"train: clean label column {cfg.clean_label_column!r}")
    for role in ("valid", "test"):
        path = getattr(cfg, role)
        if path:
            split, _, frame, _ = read_split(path, role, cfg, train, encoding, progress=progress)
            if encoding is not None and encoding.unseen:
                data.notes.append(encoding.unseen_note(role))
                data.unseen[role] = dict(encoding.unseen)
            setattr(data, role, split)
            data.frames[role] = frame
    if cfg.standardize:
        data.raw_X = train.X
        mu = train.X.mean(0)
        sd = train.X.std(0)
        sd[sd == 0] = 1.0
        for role in ("train", "valid", "test"):
            s = getattr(data, role)
            if s is not None:
                setattr(data, role, Split(((s.X - mu) / sd).astype(s.X.dtype), s.y, s.group, s.ids, s.name, s.columns))
    if cfg.image_shape:
        shape = tuple(int(v) for v in cfg.image_shape)
        if int(np.prod(shape)) != train.n_features:
            raise InputError(f"image shape {list(shape)} holds {int(np.prod(shape))} values, the data has "
                             f"{train.n_features} features")
        data.image_shape = shape
    elif train.X.ndim >= 3:
        data.image_shape = tuple(train.X.shape[1:])
    for role in ("train", "valid", "test"):
        s = getattr(data, role)
        if s is not None:
            path = getattr(cfg, role)
            data.files[role] = {"path": str(Path(path).resolve()), "sha256": file_sha256(path), "rows": len(s),
                                "features": s.n_features, "fingerprint": s.fingerprint()}
            if role == "train" and encoding is not None:
                data.files[role]["one_hot"] = encoding.to_dict()
            if role in data.unseen:
                data.files[role]["unseen_levels"] = data.unseen[role]
    return data


def frame_rows(data: Data, positions: np.ndarray) -> Any:
    """The original training rows at `positions` (a DataFrame, or a dict of NPZ arrays)."""
    frame = data.frames["train"]
    if isinstance(frame, pd.DataFrame):
        return frame.iloc[positions].reset_index(drop=True)
    n = len(data.train)
    return {k: (v[positions] if v.ndim >= 1 and v.shape[0] == n else v) for k, v in frame.items()}


def read_pool(cfg: RunConfig, pool: str, id_column: str | None = None) -> tuple[Split, Split, Any]:
    """The labelled training split of `cfg` and an unlabelled pool with the training features (other pool
    columns, a label included, are ignored; `id_column` names the pool's ids). Returns (train, pool, the
    pool as read)."""
    train, _, _, encoding = read_split(cfg.train, "train", cfg, None)
    p = Path(pool)
    table = read_table(p, "pool")
    if isinstance(table, dict):
        arrays = table
        check_columns(list(arrays), ["X"], "pool")
        X = arrays["X"]
        if id_column:
            check_columns(list(arrays), [id_column], "pool")
        split = Split(X, np.zeros(len(X), dtype=np.int64), None, arrays[id_column] if id_column else None, "pool")
        frame: Any = arrays
    else:
        df = table
        features = train.columns or []
        given = encoding.features if encoding is not None else list(features)
        check_columns(list(df.columns), given + ([id_column] if id_column else []), "pool")
        dummy = "__influent_no_label__"
        df_x = encoding.transform(df, "pool") if encoding is not None else df  # the training table's one-hot columns
        split = from_frame(df_x.assign(**{dummy: 0}), dummy, None, id_column, features, "pool")
        frame = df
    check_feature_shape(split.X, train.X, "pool")
    return train, split, frame
