"""Product code (mlcore/, tasks/, flows/) uses Optuna and Prefect through their public API only:
a private module, name or attribute of theirs can change in any release without notice."""
import ast

from tests.conftest import ROOT

LIBRARIES = ("optuna", "prefect")
# Attributes that Optuna's and Prefect's objects keep private, reached on objects whose type
# a reader cannot see (a study, a trial, a task runner): study._storage, trial._trial_id, ...
PRIVATE_ATTRIBUTES = {"_storage", "_trial_id", "_study_id", "_backend", "_executor", "_processes",
                      "_thread_local", "_cached_frozen_trial", "_stop_flag"}


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _root(node: ast.AST) -> ast.AST:
    while isinstance(node, ast.Attribute):
        node = node.value
    return node


def _library_names(tree: ast.AST) -> set[str]:
    """The names a module binds to Optuna and Prefect or to something imported from them."""
    bound = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            bound |= {a.asname or a.name.split(".")[0] for a in node.names if a.name.split(".")[0] in LIBRARIES}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in LIBRARIES:
            bound |= {a.asname or a.name for a in node.names}
    return bound


def private_uses(source: str) -> list[str]:
    """Where `source` reaches into Optuna or Prefect: an import from a private module or of a
    private name, a private attribute of something imported from them, one of the private
    attributes their objects keep, or a getattr/hasattr of one of those by name."""
    tree, found = ast.parse(source), []
    library = _library_names(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in LIBRARIES:
            if any(_private(n) for n in node.module.split(".") + [a.name for a in node.names]):
                found.append(f"line {node.lineno}: from {node.module} import ...")
        elif isinstance(node, ast.Import):
            found += [f"line {node.lineno}: import {a.name}" for a in node.names
                      if a.name.split(".")[0] in LIBRARIES and any(map(_private, a.name.split(".")))]
        elif isinstance(node, ast.Attribute) and _private(node.attr):
            root = _root(node)
            ours = isinstance(root, ast.Name) and root.id in ("self", "cls")
            theirs = isinstance(root, ast.Name) and root.id in library
            if theirs or (node.attr in PRIVATE_ATTRIBUTES and not ours):
                found.append(f"line {node.lineno}: .{node.attr}")
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("getattr", "hasattr")
              and len(node.args) > 1 and isinstance(node.args[1], ast.Constant)
              and node.args[1].value in PRIVATE_ATTRIBUTES):
            found.append(f"line {node.lineno}: {node.func.id}(..., {node.args[1].value!r})")
    return found


def test_product_code_uses_no_private_optuna_or_prefect_api():
    found = []
    for package in ("mlcore", "tasks", "flows"):
        for path in sorted((ROOT / package).rglob("*.py")):
            found += [f"{path.relative_to(ROOT)} {use}" for use in private_uses(path.read_text())]
    assert not found, found


def test_the_check_sees_each_way_in():
    """What the search code once did, each caught."""
    uses = private_uses(
        "import optuna\n"
        "from optuna.storages._heartbeat import get_heartbeat_thread\n"
        "from optuna.storages import _CachedStorage\n"
        "import prefect._internal.compatibility\n"
        "storage = getattr(study._storage, '_backend', study._storage)\n"
        "study._storage.set_trial_state_values(trial._trial_id, state=None)\n"
        "processes = getattr(getattr(runner, '_executor', None), '_processes', None)\n"
        "optuna.storages._heartbeat.is_heartbeat_enabled(storage)\n")
    assert [u.split(":")[0] for u in uses].count("line 5") == 3  # ._storage twice, getattr(..., "_backend")
    lines = {int(u.split(":")[0].removeprefix("line ")) for u in uses}
    assert lines == {2, 3, 4, 5, 6, 7, 8}, uses
    ours = "class A:\n    def f(self):\n        return self._storage, pool._WORKER, parts._replace(a=1)\n"
    assert private_uses(ours) == []
