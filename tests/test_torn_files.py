"""Files that DVC, Optuna and MLflow write in place, left torn as a kill inside their write
leaves them, on purpose: the next run puts each right before it needs it, instead of failing
(or calling it a bug in the pipeline)."""
from __future__ import annotations

import json
import subprocess
import sys
import types
from pathlib import Path

import optuna
import pytest
from dvc.repo import Repo

from mlcore.errors import UserError
from tasks import _dvc_state
from tasks._workspace import workspace_lock

RWLOCK = Path(".dvc/tmp/rwlock")
EXPS_RWLOCK = Path(".dvc/tmp/exps/rwlock")
# A record of DVC's per-path locks, cut short where a kill inside its write can cut it.
TORN_RWLOCK = '{"read": {"/project/data/raw/reviews.csv": [{"pid": 4242, "cmd": "dvc re'


@pytest.fixture
def dvc_workspace(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Repo.init(str(tmp_path), no_scm=True).close()
    RWLOCK.parent.mkdir(parents=True, exist_ok=True)
    return tmp_path


def dvc_can_use_its_path_locks() -> None:
    """What DVC does to .dvc/tmp/rwlock around every stage it checks or runs."""
    from dvc.fs import localfs
    from dvc.rwlock import rwlock

    with rwlock(str(RWLOCK.parent), localfs, "a test", [], [str(Path("out").resolve())], False):
        pass


@pytest.mark.parametrize("torn", ["", TORN_RWLOCK, '{"read": []}'], ids=["empty", "cut_short", "not_dvc_format"])
def test_a_torn_path_lock_file_is_emptied_when_the_workspace_is_taken(dvc_workspace, torn, capsys):
    EXPS_RWLOCK.parent.mkdir(parents=True)
    RWLOCK.write_text(torn)
    EXPS_RWLOCK.write_text(torn)
    with pytest.raises(Exception, match="RWLock-file"):
        dvc_can_use_its_path_locks()  # what the rerun in issue 19 met
    with workspace_lock("a rerun", hold_dvc=True):
        assert not RWLOCK.exists() and not EXPS_RWLOCK.exists()
        dvc_can_use_its_path_locks()
    assert f"{RWLOCK}: cut short by a killed DVC command" in capsys.readouterr().out


def test_a_whole_path_lock_file_is_left_as_it_is(dvc_workspace):
    whole = json.dumps({"write": {"/project/out": {"pid": 999_999_999, "cmd": "dvc repro (killed)"}}})
    RWLOCK.write_text(whole)
    with workspace_lock("a rerun", hold_dvc=True):
        assert RWLOCK.read_text() == whole  # a dead process's entry: DVC drops it itself, with a warning


def test_without_dvcs_lock_nothing_is_repaired(dvc_workspace):
    """A stage under `dvc repro` takes the workspace without DVC's lock (DVC holds it, and its
    live per-path locks are in .dvc/tmp/rwlock): there the file is never touched."""
    RWLOCK.write_text(TORN_RWLOCK)
    with workspace_lock("stage prepare", hold_dvc=False):
        assert RWLOCK.read_text() == TORN_RWLOCK
    with pytest.raises(RuntimeError, match="DVC's lock"):
        _dvc_state.repair_torn_files()


def test_a_dvc_lock_cut_short_is_set_aside_so_every_stage_reruns(dvc_workspace, capsys):
    whole = "schema: '2.0'\nstages:\n  prepare:\n    cmd: python -m tasks.prepare\n"
    Path("dvc.lock").write_text(whole)
    with workspace_lock("a rerun", hold_dvc=True):
        assert Path("dvc.lock").read_text() == whole
    for torn in ("", whole[:-1], whole[:30]):
        Path("dvc.lock").write_text(torn)
        with workspace_lock("a rerun", hold_dvc=True):
            assert not Path("dvc.lock").exists()
            assert _dvc_state.TORN_LOCKFILE.read_text() == torn
    assert "so every stage reruns" in capsys.readouterr().out


def test_a_dvc_lock_with_merge_conflicts_is_the_users_to_resolve(dvc_workspace):
    Path("dvc.lock").write_text("schema: '2.0'\n<<<<<<< HEAD\nstages: {}\n=======\nstages: {}\n>>>>>>> b\n")
    with pytest.raises(UserError, match="merge conflict"), workspace_lock("a rerun", hold_dvc=True):
        pass
    assert Path("dvc.lock").exists()


def test_an_optuna_journal_record_cut_short_is_dropped_and_the_study_goes_on(tmp_path, capsys):
    from mlcore.search.studies import make_storage

    path = tmp_path / "study.journal"
    study = optuna.create_study(study_name="s", storage=make_storage(str(path), tmp_path, "s"))
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    path.write_bytes(path.read_bytes()[:-7])  # the last record (trial 1's end), cut short
    # Unmended, Optuna appends onto the cut line: the next trial is lost and the study fails.
    study = optuna.load_study(study_name="s", storage=make_storage(str(path), tmp_path, "s"))
    assert "dropped its last record" in capsys.readouterr().out
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    again = optuna.load_study(study_name="s", storage=make_storage(str(path), tmp_path, "s"))
    assert [t.state.name for t in again.trials] == ["COMPLETE", "RUNNING", "COMPLETE", "COMPLETE"]
    assert path.read_bytes().endswith(b"\n")


def test_an_mlflow_sqlite_store_is_created_whole_or_not_at_all(tmp_path, monkeypatch):
    import mlflow.store.db.utils as db
    from mlflow import MlflowClient

    from mlcore.tracking import sqlite_creation as store

    path = tmp_path / "mlflow.db"
    uri = f"sqlite:///{path}"
    real = db._initialize_tables

    def killed_midway(engine):
        db.InitialBase.metadata.create_all(engine)  # the first tables, then the kill
        raise KeyboardInterrupt

    monkeypatch.setattr(db, "_initialize_tables", killed_midway)
    with pytest.raises(KeyboardInterrupt):
        store.create_whole(uri)
    assert not path.exists()  # unlike MLflow's own creation, nothing half-made at the store's path
    monkeypatch.setattr(db, "_initialize_tables", real)
    assert store.create_whole(uri) and not store.create_whole(uri)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mlflow.db"]
    client = MlflowClient(uri)
    client.create_run(client.create_experiment("e"))
    client.create_registered_model("m")


def test_the_workspace_check_that_make_runs_before_dvc_repairs_the_path_locks(tiny_project):
    """`make data` runs it before `dvc add` (and before the flow); a user runs it before `dvc repro`,
    which reads .dvc/tmp/rwlock before any stage command of ours could mend it."""
    RWLOCK.parent.mkdir(parents=True, exist_ok=True)
    RWLOCK.write_text(TORN_RWLOCK)
    status = subprocess.run(["dvc", "status"], capture_output=True, text=True)
    assert status.returncode != 0 and "RWLock-file" in status.stderr
    check = subprocess.run([sys.executable, "-m", "tasks._workspace"], capture_output=True, text=True)
    assert check.returncode == 0 and "rwlock: cut short" in check.stdout, check.stdout + check.stderr
    status = subprocess.run(["dvc", "status"], capture_output=True, text=True)
    assert status.returncode == 0, status.stderr


@pytest.mark.slow
def test_the_flow_command_repairs_before_it_asks_dvc_what_changed(tiny_project, monkeypatch, capsys):
    """The rerun of issue 19: the flow's command line meets a torn .dvc/tmp/rwlock. The flow
    itself (Prefect and six stages) is stood in for; what is real is everything before it."""
    from flows import training_pipeline

    ran = []
    flow = types.ModuleType("flows.training_flow")
    flow.training_pipeline = lambda params, force, wait: ran.append(params) or {}
    monkeypatch.setitem(sys.modules, "flows.training_flow", flow)
    monkeypatch.setattr("signal.signal", lambda *args: None)  # keep pytest's own SIGTERM handling
    RWLOCK.parent.mkdir(parents=True, exist_ok=True)
    RWLOCK.write_text(TORN_RWLOCK)
    assert training_pipeline.main([]) == 0, capsys.readouterr().err
    assert ran == ["params.yaml"]  # DVC's status said every stage is to run, and nothing failed
    assert "rwlock: cut short" in capsys.readouterr().out
    assert not any(json.loads(RWLOCK.read_text()).values())  # rewritten whole by DVC's status, no entries left
