"""pretrain: continue masked-LM pretraining of a checkpoint (pretrain.init_from: a directory,
package:<module> or a hub id) with its own tokenizer, or train a WordPiece tokenizer and a small
BERT from scratch (init_from: null). epochs: 0 adopts the checkpoint as it is. The encoder is
saved with its classifier pooling (pretrain.pooling) for search and finetune. The MLflow run id goes
into reports/pretrain.json only, so a rerun's encoder stays byte-identical."""
from __future__ import annotations

import sys

import pandas as pd

from mlcore import modality
from mlcore.config.training import to_settings
from mlcore.data.hashing import files_digest
from mlcore.engine import distributed
from mlcore.engine.batching import choose_max_length, encode
from mlcore.engine.device import seed_everything
from mlcore.models import checkpoint_link, mlm, modeling, wordpiece
from mlcore.tracking import runs
from tasks import _io
from tasks import _paths as P
from tasks._context import StageContext
from tasks._runner import as_task, cli

STAGE = "pretrain"
HISTORY_COLUMNS = ["epoch", "train_loss", "val_loss", "val_perplexity", "learning_rate", "samples_per_s"]


def run(ctx: StageContext) -> dict:
    images = modality.name_of_splits(_io.require(P.TRAIN, "prepare")) == "image"
    return _images(ctx) if images else _text(ctx)


def _text(ctx: StageContext) -> dict:
    """Text: masked-LM pretraining continued, or from scratch, or the checkpoint adopted (epochs 0)."""
    cfg, parent_run_id, p = ctx.cfg, ctx.parent_run_id, ctx.cfg.pretrain
    device = distributed.setup(ctx.device)
    seed_everything(p.seed)
    settings, _ = to_settings(p), checkpoint_link.refresh(p.init_from)  # dvc.lock then hashes this checkpoint
    # Training text plus the unlabelled text; val and test stay unseen by pretraining.
    splits = {name: _io.read_split(path) for name, path in
              (("train", P.TRAIN), ("unlabelled", P.UNLABELLED), ("val", P.VAL))}
    train_texts = pd.concat([splits["train"]["text"], splits["unlabelled"]["text"]]).tolist()
    val_texts = splits["val"]["text"].tolist()
    with runs.stage_run(cfg, STAGE, parent_run_id) as active:
        runs.log_params(p.model_dump() | {"device": str(device)})
        runs.log_datasets(splits, P.SPLITS)
        model, tokenizer = mlm.starting_point(p, train_texts)
        length = choose_max_length(p.max_length, tokenizer, train_texts, model.config)
        train, val = (encode(tokenizer, texts, length.max_length) for texts in (train_texts, val_texts))
        train = mlm.pack(train, tokenizer, length.max_length) if p.packing else train
        # Resume only onto the same data and vocabulary.
        fingerprint = (f"{files_digest([P.TRAIN, P.UNLABELLED, P.VAL])}-{wordpiece.vocab_digest(tokenizer)}"
                       f"-{p.init_from}-{getattr(model.config, 'init_weights_sha256', None)}")
        result = mlm.pretrain_mlm(
            model, tokenizer, train, val, settings, probability=p.mlm_probability, device=device,
            whole_word=p.whole_word_masking, on_epoch=lambda e: runs.log_metrics(e, step=e["evaluation"]),
            checkpoint_dir=P.CHECKPOINTS / STAGE, fingerprint=fingerprint)
        if not distributed.is_main():
            return {"rank": distributed.rank()}  # rank 0 writes the outputs
        report = mlm.report(model, tokenizer, result, val, settings, p, device, len(train_texts), len(train)) \
            | length.report()
        with _io.replacing(P.PRETRAINED) as out:
            modeling.save(model.cpu(), tokenizer, out, extra={"stage": STAGE, **report})
        _io.write_json(P.PRETRAIN_REPORT, report | {"mlflow_run_id": active.info.run_id if active else None})
        _io.write_csv(P.PRETRAIN_HISTORY, result.history, HISTORY_COLUMNS)
        runs.log_metrics({k: v for k, v in report.items()
                          if k not in ("init_from", "init_weights_sha256", "max_length_setting")})
        runs.log_params({"init_weights_sha256": report["init_weights_sha256"]})
        _io.clear_checkpoint(P.CHECKPOINTS / STAGE)
    return {"val_mlm_loss": round(report["val_mlm_loss"], 4), "val_perplexity": round(report["val_perplexity"], 2)}


def _images(ctx: StageContext) -> dict:
    """Images: the ImageNet network adopted, a saved one reused, or a ResNet to train from scratch."""
    from mlcore.models.vision import checkpoint, start

    cfg, p = ctx.cfg, ctx.cfg.pretrain
    checkpoint_link.refresh(p.init_from)  # dvc.lock then hashes this checkpoint
    channels = int(_io.read_split(P.TRAIN).iloc[0]["channels"])
    with runs.stage_run(cfg, STAGE, ctx.parent_run_id) as active:
        runs.log_params(p.model_dump())
        model, report = start.starting_point(p, channels)
        with _io.replacing(P.PRETRAINED) as out:
            checkpoint.save(model, out, extra={"stage": STAGE, **report})
        _io.write_json(P.PRETRAIN_REPORT, report | {"mlflow_run_id": active.info.run_id if active else None})
        _io.write_csv(P.PRETRAIN_HISTORY, [], HISTORY_COLUMNS)
        runs.log_metrics({"parameters": report["parameters"]})
        runs.log_params({"init_weights_sha256": report["init_weights_sha256"], "architecture": report["architecture"]})
    return {"architecture": report["architecture"], "parameters": report["parameters"]}


main = cli(STAGE, run, __doc__)
task = as_task(STAGE, run)

if __name__ == "__main__":
    sys.exit(main())
