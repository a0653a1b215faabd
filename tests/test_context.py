"""One context per stage process (tasks/_context.py): its config is loaded and validated once,
its device resolved once, and its checkpoint's tokenizer loaded once."""
import pytest
import transformers

from mlcore.config import STAGES, Config, load_config
from mlcore.engine import device as devices
from tasks import _inputs
from tasks._context import stage_context
from tests.conftest import ROOT


def _counted(monkeypatch, owner, name: str) -> list:
    """Calls of owner.name from now on (the original still runs)."""
    calls, original = [], getattr(owner, name)

    def counting(*args, **kwargs):
        calls.append(args)
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, counting)
    return calls


def test_stages_take_config_and_device_from_their_context():
    for stage in STAGES:
        source = (ROOT / "tasks" / f"{stage}.py").read_text()
        for derived_again in ("load_config", "resolve_device", "profiles.effective", "configure_threads"):
            assert derived_again not in source, f"tasks/{stage}.py derives {derived_again} itself"


@pytest.mark.slow
def test_a_stage_command_loads_validates_and_resolves_once(tiny_project, monkeypatch):
    from tasks import prepare, pretrain

    prepare.run(stage_context(load_config()))
    loads = _counted(monkeypatch, _inputs, "load_config")
    validations = _counted(monkeypatch, Config, "model_validate")
    resolutions = _counted(monkeypatch, devices, "resolve_device")
    assert pretrain.main(["--params", "params.yaml"]) == 0
    assert (len(loads), len(validations), len(resolutions)) == (1, 1, 1)


@pytest.mark.slow
def test_finetune_loads_the_tokenizer_once(tiny_project):
    from tasks import finetune, prepare, pretrain, search

    cfg = load_config()
    for stage in (prepare, pretrain, search):
        stage.run(stage_context(cfg))
    with pytest.MonkeyPatch.context() as patch:
        loads = _counted(patch, transformers.AutoTokenizer, "from_pretrained")
        finetune.run(stage_context(cfg))
    assert len(loads) == 1
