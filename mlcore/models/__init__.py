"""Models: building, loading and saving checkpoints, the classifier and MLM objectives, masking,
tokenizers. Imports transformers and mlcore.engine/config/metrics/atomic; no Prefect, no MLflow."""
