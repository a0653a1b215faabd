"""Reading the user's labelled data: CSV, TSV, JSONL or Parquet (optionally compressed)."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from mlcore.config import PrepareConfig
from mlcore.data import predefined
from mlcore.errors import UserError, reading

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
    if path.is_dir():
        raise UserError(f"{path}: is a directory, not a data file. Point prepare.input (or prepare.test_input) "
                        f"in params.yaml at one .csv, .tsv, .jsonl or .parquet file.")
    if not path.is_file():
        raise UserError(
            f"{path}: data file not found. For the sample data run `make data`; for your own data "
            f"put the file there or point prepare.input in params.yaml at it."
        )
    fmt = detect_format(path) if fmt == "auto" else fmt
    fix = ("Check the file (UTF-8 text for csv/tsv/jsonl; a complete download; the compression its name "
           "says), or set prepare.format in params.yaml if the extension is wrong.")
    with reading(path, fmt, fix):
        if fmt == "csv":
            df = pd.read_csv(path, dtype=str, keep_default_na=False)
        elif fmt == "tsv":
            df = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
        elif fmt == "jsonl":
            df = pd.read_json(path, lines=True, dtype=False)
        else:
            df = pd.read_parquet(path)
    if df.empty:
        raise UserError(f"{path}: has no data rows (columns: {list(df.columns)}). Point prepare.input at the "
                        f"labelled data file.")
    return df


# Keys that may be null, and what null means: the default group_column names the text sample's
# column, so another table (an image table above all) most often wants null there.
NULLABLE = {"prepare.group_column": "no grouping", "prepare.split_column": "a random split"}


def require_columns(df: pd.DataFrame, path: str | Path, columns: dict[str, str | None]) -> None:
    """columns maps the params.yaml key to the column name it names."""
    for key, col in columns.items():
        if col is not None and col not in df.columns:
            other = f", or to null ({NULLABLE[key]})" if key in NULLABLE else ""
            raise UserError(
                f"{path}: column {col!r} (params.yaml {key}) is missing. The file has columns "
                f"{list(df.columns)}. Set {key} to one of them{other}."
            )


def require_text(df: pd.DataFrame, path: str | Path, column: str) -> None:
    """The text column holds text: not nested objects (JSONL, Parquet) and not only numbers
    (an id or score column named by mistake)."""
    values = df[column]
    nested = values.map(lambda v: isinstance(v, (dict, list, tuple)) or hasattr(v, "tolist"))
    if nested.any():
        row = int(nested.to_numpy().argmax())
        raise UserError(f"{path}: data row {row + 1}: column {column!r} (prepare.text_column) holds a "
                        f"{type(values.iloc[row]).__name__}, not text. Point prepare.text_column at the "
                        f"column with the raw text, or flatten the file so that it is a string.")
    present = values[values.map(lambda v: v is not None and str(v).strip() not in ("", "nan"))].astype(str)
    if len(present) and pd.to_numeric(present, errors="coerce").notna().all():
        raise UserError(f"{path}: column {column!r} (prepare.text_column) holds only numbers (e.g. "
                        f"{present.iloc[0]!r}), not text. Point prepare.text_column at the column with the text.")


def read_input(p: PrepareConfig) -> pd.DataFrame:
    """The labelled input of `prepare`, with its configured columns checked. With predefined
    splits, the rows of `prepare.test_input` are appended and every row's split is in the
    column predefined.RAW_COLUMN."""
    columns = {"prepare.text_column": p.text_column, "prepare.label_column": p.label_column,
               "prepare.group_column": p.group_column}
    df = read_table(p.input, p.format)
    require_columns(df, p.input, columns | {"prepare.split_column": p.split_column})
    require_text(df, p.input, p.text_column)
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
    require_text(test, p.test_input, p.text_column)
    return pd.concat([df, test.assign(**{predefined.RAW_COLUMN: "test"})], ignore_index=True)
