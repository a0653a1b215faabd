"""The audit record of the `champion` alias, kept on the registered model itself.

Every move (promote, keep, rollback, manual promote) appends one line: a registered-model tag
`audit.NNNN` whose value is a JSON object (at, by, action, from, to, reason). Tags travel with
the registry (SQLite, PostgreSQL or a tracking server), show in the registry UI, and need no
file beside the database. Rollback reads the record to find the previous champion.
"""
from __future__ import annotations

import getpass
import json
import os
import socket
import sys
from datetime import UTC, datetime

from mlflow import MlflowClient

from mlcore.tracking.tags import AUDIT_PREFIX

ACTIONS = ("promote", "keep", "rollback", "manual-promote")


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
    entries = read(client, name)
    line = {"at": datetime.now(UTC).isoformat(timespec="seconds"), "by": by, "action": action,
            "from": _version(from_version), "to": _version(to_version), "reason": reason, **extra}
    client.set_registered_model_tag(name, f"{AUDIT_PREFIX}{len(entries) + 1:04d}", json.dumps(line, sort_keys=True))
    return line


def read(client: MlflowClient, name: str) -> list[dict]:
    """The audit lines of `name`, oldest first."""
    tags = client.get_registered_model(name).tags
    lines = []
    for key in sorted(k for k in tags if k.startswith(AUDIT_PREFIX)):
        try:
            lines.append(json.loads(tags[key]))
        except json.JSONDecodeError:  # edited by hand in the UI: shown, never trusted for rollback
            print(f"warning: registered model {name}: tag {key} is not JSON; skipped", file=sys.stderr)
    return lines


def rollback_target(entries: list[dict], current: str) -> str | None:
    """The champion before `current`: the `from` of the line that last *promoted* `current`
    (rollbacks themselves are skipped, so repeated rollbacks walk back through history
    rather than undoing each other)."""
    for line in reversed(entries):
        if line.get("to") == current and line.get("action") in ("promote", "manual-promote"):
            return line.get("from")
    return None


def _version(version) -> str | None:
    return None if version is None else str(version)
