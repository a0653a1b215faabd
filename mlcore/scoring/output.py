"""The scored table: the input's rows in their order and every input column, then `label`, one
`score_<class>` per class and `reason` (null for scored rows); written atomically with metadata
that says which model version scored it (Parquet: in the schema; CSV/JSONL: a sidecar file)."""
from __future__ import annotations

import datetime
import json
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from mlcore import atomic
from mlcore.errors import UserError
from mlcore.scoring.model_uri import ModelRef
from mlcore.scoring.rows import COMPRESSION, Rows

META_KEY = "batch_predict"  # the Parquet schema metadata key
OUTPUT_FORMATS = {".parquet": "parquet", ".csv": "csv", ".jsonl": "jsonl", "": "parquet"}


def output_format(path: str | Path) -> tuple[str, str | None]:
    """(format, compression) from the output's name; no extension means Parquet."""
    path = Path(path)
    suffixes = [s.lower() for s in path.suffixes]
    compression = COMPRESSION.get(suffixes[-1]) if suffixes else None
    ext = (suffixes[:-1] if compression else suffixes)[-1:] or [""]
    fmt = OUTPUT_FORMATS.get(ext[0])
    if fmt is None or compression and fmt == "parquet":
        raise UserError(f"{path}: cannot tell the output format from its name. Name it .parquet, .csv or "
                        f".jsonl (.csv and .jsonl may end in .gz or .bz2).")
    return fmt, compression


def sidecar(path: str | Path) -> Path:
    path = Path(path)
    return path.with_name(path.name + ".meta.json")


def assemble(rows: Rows, results: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """`results` (indexed by row position, the model's `columns`) back in the input's order;
    the rows not scored get nulls and their reason."""
    full = results.reindex(index=range(len(rows.table)), columns=columns)
    out = rows.table.copy()
    out["label"] = full["label"].astype(object).where(full["label"].notna(), None).to_numpy()
    for column in columns:
        if column != "label":
            out[column] = full[column].astype(float).to_numpy()
    out["reason"] = rows.reasons.to_numpy()
    return out


def metadata(rows: Rows, model: ModelRef, output: str | Path, columns: list[str]) -> dict:
    bad = int(rows.reasons.notna().sum())
    return {
        "model_uri": model.uri, "model_name": model.name, "model_version": model.version,
        "rows": len(rows.table), "scored": len(rows.table) - bad, "bad_rows": bad,
        "input": str(rows.path), "input_md5": rows.digest, "text_column": rows.text_column,
        "output": str(output), "labels": [c.removeprefix("score_") for c in columns if c != "label"],
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def _as_text(value):
    if value is None or isinstance(value, float) and value != value:
        return None
    if isinstance(value, (dict, list, tuple)) or hasattr(value, "tolist") and not isinstance(value, str):
        return json.dumps(value.tolist() if hasattr(value, "tolist") else value, default=str)
    return str(value)


def _arrow_table(frame: pd.DataFrame) -> pa.Table:
    """The frame as Arrow; a column Arrow cannot type (a JSONL text column holding numbers and
    strings, say) is written as text, nested values as JSON, rather than failing the whole job."""
    try:
        return pa.Table.from_pandas(frame, preserve_index=False)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        pass
    frame = frame.copy()
    for name in frame.columns:
        try:
            pa.array(frame[name], from_pandas=True)
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
            frame[name] = frame[name].map(_as_text).astype(object)
    return pa.Table.from_pandas(frame, preserve_index=False)


def write_scored(frame: pd.DataFrame, path: str | Path, meta: dict) -> list[Path]:
    """Write the output (and for CSV/JSONL its sidecar `<output>.meta.json`); returns the paths written."""
    path = Path(path)
    fmt, compression = output_format(path)
    if fmt == "parquet":
        table = _arrow_table(frame)
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), META_KEY: json.dumps(meta)})
        with atomic.file(path) as partial:
            pq.write_table(table, partial)
        return [path]
    # The sidecar first: a kill between the two leaves the old output beside new metadata,
    # and the rerun (its chunks kept until both are written) rewrites both.
    atomic.write_json(sidecar(path), meta)
    with atomic.file(path) as partial:
        if fmt == "csv":
            frame.to_csv(partial, index=False, compression=compression)
        else:
            frame.to_json(partial, orient="records", lines=True, force_ascii=False, date_format="iso",
                          compression=compression)
    return [path, sidecar(path)]


def read_metadata(path: str | Path) -> dict:
    """The metadata of a scored file, from its Parquet schema or its sidecar."""
    path = Path(path)
    if output_format(path)[0] == "parquet":
        return json.loads(pq.read_schema(path).metadata[META_KEY.encode()])
    return json.loads(sidecar(path).read_text(encoding="utf-8"))
