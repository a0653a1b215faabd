"""The index of commands: pyproject.toml's [project.scripts]. Each names a `main(argv=None) -> int`
(what `sys.exit(main())` of an installed script needs) that answers --help; and `python -m tasks`
dispatches to one stage's own command."""
from __future__ import annotations

import importlib
import inspect
import tomllib

import pytest

from mlcore.config import STAGES
from tests.conftest import ROOT

SCRIPTS = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
JOBS = ("run", "stage", "config", "store", "serve", "score", "registry", "deploy")


def test_the_index_has_one_command_per_job():
    assert sorted(SCRIPTS) == sorted(f"pipeline-{job}" for job in JOBS)


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_each_command_is_a_main_taking_argv_and_answering_help(script, capsys):
    module, function = SCRIPTS[script].split(":")
    main = getattr(importlib.import_module(module), function)
    signature = inspect.signature(main)  # through entry_point's functools.wraps
    assert list(signature.parameters) == ["argv"] and signature.parameters["argv"].default is None
    assert signature.return_annotation in (int, "int")
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.startswith("usage:")


def test_the_stage_command_lists_the_stages_and_hands_over_to_one(capsys):
    from tasks.__main__ import main

    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    assert ", ".join(STAGES) in " ".join(capsys.readouterr().out.split())
    with pytest.raises(SystemExit) as exit_:
        main(["evaluate", "--help"])  # the stage's own parser
    assert exit_.value.code == 0
    assert capsys.readouterr().out.startswith("usage: python -m tasks.evaluate [-h] [--params PARAMS] [--wait]")
    with pytest.raises(SystemExit) as exit_:
        main(["evaluation"])
    assert exit_.value.code == 2
    assert "invalid choice: 'evaluation'" in capsys.readouterr().err
