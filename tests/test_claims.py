"""Claiming and running trials (mlcore/search/claims.py): the budget, the heartbeat on an RDB
storage, and the reaping of a dead owner's trial on a JournalFile."""
import socket
import subprocess
import threading
import time

import pytest
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from mlcore.config import SearchConfig, parse_config
from mlcore.search import claims, studies


def _x(trial):
    trial.suggest_float("x", 0.0, 1.0)


def test_a_trial_whose_claimer_died_before_running_it_is_failed_and_retried(tmp_path):
    """The claim beats once: a worker killed between its claim and its trial's first beat still
    leaves a trial that the next claim fails after grace_period (Optuna skips one that never beat)."""
    cfg = SearchConfig(heartbeat_interval=1, grace_period=2)
    h = studies.open_study(cfg, "s", f"sqlite:///{tmp_path / 'study.db'}", tmp_path)
    lock = tmp_path / "claim.lock"
    orphan = claims.claim_trial(h, 2, lock, _x)  # its claimer dies here, before run_claimed
    time.sleep(2.5)
    retry = claims.claim_trial(h, 2, lock)
    assert h.study.trials[orphan.number].state == TrialState.FAIL
    assert RetryHeartbeatStaleTrialCallback.retried_trial_number(h.study.trials[retry.number]) == orphan.number


def test_a_silent_trial_is_failed_and_retried_while_a_beating_one_runs_on(tmp_path):
    """search.heartbeat_interval 1 s and grace_period 2 s on an RDB storage (SQLite here,
    PostgreSQL across machines): a trial whose worker beat once and went silent is failed
    at the next claim and retried with its parameters; the running trial, beating, is not."""
    cfg = SearchConfig(heartbeat_interval=1, grace_period=2)
    h = studies.open_study(cfg, "s", f"sqlite:///{tmp_path / 'study.db'}", tmp_path)
    lock = tmp_path / "claim.lock"
    silent = claims.claim_trial(h, 3, lock, _x)
    h.storage.record_heartbeat(h.trial_id(silent.number))  # its worker beat once, then died
    seen = {}

    def objective(trial):
        time.sleep(3.5)  # past the grace period: only its own heartbeat keeps this trial alive
        retry = claims.claim_trial(h, 3, lock)  # a claim fails the stale trials first
        seen.update(states=[t.state for t in h.study.get_trials()], retry=retry.number)
        h.study.tell(retry, 0.5)
        return 1.0

    assert claims.run_claimed(h, claims.claim_trial(h, 3, lock, _x), objective) == TrialState.COMPLETE
    assert seen["states"] == [TrialState.FAIL, TrialState.RUNNING, TrialState.RUNNING]
    retried = h.study.trials[seen["retry"]]
    assert RetryHeartbeatStaleTrialCallback.retried_trial_number(retried) == silent.number
    assert retried.params == silent.params
    assert not [t for t in threading.enumerate() if t.name.startswith("heartbeat-trial-")]  # stopped and joined
    assert studies.finished_trials(h.study) == 2  # the failed trial is not counted: its retry took its place


def test_the_claim_loop_fills_the_budget_and_retries_a_dead_owners_trial(tmp_path):
    """JournalFile (no heartbeat): the RUNNING trial of a process that died is failed and queued
    again with its parameters; the loop then finishes the budget exactly, the retry included."""
    cfg = SearchConfig()
    h = studies.open_study(cfg, "s", None, tmp_path)
    lock = tmp_path / "claim.lock"
    dead = claims.claim_trial(h, 4, lock, _x)
    gone = subprocess.Popen(["true"])
    gone.wait()
    dead.set_user_attr("owner", {"host": socket.gethostname(), "pid": str(gone.pid), "start": ""})
    assert studies.reap_stale_trials(h.study) == [dead.number]
    assert studies.reap_stale_trials(h.study) == []  # once
    ran = claims.run_trials(h, 4, lock, claims.run_here(h, lambda trial: _x(trial) or trial.params["x"]))
    assert ran == 4 and studies.finished_trials(h.study) == 4
    retry = next(t for t in h.study.trials if t.user_attrs.get("retry_of") == dead.number)
    assert retry.params == dead.params and retry.state == TrialState.COMPLETE
    assert h.study.trials[dead.number].state == TrialState.FAIL


def test_heartbeat_settings_are_checked_and_are_not_the_studys_identity():
    with pytest.raises(Exception, match="grace_period"):
        parse_config({"search": {"heartbeat_interval": 60, "grace_period": 60}})
    plain, quick = SearchConfig(), SearchConfig(heartbeat_interval=1, grace_period=2)
    assert (plain.heartbeat_interval, plain.grace_period) == (30, 120)
    assert studies.study_name(plain, "d") == studies.study_name(quick, "d")


def test_a_grid_search_ends_at_its_last_point_without_an_error(tmp_path):
    """Optuna's grid sampler calls study.stop() after the last point, which raises under ask/tell."""
    cfg = parse_config({"search": {"sampler": "grid", "n_trials": 2,
                                   "grid": {"optimizer": ["adam"], "learning_rate": [0.001, 0.01]}}}).search
    h = studies.open_study(cfg, "grid", None, tmp_path)
    seen = []

    def objective(trial):
        seen.append((trial.suggest_categorical("optimizer", ["adam"]),
                     trial.suggest_float("learning_rate", 0.001, 0.01, log=True)))
        return 1.0

    assert claims.run_trials(h, 2, tmp_path / "claim.lock", claims.run_here(h, objective)) == 2
    assert sorted(seen) == [("adam", 0.001), ("adam", 0.01)]
    assert [t.state for t in h.study.trials] == [TrialState.COMPLETE] * 2
