"""register: log the classifier to MLflow as a pyfunc model, register a new version, and point
`champion` at it when it beats the TF-IDF baseline's test metric (register.require_beat_baseline)
and the current champion's by register.min_delta (otherwise `challenger`; the version's
`gate.reason` tag says why)."""
from __future__ import annotations

import sys

from mlcore.config import Config
from mlcore.data.hashing import files_digest
from mlcore.errors import UserError
from mlcore.tracking import registry, runs
from tasks import _io
from tasks import _paths as P
from tasks._runner import as_task, cli

STAGE = "register"


def run(cfg: Config, parent_run_id: str | None = None) -> dict:
    r = cfg.register
    metrics = _io.read_json(P.METRICS, "evaluate")
    baseline = _baseline_value(metrics, r.metric, r.require_beat_baseline)
    label2id = _io.label_map()
    examples = _io.read_split(P.TEST)["text"].head(3).tolist()
    with runs.stage_run(cfg, STAGE, parent_run_id) as active:
        runs.log_params(r.model_dump())
        runs.log_metrics({f"test_{k}": v for k, v in metrics.items()})
        labels = sorted(label2id, key=label2id.get)
        classifier = _io.require(P.CLASSIFIER, "finetune")
        # the weights and the test metrics, not config.json, which carries training-time timings
        digest = files_digest([*sorted(classifier.glob("*.safetensors")), P.METRICS])
        version_ = registry.find_version(r.model_name, digest)  # left by a killed register: reused
        if version_ is None:
            version_ = registry.log_classifier(classifier, examples, labels, r.model_name, digest).version
        decision = registry.promote(r.model_name, version_, r.metric, metrics[r.metric],
                                    r.min_delta, baseline, r.require_beat_baseline)
        decision["run_id"] = active.info.run_id
        runs.set_tags({"registered.version": decision["version"], "registered.alias": decision["alias"],
                       "gate.reason": decision["reason"]})
        _io.write_json(P.REGISTRATION, decision)
    print(f"register: {r.model_name} version {decision['version']} -> @{decision['alias']} ({decision['reason']})")
    return {"version": decision["version"], "alias": decision["alias"]}


def _baseline_value(metrics: dict, metric: str, required: bool) -> float | None:
    key = f"baseline_{metric}"
    if key not in metrics and required:
        raise UserError(f"{P.METRICS}: no `{key}`, which register.require_beat_baseline needs. It is written by "
                        f"the `evaluate` stage since it scores the TF-IDF baseline: rerun it (`dvc repro evaluate`), "
                        f"or set register.require_beat_baseline: false in params.yaml.")
    return metrics.get(key)


main = cli(STAGE, run, __doc__)
task = as_task(STAGE, run)

if __name__ == "__main__":
    sys.exit(main())
