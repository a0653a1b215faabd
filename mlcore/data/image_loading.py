"""From the images found to their stored pixels: one square size and one channel count for the
whole dataset, chosen from the headers, then every image decoded to them. An unreadable image is
skipped and counted (scraped folders hold a few); a class left with none is an error."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from mlcore.config import PrepareConfig
from mlcore.data import predefined
from mlcore.data.image_sources import Found
from mlcore.data.pixels import GREY_MODES, as_array, choose_size, decode_image, fit, probe, stored_mode
from mlcore.errors import UserError, os_reason

COLUMNS = ["pixels", "height", "width", "channels", "label", "group", "source"]
_EXAMPLES = 5  # unreadable files named in the report; the count says how many there were


def _unreadable(stats: Counter, failures: list[str]) -> None:
    stats["unreadable_images_dropped"] += len(failures)
    stats["unreadable_examples"] = [*stats.get("unreadable_examples", []), *failures][:_EXAMPLES]


def _probe(found: Found, failures: dict[str, list[str]]) -> None:
    """Adds width, height and mode to the entries; drops those whose header cannot be read."""
    entries = found.entries
    if found.arrays is not None:
        _, height, width = found.arrays.shape
        found.entries = entries.assign(native_width=width, native_height=height, mode="L")
        return
    headers = []
    for path, source, label in zip(entries["path"], entries["source"], entries["label"], strict=True):
        try:
            headers.append(probe(Path(path), source))
        except UserError as err:
            headers.append(None)
            failures.setdefault(label, []).append(str(err))
    ok = np.array([h is not None for h in headers], dtype=bool)
    width, height, mode = zip(*[h for h in headers if h], strict=True) if ok.any() else ((), (), ())
    found.entries = entries[ok].assign(native_width=list(width), native_height=list(height), mode=list(mode))


def _read(path: str, source: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as err:
        raise UserError(f"{source}: could not be read: {os_reason(err)}.") from None


def _pixels(found: Found, size: int, channels: int, failures: dict[str, list[str]]) -> list[bytes | None]:
    """Each entry's stored pixels, None where the image cannot be decoded."""
    if found.arrays is not None:
        grey = found.arrays[found.entries["index"].to_numpy()]
        if grey.shape[1:] != (size, size):
            grey = np.stack([as_array(fit(Image.fromarray(a, "L"), (size, size)), 1)[..., 0] for a in grey])
        stored = np.repeat(grey[..., None], channels, axis=-1).reshape(len(grey), -1)
        return list(map(bytes, stored))
    out: list[bytes | None] = []
    for path, source, label in zip(found.entries["path"], found.entries["source"], found.entries["label"],
                                   strict=True):
        try:
            out.append(decode_image(_read(path, source), channels, (size, size), source).tobytes())
        except UserError as err:
            out.append(None)
            failures.setdefault(label, []).append(str(err))
    return out


def _check_classes_kept(found: Found, labels: set[str], failures: dict[str, list[str]]) -> None:
    lost = sorted(set(failures) - labels)
    if lost:
        label = lost[0]
        raise UserError(f"{found.place(label)}: all {len(failures[label])} images of class {label!r} are unreadable, "
                        f"e.g. {failures[label][0]} Replace them with readable images, or remove the class.")


def _size(p: PrepareConfig, sizes: list[tuple[int, int]]) -> int:
    if p.image_size != "auto" and int(p.image_size) < 1:
        raise UserError(f"prepare.image_size is {p.image_size}; it must be a positive number of pixels or auto.")
    return choose_size(sizes, p.image_size)


def _geometry_stats(entries: pd.DataFrame, size: int, channels: int) -> dict:
    width, height = entries["native_width"], entries["native_height"]
    sizes = (width.astype(str) + "x" + height.astype(str)).value_counts()
    changed = entries.loc[entries["mode"] != stored_mode(channels), "mode"].value_counts()
    return {"image_size": size, "channels": channels,
            "resized_images": int(((width != size) | (height != size)).sum()),
            "converted_images": {str(k): int(v) for k, v in changed.items()},
            # width x height; a scraped folder has many sizes: the 10 most common, the rest summed
            "image_sizes_seen": {**{str(k): int(v) for k, v in sizes.head(10).items()},
                                 **({"other": int(sizes.iloc[10:].sum())} if len(sizes) > 10 else {})},
            "image_modes_seen": {str(k): int(v) for k, v in entries["mode"].value_counts().items()}}


def load(found: list[Found], p: PrepareConfig) -> tuple[pd.DataFrame, dict]:
    """All images as stored rows (COLUMNS, + split when predefined) and what reading them counted."""
    stats: Counter = Counter()
    failures: list[dict[str, list[str]]] = [{} for _ in found]
    for f, failed in zip(found, failures, strict=True):
        stats.update(f.stats)
        stats["rows_in"] += len(f.entries) + f.stats["unlabelled_images_skipped"]
        _probe(f, failed)
        _check_classes_kept(f, set(f.entries["label"]), failed)
    entries = pd.concat([f.entries for f in found], ignore_index=True)
    if entries.empty:
        raise UserError(f"{p.input}: holds no labelled images. Check prepare.input, prepare.label_column and "
                        f"prepare.unlabelled_labels in params.yaml.")
    size = _size(p, list(zip(entries["native_width"], entries["native_height"], strict=True)))
    channels = 1 if set(entries["mode"]) <= GREY_MODES else 3
    frames = []
    for f, failed in zip(found, failures, strict=True):
        pixels = _pixels(f, size, channels, failed)
        ok = np.array([px is not None for px in pixels], dtype=bool)
        frames.append(f.entries[ok].assign(pixels=[px for px in pixels if px is not None], height=size,
                                           width=size, channels=channels))
        _check_classes_kept(f, set(frames[-1]["label"]), failed)
        _unreadable(stats, [m for ms in failed.values() for m in ms])
    kept = pd.concat(frames, ignore_index=True)
    columns = COLUMNS + ([predefined.SPLIT_COLUMN] if predefined.SPLIT_COLUMN in kept else [])
    return kept[columns].reset_index(drop=True), {**stats, **_geometry_stats(kept, size, channels)}
