"""IDX files, the format of MNIST and Fashion-MNIST: a 4-byte magic number (0x00000803 for uint8
images, 0x00000801 for uint8 labels), one big-endian uint32 per dimension, then the values."""
from __future__ import annotations

import gzip
import math
import re
import struct
from pathlib import Path

import numpy as np

from mlcore.errors import UserError, reading

IMAGES_MAGIC, LABELS_MAGIC = 0x00000803, 0x00000801
# train-images-idx3-ubyte[.gz] and the like; "train-images.idx3-ubyte" is a common renaming.
NAME = re.compile(r"^(?P<part>.*?)-?(?P<kind>images|labels)[-.]idx(?P<dims>[13])-ubyte(?P<gz>\.gz)?$")
LABEL_NAMES = "labels.txt"
_FIX = "Download the file again (a complete copy, uncompressed or .gz), or point prepare.input elsewhere."


def is_idx_name(path: Path) -> bool:
    return NAME.match(path.name) is not None


def read_idx(path: str | Path) -> np.ndarray:
    """The values of an IDX file (optionally gzipped): (N,) labels or (N, rows, columns) images, uint8."""
    path = Path(path)
    with reading(path, "an IDX file", _FIX):
        data = path.read_bytes()
        if path.suffix == ".gz":
            data = gzip.decompress(data)
    magic = int.from_bytes(data[:4], "big") if len(data) >= 4 else None
    if magic not in (IMAGES_MAGIC, LABELS_MAGIC):
        found = f"0x{magic:08x}" if magic is not None else f"only {len(data)} bytes"
        raise UserError(f"{path}: is not an IDX file of uint8 images or labels: it starts with {found}, not "
                        f"0x{IMAGES_MAGIC:08x} (images) or 0x{LABELS_MAGIC:08x} (labels). {_FIX}")
    ndims = magic & 0xFF
    head = 4 + 4 * ndims
    if len(data) < head:
        raise UserError(f"{path}: the IDX header needs {head} bytes, the file holds {len(data)}. {_FIX}")
    dims = struct.unpack(f">{ndims}I", data[4:head])
    expected = head + math.prod(dims)
    if len(data) != expected:
        how = "truncated" if len(data) < expected else "it has extra bytes at the end"
        raise UserError(
            f"{path}: the IDX header says {' × '.join(map(str, dims))} values, so {expected:,} bytes"
            f"{' uncompressed' if path.suffix == '.gz' else ''}, but the file holds {len(data):,} ({how}). {_FIX}")
    return np.frombuffer(data, np.uint8, offset=head).reshape(dims)


def labels_beside(images: Path) -> Path:
    """The labels file that goes with an images file: the same name with labels for images and
    idx1 for idx3, compressed or not."""
    match = NAME.match(images.name)
    if match is None or match["kind"] != "images":
        raise UserError(f"{images}: is not named as an IDX images file (like train-images-idx3-ubyte.gz). "
                        f"Point prepare.input at the images file, or at the folder holding the IDX files.")
    stem = f"{images.name[:match.start('kind')]}labels{images.name[match.end('kind'):match.start('dims')]}1-ubyte"
    for name in (stem, stem + ".gz"):
        if (images.parent / name).is_file():
            return images.parent / name
    raise UserError(f"{images}: its labels file {images.parent / stem}[.gz] is missing. Put the labels file "
                    f"beside the images file, with that name.")


def pairs_in(folder: Path) -> dict[str, tuple[Path, Path]]:
    """Part name (train, t10k, ...) → (images file, labels file) for every IDX images file in
    `folder`; an uncompressed copy is preferred to its .gz (gunzip -k leaves both)."""
    images = sorted((p for p in folder.iterdir() if (m := NAME.match(p.name)) and m["kind"] == "images"),
                    key=lambda p: (p.suffix == ".gz", p.name))
    pairs: dict[str, tuple[Path, Path]] = {}
    for path in images:
        pairs.setdefault(NAME.match(path.name)["part"], (path, labels_beside(path)))
    if not pairs:
        raise UserError(f"{folder}: holds IDX files but no images file (like train-images-idx3-ubyte.gz) among "
                        f"them. Add the images files, or point prepare.input at a folder of class folders.")
    return pairs


def read_pair(images_path: Path, labels_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(images (N, rows, columns), label ids (N,)), checked to be what their names say and to agree."""
    images, labels = read_idx(images_path), read_idx(labels_path)
    for path, array, ndim, what in ((images_path, images, 3, "images"), (labels_path, labels, 1, "labels")):
        if array.ndim != ndim:
            raise UserError(f"{path}: holds IDX {'images' if array.ndim == 3 else 'labels'}, but its name says "
                            f"{what}. Rename it, or check which file is which.")
    if len(images) != len(labels):
        raise UserError(f"{images_path} holds {len(images):,} images but {labels_path} holds {len(labels):,} "
                        f"labels; they must pair one to one. Download both files of the same set again.")
    return images, labels


def label_names(folder: Path, ids: np.ndarray) -> list[str]:
    """Each label id's name: line id of labels.txt in `folder` when there is one, else the id itself."""
    path = folder / LABEL_NAMES
    if not path.is_file():
        return [str(i) for i in range(int(ids.max(initial=0)) + 1)]
    with reading(path, "UTF-8 text", "Write one class name per line, in label-id order."):
        names = [line.strip() for line in path.read_text(encoding="utf-8").rstrip().splitlines()]
    problems = [f"line {i + 1} is empty" for i, name in enumerate(names) if not name]
    problems += [f"{name!r} appears twice" for name in sorted({n for n in names if names.count(n) > 1})]
    if ids.size and int(ids.max()) >= len(names):
        problems.append(f"it names {len(names)} classes but the labels go up to id {int(ids.max())}")
    if problems:
        raise UserError(f"{path}: {'; '.join(problems)}. It must give one class name per line, in label-id order "
                        f"(line 1 names label 0), for every label id in the IDX labels files.")
    return names
