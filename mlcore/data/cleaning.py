"""Cleaning, de-duplication and grouped stratified splitting of labelled text."""
from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold, train_test_split

from mlcore.config import PrepareConfig
from mlcore.data import predefined
from mlcore.errors import UserError

_WS = re.compile(r"\s+")


def _missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value))


def _label(value: object) -> str:
    """Labels as strings; an integer column with gaps arrives as floats (1.0), kept as "1"."""
    if _missing(value):
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def normalise_text(text: object) -> str:
    """Whitespace runs become one space; missing values (None/NaN from JSONL or Parquet) become ""."""
    return "" if _missing(text) else _WS.sub(" ", str(text)).strip()


@dataclass
class CleanResult:
    labelled: pd.DataFrame  # columns: text, label, group (+ split, when the user's splits are predefined)
    unlabelled: pd.DataFrame  # columns: text
    stats: dict = field(default_factory=dict)


def clean(
    df: pd.DataFrame,
    text_col: str,
    label_col: str,
    group_col: str | None,
    unlabelled_labels: list[str],
    split_col: str | None = None,
) -> CleanResult:
    """Normalise whitespace, drop empties, drop exact duplicates and conflicting labels.
    With `split_col` (split names), test rows are kept as given (duplicates, disagreeing
    labels and all), their texts leave train and val, and a val copy wins over a train one."""
    out = pd.DataFrame(
        {
            "text": df[text_col].map(normalise_text),
            "label": df[label_col].map(_label),
            "group": df[group_col].astype(str) if group_col else pd.Series(range(len(df)), index=df.index).astype(str),
        }
    )
    if split_col:
        out[predefined.SPLIT_COLUMN] = df[split_col]
    stats: dict = {"rows_in": int(len(out))}
    empty = out["text"] == ""
    stats["empty_text_dropped"] = int(empty.sum())
    out = out[~empty]

    is_unlabelled = out["label"].isin(unlabelled_labels) | (out["label"] == "")
    if split_col:  # unlabelled text of the val and test splits never reaches pretraining
        held_out = is_unlabelled & (out[predefined.SPLIT_COLUMN] != "train")
        stats["unlabelled_held_out_rows_dropped"] = int(held_out.sum())
        out, is_unlabelled = out[~held_out], is_unlabelled[~held_out]
    unlabelled = out.loc[is_unlabelled, ["text"]].drop_duplicates("text").reset_index(drop=True)
    labelled = out[~is_unlabelled]

    test = labelled.iloc[:0]
    if split_col:
        # A predefined test split is scored as given, so published figures stay comparable:
        # its duplicates and disagreeing labels stay, and its texts leave train and val instead.
        stats["texts_in_several_splits"] = predefined.texts_in_several_splits(labelled)
        labelled, test = predefined.apart_from_test(labelled)
        in_test = labelled["text"].isin(set(test["text"]))
        stats["test_rows_kept_as_given"] = int(len(test))
        stats["train_val_rows_dropped_as_test_texts"] = int(in_test.sum())
        labelled = labelled[~in_test]
    n_labels = labelled.groupby("text")["label"].nunique()
    conflicting = n_labels[n_labels > 1].index
    stats["conflicting_label_texts_dropped"] = int(len(conflicting))
    stats["conflicting_examples"] = [str(t)[:120] for t in list(conflicting)[:5]]
    labelled = labelled[~labelled["text"].isin(conflicting)]
    if split_col:
        labelled = predefined.keep_first_by_split(labelled)
    before = len(labelled)
    labelled = labelled.drop_duplicates("text")
    stats["duplicates_dropped"] = int(before - len(labelled))
    labelled = pd.concat([labelled, test]).sort_index().reset_index(drop=True)
    stats["labelled_rows"] = int(len(labelled))
    stats["unlabelled_rows"] = int(len(unlabelled))
    return CleanResult(labelled, unlabelled, stats)


def _holdout(df: pd.DataFrame, fraction: float, seed: int, grouped: bool) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split off about `fraction` of df, stratified by label, whole groups only when grouped."""
    if not grouped:
        rest, held = train_test_split(df, test_size=fraction, stratify=df["label"], random_state=seed)
        return rest, held
    n_splits = max(2, round(1 / fraction))
    splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    rest_idx, held_idx = next(splitter.split(df, df["label"], groups=df["group"]))
    return df.iloc[rest_idx], df.iloc[held_idx]


def split(
    df: pd.DataFrame, val_fraction: float, test_fraction: float, seed: int, grouped: bool
) -> dict[str, pd.DataFrame]:
    if df.empty:
        raise UserError("no labelled rows with text are left after cleaning (empty texts are dropped, and "
                        "rows labelled with prepare.unlabelled_labels are pretraining text). Check "
                        "prepare.text_column and prepare.label_column in params.yaml.")
    counts = df["label"].value_counts()
    if len(counts) < 2:
        raise UserError(
            f"only {len(counts)} label value(s) found ({list(counts.index)}); a classifier needs at least 2. "
            f"Check prepare.label_column and prepare.unlabelled_labels in params.yaml."
        )
    rare = counts[counts < 3]
    if len(rare):
        raise UserError(
            f"label(s) {list(rare.index)} have fewer than 3 examples, too few to appear in train, val and "
            f"test. Add examples or remove those rows."
        )
    try:
        rest, test = _holdout(df, test_fraction, seed, grouped)
        train, val = _holdout(rest, val_fraction / (1 - test_fraction), seed + 1, grouped)
    except ValueError as err:  # scikit-learn: fewer rows or groups than the fractions need
        raise _too_small(df, val_fraction, test_fraction, grouped, " ".join(str(err).split())) from None
    splits = {name: part.reset_index(drop=True) for name, part in (("train", train), ("val", val), ("test", test))}
    empty = [name for name, part in splits.items() if part.empty]
    if empty:
        raise _too_small(df, val_fraction, test_fraction, grouped, f"{' and '.join(empty)} would be empty")
    return splits


def _too_small(df: pd.DataFrame, val_fraction: float, test_fraction: float, grouped: bool, why: str) -> UserError:
    groups = f" in {df['group'].nunique()} groups (prepare.group_column)" if grouped else ""
    return UserError(
        f"{len(df)} labelled rows{groups} are too few to split into train, val and test with "
        f"val_fraction {val_fraction} and test_fraction {test_fraction} ({why}). Add rows, raise the "
        f"fractions{', or set prepare.group_column: null' if grouped else ''}; a useful classifier needs "
        f"hundreds of rows per label.")


def split_for(labelled: pd.DataFrame, p: PrepareConfig) -> dict[str, pd.DataFrame]:
    """train / val / test: the user's predefined splits (prepare.split_column, prepare.test_input),
    or a seeded, stratified (and grouped) random split by val_fraction and test_fraction."""
    grouped = p.group_column is not None
    if p.predefined:
        return predefined.split(labelled, p.val_fraction, p.seed,
                                lambda df, fraction, seed: _holdout(df, fraction, seed, grouped), p.input)
    try:
        return split(labelled, p.val_fraction, p.test_fraction, p.seed, grouped=grouped)
    except UserError as err:  # name the file and column the problem is in
        raise UserError(f"{p.input} (label column {p.label_column!r}): {err}") from None


def prepare_splits(p: PrepareConfig) -> tuple[CleanResult, dict[str, pd.DataFrame]]:
    """The `prepare` stage's work, from the input file to train / val / test: what it computes,
    and what the flow's pre-flight check runs so that bad data fails before any stage starts."""
    from mlcore.data.tables import read_input

    cleaned = clean(read_input(p), p.text_column, p.label_column, p.group_column, p.unlabelled_labels,
                    split_col=predefined.RAW_COLUMN if p.predefined else None)
    return cleaned, split_for(cleaned.labelled, p)


def label_map(labels: pd.Series) -> dict[str, int]:
    return {label: i for i, label in enumerate(sorted(labels.unique()))}


def report(splits: dict[str, pd.DataFrame], unlabelled: pd.DataFrame, stats: dict) -> dict:
    per_split = {}
    for name, part in splits.items():
        words = part["text"].str.split().str.len()
        per_split[name] = {
            "rows": int(len(part)),
            "groups": int(part["group"].nunique()),
            "per_class": {k: int(v) for k, v in part["label"].value_counts().sort_index().items()},
            "words": {
                "mean": round(float(words.mean()), 2),
                "median": float(words.median()),
                "p95": float(words.quantile(0.95)),
                "max": int(words.max()),
            },
        }
    groups = [set(p["group"]) for p in splits.values()]
    leaked = len(groups[0] & groups[1]) + len(groups[0] & groups[2]) + len(groups[1] & groups[2])
    return {"cleaning": stats, "splits": per_split, "unlabelled_rows": int(len(unlabelled)),
            "groups_shared_across_splits": leaked}


def summary(splits: dict[str, pd.DataFrame], cleaned: CleanResult) -> dict:
    """Row counts per split and what cleaning dropped: the stage's metrics."""
    stats = cleaned.stats
    return {**{f"{name}_rows": len(part) for name, part in splits.items()}, "unlabelled_rows": len(cleaned.unlabelled),
            **{k: stats[k] for k in ("duplicates_dropped", "empty_text_dropped", "conflicting_label_texts_dropped")}}
