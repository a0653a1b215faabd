"""Loading params.yaml: YAML to validated, frozen `Config`, with errors that name the key."""
from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import ValidationError

from mlcore.config.root import STAGES, Config
from mlcore.errors import UserError


class ConfigError(UserError):
    pass


def _format_errors(path: Path, err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown key (check its spelling and section)"
        elif not isinstance(e["input"], dict):
            msg += f" (got {e['input']!r})"
        lines.append(f"  {key}: {msg}")
    return f"{path}: invalid configuration:\n" + "\n".join(lines) + "\nFix these keys in the file and run again."


def parse_config(data: dict, source: str | Path = "params.yaml") -> Config:
    try:
        return Config.model_validate(data or {})
    except ValidationError as err:
        raise ConfigError(_format_errors(Path(source), err)) from None


def load_config(path: str | Path = "params.yaml") -> Config:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(
            f"{path}: no such file. Run from the project root, which holds params.yaml, "
            f"or pass the path of your params file."
        )
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    if data is not None and not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections ({', '.join(STAGES)}).")
    return parse_config(data, path)
