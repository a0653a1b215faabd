"""Environment overrides, resolved into the raw params before validation, so every rule
(say, SQLite storage with several workers) is checked once, by the model, whatever set the value."""
from __future__ import annotations

import os
from collections.abc import Mapping
from urllib.parse import urlsplit, urlunsplit

# (variable, section, key, which wins): "variable" -- it replaces the params.yaml value;
# "file" -- the params.yaml value stays, the variable fills a null.
ENV_OVERRIDES = (
    ("MLFLOW_TRACKING_URI", "tracking", "mlflow_uri", "file"),
    ("OPTUNA_STORAGE", "search", "storage", "variable"),
    ("PIPELINE_DEVICE", "runtime", "device", "variable"),
)


def resolve_environment(data: dict | None, environ: Mapping[str, str] | None = None) -> tuple[dict, dict[str, str]]:
    """A copy of the raw params with the environment's overrides applied (an empty variable
    counts as unset), and the key paths they set, each with its variable. Idempotent: a
    resolved config, dumped and resolved again under the same environment, is unchanged."""
    if data is not None and not isinstance(data, Mapping):
        return data, {}  # not a mapping of sections: the validator's to report
    environ = os.environ if environ is None else environ
    data = dict(data or {})
    sources: dict[str, str] = {}
    for variable, section, key, wins in ENV_OVERRIDES:
        value, raw = environ.get(variable), data.get(section)
        if not value or not isinstance(raw, (dict, type(None))):
            continue  # a section that is not a mapping is the validator's to report
        if wins == "file" and (raw or {}).get(key):
            continue
        data[section] = {**(raw or {}), key: value}
        sources[f"{section}.{key}"] = variable
    return data, sources


def redact(url: str | None) -> str | None:
    """A store URL fit for logs: its password masked (postgresql://user:***@host/db).
    Resolved overrides are config values like any other, so a logged section would
    otherwise carry the password that $OPTUNA_STORAGE or $MLFLOW_TRACKING_URI holds."""
    if not url or "://" not in url:
        return url
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))
