"""The training engine: the loop and what it owns (settings, optimizers, schedules, layers,
precision, checkpoints, distributed, device, batching). Imports torch and mlcore.errors/atomic;
no Prefect, no MLflow."""
