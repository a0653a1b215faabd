"""Building, loading and saving BERT-style models. Weights are safetensors only; attention
is torch SDPA, which picks flash or memory-efficient kernels on CUDA."""
from __future__ import annotations

import json
from pathlib import Path

import transformers
from transformers import (
    AutoModelForMaskedLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    BertConfig,
    BertForMaskedLM,
    PreTrainedModel,
)

from mlcore.config import PretrainConfig
from mlcore.errors import UserError

# "Some weights were not initialised" is expected when a head is added; keep logs readable.
transformers.logging.set_verbosity_error()
transformers.utils.logging.disable_progress_bar()  # per-tensor "Loading weights" bars


def new_mlm_model(cfg: PretrainConfig, vocab_size: int, pad_token_id: int) -> BertForMaskedLM:
    config = BertConfig(
        vocab_size=vocab_size,
        hidden_size=cfg.hidden_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        intermediate_size=cfg.intermediate_size,
        max_position_embeddings=max(cfg.max_length, 64),
        pad_token_id=pad_token_id,
    )
    config._attn_implementation = "sdpa"  # fused attention kernel (flash/memory-efficient on CUDA)
    return BertForMaskedLM(config)


def check_checkpoint(path: str | Path, key: str) -> Path:
    path = Path(path)
    if not (path / "config.json").is_file():
        raise UserError(
            f"{path}: not a model checkpoint directory (no config.json) — set by {key} in params.yaml. "
            "Point it at a local directory saved with save_pretrained "
            "(config.json, model.safetensors, tokenizer files)."
        )
    if not any(path.glob("*.safetensors")):
        raise UserError(f"{path}: has no .safetensors weights ({key}). "
                        "Only safetensors checkpoints are loaded, never pickles.")
    return path


def load_mlm_model(path: str | Path, key: str = "pretrain.init_from"):
    path = check_checkpoint(path, key)
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
    model = AutoModelForMaskedLM.from_pretrained(
        path, use_safetensors=True, trust_remote_code=False, attn_implementation="sdpa")
    return model, tokenizer


def load_classifier(path: str | Path, label2id: dict[str, int] | None = None, key: str = "model"):
    """A sequence classifier from `path`; with label2id a fresh head is added for those labels."""
    path = check_checkpoint(path, key)
    kwargs = {}
    if label2id is not None:
        kwargs = dict(num_labels=len(label2id), label2id=label2id, id2label={i: label for label, i in label2id.items()})
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
    model = AutoModelForSequenceClassification.from_pretrained(
        path, use_safetensors=True, trust_remote_code=False, attn_implementation="sdpa", **kwargs
    )
    return model, tokenizer


def save(model: PreTrainedModel, tokenizer, out_dir: str | Path, extra: dict | None = None) -> Path:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    if extra:
        (out_dir / "pipeline_info.json").write_text(json.dumps(extra, indent=2, sort_keys=True))
    return out_dir


def count_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())
