"""The servers a team shares, started and stopped with one command each (docs/team.md):
PostgreSQL (databases mlflow, optuna, prefect), an MLflow tracking server and a Prefect server on
it. Imports `mlcore` for its errors, atomic writes and liveness records; never `tasks` or `flows`,
and MLflow only to read its security defaults."""
