"""The MLflow tag names that more than one place writes, or that something reads back: each spelled once.

What reads them is often a later process (the orphan clean-up of the next run, the next
registration's gate, a rerun of a killed register stage) or a person filtering runs in the UI,
so a name here is part of what older runs and versions already carry: rename with care.
"""

# Run tags (and experiment tags).
KIND_TAG = "mlflow.experimentKind"  # MLflow's own: without it MLflow 3's UI may open the experiment in its GenAI view
NOTE_TAG = "mlflow.note.content"  # MLflow's own: the description it shows for an experiment or a run
ROLE_TAG = "pipeline.role"  # pipeline, stage or batch-scoring
OWNER_PREFIX = "owner."  # owner.<field>: the process a run belongs to, so that a later run can tell it died
TRIAL_STATE_TAG = "trial.state"  # COMPLETE, PRUNED or FAIL: a run's status has no word for pruned
TRIAL_TAG = "optuna.trial"  # the trial number, on each trial's run (a killed worker's is closed by it)
STUDY_TAG = "optuna.study"  # on each trial's run and on the version the search led to
# numerics.<field> (device, precision, cpu, cpu_bf16_flags, cpu_capability, threads, torch): what decides
# the bits of a trained model (mlcore.engine.precision.numerics), on the search and finetune runs and the version
NUMERICS_PREFIX = "numerics."

# Model-version tags (REASON_TAG is also on the register stage's run).
METRIC_TAG = "test_{metric}"  # the version's own test metric, on its run's split: history, not the gate
BASELINE_TAG = "test_baseline_{metric}"
TEST_DIGEST_TAG = "data.test_digest"
# What a version was made from (classifier weights + test metrics): a register stage killed after
# creating its version but before dvc.lock recorded it finds that version on the rerun and
# reuses it, so each completed register stage leaves exactly one version.
SOURCE_TAG = "source.digest"
# The gate's decision; a rerun of a register stage whose version already won reads it back.
REASON_TAG = "gate.reason"
NEW_VALUE_TAG = "gate.new_value"
CHAMPION_VERSION_TAG = "gate.champion_version"
CHAMPION_STORED_TAG = "gate.champion_stored_value"
CHAMPION_SAME_ROWS_TAG = "gate.champion_value_same_rows"
CHAMPION_UNSCORED_TAG = "gate.champion_unscored"

# Registered-model tags.
AUDIT_PREFIX = "audit."  # audit.0001, audit.0002, ...: one JSON line per move of `champion`
