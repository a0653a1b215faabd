"""Fetch the image sample data: Fashion-MNIST (MIT licence, (c) Zalando SE), from Debian's
`dataset-fashion-mnist` package, into a folder the `prepare` stage reads as IDX files.

`apt-get download` fetches the .deb without root and `dpkg-deb -x` unpacks it; the four IDX
files are checked against their sha256 and copied with a `labels.txt` of the class names.
Without apt-get (another OS, no network), the message says where to put the files by hand.

    python -m mlcore.data.fashion_mnist data/raw/fashion-mnist
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from mlcore import atomic
from mlcore.data.sample import sha256
from mlcore.errors import UserError, entry_point

PACKAGE = "dataset-fashion-mnist"
INSIDE = Path("usr/share/datasets/fashion-mnist")
FILES = {  # the sha256 of Debian's 0.0~git20200523.55506a9-1 files, which are Zalando's own
    "train-images-idx3-ubyte.gz": "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7",
    "train-labels-idx1-ubyte.gz": "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056",
    "t10k-images-idx3-ubyte.gz": "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa",
    "t10k-labels-idx1-ubyte.gz": "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05",
}
LABELS = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


def _by_hand(dest: Path, reason: str) -> str:
    listing = ", ".join(f"{name} (sha256 {digest[:12]}...)" for name, digest in FILES.items())
    return (f"Could not fetch Fashion-MNIST ({reason}). To put it in place by hand: download the four files "
            f"{listing} from https://github.com/zalandoresearch/fashion-mnist (data/fashion) or take them from "
            f"Debian's {PACKAGE} package ({INSIDE}), and copy them into {dest}/. Then run this command again: it "
            f"checks them and writes labels.txt.")


def check(folder: Path, dest: Path) -> None:
    for name, digest in FILES.items():
        found = folder / name
        if not found.is_file():
            raise UserError(_by_hand(dest, f"{found} is missing"))
        if sha256(found) != digest:
            raise UserError(f"{found}: sha256 {sha256(found)} is not Fashion-MNIST's {digest}; refusing to use it. "
                            f"Delete it and run this command again.")


def _from_debian(into: Path, dest: Path) -> Path:
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        raise UserError(_by_hand(dest, "apt-get and dpkg-deb are not on this machine"))
    try:
        got = subprocess.run(["apt-get", "download", PACKAGE], cwd=into, capture_output=True, text=True, timeout=600)
    except subprocess.TimeoutExpired:
        raise UserError(_by_hand(dest, "apt-get download timed out")) from None
    debs = sorted(into.glob(f"{PACKAGE}_*.deb"))
    if got.returncode != 0 or not debs:
        last = (got.stderr.strip().splitlines() or ["no output"])[-1]
        raise UserError(_by_hand(dest, f"apt-get download failed: {last}"))
    subprocess.run(["dpkg-deb", "-x", str(debs[0]), str(into / "x")], check=True, capture_output=True)
    return into / "x" / INSIDE


def fetch(dest: Path) -> Path:
    """`dest` holding the four checked files and labels.txt; files already there are checked, not fetched."""
    if all((dest / name).is_file() for name in FILES):
        check(dest, dest)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            source = _from_debian(Path(tmp), dest)
            check(source, dest)
            with atomic.directory(dest) as out:
                for name in FILES:
                    shutil.copyfile(source / name, out / name)
                (out / "labels.txt").write_text("\n".join(LABELS) + "\n")
    if not (dest / "labels.txt").is_file():
        atomic.write_bytes(dest / "labels.txt", ("\n".join(LABELS) + "\n").encode())
    return dest


@entry_point
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dest", type=Path, nargs="?", default=Path("data/raw/fashion-mnist"))
    args = parser.parse_args(argv)
    path = fetch(args.dest)
    print(f"sample data: {path} (Fashion-MNIST, 60,000 train and 10,000 test images, checked)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
