"""Data: reading the user's tables, cleaning, de-duplication and splitting (random, or the
user's predefined splits), the search's stratified subsample, the sample data, hashing.
Imports pandas/numpy and mlcore.errors/config/atomic only: no torch, no Prefect, no MLflow."""
