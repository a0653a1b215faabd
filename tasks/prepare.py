"""prepare: validate the schema, clean, de-duplicate and split the labelled data: texts, or images
(prepare.modality; auto decides from the input and says what it decided)."""
from __future__ import annotations

import sys

from mlcore.data import cleaning
from mlcore.tracking import runs
from tasks import _io, _prepared
from tasks import _paths as P
from tasks._context import StageContext
from tasks._runner import as_task, cli

STAGE = "prepare"


def run(ctx: StageContext) -> dict:
    cfg, parent_run_id = ctx.cfg, ctx.parent_run_id
    p = cfg.prepare
    with runs.stage_run(cfg, STAGE, parent_run_id):
        runs.log_params(p.model_dump())
        prepared = _prepared.take(p)  # what the pipeline's pre-flight check computed, if it did
        cleaned, splits = prepared.cleaned, prepared.splits
        print(f"prepare: {prepared.modality} data: {prepared.reason}", file=sys.stderr)
        with _io.replacing(P.SPLITS) as out:
            for name, path in (("train", P.TRAIN), ("val", P.VAL), ("test", P.TEST)):
                splits[name].to_parquet(out / path.name, index=False)
            cleaned.unlabelled.to_parquet(out / P.UNLABELLED.name, index=False)
            _io.write_json(out / P.LABEL_MAP.name, cleaning.label_map(cleaned.labelled["label"]))
        runs.log_datasets(splits | {"unlabelled": cleaned.unlabelled}, P.SPLITS)  # what every later stage reads
        _io.write_json(P.DATA_REPORT, prepared.report())
        if cleaned.stats.get("conflicting_label_texts_dropped"):
            print(f"prepare: dropped {cleaned.stats['conflicting_label_texts_dropped']} texts with conflicting labels",
                  file=sys.stderr)
        if cleaned.stats.get("train_val_rows_dropped_as_test_texts"):
            print(f"prepare: dropped {cleaned.stats['train_val_rows_dropped_as_test_texts']} train/val rows whose text "
                  "is a test row's (the test split is scored as given)", file=sys.stderr)
        summary = prepared.summary()
        runs.log_metrics(summary)
        runs.log_artifact(P.DATA_REPORT)
    return summary


main = cli(STAGE, run, __doc__)
task = as_task(STAGE, run)

if __name__ == "__main__":
    sys.exit(main())
