"""The resumable chunk store: `<output>.parts/` beside the output.

It holds `manifest.json` (what is being scored: the input's digest, the model version, the
chunking) and one Parquet file per finished chunk, each renamed into place whole. A run killed
at any moment leaves only finished chunks (and maybe a `.partial` file, overwritten later); the
rerun keeps them when its manifest is the same, and starts over when anything differs, so chunks
of another input, model or chunking are never mixed into one output.
"""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pandas as pd

from mlcore import atomic

MANIFEST = "manifest.json"
ROW = "_row"  # a chunk file's column with each result's row position in the input
_CHUNK = re.compile(r"chunk-(\d{6})\.parquet")


def manifest(input_md5: str, rows: int, text_column: str, model: str, chunk_rows: int, chunks: int) -> dict:
    """What a store's chunks are results of; a run whose manifest differs starts over."""
    return {"format": 1, "input_md5": input_md5, "rows": rows, "text_column": text_column, "model": model,
            "chunk_rows": chunk_rows, "chunks": chunks}


def parts_dir(output: str | Path) -> Path:
    output = Path(output)
    return output.with_name(output.name + ".parts")


def remove_parts(output: str | Path) -> None:
    """Once the output and its record are written, the chunks have served their purpose."""
    shutil.rmtree(parts_dir(output), ignore_errors=True)


class ChunkStore:
    def __init__(self, directory: Path, manifest: dict):
        self.directory = Path(directory)
        self.manifest = manifest

    def open(self) -> set[int]:
        """The finished chunks, after clearing the directory if its manifest is not this run's."""
        manifest = self.directory / MANIFEST
        try:
            same = json.loads(manifest.read_text(encoding="utf-8")) == self.manifest
        except (OSError, ValueError):
            same = False
        if not same:
            # The manifest goes first: a kill during the removal leaves no manifest, so the
            # next run clears the rest too, never keeping chunks under a manifest they don't match.
            manifest.unlink(missing_ok=True)
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory.mkdir(parents=True)
            atomic.write_json(manifest, self.manifest)
        return self.finished()

    def finished(self) -> set[int]:
        found = (_CHUNK.fullmatch(p.name) for p in self.directory.iterdir())
        return {int(m.group(1)) for m in found if m}

    def path(self, index: int) -> Path:
        return self.directory / f"chunk-{index:06d}.parquet"

    def save(self, index: int, rows: pd.Series | list, results: pd.DataFrame) -> None:
        frame = results.reset_index(drop=True).assign(**{ROW: list(rows)})
        with atomic.file(self.path(index)) as partial:
            frame.to_parquet(partial, index=False)

    def load(self) -> pd.DataFrame:
        """Every finished chunk's results, indexed by row position (empty without chunks)."""
        chunks = [pd.read_parquet(self.path(i)) for i in sorted(self.finished())]
        if not chunks:
            return pd.DataFrame(index=pd.Index([], name=ROW))
        return pd.concat(chunks, ignore_index=True).set_index(ROW)
