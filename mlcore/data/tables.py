"""Reading the user's labelled data: CSV, TSV, JSONL or Parquet (optionally compressed)."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from mlcore.config import PrepareConfig
from mlcore.data import predefined
from mlcore.errors import UserError

_COMPRESSION_SUFFIXES = {".bz2", ".gz", ".xz", ".zip", ".zst"}


def detect_format(path: Path) -> str:
    suffixes = [s.lower() for s in path.suffixes if s.lower() not in _COMPRESSION_SUFFIXES]
    ext = suffixes[-1] if suffixes else ""
    formats = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet"}
    if ext not in formats:
        raise UserError(
            f"{path}: cannot tell the file format from its extension {ext or '(none)'}. "
            f"Use .csv, .tsv, .jsonl or .parquet (optionally .bz2/.gz), or set prepare.format in params.yaml."
        )
    return formats[ext]


def read_table(path: str | Path, fmt: str = "auto") -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise UserError(
            f"{path}: data file not found. For the sample data run `make data`; for your own data "
            f"put the file there or point prepare.input in params.yaml at it."
        )
    fmt = detect_format(path) if fmt == "auto" else fmt
    try:
        if fmt == "csv":
            return pd.read_csv(path, dtype=str, keep_default_na=False)
        if fmt == "tsv":
            return pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
        if fmt == "jsonl":
            return pd.read_json(path, lines=True, dtype=False)
        return pd.read_parquet(path)
    except (ValueError, OSError, pd.errors.ParserError) as err:
        raise UserError(f"{path}: could not be read as {fmt}: {err}. Check the file or prepare.format.") from None


def require_columns(df: pd.DataFrame, path: str | Path, columns: dict[str, str | None]) -> None:
    """columns maps the params.yaml key to the column name it names."""
    for key, col in columns.items():
        if col is not None and col not in df.columns:
            raise UserError(
                f"{path}: column {col!r} (params.yaml {key}) is missing. The file has columns "
                f"{list(df.columns)}. Set {key} to one of them."
            )


def read_input(p: PrepareConfig) -> pd.DataFrame:
    """The labelled input of `prepare`, with its configured columns checked. With predefined
    splits, the rows of `prepare.test_input` are appended and every row's split is in the
    column predefined.RAW_COLUMN."""
    columns = {"prepare.text_column": p.text_column, "prepare.label_column": p.label_column,
               "prepare.group_column": p.group_column}
    df = read_table(p.input, p.format)
    require_columns(df, p.input, columns | {"prepare.split_column": p.split_column})
    if not p.predefined:
        return df
    names = predefined.split_names(df[p.split_column], p.input, p.split_column) if p.split_column else "train"
    df = df.assign(**{predefined.RAW_COLUMN: names})
    if p.test_input is None:
        return df
    if (df[predefined.RAW_COLUMN] == "test").any():
        raise UserError(f"{p.input}: column {p.split_column!r} names test rows, and prepare.test_input "
                        f"({p.test_input}) gives test rows too. Keep one: set prepare.test_input: null, or "
                        f"name only train and val rows in the split column.")
    test = read_table(p.test_input, p.format)
    require_columns(test, p.test_input, columns)
    return pd.concat([df, test.assign(**{predefined.RAW_COLUMN: "test"})], ignore_index=True)
