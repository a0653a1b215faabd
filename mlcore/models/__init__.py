"""Models: building, loading and saving checkpoints, the classifier and MLM objectives, masking,
tokenizers. Imports transformers and mlcore.engine/config/metrics; no Prefect, no MLflow."""
