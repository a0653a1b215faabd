"""`python -m mlcore.config --defaults`: every key, its default and its help, as valid YAML."""
import subprocess
import sys

import yaml
from pydantic import BaseModel

from mlcore.config import Config, TrainingKnobs, parse_config
from mlcore.config.__main__ import main
from mlcore.config.defaults import help_text, render_defaults
from tests.conftest import ROOT


def _fields(model: type[BaseModel], prefix=""):
    for name, field in model.model_fields.items():
        yield f"{prefix}{name}", field
        if isinstance(field.default, BaseModel):
            yield from _fields(type(field.default), f"{prefix}{name}.")


def test_every_key_has_a_one_line_help():
    missing = [path for path, field in _fields(Config) if not (field.description or "").strip()]
    assert not missing, f"keys without description=: {missing}"
    multi = [path for path, field in _fields(Config) if field.description and "\n" in field.description
             and path not in Config.model_fields]
    assert not multi


def test_the_defaults_are_valid_yaml_that_validates_to_exactly_the_defaults():
    loaded = yaml.safe_load(render_defaults())
    assert parse_config(loaded, environ={}) == Config()
    assert loaded == Config().model_dump(mode="json")  # every key, nothing else


def test_each_key_is_printed_with_its_default_and_help():
    text = render_defaults()
    for section, _field in Config.model_fields.items():
        assert f"\n{section}:\n" in text
    knob = TrainingKnobs.model_fields["schedule"]
    assert "  schedule: linear" in text and help_text(knob) in text
    assert "(constant | linear | cosine | exponential | step)" in help_text(knob)  # choices read off the type
    assert "    momentum: null" in text  # search.space, nested
    assert "override:" in text.split("\n\n")[0]  # the header states the rule


def test_the_command_line(capsys):
    assert main(["--defaults"]) == 0
    assert capsys.readouterr().out == render_defaults()
    out = subprocess.run([sys.executable, "-m", "mlcore.config", "--help"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0 and "--defaults" in out.stdout and "--check" in out.stdout
