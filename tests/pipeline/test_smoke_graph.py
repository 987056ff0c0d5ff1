"""The smoke profile (configs/smoke.yaml) runs the WHOLE dvc.yaml graph in a temporary repo.

The project is copied into a fresh git + DVC repo, params.yaml becomes params.yaml merged with
configs/smoke.yaml, and one `dvc repro` runs every stage dvc.yaml declares (whatever stages it has
when the test runs). Then every declared out, metric and plot (matrix items expanded) exists, every
metrics JSON parses and is non-empty, and a second `dvc repro` has nothing to do.

Budget: a few minutes on 2 cores. Per-stage timings are printed, and on failure are part of the
message, to tell which stage got slow or broke.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import yaml

from realm_core.config import deep_merge
from tests.conftest import ROOT, stage_env
from tests.pipeline.test_dvc_repro import sh

PROFILE = ROOT / "configs" / "smoke.yaml"
REPRO_TIMEOUT_S = 600  # the whole graph (the test aims at ~2-3 min); pytest itself has no timeout
RUNNING = re.compile(r"Running stage '([^']+)'")


def _copy_project(repo: Path) -> None:
    """The code, configs and every dvc.yaml dependency that is an input (not another stage's out)."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("realm_core", "tasks", "flows", "configs"):
        shutil.copytree(ROOT / name, repo / name, ignore=ignore)
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy(ROOT / name, repo / name)
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    outs = {_path(o) for s in stages.values() for key in ("outs", "metrics", "plots") for o in s.get(key, [])}
    # A matrix stage's out names a family ("artifacts/index/${item.retriever}"): every path under its
    # fixed prefix is another stage's product, even when a previous `dvc repro` left it here.
    families = tuple(o.split("${")[0] for o in outs if "${" in o)
    for stage in stages.values():
        for dep in stage.get("deps", []):
            path = _path(dep)
            if ("${" in path or path in outs or path.startswith(families) or (repo / path).exists()
                    or not (ROOT / path).exists()):
                continue
            (repo / path).parent.mkdir(parents=True, exist_ok=True)
            if (ROOT / path).is_dir():
                shutil.copytree(ROOT / path, repo / path, ignore=ignore)
            else:
                shutil.copy(ROOT / path, repo / path)


def _path(entry) -> str:
    return next(iter(entry)) if isinstance(entry, dict) else entry


def _repro_timed(repo: Path, env: dict, extra: list[str]) -> tuple[int, str, dict[str, float]]:
    """`dvc repro`, streaming its output; returns (rc, output, seconds per stage that started)."""
    proc = subprocess.Popen(["dvc", "repro", *extra], cwd=repo, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    killer = threading.Timer(REPRO_TIMEOUT_S, proc.kill)
    killer.start()
    lines, timings, current, t0 = [], {}, None, time.monotonic()
    try:
        for line in proc.stdout:
            lines.append(line)
            match = RUNNING.search(line)
            if match:
                now = time.monotonic()
                if current:
                    timings[current] = now - t0
                current, t0 = match.group(1), now
        rc = proc.wait()
    finally:
        killer.cancel()
    if current:
        timings[current] = time.monotonic() - t0
    return rc, "".join(lines), timings


def _declared(repo: Path, env: dict) -> dict[str, list[tuple[str, str]]]:
    """Every stage dvc.yaml declares (matrix/foreach expanded) -> [(path, out|metric|plot)].

    Asked of DVC itself in a subprocess, so the expansion is DVC's own and no DVC state leaks into
    the test process.
    """
    script = (
        "import json\nfrom dvc.repo import Repo\n"
        "with Repo('.') as r:\n"
        "    print(json.dumps({s.addressing: [(o.def_path, 'metric' if o.metric else 'plot' if o.plot else 'out')"
        " for o in s.outs] for s in r.index.stages}))\n"
    )
    return json.loads(sh([sys.executable, "-c", script], repo, env).stdout)


def test_smoke_profile_runs_whole_graph_then_is_noop(prefect_api, tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    _copy_project(repo)
    profile = yaml.safe_load(PROFILE.read_text())
    params = deep_merge(yaml.safe_load((repo / "params.yaml").read_text()), profile)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    env = stage_env(prefect_api)  # the session's Prefect server: no ephemeral server per stage
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    env.pop("PYTHONPATH")  # the stages import the repo's own copy, as in a user's checkout
    for args in (["git", "init", "-q"], ["git", "config", "user.email", "t@example.invalid"],
                 ["git", "config", "user.name", "test"], ["dvc", "init", "-q"],
                 ["dvc", "config", "core.analytics", "false"],
                 # a commit, as in a user's checkout: dvclive (pretrain_ict's plots) needs a HEAD
                 ["git", "add", "-A"], ["git", "commit", "-qm", "workspace"]):
        sh(args, repo, env)
    declared = _declared(repo, env)

    # --keep-going: one broken stage still lets every stage that does not depend on it run, so a
    # failure report covers the whole graph.
    t0 = time.monotonic()
    rc, out, timings = _repro_timed(repo, env, ["--keep-going"])
    total = time.monotonic() - t0
    report = "\n".join([f"dvc repro: rc {rc}, {total:.1f} s", *(f"  {s:<28} {t:6.1f} s" for s, t in timings.items())])
    print(report)
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"] if (repo / "dvc.lock").exists() else {}
    not_locked = sorted(set(declared) - set(lock))
    assert rc == 0 and not not_locked, f"{report}\nstages not completed: {not_locked}\n{out[-6000:]}"
    assert set(timings) == set(declared), f"{report}\nstages not run: {sorted(set(declared) - set(timings))}"

    for stage, outs in declared.items():
        for path, kind in outs:
            target = repo / path
            assert target.exists(), f"{stage}: declared {kind} {path} missing\n{report}"
            if kind == "metric" and target.suffix == ".json":
                data = json.loads(target.read_text())
                assert isinstance(data, dict) and data, f"{stage}: metrics {path} is empty"
            if target.is_dir():
                assert any(p.is_file() for p in target.rglob("*")), f"{stage}: {kind} {path} is an empty directory"

    again = sh(["dvc", "repro"], repo, env)
    assert "Running stage" not in again.stdout, again.stdout[-3000:]
    assert "up to date" in again.stdout.lower(), again.stdout[-3000:]
    status = sh(["dvc", "status"], repo, env)
    assert "up to date" in status.stdout.lower(), status.stdout
