"""Batch scoring's core: everything `flows/batch_predict.py` does except talking to MLflow and Prefect.

    rows       reading the table to score (CSV, TSV, JSONL, Parquet) and why a row cannot be scored
    plan       the chunk plan: good rows sorted by text length, cut into chunks
    store      the resumable chunk store beside the output: a manifest and one file per finished chunk
    batch      scoring the unfinished chunks with any `predict(DataFrame) -> DataFrame`, with a progress bar
    output     reassembly in the input's row order, and the scored file with its metadata, written atomically
    model_uri  what a model URI names (registered name, alias, version); resolving it is MLflow's, at the edge

Imports pandas, numpy, pyarrow, tqdm and mlcore.errors/data/atomic only: no torch, no Prefect, no MLflow.
The model is any callable, so the core is tested without one.
"""
