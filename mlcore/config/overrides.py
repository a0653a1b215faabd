"""The override rule: a params.yaml value that differs from its model default says why,
in a trailing comment on its line that starts with `# override:`.

Read line by line (PyYAML drops comments): block-style mappings, one key per line, as
params.yaml is written; flow-style values ([a, b], {k: v}) stay on their key's line.
"""
from __future__ import annotations

import re
from pathlib import Path

import yaml
from pydantic import BaseModel

from mlcore.config.defaults import flow
from mlcore.config.loading import parse_config
from mlcore.config.root import Config

MARKER = "override:"
_KEY = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z_][\w-]*):(?=\s|$)(?P<rest>.*)$")


def _comment(rest: str) -> str:
    """The trailing comment of a line's value part ('' if none); a # inside quotes is text."""
    quote = None
    for i, ch in enumerate(rest):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or rest[i - 1].isspace()):
            return rest[i + 1:].strip()
    return ""


def trailing_comments(text: str) -> dict[str, str]:
    """Each key's dotted path -> the comment at the end of its line."""
    stack: list[tuple[int, str]] = []
    comments = {}
    for line in text.splitlines():
        match = _KEY.match(line)
        if not match:
            continue  # blank, comment-only or list-item lines
        indent = len(match["indent"])
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, match["key"]))
        comments[".".join(key for _, key in stack)] = _comment(match["rest"])
    return comments


def _leaves(raw: dict, model: BaseModel, prefix: str = ""):
    """The dotted paths of the values a params file sets, down into sections and sub-sections."""
    for key, value in raw.items():
        sub = getattr(model, key, None)
        if isinstance(value, dict) and isinstance(sub, BaseModel):
            yield from _leaves(value, sub, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}"


def _at(dump: dict, path: str):
    for key in path.split("."):
        dump = dump[key]
    return dump


def undocumented_overrides(path: str | Path = "params.yaml") -> list[str]:
    """Each key the file sets to a value other than its default without `# override: <why>`,
    and each `# override:` on a value that equals the default, as one line naming the key."""
    path = Path(path)
    text = path.read_text()
    raw = yaml.safe_load(text) or {}
    effective = parse_config(raw, path, environ={})  # the file alone, as validated (1 == 1.0)
    values, defaults = effective.model_dump(mode="json"), Config().model_dump(mode="json")
    comments = trailing_comments(text)
    problems = []
    for key in _leaves(raw, effective):
        value, default = _at(values, key), _at(defaults, key)
        comment = comments.get(key, "")
        why = comment.removeprefix(MARKER).strip() if comment.startswith(MARKER) else None
        if value != default and not why:
            problems.append(f"{key}: {flow(value)} differs from the default {flow(default)}; "
                            f"say why on its line: `# {MARKER} <why>`, or drop the key")
        elif value == default and why is not None:
            problems.append(f"{key}: `# {MARKER}` but the value is the default ({flow(default)}); drop the marker")
    return problems
