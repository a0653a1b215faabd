"""A training section (pretrain, search, finetune) -> the engine's TrainSettings.

The engine's TrainSettings has no defaults for the training knobs: they come from the
section here, whose model holds them, so they are written once.
"""
from __future__ import annotations

import dataclasses

from mlcore.config.knobs import TrainingKnobs, stage_only_names
from mlcore.engine.settings import TrainSettings

SETTINGS_NAMES = frozenset(f.name for f in dataclasses.fields(TrainSettings))


def to_settings(section: TrainingKnobs | None = None, /, **values) -> TrainSettings:
    """TrainSettings from a training section's keys, then `values` on top of them (say, a
    trial's learning_rate and optimizer). Without a section, the TrainingKnobs defaults.

    Every key of the section must be a TrainSettings field or declared `stage_key`, and
    every value a TrainSettings field: anything else is a TypeError naming it, never dropped."""
    section = TrainingKnobs() if section is None else section
    if not isinstance(section, TrainingKnobs):
        raise TypeError("to_settings takes a training section (pretrain, search, finetune), "
                        f"not {type(section).__name__}")
    keys = section.model_dump()
    kind = type(section).__name__
    unknown = sorted(set(keys) - SETTINGS_NAMES - stage_only_names(type(section)))
    if unknown:
        raise TypeError(f"to_settings({kind}): keys {unknown} are neither TrainSettings fields nor declared "
                        f"with stage_key (keys the stage reads itself); add them to one or the other")
    unknown = sorted(set(values) - SETTINGS_NAMES)
    if unknown:
        raise TypeError(f"to_settings({kind}): {unknown} are not TrainSettings fields")
    return TrainSettings(**{k: v for k, v in keys.items() if k in SETTINGS_NAMES} | values)
