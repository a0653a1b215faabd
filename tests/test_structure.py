"""One stage has one name everywhere: dvc.yaml stage, params.yaml section, tasks/ module, Prefect task."""
import ast
from pathlib import Path

import yaml

from mlcore.config import SHARED_SECTIONS, STAGES, Config
from tests.conftest import ROOT

DVC = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
PARAMS = yaml.safe_load((ROOT / "params.yaml").read_text())
PACKAGES = ("mlcore", "tasks")


def test_stages_sections_and_modules_correspond():
    modules = {p.stem for p in (ROOT / "tasks").glob("*.py") if not p.stem.startswith("_")}
    assert list(DVC) == list(STAGES)
    assert set(PARAMS) - set(SHARED_SECTIONS) == set(STAGES)
    assert modules == set(STAGES)
    assert list(Config.model_fields) == [*STAGES, *SHARED_SECTIONS]  # its fields cannot derive from STAGES


def test_flow_chains_the_stage_tasks_in_order():
    from flows.training_flow import STAGE_TASKS

    assert [t.name for t in STAGE_TASKS] == list(STAGES)


def test_each_stage_waits_for_stages_whose_outputs_it_reads():
    """The flow's wait_for edges (the Prefect graph's arrows) are real data dependencies of dvc.yaml."""
    from flows.training_flow import UPSTREAM

    def outs(stage: str) -> set[str]:
        written = [out for kind in ("outs", "metrics", "plots") for out in DVC[stage].get(kind, [])]
        return {next(iter(out)) if isinstance(out, dict) else out for out in written}

    assert list(UPSTREAM) == list(STAGES) and UPSTREAM[STAGES[0]] == []
    for later, stage in enumerate(STAGES[1:], start=1):
        assert UPSTREAM[stage], f"{stage} waits for nothing: the graph would draw it unconnected"
        for upstream in UPSTREAM[stage]:
            assert STAGES.index(upstream) < later and outs(upstream) & set(DVC[stage]["deps"]), (stage, upstream)


def test_each_stage_runs_its_module_with_its_own_params():
    for stage, spec in DVC.items():
        assert spec["cmd"] == f"python -m tasks.{stage}"
        assert spec["params"] == [stage]


def _module_file(name: str) -> Path | None:
    path = ROOT / Path(*name.split("."))
    if path.with_suffix(".py").is_file():
        return path.with_suffix(".py")
    if (path / "__init__.py").is_file():
        return path / "__init__.py"  # followed for what it imports (mlcore.config re-exports its modules)
    return None


# Orchestration, locking, tracking, error-message and atomic-write code does not change what a stage computes;
# nor does the stage context (the device and runtime.profile are machine settings, not DVC params, by design).
IGNORED = {"tasks/_runner.py", "tasks/_context.py", "tasks/_prepared.py", "tasks/_process.py", "tasks/_dvc_state.py",
           "tasks/_workspace.py", "mlcore/errors.py",
           "mlcore/tracking/runs.py", "mlcore/tracking/trial_runs.py", "mlcore/tracking/tags.py",
           "mlcore/tracking/store.py",
           "mlcore/data/hashing.py", "mlcore/atomic.py", "mlcore/liveness.py"}


def _project_imports(file: Path, seen: set[Path]) -> set[Path]:
    """Project modules a file imports, transitively (through package __init__ files too)."""
    for node in ast.walk(ast.parse(file.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        for name in names:
            target = _module_file(name) if name.split(".")[0] in PACKAGES else None
            if target and target not in seen:
                seen.add(target)
                if str(target.relative_to(ROOT)) not in IGNORED:  # what only they import is theirs
                    _project_imports(target, seen)
    return seen


def _covered(path: str, deps: list[str]) -> bool:
    """A module is covered by a dep naming the file itself or a directory above it."""
    return any(path == dep or path.startswith(dep.rstrip("/") + "/") for dep in deps)


def test_dvc_deps_cover_every_code_module_a_stage_imports():
    for stage, spec in DVC.items():
        imported = {str(p.relative_to(ROOT)) for p in _project_imports(ROOT / "tasks" / f"{stage}.py", set())}
        # A package's __init__ is followed for its imports but is not code of its own to depend on.
        missing = {m for m in imported - IGNORED if not m.endswith("__init__.py") and not _covered(m, spec["deps"])}
        assert not missing, f"dvc.yaml stage {stage} lacks deps {sorted(missing)}"


def test_coverage_check_sees_directories_and_files():
    assert _covered("mlcore/engine/loop.py", ["mlcore/engine"])
    assert _covered("mlcore/engine/loop.py", ["mlcore/engine/loop.py"])
    assert not _covered("mlcore/engine/loop.py", ["mlcore/eng"])
    assert not _covered("mlcore/models/mlm.py", ["mlcore/engine"])


def _declared_outputs(spec: dict) -> set[str]:
    out = set()
    for key in ("outs", "metrics", "plots"):
        for entry in spec.get(key, []):
            out.add(next(iter(entry)) if isinstance(entry, dict) else entry)
    return out


def test_shell_paths_are_the_outputs_dvc_yaml_declares():
    from tasks import _paths as P

    assert list(P.OUTS) == list(STAGES)
    for stage, spec in DVC.items():
        assert _declared_outputs(spec) == {str(p) for p in P.OUTS[stage]}, stage


def test_every_stage_output_path_lies_inside_a_declared_output():
    from tasks import _paths as P

    declared = [p for paths in P.OUTS.values() for p in paths]
    for name, value in vars(P).items():
        if isinstance(value, Path) and len(value.parts) > 1 and value.parts[0] in ("data", "models", "reports"):
            assert any(value == d or d in value.parents for d in declared), f"tasks/_paths.py {name} = {value}"


def _functions(tree: ast.AST):
    return [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]


def test_modules_and_functions_stay_small():
    """What a newcomer can hold: no module over 300 lines, no function over 60, and a
    stage's run() about 30 (reads inputs, one or two core calls, writes outputs, logs)."""
    too_big = []
    for package in ("mlcore", "tasks", "flows", "team"):
        for path in sorted((ROOT / package).rglob("*.py")):
            source = path.read_text()
            name = str(path.relative_to(ROOT))
            if len(source.splitlines()) > 300:
                too_big.append(f"{name}: {len(source.splitlines())} lines")
            for fn in _functions(ast.parse(source)):
                length = fn.end_lineno - fn.lineno + 1
                limit = 35 if package == "tasks" and fn.name == "run" and path.parent.name == "tasks" else 60
                if length > limit:
                    too_big.append(f"{name}::{fn.name}: {length} lines (limit {limit})")
    assert not too_big, too_big
