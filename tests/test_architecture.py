"""Project invariants: a pure library, one name per stage everywhere, small modules, no pickle."""

from __future__ import annotations

import ast
import subprocess

import yaml

from realm_core.config import STAGES
from tests.conftest import ROOT


def test_realm_core_never_imports_prefect_or_dvc():
    offenders = []
    for path in (ROOT / "realm_core").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [f"{path.relative_to(ROOT)}: {n}" for n in names if n.split(".")[0] in {"prefect", "dvc", "dvclive"}]
    assert not offenders


def test_one_name_per_stage_in_params_dvc_and_flows():
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    assert set(params) == set(STAGES)
    for name, cls in STAGES.items():
        assert set(params[name]) == set(cls.model_fields), f"params.yaml [{name}] vs {cls.__name__}"
        cls.model_validate(params[name])
        assert (ROOT / "flows" / f"{name}.py").is_file()
        assert f'@flow(name="{name}"' in (ROOT / "flows" / f"{name}.py").read_text()
    for name, stage in stages.items():
        base = name.split("@")[0]
        assert base in STAGES, name
        assert stage["cmd"].startswith(f"python -m flows.{base}"), name
        assert base in stage["params"], name
        # A changed default in the stage's own config module (or the shared base) reruns the stage.
        config_deps = {"realm_core/config/base.py", f"realm_core/config/{base}.py"}
        assert config_deps <= set(stage["deps"]), f"{name}: dvc.yaml deps lack {config_deps - set(stage['deps'])}"
        assert STAGES[base].__module__ == f"realm_core.config.{base}", name


# Plumbing that does not change what a stage computes (the CLI, the task runner, error types,
# atomic writes, params loading, package __init__s, other stages' configs): a change there is
# covered by the tests, not by rerunning the graph. Everything else a flow imports is a dep.
PLUMBING = {"flows/__init__.py", "flows/cli.py", "flows/runners.py", "realm_core/errors.py", "realm_core/io.py"}


def _imported_files(start) -> set:
    """Files of realm_core/, tasks/ and flows/ that `start` imports, transitively (function-level
    imports included, since the library defers heavy imports into functions)."""
    def module_file(module: str):
        path = ROOT.joinpath(*module.split("."))
        return path / "__init__.py" if (path / "__init__.py").is_file() else path.with_suffix(".py")

    seen, todo = set(), [start]
    while todo:
        path = todo.pop()
        if path in seen or not path.is_file():
            continue
        seen.add(path)
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                modules = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                modules = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            else:
                continue
            for module in modules:
                parts = module.split(".")
                if parts[0] in {"realm_core", "tasks", "flows"}:
                    todo += [module_file(".".join(parts[:i])) for i in range(1, len(parts) + 1)]
    return seen


def test_every_stage_lists_the_code_it_imports_as_deps():
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    missing = {}
    for name, stage in stages.items():
        deps = [d.rstrip("/") for d in stage.get("deps", [])]
        files = {str(p.relative_to(ROOT)) for p in _imported_files(ROOT / "flows" / f"{name.split('@')[0]}.py")}
        lacking = sorted(f for f in files
                         if f not in PLUMBING and not f.endswith("__init__.py") and not f.startswith("realm_core/config/")
                         and not any(f == d or f.startswith(d + "/") for d in deps))
        if lacking:
            missing[name] = lacking
    assert not missing, f"dvc.yaml deps lack code the stage imports (a change there would not rerun it): {missing}"


def test_modules_stay_small_and_no_pickle_files_tracked():
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True).stdout.split()
    if not tracked:  # not a git checkout (e.g. an sdist): check the files on disk
        tracked = [str(p.relative_to(ROOT)) for p in ROOT.rglob("*.py") if ".venv" not in p.parts]
    big = [f for f in tracked if f.endswith(".py") and len((ROOT / f).read_text().splitlines()) > 600]
    assert not big
    assert not [f for f in tracked if f.endswith((".pkl", ".pickle"))]
