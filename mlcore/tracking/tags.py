"""The MLflow tag names that more than one place writes, or that something reads back: each spelled once.

What reads them is often a later process (the orphan clean-up of the next run, the next
registration's gate, a rerun of a killed register stage) or a person filtering runs in the UI,
so a name here is part of what older runs and versions already carry: rename with care.
"""

# Run tags (and experiment tags).
# MLflow's own: what the experiment is for. MLflow 3.17's UI no longer reads it to pick the view it
# opens (the workflowType in the URL does: mlcore/tracking/ui.py); other clients may.
KIND_TAG = "mlflow.experimentKind"
NOTE_TAG = "mlflow.note.content"  # MLflow's own: the description it shows for an experiment or a run
ROLE_TAG = "pipeline.role"  # pipeline, stage or batch-scoring
OWNER_PREFIX = "owner."  # owner.<field>: the process a run belongs to, so that a later run can tell it died
TRIAL_STATE_TAG = "trial.state"  # COMPLETE, PRUNED (its run FINISHED) or FAIL: a run's status has no word for pruned
TRIAL_TAG = "optuna.trial"  # the trial number, on each trial's run (a killed worker's is closed by it)
STUDY_TAG = "optuna.study"  # on each trial's run and on the version the search led to
# numerics.<field> (device, precision, cpu, cpu_bf16_flags, cpu_capability, threads, torch): what decides
# the bits of a trained model (mlcore.engine.precision.numerics), on the search and finetune runs (the version
# has them in one line, NUMERICS_TAG)
NUMERICS_PREFIX = "numerics."

# Model-version tags (REASON_TAG is also on the register stage's run). A version's whole lineage, hashes
# and run ids, is its lineage.json artifact (mlcore/tracking/lineage.py); its tags are what people read.
METRIC_TAG = "test_{metric}"  # the version's own test metric, on its run's split: history, not the gate
BASELINE_TAG = "test_baseline_{metric}"
NUMERICS_TAG = "numerics"  # the numerics record in one line (model_card.describe_numerics)
# What a version was made from (classifier weights + test metrics): a register stage killed after
# creating its version but before dvc.lock recorded it finds that version on the rerun and
# reuses it, so each completed register stage leaves exactly one version.
SOURCE_TAG = "source.digest"
# The gate's decision; a rerun of a register stage whose version already won reads it back.
# (The value it judged is METRIC_TAG's: releases before it also wrote it as gate.new_value.)
REASON_TAG = "gate.reason"
CHAMPION_VERSION_TAG = "gate.champion_version"
CHAMPION_STORED_TAG = "gate.champion_stored_value"
CHAMPION_SAME_ROWS_TAG = "gate.champion_value_same_rows"
CHAMPION_UNSCORED_TAG = "gate.champion_unscored"

# Registered-model tags.
# audit.0001, audit.0002, ...: one JSON line per move of `champion`, the oldest that no longer fit in
# the model's description (mlcore/tracking/audit.py; all of them, in releases before it kept them there)
AUDIT_PREFIX = "audit."
LAST_MOVE_TAG = "champion.last_move"  # the latest move of `champion` in one sentence, for people
# The format the registered model serves in (register.serve_format, after its agreement check), and why.
SERVE_FORMAT_TAG = "serve.format"
SERVE_REASON_TAG = "serve.reason"
