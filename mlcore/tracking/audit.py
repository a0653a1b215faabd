"""The audit record of the `champion` alias, kept on the registered model itself.

Every move (promote, keep, rollback, manual promote) appends one line, a JSON object (at, by,
action, from, to, reason). The record lives in the registry, so it travels with the SQLite file,
PostgreSQL or a tracking server and needs no file beside the database. Rollback reads it to find
the previous champion.

Where, so that the registry UI reads well: the registered model's description ends with a
"Champion history" table (newest first) and, in an HTML comment the UI does not show, the lines as
JSON; the tag `champion.last_move` says the latest move in one sentence. MLflow keeps a registered
model's description in a 5000-character column on PostgreSQL and MySQL, so when the lines no longer
fit, the oldest move out to tags `audit.0001`, `audit.0002`, ...: the one-tag-per-line form of
earlier releases, which `read` keeps reading.
"""
from __future__ import annotations

import getpass
import json
import os
import re
import socket
import sys
from datetime import UTC, datetime

from mlflow import MlflowClient

from mlcore.tracking.tags import AUDIT_PREFIX, LAST_MOVE_TAG

ACTIONS = ("promote", "keep", "rollback", "manual-promote")
DESCRIPTION_LIMIT = 5000  # MLflow's registered_models.description: VARCHAR(5000)
HISTORY_HEADING = "## Champion history"
SHOWN = 10  # moves in the readable table; all of them in the JSON
_JSON = re.compile(r"<!-- champion-history \(JSON lines: rollback reads them\)\n(.*?)\n-->", re.S)


def actor(what: str) -> str:
    """Who or what moved the alias: 'register stage (user@host, pid 123)'."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{what} ({user}@{socket.gethostname()}, pid {os.getpid()})"


def append(client: MlflowClient, name: str, action: str, from_version: str | None, to_version: str | None,
           reason: str, by: str, **extra) -> dict:
    """Add one line to `name`'s audit record and return it."""
    if action not in ACTIONS:
        raise ValueError(f"audit action {action!r}; expected one of {ACTIONS}")
    line = {"at": datetime.now(UTC).isoformat(timespec="seconds"), "by": by, "action": action,
            "from": _version(from_version), "to": _version(to_version), "reason": reason, **extra}
    model = client.get_registered_model(name)
    _store(client, name, summary(model.description), read(client, name) + [line], model.tags)
    client.set_registered_model_tag(name, LAST_MOVE_TAG, last_move(line)[:DESCRIPTION_LIMIT])
    return line


def describe(client: MlflowClient, name: str, text: str) -> None:
    """Set the registered model's description to `text`, keeping the record at its end."""
    model = client.get_registered_model(name)
    _store(client, name, text, read(client, name), model.tags)


def read(client: MlflowClient, name: str) -> list[dict]:
    """The audit lines of `name`, oldest first: those in tags (older), then the description's."""
    model = client.get_registered_model(name)
    lines = []
    for key in sorted(k for k in model.tags if k.startswith(AUDIT_PREFIX)):
        try:
            lines.append(json.loads(model.tags[key]))
        except json.JSONDecodeError:  # edited by hand in the UI: shown, never trusted for rollback
            print(f"warning: registered model {name}: tag {key} is not JSON; skipped", file=sys.stderr)
    # a kill between writing the description and removing the tags it took in leaves a line twice
    return lines + [line for line in _described(model.description, name) if line not in lines]


def summary(description: str | None) -> str:
    """The description without the record: what describes the model itself."""
    return (description or "").split(HISTORY_HEADING, 1)[0].strip()


def last_move(line: dict) -> str:
    """The move in one sentence: 'v3 promoted 2026-12-04: beats the champion: macro_f1 0.8400 vs 0.8300'."""
    day, source, target = line["at"][:10], _v(line.get("from")), _v(line.get("to"))
    said = {"promote": f"{target} promoted {day}",
            "manual-promote": f"{target} promoted by hand {day} (was {source})",
            "rollback": f"rolled back to {target} {day} (from {source})",
            "keep": f"{target} kept {day}, v{line.get('challenger')} is challenger"}[line["action"]]
    return f"{said}: {line['reason']}"


def rollback_target(entries: list[dict], current: str) -> str | None:
    """The champion before `current`: the `from` of the line that last *promoted* `current`
    (rollbacks themselves are skipped, so repeated rollbacks walk back through history
    rather than undoing each other)."""
    for line in reversed(entries):
        if line.get("to") == current and line.get("action") in ("promote", "manual-promote"):
            return line.get("from")
    return None


def _store(client: MlflowClient, name: str, text: str, lines: list[dict], tags: dict[str, str]) -> None:
    """Write `lines` (oldest first) into the description after `text`; the oldest that do not fit
    go to tags audit.0001.. (lines already there keep their tag), and tags the description now
    holds are removed, after it is written."""
    spilled = 0
    while len(_compose(text, lines[spilled:], spilled)) > DESCRIPTION_LIMIT and spilled < len(lines):
        spilled += 1
    for number, line in enumerate(lines[:spilled], start=1):
        key = f"{AUDIT_PREFIX}{number:04d}"
        if tags.get(key) != _dumps(line):
            client.set_registered_model_tag(name, key, _dumps(line))
    client.update_registered_model(name, description=_compose(text, lines[spilled:], spilled))
    for key, value in tags.items():
        number = key.removeprefix(AUDIT_PREFIX)
        if key.startswith(AUDIT_PREFIX) and number.isdigit() and int(number) > spilled \
                and _loads(value) in lines[spilled:]:  # a tag that is not such a line stays
            client.delete_registered_model_tag(name, key)


def _compose(text: str, lines: list[dict], in_tags: int = 0) -> str:
    """`text`, then the history of `lines` (and of `in_tags` older ones kept in tags)."""
    if not lines:
        return text
    rows = [f"| {e['at'][:16].replace('T', ' ')} | {_move(e)} | {_cell(e['reason'])} | {_cell(e['by'])} |"
            for e in reversed(lines[-SHOWN:])]
    older = in_tags + len(lines) - SHOWN
    table = "\n".join([
        f"{HISTORY_HEADING}", "Every move of `champion`, newest first" + (
            f" ({older} older: `python -m flows.registry history`)." if older > 0 else "."),
        "", "| when (UTC) | move | why | by |", "|---|---|---|---|", *rows])
    data = "\n".join(_dumps(e).replace("--", "-\\u002d") for e in lines)  # never a '-->' inside the comment
    return f"{text}\n\n{table}\n\n<!-- champion-history (JSON lines: rollback reads them)\n{data}\n-->"


def _described(description: str | None, name: str) -> list[dict]:
    found = _JSON.search(description or "")
    if not found:
        return []
    lines = []
    for text in found.group(1).splitlines():
        try:
            lines.append(json.loads(text))
        except json.JSONDecodeError:
            print(f"warning: registered model {name}: a champion-history line is not JSON; skipped", file=sys.stderr)
    return lines


def _move(line: dict) -> str:
    if line["action"] == "keep":
        return f"kept {_v(line.get('to'))} (v{line.get('challenger')} challenger)"
    return f"{line['action']}: {_v(line.get('from'))} → {_v(line.get('to'))}"


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _loads(text: str) -> dict | None:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return None


def _dumps(line: dict) -> str:
    return json.dumps(line, sort_keys=True)


def _v(version) -> str:
    return "none" if version is None else f"v{version}"


def _version(version) -> str | None:
    return None if version is None else str(version)
