"""Loading params.yaml: YAML to validated, frozen `Config`, with errors that name the key."""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import yaml
from pydantic import ValidationError

from mlcore.config.environment import resolve_environment
from mlcore.config.root import STAGES, Config
from mlcore.errors import UserError, reading


class ConfigError(UserError):
    pass


def _format_errors(path: Path, err: ValidationError, env_sources: Mapping[str, str]) -> str:
    lines, from_env = [], False
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown key (check its spelling and section)"
        elif not isinstance(e["input"], dict):
            msg += f" (got {e['input']!r})"
        notes = [f"{k} is from ${var}" for k, var in env_sources.items()
                 if e["loc"] and (k + ".").startswith(key + ".")]
        from_env |= bool(notes)
        lines.append(f"  {key}: {msg}" + (f" [{'; '.join(notes)}]" if notes else ""))
    fix = "Fix these keys in the file" + (" or the environment variables named" if from_env else "")
    return f"{path}: invalid configuration:\n" + "\n".join(lines) + f"\n{fix} and run again."


def parse_config(
        data: dict | None, source: str | Path = "params.yaml", environ: Mapping[str, str] | None = None) -> Config:
    """Validate raw params after applying the environment's overrides (MLFLOW_TRACKING_URI,
    OPTUNA_STORAGE, PIPELINE_DEVICE; `environ` defaults to os.environ). Also takes a dumped
    Config (worker processes get one as JSON): parsing it again gives the same Config."""
    resolved, env_sources = resolve_environment(data, environ)
    try:
        return Config.model_validate(resolved)
    except ValidationError as err:
        raise ConfigError(_format_errors(Path(source), err, env_sources)) from None


def load_config(path: str | Path = "params.yaml") -> Config:
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{path}: is a directory. Pass the params file itself (e.g. --params params.yaml).")
    if not path.is_file():
        raise ConfigError(
            f"{path}: no such file. Run from the project root, which holds params.yaml, "
            f"or pass the path of your params file."
        )
    with reading(path, "UTF-8 text", "Save it as UTF-8; `python -m mlcore.config --defaults` prints a "
                 "valid params file with every key."):
        text = path.read_text(encoding="utf-8")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {str(err).replace('<unicode string>', str(path))}") from None
    if data is not None and not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections ({', '.join(STAGES)}).")
    return parse_config(data, path)
