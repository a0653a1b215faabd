"""Run by tests/test_distributed.py under torchrun: trains a tiny classifier (with the pooling
given, cls or mean) on the engine and saves this rank's final weights and how many batches it trained on."""
import json
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

from mlcore.config.training import to_settings
from mlcore.engine import distributed
from mlcore.engine import loop as engine
from mlcore.engine.batching import encode
from mlcore.models import modeling
from mlcore.models.classifier import train_classifier


def main(base: Path, out: Path, pooling: str) -> None:
    torch.manual_seed(1)
    model, tok = modeling.load_classifier(base, {"a": 0, "b": 1}, pooling=pooling)
    texts = [f"text number {i} " + "word " * (i % 7) for i in range(64)]
    train = encode(tok, texts, 32, [i % 2 for i in range(64)])
    seen = []
    real_mine = engine.distributed.mine
    engine.distributed.mine = lambda i, n: (seen.append(i) or True) if real_mine(i, n) else False
    s = to_settings(epochs=1, batch_size=8, learning_rate=1e-2, seed=0, dropout=0.0)
    train_classifier(model, train, train, s, torch.device("cpu"), tok.pad_token_id)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()},
              str(out / f"rank{distributed.rank()}.safetensors"))
    (out / f"rank{distributed.rank()}.json").write_text(json.dumps(seen))


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3])
