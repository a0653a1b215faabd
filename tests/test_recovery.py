"""The one recovery entry point (tasks/_recovery.py): each system's step runs once, and a
Prefect that cannot be reached only warns."""
from tasks import _recovery


def test_recover_closes_mlflow_orphans_and_runs_the_flows_prefect_step(monkeypatch, capsys):
    monkeypatch.setattr(_recovery.runs, "close_orphans", lambda cfg: ["search"])
    closed = _recovery.recover(None, prefect=lambda: ["proud-otter"])
    assert closed == {"prefect": ["proud-otter"], "mlflow": ["search"]}
    assert "marked CRASHED in Prefect: proud-otter; ended FAILED in MLflow: search" in capsys.readouterr().out


def test_an_unreachable_prefect_warns_and_mlflow_is_still_closed(monkeypatch, capsys):
    monkeypatch.setattr(_recovery.runs, "close_orphans", lambda cfg: [])

    def unreachable():
        raise ConnectionError("connection refused")

    assert _recovery.recover(None, prefect=unreachable) == {"prefect": [], "mlflow": []}
    assert "could not check Prefect" in capsys.readouterr().out


def test_nothing_to_recover_says_nothing(monkeypatch, capsys):
    monkeypatch.setattr(_recovery.runs, "close_orphans", lambda cfg: [])
    assert _recovery.recover(None) == {"prefect": [], "mlflow": []}
    assert capsys.readouterr().out == ""
