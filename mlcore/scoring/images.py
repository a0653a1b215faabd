"""Batch scoring of images: a folder (every image file under it) or a table with a column of
image paths (relative to the table's folder, or absolute). Each row's file is checked by
decoding it before the job scores anything; a missing, unreadable or non-image file becomes
the row's `reason`, as an empty text does, and never stops the job. The model receives the
files' bytes (its `image` column): it never opens a path itself."""
from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd

from mlcore.data.hashing import file_md5
from mlcore.data.pixels import IMAGE_EXTENSIONS, decode_image
from mlcore.errors import UserError
from mlcore.scoring import rows as R

PATH_COLUMN = "path"  # the column a folder's listing gets


def folder_table(folder: Path) -> pd.DataFrame:
    """Every image file under `folder` (hidden files and folders left out), by path, sorted."""
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
                   and not any(part.startswith(".") for part in p.relative_to(folder).parts))
    return pd.DataFrame({PATH_COLUMN: [str(p.relative_to(folder)) for p in files]})


def listing_digest(folder: Path, table: pd.DataFrame) -> str:
    """What identifies a folder's input for resuming: each file's name, size and modification time."""
    h = hashlib.md5()
    for name in table[PATH_COLUMN]:
        info = (folder / name).stat()
        h.update(f"{name}\0{info.st_size}\0{info.st_mtime_ns}\n".encode())
    return h.hexdigest()


def reason(value, base: Path) -> str | None:
    """Why the image a cell names cannot be scored, or None when it decodes."""
    text_reason = R.reason(value)
    if text_reason:
        return text_reason.replace("text", "path")
    path = base / str(value)
    if not path.is_file():
        return f"no image file at {value}"
    try:
        decode_image(path.read_bytes(), 3, None, str(value))
    except (UserError, OSError) as err:
        return str(err).split(". ")[0]
    return None


def read_image_rows(path: str | Path, column: str = PATH_COLUMN) -> R.Rows:
    """A folder, or a table whose `column` names image files, with each row's reason."""
    path = Path(path)
    if path.is_dir():
        table, base = folder_table(path), path
        if table.empty:
            raise UserError(f"{path}: holds no image file ({', '.join(sorted(IMAGE_EXTENSIONS))}). Pass a folder "
                            f"of images or a table with a column of image paths (--image-column).")
        digest = listing_digest(path, table)
    else:
        table, base = R.read_table(path).reset_index(drop=True), path.parent
        if column not in table.columns:
            raise UserError(f"{path}: has no column {column!r} of image paths. Its columns are "
                            f"{[str(c) for c in table.columns]}; pass --image-column with the one that holds them.")
        digest = file_md5(path)
    table, renames = R.check_columns(table, path, column if column in table.columns else PATH_COLUMN)
    column = renames.get(column, column)
    reasons = table[column].map(lambda v: reason(v, base), na_action=None).astype(object)
    return R.Rows(path, table, column, reasons.where(reasons.notna(), None), digest, base=base)


def frame_of(paths: list[str], base: Path) -> pd.DataFrame:
    """The model's input for these rows: each file's bytes in the `image` column."""
    return pd.DataFrame({"image": [(base / p).read_bytes() for p in paths]})
