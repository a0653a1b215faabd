"""The override rule: params.yaml may set a key to a value other than its model default only
with a trailing `# override: <why>` on that line."""
import pytest

from mlcore.config.__main__ import main
from mlcore.config.overrides import trailing_comments, undocumented_overrides
from tests.conftest import ROOT


def test_the_project_params_say_why_they_differ_from_the_defaults():
    problems = undocumented_overrides(ROOT / "params.yaml")
    assert not problems, "params.yaml:\n" + "\n".join(problems)


def _write(tmp_path, text):
    path = tmp_path / "params.yaml"
    path.write_text(text)
    return path


def test_trailing_comments_follow_the_key_paths():
    text = ("search:  # the study\n"
            "  n_trials: 6   # override: a short demo\n"
            "  space:\n"
            "    warmup: [0.0, 0.2]  # override: searched\n"
            "  # a comment line\n"
            "  study_name: 'a # b'  # override: quoted\n"
            "finetune:\n"
            "  epochs: 4\n")
    assert trailing_comments(text) == {
        "search": "the study", "search.n_trials": "override: a short demo", "search.space": "",
        "search.space.warmup": "override: searched", "search.study_name": "override: quoted",
        "finetune": "", "finetune.epochs": ""}


def test_every_undocumented_override_is_named_by_its_key_path(tmp_path):
    path = _write(tmp_path, "search:\n  n_trials: 10\n  space:\n    warmup: [0.0, 0.2]\n  seed: 42\n"
                            "finetune:\n  epochs: 4   # a comment, not a reason\n  patience: 2\n")
    problems = undocumented_overrides(path)
    assert [p.split(":")[0] for p in problems] == ["search.n_trials", "search.space.warmup", "finetune.epochs"]
    assert "search.n_trials: 10 differs from the default 6" in problems[0]


def test_a_reason_documents_an_override_and_a_stale_marker_is_reported(tmp_path):
    path = _write(tmp_path, "search:\n  n_trials: 10  # override: the demo's budget\n"
                            "  epochs: 2  # override: same as the default\n"
                            "  lr_max: 0.004  # override:\n"
                            "  sgd_lr_scale: 50  # 50 == 50.0: no override\n")
    assert undocumented_overrides(path) == [
        "search.epochs: `# override:` but the value is the default (2); drop the marker",
        "search.lr_max: 0.004 differs from the default 0.0002; "
        "say why on its line: `# override: <why>`, or drop the key",
    ]


def test_the_check_command_exits_1_on_an_undocumented_override(tmp_path, capsys):
    assert main(["--check", str(_write(tmp_path, "finetune:\n  epochs: 4\n"))]) == 1
    assert "finetune.epochs: 4 differs" in capsys.readouterr().out
    assert main(["--check", str(_write(tmp_path, "finetune:\n  epochs: 4  # override: why\n"))]) == 0


@pytest.mark.parametrize("env", ["OPTUNA_STORAGE", "PIPELINE_DEVICE"])
def test_the_environment_does_not_count_as_an_override(tmp_path, monkeypatch, env):
    monkeypatch.setenv(env, "cpu" if env == "PIPELINE_DEVICE" else "postgresql://u@db/o")
    assert undocumented_overrides(_write(tmp_path, "runtime:\n  device: auto\nsearch:\n  storage: null\n")) == []
