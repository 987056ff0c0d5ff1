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


def test_modules_stay_small_and_no_pickle_files_tracked():
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True).stdout.split()
    if not tracked:  # not a git checkout (e.g. an sdist): check the files on disk
        tracked = [str(p.relative_to(ROOT)) for p in ROOT.rglob("*.py") if ".venv" not in p.parts]
    big = [f for f in tracked if f.endswith(".py") and len((ROOT / f).read_text().splitlines()) > 600]
    assert not big
    assert not [f for f in tracked if f.endswith((".pkl", ".pickle"))]
