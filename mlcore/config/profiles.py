"""Run profiles (runtime.profile): the same params.yaml doing more work where the device allows.

    cpu-quick  params.yaml as written (the budgets a laptop CPU finishes in minutes)
    gpu-full   raises the budgets named in runtime.gpu_full to at least those values
               (null: no limit), never lowering one that params.yaml sets higher
    auto       gpu-full on CUDA, cpu-quick on anything else

`effective` is applied once per stage, before it runs (tasks/_runner.py); the stage then
logs its section as usual, so MLflow shows the effective values, and the search's study
name (its settings' fingerprint) follows them. The end-of-run summary lists the changes.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from mlcore.config.root import Config


def pick(profile: str, device_type: str) -> str:
    """auto -> gpu-full on CUDA, cpu-quick elsewhere; a named profile is kept."""
    if profile != "auto":
        return profile
    return "gpu-full" if device_type == "cuda" else "cpu-quick"


def _raised(current, floor):
    """At least `floor`; None (no limit) is above every number."""
    if current is None or floor is None:
        return None
    return max(current, floor)


@dataclass(frozen=True)
class Effective:
    config: Config  # runtime.profile holds the picked profile, never auto
    setting: str  # runtime.profile as set: auto, cpu-quick or gpu-full
    device_type: str
    changes: dict[str, tuple] = field(default_factory=dict)  # "section.key": (params.yaml value, effective value)

    @property
    def profile(self) -> str:
        return self.config.runtime.profile

    def describe(self) -> str:
        """One line: `gpu-full (auto on cuda): search.n_trials 6 -> 20, ...`."""
        how = f" (auto on {self.device_type})" if self.setting == "auto" else ""
        moved = ", ".join(f"{k} {_show(a)} -> {_show(b)}" for k, (a, b) in self.changes.items())
        return f"{self.profile}{how}: {moved or 'params.yaml as written'}"


def _show(value) -> str:
    return "null" if value is None else str(value)


def effective(cfg: Config, device_type: str) -> Effective:
    """The config a stage runs with on `device_type` ("cuda", "cpu", ...). Idempotent:
    the effective config, resolved again, is unchanged (it names its profile)."""
    name = pick(cfg.runtime.profile, device_type)
    if name != "gpu-full":  # only the profile's name changes: no need to validate the whole config again
        named = cfg if name == cfg.runtime.profile else cfg.model_copy(
            update={"runtime": cfg.runtime.model_copy(update={"profile": name})})
        return Effective(named, cfg.runtime.profile, device_type, {})
    data = cfg.model_dump()
    data["runtime"]["profile"] = name
    changes = {}
    for dotted, floor in cfg.runtime.gpu_full.items():
        section, key = dotted.split(".", 1)
        value = _raised(data[section][key], floor)
        if value != data[section][key]:
            changes[dotted] = (data[section][key], value)
            data[section][key] = value
    return Effective(Config.model_validate(data), cfg.runtime.profile, device_type, changes)
