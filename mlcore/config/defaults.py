"""Every key of params.yaml with its default and its help, as a commented params.yaml
(`python -m mlcore.config --defaults`), read off the models: nothing here is written twice."""
from __future__ import annotations

import inspect
import typing

import yaml
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from mlcore.config.knobs import TrainingKnobs
from mlcore.config.root import Config

COMMENT_COLUMN = 36
HEADER = """\
# Every key of params.yaml, its default and its help (python -m mlcore.config --defaults).
# A key left out of params.yaml takes the default shown. A params.yaml value that differs
# from its default says why on its line: `key: value  # override: <why>`
# (tests/test_config_overrides.py checks it)."""


def flow(value) -> str:
    """One value as one line of YAML (flow style for lists and mappings)."""
    text = yaml.safe_dump(value, default_flow_style=True, width=2**31, sort_keys=False)
    return text.removesuffix("...\n").strip()


def _choices(annotation) -> list[str]:
    """The allowed values of a Literal (or optional Literal) annotation, else none."""
    if typing.get_origin(annotation) is typing.Literal:
        return [str(v) for v in typing.get_args(annotation)]
    if type(None) in typing.get_args(annotation):
        return [c for arg in typing.get_args(annotation) for c in _choices(arg)]
    return []


def help_text(field: FieldInfo) -> str:
    """A key's one-line help: its description, then its choices when it has a fixed set."""
    choices = _choices(field.annotation)
    return (field.description or "") + (f" ({' | '.join(choices)})" if choices else "")


def _line(indent: int, key: str, value: str, comment: str) -> str:
    left = f"{'  ' * indent}{key}:{' ' + value if value else ''}"
    return f"{left.ljust(COMMENT_COLUMN - 2)}  # {comment}" if comment else left


def _section_lines(model: type[BaseModel], values: dict, indent: int) -> list[str]:
    """A section's keys: its own first, then (pretrain, search, finetune) the shared training keys."""
    fields = model.model_fields
    if issubclass(model, TrainingKnobs):
        knobs = TrainingKnobs.model_fields
        fields = {k: f for k, f in fields.items() if k not in knobs} | {"": None} | {k: fields[k] for k in knobs}
    lines = []
    for name, field in fields.items():
        if field is None:
            lines.append(f"{'  ' * indent}# The training keys, shared by pretrain, search and finetune:")
            continue
        sub = field.default if isinstance(field.default, BaseModel) else None
        if sub is not None:
            lines.append(_line(indent, name, "", help_text(field)))
            lines += _section_lines(type(sub), values[name], indent + 1)
        else:
            lines.append(_line(indent, name, flow(values[name]), help_text(field)))
    return lines


def render_defaults() -> str:
    """The defaults as a commented params.yaml: valid YAML that validates to `Config()`."""
    values = Config().model_dump(mode="json")
    lines = [HEADER]
    for name, field in Config.model_fields.items():
        lines.append("")
        lines += [f"# {line}".rstrip() for line in inspect.cleandoc(field.description or "").splitlines()]
        lines.append(f"{name}:")
        lines += _section_lines(type(field.default), values[name], 1)
    return "\n".join(lines) + "\n"
