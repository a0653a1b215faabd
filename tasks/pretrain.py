"""pretrain: train a WordPiece tokenizer and pretrain a small BERT with masked LM, or continue
pretraining a local checkpoint (pretrain.init_from) with its own tokenizer."""
from __future__ import annotations

import hashlib
import json
import math
import sys

import pandas as pd
from transformers import AutoTokenizer

from mlcore.engine import distributed
from mlcore.models import modeling
from mlcore.engine.batching import encode
from mlcore.config import Config
from mlcore.engine.device import configure_threads, resolve_device, seed_everything
from mlcore.data.hashing import files_digest
from mlcore.models.mlm import MlmBatcher, mlm_loss, pack, pretrain_mlm
from mlcore.engine.settings import TrainSettings
from mlcore.models.wordpiece import train_wordpiece
from mlcore.tracking import runs
from tasks import _io
from tasks import _paths as P
from tasks._runner import as_task, cli

STAGE = "pretrain"
HISTORY_COLUMNS = ["epoch", "train_loss", "val_loss", "val_perplexity", "learning_rate", "samples_per_s"]


def _tokenizer(p, texts: list[str]):
    """Train the WordPiece tokenizer, or reuse the one an interrupted run of these settings
    trained: the trainer is not reproducible across processes, and a resumed model needs
    the vocabulary it was trained with."""
    saved = P.CHECKPOINTS / f"{STAGE}-tokenizer"
    key = hashlib.md5(json.dumps([texts, p.vocab_size, p.max_length]).encode()).hexdigest()
    if (saved / "key.txt").is_file() and (saved / "key.txt").read_text() == key:
        return AutoTokenizer.from_pretrained(saved)
    tokenizer = train_wordpiece(texts, p.vocab_size, p.max_length)
    tokenizer.save_pretrained(saved)
    (saved / "key.txt").write_text(key)
    return tokenizer


def run(cfg: Config, parent_run_id: str | None = None) -> dict:
    p = cfg.pretrain
    configure_threads(cfg.runtime.num_threads)
    device = distributed.setup(resolve_device(cfg.device()))
    seed_everything(p.seed)
    settings = TrainSettings.from_section(p)
    # Training text plus the unlabelled text; val and test stay unseen by pretraining.
    train_texts = pd.concat([_io.read_split(P.TRAIN)["text"], _io.read_split(P.UNLABELLED)["text"]]).tolist()
    val_texts = _io.read_split(P.VAL)["text"].tolist()
    with runs.stage_run(cfg, STAGE, parent_run_id):
        runs.log_params(p.model_dump() | {"device": str(device)})
        if p.init_from:
            model, tokenizer = modeling.load_mlm_model(p.init_from)
        else:
            with distributed.main_first():  # every rank must share rank 0's vocabulary
                tokenizer = _tokenizer(p, train_texts)
            model = modeling.new_mlm_model(p, len(tokenizer), tokenizer.pad_token_id)
        train, val = encode(tokenizer, train_texts, p.max_length), encode(tokenizer, val_texts, p.max_length)
        if p.packing:
            train = pack(train, tokenizer, p.max_length)
        # Resume only onto the same data and vocabulary (a from-scratch tokenizer can differ per run).
        vocab = hashlib.md5(json.dumps(sorted(tokenizer.get_vocab().items())).encode()).hexdigest()
        fingerprint = f"{files_digest([P.TRAIN, P.UNLABELLED, P.VAL])}-{vocab}-{p.init_from}"
        result = pretrain_mlm(
            model, tokenizer, train, val, settings, probability=p.mlm_probability, device=device,
            whole_word=p.whole_word_masking, on_epoch=lambda e: runs.log_metrics(e, step=e["evaluation"]),
            checkpoint_dir=P.CHECKPOINTS / STAGE, fingerprint=fingerprint,
        )
        if not distributed.is_main():
            return {"rank": distributed.rank()}  # rank 0 writes the outputs
        history = result.history
        batcher = MlmBatcher(tokenizer, p.mlm_probability, p.whole_word_masking)
        val_loss = history[-1]["val_loss"] if history else mlm_loss(model.to(device), val, batcher, device, 128)
        report = {
            "val_mlm_loss": val_loss,
            "val_perplexity": math.exp(min(val_loss, 50)),
            "parameters": modeling.count_parameters(model),
            "vocab_size": len(tokenizer),
            "train_texts": len(train_texts),
            "train_sequences": len(train),
            "init_from": p.init_from,
            "resumed_from_epoch": result.resumed_from_epoch,
            "tracking_overhead_pct": 100 * result.tracking_seconds / max(result.train_seconds, 1e-9),
        }
        _io.fresh_dir(P.PRETRAINED)
        modeling.save(model.cpu(), tokenizer, P.PRETRAINED, extra={"stage": STAGE, **report})
        _io.write_json(P.PRETRAIN_REPORT, report)
        P.PRETRAIN_HISTORY.parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame(history, columns=HISTORY_COLUMNS).to_csv(P.PRETRAIN_HISTORY, index=False)
        runs.log_metrics({k: v for k, v in report.items() if k != "init_from"})
        _io.clear_checkpoint(P.CHECKPOINTS / STAGE)
        _io.clear_checkpoint(P.CHECKPOINTS / f"{STAGE}-tokenizer")
    return {"val_mlm_loss": round(val_loss, 4), "val_perplexity": round(report["val_perplexity"], 2)}


main = cli(STAGE, run, __doc__)
task = as_task(STAGE, run)

if __name__ == "__main__":
    sys.exit(main())
