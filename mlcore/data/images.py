"""Labelled images for the `prepare` stage: the same contract as cleaning.prepare_splits, with
rows of stored pixels (bytes, uint8 row-major height × width × channels) instead of texts.

prepare.input is a folder of class folders (<input>/<label>/<image>), a folder of IDX files
(MNIST names; t10k is the predefined test split), one IDX images file (its labels file beside it)
or a table with prepare.image_column (paths relative to the table) and prepare.label_column.
What is skipped and counted, not refused: non-image and hidden files in class folders (.DS_Store,
notes.txt), unreadable images (corrupt, truncated, decompression bombs), table rows without a
label; a class left without images is an error. Identical pixels under one label are kept once,
under different labels dropped, as cleaning.clean does for texts (it does the work, on hashes)."""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd

from mlcore.config import PrepareConfig
from mlcore.data import cleaning, idx, image_loading, image_sources, predefined, tables
from mlcore.data.cleaning import CleanResult
from mlcore.data.pixels import IMAGE_EXTENSIONS, decode_image
from mlcore.errors import UserError, reading

__all__ = ["IMAGE_EXTENSIONS", "decode_image", "detect_modality", "prepare_image_splits", "to_array",
           "image_report", "image_summary"]
# clean's text-flavoured counts, renamed for images (its keys for texts stay as they are)
_RENAMED = {"duplicates_dropped": "duplicate_images_dropped",
            "conflicting_label_texts_dropped": "conflicting_label_images_dropped",
            "texts_in_several_splits": "images_in_several_splits",
            "train_val_rows_dropped_as_test_texts": "train_val_images_dropped_as_test_images"}
_DROPPED = {"unreadable_images_dropped": "Pillow could not decode them (corrupt, truncated, not an image)",
            "non_image_files_skipped": "files in class folders without an image extension, or hidden",
            "files_outside_class_folders_skipped": "files beside the class folders: no class",
            "unlabelled_images_skipped": "table rows with no label or one of prepare.unlabelled_labels",
            "duplicate_images_dropped": "identical pixels and label as a kept image",
            "conflicting_label_images_dropped": "identical pixels under different labels: all copies dropped",
            "train_val_images_dropped_as_test_images": "identical pixels to a test image"}


def _columns(path: Path, fmt: str) -> list[str]:
    """A table's column names from its first line, not the whole file."""
    fmt = tables.detect_format(path) if fmt == "auto" else fmt
    with reading(path, fmt, ""):
        if fmt in ("csv", "tsv"):
            return list(pd.read_csv(path, sep="\t" if fmt == "tsv" else ",", nrows=0).columns)
        if fmt == "jsonl":
            return list(pd.read_json(path, lines=True, nrows=1).columns)
        import pyarrow.parquet as pq

        return list(pq.read_schema(path).names)


def detect_modality(p: PrepareConfig) -> tuple[str, str]:
    """("image" or "text", why), from names and a table's header only: no image is read."""
    if p.modality != "auto":
        return p.modality, "prepare.modality"
    path = Path(p.input)
    if path.is_dir():  # no text reader takes a folder; the image reader says what it lacks
        if any(idx.is_idx_name(f) for f in path.iterdir()):
            return "image", "prepare.input is a folder of IDX files"
        return "image", f"prepare.input is a folder of {len(image_sources.class_folders(path))} class folders"
    if idx.is_idx_name(path):
        return "image", "prepare.input is an IDX file"
    try:
        columns = _columns(path, p.format)
    except UserError:  # unreadable or not a table: the text reader says why, in its words
        return "text", "prepare.input is not a folder, an IDX file or a readable table"
    if p.image_column in columns:
        return "image", f"the table has the column {p.image_column!r}"
    return "text", f"the table has no column {p.image_column!r} (prepare.image_column)"


def _deduplicate(images: pd.DataFrame, given: bool) -> CleanResult:
    """cleaning.clean on the sha256 of each image's pixels in place of its text: the same rules
    for duplicates, conflicting labels and predefined test rows, in one place."""
    keys = pd.DataFrame({"key": [hashlib.sha256(px).hexdigest() for px in images["pixels"]],
                         "label": images["label"], "row": [str(i) for i in range(len(images))]})
    if given:
        keys[predefined.RAW_COLUMN] = images[predefined.SPLIT_COLUMN]
    result = cleaning.clean(keys, "key", "label", "row", [], split_col=predefined.RAW_COLUMN if given else None)
    labelled = images.iloc[result.labelled["group"].astype(int).to_numpy()].reset_index(drop=True)
    first_source = dict(zip(keys["key"][::-1], images["source"][::-1], strict=True))
    stats = {_RENAMED.get(k, k): v for k, v in result.stats.items()
             if k not in ("rows_in", "empty_text_dropped", "unlabelled_rows", "unlabelled_held_out_rows_dropped")}
    stats["conflicting_examples"] = [first_source[k] for k in result.stats["conflicting_examples"]]
    return CleanResult(labelled, images[image_loading.COLUMNS].iloc[:0].copy(), stats)


def _split(labelled: pd.DataFrame, p: PrepareConfig, given: bool, grouped: bool, what: str) -> dict:
    if labelled.empty:
        raise UserError(f"{p.input}: no images are left after dropping unreadable ones and identical images "
                        f"with different labels. Check the labels ({what}).")
    if given:  # the user's splits: cleaning.split_for reads them from the split column
        return cleaning.split_for(labelled, p.model_copy(update={
            "group_column": "group" if grouped else None, "split_column": predefined.SPLIT_COLUMN}))
    try:
        return cleaning.split(labelled, p.val_fraction, p.test_fraction, p.seed, grouped=grouped)
    except UserError as err:  # name the input and where its labels come from
        raise UserError(f"{p.input} ({what}): {err}") from None


def prepare_image_splits(p: PrepareConfig) -> tuple[CleanResult, dict[str, pd.DataFrame]]:
    """The `prepare` stage's work for images: read, decode to one size and channel count,
    de-duplicate, and split (predefined, or seeded, stratified and, with a table's
    prepare.group_column, grouped), as cleaning.prepare_splits does for texts."""
    found = image_sources.find(p)
    images, stats = image_loading.load(found, p)
    given = predefined.SPLIT_COLUMN in images
    cleaned = _deduplicate(images, given)
    layout = found[0].layout
    what = {"folder": "class folders", "idx": "IDX labels"}.get(layout, f"label column {p.label_column!r}")
    splits = _split(cleaned.labelled, p, given, grouped=layout == "table" and p.group_column is not None, what=what)
    cleaned.stats = {"rows_in": stats["rows_in"], **dict.fromkeys(_DROPPED, 0), **stats, **cleaned.stats,
                     "classes": int(cleaned.labelled["label"].nunique()), "layout": layout,
                     "modality_reason": detect_modality(p)[1]}
    return cleaned, splits


def to_array(df: pd.DataFrame) -> np.ndarray:
    """The pixels column as one (N, height, width, channels) uint8 array: one copy, writable."""
    if df.empty:
        return np.zeros((0, 0, 0, 0), dtype=np.uint8)
    shape = tuple(int(df[c].iloc[0]) for c in ("height", "width", "channels"))
    buffer = bytearray().join(df["pixels"])
    mixed = any(df[c].nunique() > 1 for c in ("height", "width", "channels"))
    if mixed or len(buffer) != len(df) * int(np.prod(shape)):
        raise UserError(f"the prepared images hold {len(buffer):,} bytes of pixels, not {len(df):,} × "
                        f"{' × '.join(map(str, shape))}: the prepared data is damaged. Run `dvc repro -f prepare`.")
    return np.frombuffer(buffer, dtype=np.uint8).reshape(len(df), *shape)


def image_report(splits: dict[str, pd.DataFrame], stats: dict) -> dict:
    """reports/data_report.json for images: rows and classes per split, the stored geometry,
    what was seen, and what was dropped and why."""
    per_split = {name: {"rows": int(len(part)), "groups": int(part["group"].nunique()),
                        "per_class": {k: int(v) for k, v in part["label"].value_counts().sort_index().items()}}
                 for name, part in splits.items()}
    groups = [set(part["group"]) for part in splits.values()]
    leaked = sum(len(a & b) for i, a in enumerate(groups) for b in groups[i + 1:])
    examples = {"unreadable_images_dropped": "unreadable_examples",
                "conflicting_label_images_dropped": "conflicting_examples"}
    dropped = {key: {"count": int(stats.get(key, 0)), "why": why,
                     **({"examples": stats.get(examples[key], [])} if key in examples else {})}
               for key, why in _DROPPED.items()}
    return {"modality": "image", "modality_reason": stats.get("modality_reason"), "layout": stats.get("layout"),
            "stored": {"height": stats["image_size"], "width": stats["image_size"], "channels": stats["channels"]},
            "sizes_seen": stats.get("image_sizes_seen", {}), "modes_seen": stats.get("image_modes_seen", {}),
            "resized_images": stats.get("resized_images", 0), "converted_images": stats.get("converted_images", {}),
            "dropped": dropped, "cleaning": stats, "splits": per_split, "unlabelled_rows": 0,
            "groups_shared_across_splits": leaked}


def image_summary(splits: dict[str, pd.DataFrame], cleaned: CleanResult) -> dict:
    """Flat numbers for MLflow: rows per split, what was dropped, the stored geometry."""
    stats = cleaned.stats
    return {**{f"{name}_rows": len(part) for name, part in splits.items()}, "unlabelled_rows": 0,
            **{key: int(stats.get(key, 0)) for key in _DROPPED},
            "resized_images": int(stats.get("resized_images", 0)),
            "converted_images": int(sum(stats.get("converted_images", {}).values())),
            "image_size": int(stats["image_size"]), "channels": int(stats["channels"]),
            "classes": int(stats.get("classes", 0))}
