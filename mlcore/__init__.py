"""The ML core: pure functions and objects. No Prefect here; MLflow only in mlcore.tracking."""
