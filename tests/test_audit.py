"""The champion's audit record: readable in the registry UI (a sentence in a tag, a table in the
description), whole for rollback (JSON lines), within MLflow's column size, and still reading the
audit.NNNN tags of earlier releases."""
from __future__ import annotations

import json

import mlflow
import pytest
from mlflow import MlflowClient

from mlcore.tracking import audit
from mlcore.tracking.tags import LAST_MOVE_TAG

NAME = "m"


@pytest.fixture
def client(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    c = MlflowClient(uri)
    c.create_registered_model(NAME)
    return c


def _moves(client) -> list[tuple]:
    return [(e["action"], e["from"], e["to"]) for e in audit.read(client, NAME)]


def test_moves_read_as_a_sentence_and_a_table_and_stay_whole_for_rollback(client):
    audit.describe(client, NAME, "What the model is.")
    audit.append(client, NAME, "promote", None, "1", "no champion yet: macro_f1 0.8000", "register stage")
    audit.append(client, NAME, "promote", "1", "2", "beats the champion: macro_f1 0.8400 vs 0.8300 | -->", "me")
    audit.append(client, NAME, "keep", "2", "2", "does not beat the champion", "register stage", challenger="3")
    model = client.get_registered_model(NAME)
    assert not [k for k in model.tags if k.startswith("audit.")]  # the record is out of the tags ...
    assert model.tags[LAST_MOVE_TAG].startswith("v2 kept ") and "v3 is challenger" in model.tags[LAST_MOVE_TAG]
    summary, history = model.description.split(audit.HISTORY_HEADING)
    assert summary.strip() == "What the model is."  # ... and after the model's own description
    assert history.index("kept v2 (v3 challenger)") < history.index("promote: v1 → v2") < history.index("none → v1")
    assert "0.8300 \\| -" in history  # a '|' would end the table's cell
    assert _moves(client) == [("promote", None, "1"), ("promote", "1", "2"), ("keep", "2", "2")]
    assert audit.read(client, NAME)[1]["reason"].endswith("| -->")  # and a '-->' the hidden JSON
    assert audit.rollback_target(audit.read(client, NAME), "2") == "1"
    audit.describe(client, NAME, "Described again.")  # the next registration's description keeps the record
    assert audit.summary(client.get_registered_model(NAME).description) == "Described again."
    assert len(audit.read(client, NAME)) == 3


def test_the_audit_tags_of_earlier_releases_are_read_and_taken_into_the_description(client):
    old = [{"at": "2026-11-01T10:00:00+00:00", "by": "x", "action": "promote", "from": None, "to": "1", "reason": "a"},
           {"at": "2026-11-02T10:00:00+00:00", "by": "x", "action": "promote", "from": "1", "to": "2", "reason": "b"}]
    for number, line in enumerate(old, start=1):
        client.set_registered_model_tag(NAME, f"audit.{number:04d}", json.dumps(line, sort_keys=True))
    client.set_registered_model_tag(NAME, "audit.0003", "edited by hand")  # never trusted, never removed
    assert audit.read(client, NAME) == old
    audit.append(client, NAME, "rollback", "2", "1", "bad release", "me")
    tags = client.get_registered_model(NAME).tags
    assert [k for k in tags if k.startswith("audit.")] == ["audit.0003"]
    assert _moves(client) == [("promote", None, "1"), ("promote", "1", "2"), ("rollback", "2", "1")]


def test_a_long_record_keeps_the_description_within_mlflows_column_and_loses_no_line(client, monkeypatch):
    monkeypatch.setattr(audit, "DESCRIPTION_LIMIT", 2500)
    audit.describe(client, NAME, "What the model is.")
    for n in range(1, 16):
        audit.append(client, NAME, "promote", str(n - 1) if n > 1 else None, str(n), f"reason {n}", "register stage")
    model = client.get_registered_model(NAME)
    assert len(model.description) <= 2500
    spilled = sorted(k for k in model.tags if k.startswith("audit."))
    assert spilled and spilled[0] == "audit.0001"  # the oldest moved out, in order
    assert [e["to"] for e in audit.read(client, NAME)] == [str(n) for n in range(1, 16)]
    assert "(5 older: `python -m flows.registry history`)" in model.description  # 10 of 15 in the table
