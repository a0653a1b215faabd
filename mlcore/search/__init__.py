"""The hyperparameter search: the space, the Optuna study and its storage, trial claiming under a
budget. Imports optuna, mlcore.config/atomic and mlcore.models/engine;
no Prefect, no MLflow."""
