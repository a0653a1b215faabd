"""Finding the labelled images of prepare.input and prepare.test_input, before any pixel is read:
a folder of class folders, IDX files, or a table of image paths and labels."""
from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd

from mlcore.config import PrepareConfig
from mlcore.data import idx, predefined, tables
from mlcore.data.cleaning import _label
from mlcore.data.pixels import IMAGE_EXTENSIONS
from mlcore.errors import UserError


@dataclass
class Found:
    """Images found, one row of `entries` each: source, label, group, and where the pixels are:
    path (a file) or, for IDX, row i of `arrays` (N, rows, columns). `split` when given."""
    entries: pd.DataFrame
    origin: Path  # the folder, table or IDX file the user named
    layout: str  # folder, idx or table
    arrays: np.ndarray | None = None
    stats: Counter = field(default_factory=Counter)

    def place(self, label: str) -> str:
        """Where the images of one label are, for messages."""
        return str(self.origin / label) if self.layout == "folder" else f"{self.origin} (label {label!r})"


def _hidden(path: PurePosixPath) -> bool:
    return any(part.startswith(".") for part in path.parts)  # .DS_Store, ._photo.jpg, .ipynb_checkpoints


def class_folders(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def _check_classes(root: Path, classes: list[Path]) -> None:
    names = [c.name for c in classes]
    if names and all(n.lower() in predefined.NAMES for n in names):
        raise UserError(f"{root}: its folders {names} look like splits, not classes. Point prepare.input at the "
                        f"train folder (a folder of class folders) and prepare.test_input at the test folder.")
    if not classes:
        raise UserError(f"{root}: is a directory with no class folders and no IDX files. Point prepare.input at "
                        f"a data file (.csv, .tsv, .jsonl or .parquet), or, for images, at a folder of class "
                        f"folders ({root}/<label>/<image file>) or of IDX files.")
    if len(classes) < 2:
        raise UserError(f"{root}: holds {len(classes)} class folder(s) {names}; a classifier needs at least 2. "
                        f"Lay the images out as {root}/<label>/<image file>, one folder per class.")


def read_folder(root: Path) -> Found:
    """ImageFolder layout: root/<label>/**/<image>. Non-image and hidden files are skipped and
    counted; an empty class folder is an error, as the user surely meant it to hold a class."""
    classes = class_folders(root)
    _check_classes(root, classes)
    rows, stats = [], Counter()
    stats["files_outside_class_folders_skipped"] = sum(1 for p in root.iterdir() if p.is_file())
    for folder in classes:
        files = sorted(PurePosixPath(p.relative_to(root).as_posix()) for p in folder.rglob("*") if p.is_file())
        images = [f for f in files if f.suffix.lower() in IMAGE_EXTENSIONS and not _hidden(f)]
        stats["non_image_files_skipped"] += len(files) - len(images)
        if not images:
            others = f" ({len(files)} other files, e.g. {files[0].name})" if files else ""
            raise UserError(f"{folder}: this class folder holds no image files{others}. Add its images "
                            f"({', '.join(sorted(IMAGE_EXTENSIONS))}) or remove the folder.")
        rows += [(str(f), folder.name, str(f), str(root / f)) for f in images]
    entries = pd.DataFrame(rows, columns=["source", "label", "group", "path"])
    return Found(entries, root, "folder", stats=stats)


def read_idx_files(path: Path) -> Found:
    """A folder of IDX files or one IDX images file (its labels file beside it). In a folder with
    train and t10k files, t10k is the predefined test split, as the datasets publish it."""
    pairs = idx.pairs_in(path) if path.is_dir() else {"": (path, idx.labels_beside(path))}
    read = {part: idx.read_pair(*files) for part, files in pairs.items()}
    ids = np.concatenate([labels for _, labels in read.values()])
    names = np.array(idx.label_names(path if path.is_dir() else path.parent, ids), dtype=object)
    parts = []
    for part, (_, labels) in read.items():
        sources = [f"{pairs[part][0].name}#{i}" for i in range(len(labels))]
        frame = pd.DataFrame({"source": sources, "label": names[labels], "group": sources,
                              "index": np.arange(len(labels)) + sum(len(p) for p in parts)})
        if {"train", "t10k"} <= set(pairs):
            frame[predefined.SPLIT_COLUMN] = "test" if part == "t10k" else "train"
        parts.append(frame)
    arrays = np.concatenate([images for images, _ in read.values()])
    return Found(pd.concat(parts, ignore_index=True), path, "idx", arrays=arrays)


def _relative(value: object, table: Path, row: int, column: str) -> str | None:
    """The path of one row, checked to stay inside the table's folder; None when the cell is empty."""
    if value is None or value != value or not str(value).strip():
        return None
    text = str(value).strip()
    fix = f"Write paths relative to the folder of {table.name} ({table.parent}), like cat/001.png."
    if "://" in text:
        raise UserError(f"{table}: data row {row}: {column!r} is a URL ({text}); images are not downloaded. "
                        f"Download them beside the table first. {fix}")
    if os.path.isabs(text) or os.path.normpath(text).split(os.sep)[0] == "..":
        raise UserError(f"{table}: data row {row}: {column!r} (prepare.image_column) is {text!r}, which "
                        f"{'is absolute' if os.path.isabs(text) else 'leaves the folder of the table'}; "
                        f"images must lie in or under that folder. {fix}")
    return PurePosixPath(os.path.normpath(text)).as_posix()


def _paths(df: pd.DataFrame, table: Path, column: str) -> list[str]:
    """Every row's image path, all present: the first missing one is named with how many are missing."""
    paths = [_relative(v, table, i + 1, column) for i, v in enumerate(df[column])]
    missing = [i for i, rel in enumerate(paths) if rel is None or not (table.parent / rel).is_file()]
    if missing:
        first = missing[0]
        what = "is empty" if paths[first] is None else f"is {paths[first]!r}, which is not a file under {table.parent}"
        raise UserError(f"{table}: data row {first + 1}: {column!r} (prepare.image_column) {what}; "
                        f"{len(missing)} of {len(paths)} image paths are missing. Put the images there, fix the "
                        f"paths (relative to the table's folder), or remove those rows.")
    return paths


def read_table(path: Path, p: PrepareConfig, split_column: str | None) -> Found:
    """A table of image paths (relative to its folder) and labels; rows labelled with one of
    prepare.unlabelled_labels or left unlabelled are skipped and counted (no unlabelled images yet)."""
    df = tables.read_table(path, p.format)
    tables.require_columns(df, path, {"prepare.image_column": p.image_column, "prepare.label_column": p.label_column,
                                      "prepare.group_column": p.group_column, "prepare.split_column": split_column})
    paths = _paths(df, path, p.image_column)
    entries = pd.DataFrame({"source": paths, "label": df[p.label_column].map(_label).to_numpy(),
                            "group": df[p.group_column].astype(str).to_numpy() if p.group_column else paths,
                            "path": [str(path.parent / rel) for rel in paths]})
    if split_column:
        entries[predefined.SPLIT_COLUMN] = predefined.split_names(df[split_column], str(path), split_column).to_numpy()
    unlabelled = entries["label"].isin(p.unlabelled_labels) | (entries["label"] == "")
    stats = Counter(unlabelled_images_skipped=int(unlabelled.sum()))
    return Found(entries[~unlabelled].reset_index(drop=True), path, "table", stats=stats)


def read_source(path: Path, p: PrepareConfig, split_column: str | None) -> Found:
    if path.is_dir() or idx.is_idx_name(path):
        if split_column:
            raise UserError(f"{path}: prepare.split_column ({split_column!r}) names a column of a table, but this "
                            f"is {'an IDX file' if path.is_file() else 'a folder'}. Set prepare.split_column: null, "
                            f"and give the test images with prepare.test_input.")
        if path.is_file() or (path.is_dir() and any(idx.is_idx_name(f) for f in path.iterdir())):
            return read_idx_files(path)
        if path.is_dir():
            return read_folder(path)
        raise UserError(f"{path}: IDX file not found. Put it there, or point prepare.input at it.")
    return read_table(path, p, split_column)


def find(p: PrepareConfig) -> list[Found]:
    """The images of prepare.input and, when given, of prepare.test_input (all of them test images);
    entries have a split column when the splits are predefined."""
    found = read_source(Path(p.input), p, p.split_column)
    if p.test_input is None:
        return [found]
    if predefined.SPLIT_COLUMN in found.entries and (found.entries[predefined.SPLIT_COLUMN] == "test").any():
        given = f"column {p.split_column!r}" if p.split_column else "its t10k files"
        raise UserError(f"{p.input}: {given} gives test images, and prepare.test_input ({p.test_input}) gives test "
                        f"images too. Keep one: set prepare.test_input: null, or give only train and val images "
                        f"in prepare.input.")
    test = read_source(Path(p.test_input), p, None)
    found.entries = found.entries.assign(**{predefined.SPLIT_COLUMN: found.entries.get(predefined.SPLIT_COLUMN,
                                                                                        "train")})
    test.entries = test.entries.assign(**{predefined.SPLIT_COLUMN: "test"})
    return [found, test]
