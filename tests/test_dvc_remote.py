"""A team shares runs through the DVC remote: after a run and `dvc push`, a second clone on the
same machine, given the first one's dvc.lock, restores every stage output with `dvc pull`, and
`dvc status` is clean there without rerunning anything."""
import hashlib
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.e2e]
OUTPUTS = ["data/processed", "models", "reports", "data/raw/reviews.csv"]


def sh(*args: str, cwd: Path | None = None) -> str:
    proc = subprocess.run(list(args), cwd=cwd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{' '.join(args)}: {proc.stdout[-2000:]}{proc.stderr[-2000:]}"
    return proc.stdout


def digests(project: Path) -> dict[str, str]:
    files = []
    for name in OUTPUTS:
        root = project / name
        files += [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    return {str(f.relative_to(project)): hashlib.sha256(f.read_bytes()).hexdigest() for f in files}


def test_a_second_clone_restores_every_output_with_dvc_pull(tiny_project, tmp_path):
    git = ["git", "-c", "user.email=t@example.com", "-c", "user.name=t"]
    sh("dvc", "add", "data/raw/reviews.csv")  # as `make data` does for the sample data
    sh("dvc", "repro")
    sh("dvc", "push")
    assert (tmp_path / "dvc-storage").is_dir()  # the default remote: beside the checkout
    sh(*git, "add", "-A")
    sh(*git, "commit", "-qm", "a run worth keeping: dvc.lock")

    clone = tmp_path / "clone"
    sh("git", "clone", "-q", str(tiny_project), str(clone))
    assert not (clone / "models").exists()
    sh("dvc", "pull", cwd=clone)
    sh(sys.executable, "-m", "mlcore.models.checkpoint_link", cwd=clone)  # as `make install` does
    assert "Data and pipelines are up to date" in sh("dvc", "status", cwd=clone)
    assert digests(clone) == digests(tiny_project)
