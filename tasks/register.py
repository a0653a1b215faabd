"""register: log the classifier to MLflow as a pyfunc model, register a new version, and point
`champion` at it when it beats the current champion's test metric by register.min_delta
(otherwise `challenger`)."""
from __future__ import annotations

import sys

from mlcore.config import Config
from mlcore.tracking import registry, runs
from tasks import _io
from tasks import _paths as P
from tasks._runner import as_task, cli

STAGE = "register"


def run(cfg: Config, parent_run_id: str | None = None) -> dict:
    r = cfg.register
    metrics = _io.read_json(P.METRICS, "evaluate")
    label2id = _io.label_map()
    examples = _io.read_split(P.TEST)["text"].head(3).tolist()
    with runs.stage_run(cfg, STAGE, parent_run_id) as active:
        runs.log_params(r.model_dump())
        runs.log_metrics({f"test_{k}": v for k, v in metrics.items()})
        labels = sorted(label2id, key=label2id.get)
        info = registry.log_classifier(_io.require(P.CLASSIFIER, "finetune"), examples, labels, r.model_name)
        decision = registry.promote(
            r.model_name, info.registered_model_version, r.metric, metrics[r.metric], r.min_delta)
        decision["run_id"] = active.info.run_id
        runs.set_tags({"registered.version": decision["version"], "registered.alias": decision["alias"]})
        _io.write_json(P.REGISTRATION, decision)
    print(f"register: {r.model_name} version {decision['version']} -> @{decision['alias']} "
          f"({r.metric} {decision['value']:.4f}, previous champion {decision['previous_champion_value']})")
    return {"version": decision["version"], "alias": decision["alias"]}


main = cli(STAGE, run, __doc__)
task = as_task(STAGE, run)

if __name__ == "__main__":
    sys.exit(main())
