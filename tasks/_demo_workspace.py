"""A demo's own workspace: the image demo runs beside the text demo without touching its outputs.

    python -m tasks._demo_workspace examples/fashion-mnist   # -> workspaces/fashion-mnist/

The workspace gets a fresh copy of the code (so that DVC sees a code change as it does in the
project), the demo's params.yaml, its own DVC repository (no git: it lives inside this one, which
ignores it) and the demo's data, fetched, checked and `dvc add`-ed. Run it again after changing
the code or the example's params: it refreshes both and keeps the data, the DVC cache, MLflow's
store and every output. Then, inside it, `python -m flows.training_pipeline` or `dvc repro`.
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

from mlcore.errors import UserError, entry_point
from mlcore.models import checkpoint_link

CODE = ("mlcore", "tasks", "flows")
FILES = ("dvc.yaml", ".dvcignore")
FETCHERS = {"fashion-mnist": ("mlcore.data.fashion_mnist", "data/raw/fashion-mnist")}


def refresh_code(root: Path, dest: Path) -> None:
    for name in CODE:
        shutil.rmtree(dest / name, ignore_errors=True)
        shutil.copytree(root / name, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in FILES:
        shutil.copy2(root / name, dest / name)


def _run(cmd: list[str], cwd: Path) -> None:
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if done.returncode:
        raise UserError(f"`{' '.join(cmd)}` failed in {cwd}: {(done.stderr or done.stdout).strip()[-600:]}")


def make(example: Path, root: Path = Path(".")) -> Path:
    name = example.resolve().name
    if not (example / "params.yaml").is_file():
        raise UserError(f"{example}: has no params.yaml. Give an example folder, e.g. examples/fashion-mnist.")
    dest = root / "workspaces" / name
    dest.mkdir(parents=True, exist_ok=True)
    refresh_code(root, dest)
    shutil.copy2(example / "params.yaml", dest / "params.yaml")
    if not (dest / ".dvc").is_dir():
        _run(["dvc", "init", "--no-scm", "--quiet"], dest)
        _run(["dvc", "config", "core.analytics", "false"], dest)
    if name in FETCHERS:
        module, data = FETCHERS[name]
        _run([sys.executable, "-m", module, data], dest)
        _run(["dvc", "add", "--quiet", data], dest)
    from mlcore.config import load_config

    checkpoint_link.refresh(load_config(dest / "params.yaml").pretrain.init_from, root=dest)
    return dest


@entry_point
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("example", type=Path, help="an example folder with a params.yaml, e.g. examples/fashion-mnist")
    args = parser.parse_args(argv)
    dest = make(args.example)
    print(f"workspace: {dest} (run the pipeline inside it: cd {dest} && python -m flows.training_pipeline)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
