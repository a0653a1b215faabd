"""The table to score: read whole, every column kept, and for each row the reason it cannot be scored."""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from mlcore.data.hashing import file_md5
from mlcore.errors import UserError, reading

FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet"}
COMPRESSION = {".gz": "gzip", ".bz2": "bz2"}
# Columns the output adds; an input column of the same name would be overwritten.
ADDED = ("label", "reason")
SCORE_PREFIX = "score_"


@dataclass(frozen=True)
class Rows:
    """The input as read (`table`, all its columns in order), its text column, and per row
    `reasons`: None for a row to score, else why it is not scored."""

    path: Path
    table: pd.DataFrame
    text_column: str
    reasons: pd.Series
    digest: str  # md5 of the file: a resumed run checks it is scoring the same input
    base: Path | None = None  # images: the folder the paths are relative to (mlcore/scoring/images.py)

    @property
    def good(self) -> pd.Series:
        """The texts (or image paths) to score, indexed by row position."""
        return self.table[self.text_column][self.reasons.isna().to_numpy()].astype(str)


def bad_rows(data: Rows, limit: int) -> list[str]:
    """'row 2 not scored: empty text' for the first `limit` rows not scored, counting rows from 1
    in the input's order, then how many more there are: one line each for a job's log."""
    bad = data.reasons.dropna()
    lines = [f"row {position + 1} not scored: {why}" for position, why in bad.head(limit).items()]
    if len(bad) > limit:
        lines.append(f"... and {len(bad) - limit} more rows not scored: the output's `reason` column says why")
    return lines


def file_format(path: Path) -> tuple[str, str | None]:
    """(format, compression) from the name: data.csv, data.jsonl.gz, data.parquet ..."""
    suffixes = [s.lower() for s in path.suffixes]
    compression = COMPRESSION.get(suffixes[-1]) if suffixes else None
    ext = (suffixes[:-1] if compression else suffixes)[-1:] or [""]
    if ext[0] not in FORMATS or compression and FORMATS[ext[0]] == "parquet":
        raise UserError(f"{path}: cannot tell the file format from its name. Name it .csv, .tsv, .jsonl or "
                        f".parquet (.csv, .tsv and .jsonl may end in .gz or .bz2).")
    return FORMATS[ext[0]], compression


def read_table(path: Path) -> pd.DataFrame:
    if path.is_dir():
        raise UserError(f"{path}: is a directory, not a data file. Pass --input one .csv, .tsv, .jsonl or "
                        f".parquet file.")
    if not path.is_file():
        raise UserError(f"{path}: input file not found. Check the --input path (relative paths start in "
                        f"{Path.cwd()}).")
    fmt, compression = file_format(path)
    fix = ("Check the file: UTF-8 text for csv/tsv/jsonl, one JSON object per line for jsonl, a complete "
           "copy, and the compression its name says.")
    with reading(path, fmt, fix):
        if fmt in ("csv", "tsv"):
            # Every column as the text it is: ids keep their leading zeros, "NA" stays "NA".
            return pd.read_csv(path, sep="," if fmt == "csv" else "\t", dtype=str, keep_default_na=False,
                               compression=compression)
        if fmt == "jsonl":
            return pd.read_json(path, lines=True, dtype=False, convert_dates=False, compression=compression)
        return pd.read_parquet(path)


def reason(value) -> str | None:
    """Why `value` cannot be scored as text, or None when it can."""
    if isinstance(value, np.generic):  # numpy's scalars (Parquet, JSONL columns) as Python's
        value = value.item()
    if isinstance(value, str):
        if not value:
            return "empty text"
        return "whitespace-only text" if not value.strip() else None
    if isinstance(value, (dict, list, tuple, set, np.ndarray)):
        return f"not text: a nested {type(value).__name__}"
    if value is None or value is pd.NA or value is pd.NaT or isinstance(value, float) and math.isnan(value):
        return "missing text (null)"
    if isinstance(value, (bool, numbers.Number)):
        return f"not text: the {type(value).__name__} {value!r}"
    return f"not text: a {type(value).__name__}"


def check_columns(table: pd.DataFrame, path: Path, text_column: str) -> tuple[pd.DataFrame, dict]:
    """The table, its input columns that the predictions would overwrite (a labelled file's own
    `label`, say) kept under `input_<name>`: the output's columns stay the same for every input."""
    if text_column not in table.columns:
        raise UserError(f"{path}: has no column {text_column!r} to score. Its columns are "
                        f"{[str(c) for c in table.columns]}; pass --text-column with the one that holds the text.")
    renames = {}
    for column in table.columns:
        if column in ADDED or str(column).startswith(SCORE_PREFIX):
            new = f"input_{column}"
            while new in table.columns or new in renames.values():
                new = f"input_{new}"
            renames[column] = new
    if renames:
        print(f"{path}: the predictions add {list(ADDED)} and '{SCORE_PREFIX}<class>' columns; the input's own "
              f"{', '.join(f'{k!r} is kept as {v!r}' for k, v in renames.items())}")
    return table.rename(columns=renames), renames


def read_rows(path: str | Path, text_column: str = "text") -> Rows:
    path = Path(path)
    table = read_table(path).reset_index(drop=True)
    table, renames = check_columns(table, path, text_column)
    text_column = renames.get(text_column, text_column)  # a text column named like an output is scored as kept
    reasons = table[text_column].map(reason, na_action=None).astype(object)
    return Rows(path, table, text_column, reasons.where(reasons.notna(), None), file_md5(path))
