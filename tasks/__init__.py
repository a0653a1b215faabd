"""One module per pipeline stage; each is a thin shell over mlcore, usable as a
Prefect task (`<module>.task`) and as a CLI for dvc.yaml (`python -m tasks.<stage>`)."""
