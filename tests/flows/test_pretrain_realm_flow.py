"""pretrain_realm on a real Prefect server, with tiny scratch models on the fixed 48-block fixture.

Plumbing, not learning: the flow completes, every index refresh is a task run of its own named
after the version and the snapshot step, async mode completes, a `kill -9` of the CLI mid-training
resumes to the run an uninterrupted one gives, and a missing input is one error line.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from uuid import UUID

import pytest
import torch
import yaml
from safetensors.torch import load_file

from realm_core.training import checkpoint as ckpt
from realm_core.training.realm_stage import run_pretrain_realm
from tests.conftest import ROOT, stage_env
from tests.realm_core.training.realm_fixture import realm_config, realm_params, write_corpus, write_models


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("realm_flow")
    return (*write_corpus(tmp / "corpus"), *write_models(tmp / "models"))


def task_run_names(flow_run_id: UUID, expected: set[str], timeout: float = 30) -> set[str]:
    """Names of the flow run's task runs once `expected` are among them (the server records
    task runs from events, shortly after they happen)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    deadline = time.monotonic() + timeout
    while True:
        with get_client(sync_client=True) as client:
            runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
        names = {r.name for r in runs}
        if expected <= names or time.monotonic() > deadline:
            return names
        time.sleep(0.5)


def test_flow_completes_and_refreshes_are_task_runs(prefect_api, inputs, tmp_path):
    from flows.pretrain_realm import pretrain_realm_flow

    state = pretrain_realm_flow(realm_config(tmp_path, *inputs, steps=6, refresh_schedule="2"), return_state=True)
    assert state.is_completed(), state.message
    result = state.result()
    metrics = json.loads((tmp_path / "metrics" / "pretrain_realm.json").read_text())
    assert result["steps"] == metrics["steps"] == 6 and result["refreshes"] == metrics["refreshes"] == 2
    assert result["heldout"] == metrics["heldout"] and result["ru_last"] == metrics["ru_last"]
    assert (tmp_path / "models" / "realm").is_dir() and (tmp_path / "models" / "realm_encoder").is_dir()
    refreshes = {"refresh v1 (snapshot of step 2)", "refresh v2 (snapshot of step 4)"}
    names = task_run_names(state.state_details.flow_run_id, refreshes)
    assert refreshes <= names, names
    assert not any(n.startswith("refresh v3") for n in names)  # none after the last step
    assert any(n.startswith("train_realm") for n in names) and any(n.startswith("publish_realm_summary") for n in names)
    curve = tmp_path / "metrics" / "pretrain_realm" / "plots" / "metrics" / "train" / "retrieval_utility.tsv"
    assert len(curve.read_text().splitlines()) == 1 + 6  # header + one row per step (log_every 1)


@pytest.mark.slow  # async mode also runs in tests/realm_core/training/test_realm_index.py
def test_async_refresh_flow_completes(prefect_api, inputs, tmp_path):
    from flows.pretrain_realm import pretrain_realm_flow

    cfg = realm_config(tmp_path, *inputs, steps=6, refresh_schedule="2", refresh_mode="async")
    state = pretrain_realm_flow(cfg, return_state=True)
    assert state.is_completed(), state.message
    metrics = json.loads((tmp_path / "metrics" / "pretrain_realm.json").read_text())
    assert metrics["completed"] and metrics["refresh_mode"] == "async"
    history = metrics["refresh_history"]
    assert [r["version"] for r in history] == list(range(1, len(history) + 1))
    assert all(r["installed_step"] > r["snapshot_step"] for r in history)  # installed at a later step boundary
    names = task_run_names(state.state_details.flow_run_id, {"refresh v1 (snapshot of step 2)"})
    assert "refresh v1 (snapshot of step 2)" in names, names


def cli(args: list[str], api_url: str | None = None, **kw):
    return subprocess.Popen([sys.executable, "-m", "flows.pretrain_realm", *args], cwd=ROOT, env=stage_env(api_url),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


@pytest.mark.slow  # two CLI runs (~50 s); the in-process SIGKILL test in test_realm_stage.py stays on
def test_kill_9_mid_training_then_rerun_continues_to_the_same_run(prefect_api, inputs, tmp_path):
    run = dict(steps=12, refresh_schedule="3", eval_every=6)
    reference = run_pretrain_realm(realm_config(tmp_path / "straight", *inputs, **run), info=lambda line: None)

    work = tmp_path / "killed"
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"pretrain_realm": realm_params(work, *inputs, **run)}))
    proc = cli(["--params", str(params)], prefect_api)
    first = work / "ckpt" / "step_0000001"
    try:
        deadline = time.monotonic() + 240
        while not first.is_dir() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == -signal.SIGKILL, err[-3000:]
    killed_at = int(ckpt.read_latest(work / "ckpt").name.split("_")[1])
    assert 1 <= killed_at < 12 and not (work / "models").exists()

    proc = cli(["--params", str(params)], prefect_api)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    assert out.startswith("pretrain_realm: {")
    metrics = json.loads((work / "metrics" / "pretrain_realm.json").read_text())
    assert metrics["resumed_at"] == [killed_at] and metrics["completed"]
    for name in ("realm", "realm_encoder"):
        a = load_file(str(tmp_path / "straight" / "models" / name / "model.safetensors"))
        b = load_file(str(work / "models" / name / "model.safetensors"))
        assert a.keys() == b.keys()
        for key in a:
            torch.testing.assert_close(b[key], a[key], atol=1e-5, rtol=0, msg=key)
    drop = {"train_seconds", "resumed_at", "refresh_seconds", "refresh_history", "final_train"}
    assert {k: v for k, v in metrics.items() if k not in drop} == {k: v for k, v in reference.items() if k not in drop}
    assert [(r["version"], r["snapshot_step"], r["installed_step"]) for r in metrics["refresh_history"]] == \
        [(r["version"], r["snapshot_step"], r["installed_step"]) for r in reference["refresh_history"]] == \
        [(1, 3, 3), (2, 6, 6), (3, 9, 9)]
    assert metrics["final_train"]["loss"] == pytest.approx(reference["final_train"]["loss"], abs=1e-5)


def test_missing_salient_spans_is_one_error_line(inputs, tmp_path):
    params = tmp_path / "params.yaml"
    missing = tmp_path / "none" / "salient_spans.parquet"
    params.write_text(yaml.safe_dump({"pretrain_realm": realm_params(tmp_path, *inputs, salient_spans=str(missing))}))
    proc = cli(["--params", str(params)])
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, out + err
    assert err.strip().count("\n") == 0 and "Traceback" not in out + err, err
    assert err.strip() == f"error: {missing}: salient spans file not found (pretrain_realm.salient_spans)"
    assert not (tmp_path / "ckpt").exists() and not (tmp_path / "metrics").exists()
