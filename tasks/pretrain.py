"""pretrain: train a WordPiece tokenizer and pretrain a small BERT with masked LM, or continue
pretraining a local checkpoint (pretrain.init_from) with its own tokenizer."""
from __future__ import annotations

import math
import sys

import pandas as pd

from mlcore import modeling
from mlcore.batching import encode
from mlcore.config import Config
from mlcore.device import configure_threads, resolve_device, seed_everything
from mlcore.pretraining import MlmBatcher, mlm_loss, pretrain_mlm
from mlcore.tokenization import train_wordpiece
from mlcore.tracking import runs
from tasks import _io
from tasks import _paths as P
from tasks._runner import as_task, cli

STAGE = "pretrain"


def run(cfg: Config, parent_run_id: str | None = None) -> dict:
    p = cfg.pretrain
    configure_threads(cfg.runtime.num_threads)
    device = resolve_device(cfg.device())
    seed_everything(p.seed)
    # Training text plus the unlabelled text; val and test stay unseen by pretraining.
    train_texts = pd.concat([_io.read_split(P.TRAIN)["text"], _io.read_split(P.UNLABELLED)["text"]]).tolist()
    val_texts = _io.read_split(P.VAL)["text"].tolist()
    with runs.stage_run(cfg, STAGE, parent_run_id):
        runs.log_params(p.model_dump() | {"device": str(device)})
        if p.init_from:
            model, tokenizer = modeling.load_mlm_model(p.init_from)
        else:
            tokenizer = train_wordpiece(train_texts, p.vocab_size, p.max_length)
            model = modeling.new_mlm_model(p, len(tokenizer), tokenizer.pad_token_id)
        train, val = encode(tokenizer, train_texts, p.max_length), encode(tokenizer, val_texts, p.max_length)
        history = pretrain_mlm(
            model, tokenizer, train, val, epochs=p.epochs, batch_size=p.batch_size, lr=p.learning_rate,
            probability=p.mlm_probability, seed=p.seed, device=device,
            on_epoch=lambda e: runs.log_metrics(vars(e), step=e.epoch),
        )
        val_loss = history[-1].val_loss if history else mlm_loss(model.to(device), val, MlmBatcher(tokenizer, p.mlm_probability), device, 128)
        report = {
            "val_mlm_loss": val_loss,
            "val_perplexity": math.exp(min(val_loss, 50)),
            "parameters": modeling.count_parameters(model),
            "vocab_size": len(tokenizer),
            "train_texts": len(train_texts),
            "init_from": p.init_from,
        }
        _io.fresh_dir(P.PRETRAINED)
        modeling.save(model.cpu(), tokenizer, P.PRETRAINED, extra={"stage": STAGE, **report})
        _io.write_json(P.PRETRAIN_REPORT, report)
        P.PRETRAIN_HISTORY.parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame([vars(h) for h in history], columns=["epoch", "train_loss", "val_loss", "val_perplexity", "samples_per_s"]).to_csv(P.PRETRAIN_HISTORY, index=False)
        runs.log_metrics({k: v for k, v in report.items() if k != "init_from"})
    return {"val_mlm_loss": round(val_loss, 4), "val_perplexity": round(report["val_perplexity"], 2)}


main = cli(STAGE, run, __doc__)
task = as_task(STAGE, run)

if __name__ == "__main__":
    sys.exit(main())
