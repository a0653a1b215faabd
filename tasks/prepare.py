"""prepare: validate the schema, clean, de-duplicate and split the labelled data."""
from __future__ import annotations

import sys

from mlcore.data import cleaning as D
from mlcore.config import Config
from mlcore.errors import UserError
from mlcore.data.tables import read_table, require_columns
from mlcore.tracking import runs
from tasks import _io
from tasks import _paths as P
from tasks._runner import as_task, cli

STAGE = "prepare"


def load_raw(cfg: Config):
    p = cfg.prepare
    df = read_table(p.input, p.format)
    require_columns(
        df, p.input,
        {"prepare.text_column": p.text_column, "prepare.label_column": p.label_column, "prepare.group_column": p.group_column},
    )
    return df


def run(cfg: Config, parent_run_id: str | None = None) -> dict:
    p = cfg.prepare
    with runs.stage_run(cfg, STAGE, parent_run_id):
        runs.log_params(p.model_dump())
        cleaned = D.clean(load_raw(cfg), p.text_column, p.label_column, p.group_column, p.unlabelled_labels)
        try:
            splits = D.split(cleaned.labelled, p.val_fraction, p.test_fraction, p.seed, grouped=p.group_column is not None)
        except UserError as err:  # name the file and column the problem is in
            raise UserError(f"{p.input} (label column {p.label_column!r}): {err}") from None
        labels = D.label_map(cleaned.labelled["label"])
        _io.fresh_dir(P.SPLITS)
        for name, path in (("train", P.TRAIN), ("val", P.VAL), ("test", P.TEST)):
            splits[name].to_parquet(path, index=False)
        cleaned.unlabelled.to_parquet(P.UNLABELLED, index=False)
        _io.write_json(P.LABEL_MAP, labels)
        report = D.report(splits, cleaned.unlabelled, cleaned.stats)
        _io.write_json(P.DATA_REPORT, report)
        if cleaned.stats["conflicting_label_texts_dropped"]:
            print(f"prepare: dropped {cleaned.stats['conflicting_label_texts_dropped']} texts with conflicting labels", file=sys.stderr)
        summary = {f"{name}_rows": len(part) for name, part in splits.items()}
        summary |= {"unlabelled_rows": len(cleaned.unlabelled), "duplicates_dropped": cleaned.stats["duplicates_dropped"],
                    "empty_text_dropped": cleaned.stats["empty_text_dropped"],
                    "conflicting_label_texts_dropped": cleaned.stats["conflicting_label_texts_dropped"]}
        runs.log_metrics(summary)
        runs.log_artifact(P.DATA_REPORT)
    return summary


main = cli(STAGE, run, __doc__)
task = as_task(STAGE, run)

if __name__ == "__main__":
    sys.exit(main())
