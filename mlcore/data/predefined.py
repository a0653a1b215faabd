"""Splits the user fixed: a column of split names (prepare.split_column) and/or a separate
test file (prepare.test_input). A missing val split is carved from train; test texts never
stay in train or val."""
from __future__ import annotations

import pandas as pd

from mlcore.errors import UserError

RAW_COLUMN = "__split__"  # the column read_input adds to the raw table when splits are predefined
SPLIT_COLUMN = "split"  # the cleaned table's column of split names (train, val, test)
NAMES = {"train": "train", "val": "val", "valid": "val", "validation": "val", "dev": "val", "test": "test"}
# A text in two splits is kept in the first of these. Test rows are never dropped: a test text
# leaves train and val (cleaning.clean), and the test split is scored as given.
PRIORITY = {"test": 0, "val": 1, "train": 2}


def split_names(values: pd.Series, source: str, column: str) -> pd.Series:
    """Each row's split, train, val or test, from a column of names (case and spaces ignored)."""
    names = values.map(lambda v: "" if v is None or v != v else str(v).strip().lower())
    mapped = names.map(NAMES)
    unknown = sorted(set(names[mapped.isna()]))
    if unknown:
        rows = [int(i) + 2 for i in names.index[mapped.isna()][:3]]  # + header, 1-based
        raise UserError(
            f"{source}: column {column!r} (prepare.split_column) has values {unknown[:5]} (first at rows {rows}), "
            f"which are not split names. Use train, val (or validation, dev) or test on every row, or set "
            f"prepare.split_column: null to split by prepare.val_fraction and test_fraction.")
    return mapped


def apart_from_test(labelled: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train and val rows, test rows)."""
    is_test = labelled[SPLIT_COLUMN] == "test"
    return labelled[~is_test], labelled[is_test]


def keep_first_by_split(labelled: pd.DataFrame) -> pd.DataFrame:
    """The row order in which de-duplication keeps val copies over train ones (test rows are
    set apart before, by `apart_from_test`)."""
    return labelled.sort_values(SPLIT_COLUMN, key=lambda s: s.map(PRIORITY), kind="stable")


def texts_in_several_splits(labelled: pd.DataFrame) -> int:
    """Texts that the user's splits name more than once (kept once, in the test > val > train order)."""
    return int((labelled.groupby("text")[SPLIT_COLUMN].nunique() > 1).sum())


def split(labelled: pd.DataFrame, val_fraction: float, seed: int, holdout, source: str) -> dict[str, pd.DataFrame]:
    """train / val / test as the split column says; val carved from train (`holdout`, stratified
    and grouped as the random split is) when no row names it."""
    parts = {name: labelled[labelled[SPLIT_COLUMN] == name].drop(columns=SPLIT_COLUMN) for name in ("train", "val",
                                                                                                   "test")}
    for name in ("train", "test"):
        if parts[name].empty:
            raise UserError(f"{source}: no {name} rows after cleaning. Name some rows {name} in "
                            f"prepare.split_column, or give prepare.test_input for the test rows.")
    if parts["train"]["label"].nunique() < 2:
        raise UserError(f"{source}: the train split has {parts['train']['label'].nunique()} label value(s); a "
                        f"classifier needs at least 2. Check prepare.label_column and prepare.split_column.")
    unseen = sorted(set(parts["test"]["label"]) - set(parts["train"]["label"]))
    if unseen:
        raise UserError(f"{source}: label(s) {unseen[:5]} occur in the test split but never in train, so the model "
                        f"cannot predict them. Add training rows with those labels, or drop them from the test rows.")
    if parts["val"].empty:
        try:
            parts["train"], parts["val"] = holdout(parts["train"], val_fraction, seed + 1)
        except ValueError as err:  # a class too small to stratify
            raise UserError(f"{source}: cannot carve a validation split from train ({err}). Add rows to the rare "
                            f"labels, or name some rows val in prepare.split_column.") from None
    return {name: part.reset_index(drop=True) for name, part in parts.items()}
