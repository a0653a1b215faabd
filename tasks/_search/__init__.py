"""The search stage's process plumbing: the trial's data, study and MLflow hooks (trials), extra
worker processes under DVC (workers), and a Prefect process pool inside the flow (pool)."""
