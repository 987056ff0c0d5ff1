"""Expected errors end a run Failed with one line: on the command line, in a flow run, in a served run.

A missing retriever (`models/ict` before pretrain_ict ran) is the common case. Prefect's engine,
which runs every deployment run, re-raises a flow's returned Failed state and used to log that with
an "Engine execution exited with unexpected exception" traceback (flows.cli.quiet_reported_failures).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from uuid import UUID

import yaml

from tests.conftest import ROOT, stage_env

NOT_A_RETRIEVER = "not a retriever directory"
NOISE = ("Traceback", "Engine execution exited", "NoneType: None")


def run_logs(flow_run_id: UUID, until: str, timeout: float = 60) -> list[str]:
    """The flow run's log messages once `until` is among them (logs reach the API in batches)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    deadline = time.monotonic() + timeout
    while True:
        with get_client(sync_client=True) as client:
            messages = [log.message for log in client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))]
        if any(until in m for m in messages) or time.monotonic() > deadline:
            return messages


def assert_clean(messages: list[str], line: str) -> None:
    assert any(line in m for m in messages), messages
    noisy = [m for m in messages if any(n in m for n in NOISE)]
    assert not noisy, noisy[0][:2000]


def wait_for_deployments(names: tuple[str, ...], served: subprocess.Popen, timeout: float = 90) -> None:
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    deadline = time.monotonic() + timeout
    while True:
        assert served.poll() is None, "python -m flows.serve exited"
        try:
            with get_client(sync_client=True) as client:
                for name in names:
                    client.read_deployment_by_name(name)
            return
        except ObjectNotFound:
            assert time.monotonic() < deadline, f"no deployments {names} after {timeout} s"
            time.sleep(0.5)


def test_reindex_cli_missing_retriever_prints_one_line(tmp_path):
    missing = tmp_path / "ict"
    proc = subprocess.run([sys.executable, "-m", "flows.reindex", "--set", f"reindex.retriever={missing}"],
                          cwd=ROOT, env=stage_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.splitlines() == [f"error: {missing}: {NOT_A_RETRIEVER} (needs a realm-retriever config.json "
                                        "and model.safetensors)"]


def test_reindex_flow_missing_retriever_is_failed_with_the_line(prefect_api, tmp_path):
    from flows.reindex import reindex_flow

    missing = tmp_path / "ict"
    state = reindex_flow([f"reindex.retriever={missing}"], return_state=True)
    assert state.is_failed()
    assert state.message.startswith(f"{missing}: {NOT_A_RETRIEVER}")
    assert_clean(run_logs(state.state_details.flow_run_id, "Finished in state Failed"), f"{missing}: {NOT_A_RETRIEVER}")


def test_served_runs_fail_cleanly(prefect_api, tmp_path):
    """`python -m flows.serve` on the session server; `reindex` with no retriever and `pipeline`
    with a stage DVC cannot run: both Failed with their line, no traceback in the run logs or on
    the serving process's stderr while they ran."""
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment
    from prefect.exceptions import ObjectNotFound

    (tmp_path / "params.yaml").write_text(yaml.safe_dump(
        {"reindex": {"retriever": "models/ict", "dvc_stage": "", "interval_s": 0}}))
    env = {**stage_env(prefect_api), "PREFECT_RUNNER_POLL_FREQUENCY": "1"}
    stderr = tmp_path / "serve.err"
    with open(stderr, "w") as err:
        served = subprocess.Popen([sys.executable, "-m", "flows.serve"], cwd=tmp_path, env=env,
                                  stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
    try:
        wait_for_deployments(("reindex/reindex", "pipeline/pipeline"), served)
        reindex = run_deployment("reindex/reindex", timeout=120)
        pipeline = run_deployment("pipeline/pipeline", parameters={"targets": ["no_such_stage"]}, timeout=120)

        assert reindex.state.is_failed(), reindex.state
        assert reindex.state.message == f"models/ict: {NOT_A_RETRIEVER} (needs a realm-retriever config.json and model.safetensors)"
        assert_clean(run_logs(reindex.id, "Finished in state Failed"), f"models/ict: {NOT_A_RETRIEVER}")

        assert pipeline.state.is_failed(), pipeline.state
        assert pipeline.state.message.startswith("dvc repro exited with"), pipeline.state.message
        assert_clean(run_logs(pipeline.id, "Finished in state Failed"), "dvc repro exited with")
        # What the runs wrote; the runner's own shutdown after SIGTERM is not these runs' business.
        log = stderr.read_text()
    finally:
        os.killpg(served.pid, signal.SIGTERM)
        try:
            served.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(served.pid, signal.SIGKILL)
            served.wait()
        # The deployments (and the reindex event trigger) go, so later tests' events start nothing.
        with get_client(sync_client=True) as client:
            for name in ("reindex/reindex", "pipeline/pipeline"):
                try:
                    client.delete_deployment(client.read_deployment_by_name(name).id)
                except ObjectNotFound:
                    pass
    assert "Finished in state Failed('models/ict" in log, log[-3000:]
    noisy = [n for n in NOISE if n in log]
    assert not noisy, log[-4000:]
