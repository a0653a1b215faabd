"""The pre-flight check's splits are prepare's (tasks/_prepared.py): computed once per process,
never served for other params or changed data."""
import os

import pytest

from mlcore.config import load_config
from tasks import _prepared


def test_prepare_takes_the_pre_flight_splits_and_never_stale_ones(tiny_project, monkeypatch):
    calls = []
    original = _prepared.dataset.prepare

    def counted(p):
        calls.append(p)
        return original(p)

    monkeypatch.setattr(_prepared.dataset, "prepare", counted)
    p = load_config().prepare
    _prepared.compute_and_keep(p)
    first = _prepared.take(p)
    assert len(calls) == 1  # taken, not computed again
    assert _prepared.take(p) is not first and len(calls) == 2  # taking released them

    _prepared.compute_and_keep(p)
    stat = os.stat(p.input)
    os.utime(p.input, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))  # the data changed since
    _prepared.take(p)
    assert len(calls) == 4

    _prepared.compute_and_keep(p)
    other = p.model_copy(update={"val_fraction": 0.2})
    _prepared.take(other)
    assert len(calls) == 6 and calls[-1] is other


def test_a_missing_input_is_prepares_own_error(tiny_project):
    from mlcore.errors import UserError

    p = load_config().prepare.model_copy(update={"input": "data/raw/missing.csv"})
    for step in (_prepared.compute_and_keep, _prepared.take):
        with pytest.raises(UserError, match="missing.csv"):
            step(p)
