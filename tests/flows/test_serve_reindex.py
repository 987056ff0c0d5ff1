"""The served `reindex` deployment on a real Prefect server: scheduled runs while a reader searches.

A `prefect server start` on 127.0.0.1, `python -m flows.serve` in a scratch workspace with an
interval of a few seconds, and a separate process that loads CURRENT and searches in a loop the
whole time. Between runs the test saves a newer retriever (what a training run does), so the
second run re-embeds everything and swaps CURRENT under the reader's feet. Last, a
`realm.retriever.saved` event must trigger a run through the deployment's event trigger.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from realm_core.config import PrepareCorpusConfig
from realm_core.corpus.prepare import prepare_corpus
from realm_core.modeling.embedder import RetrieverEmbedder
from tests.conftest import DATA, ROOT

TINY = {"layers": 1, "hidden": 32, "heads": 2, "intermediate": 64}

READER = """
import json, sys, time
import numpy as np
from realm_core.retrieval import index
root, out, stop = sys.argv[1], sys.argv[2], sys.argv[3]
seen, errors, searches = [], [], 0
import os
while not os.path.exists(stop):
    try:
        version = index.current_version(root)
        if version is not None:
            ids, scores = index.load_version(root, version).search(np.ones((2, 16), dtype=np.float32), 5)
            assert ids.shape == (2, 5) and (ids >= 0).all(), ids
            searches += 1
            if not seen or seen[-1] != version:
                seen.append(version)
    except Exception as exc:
        errors.append(repr(exc))
    time.sleep(0.02)
json.dump({"seen": seen, "errors": errors, "searches": searches}, open(out, "w"))
"""


EMIT = """
from prefect.events import emit_event
emit_event(event="realm.retriever.saved", resource={"prefect.resource.id": "realm.retriever.test"})
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout: float, what: str, step: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@pytest.fixture()
def workspace(tmp_path):
    corpus = tmp_path / "corpus"
    prepare_corpus(PrepareCorpusConfig(sources=[str(DATA / "wikipedia_xml" / "wikibrain" / "en_test.xml")],
                                       output_dir=str(corpus), metrics_file=str(corpus / "m.json"), workers=1))
    exports = tmp_path / "exports"
    RetrieverEmbedder.from_init("scratch", scratch_config=TINY, proj_size=16, max_doc_len=64, seed=0) \
        .save_pretrained(exports / "step_0000001")
    params = {
        "build_index": {"blocks": str(corpus / "blocks.parquet"), "rows_per_shard": 200, "batch_size": 64},
        "reindex": {"retriever": f"newest:{exports}", "untracked_output_dir": str(tmp_path / "index"),
                    "dvc_stage": "", "interval_s": 4, "keep_versions": 2},
    }
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    return tmp_path, exports


def test_served_reindex_runs_on_schedule_while_a_reader_searches(workspace):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName, FlowRunFilter, FlowRunFilterState, FlowRunFilterStateType
    from prefect.client.schemas.objects import StateType
    from prefect.settings import PREFECT_API_URL, temporary_settings

    work, exports = workspace
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PREFECT_HOME": str(work / ".prefect"), "PREFECT_API_URL": api,
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_UI_ENABLED": "false",
           "PREFECT_RUNNER_POLL_FREQUENCY": "1", "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "2"}
    procs = []

    def start(args, **kw):
        proc = subprocess.Popen(args, cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, start_new_session=True, **kw)
        procs.append(proc)
        return proc

    try:
        server = start([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)])
        wait_for(lambda: _healthy(api), 90, "the Prefect server")
        served = start([sys.executable, "-m", "flows.serve"])
        reader = start([sys.executable, "-c", READER, str(work / "index"), str(work / "reader.json"), str(work / "stop")])

        def completed() -> int:
            with temporary_settings({PREFECT_API_URL: api}), get_client(sync_client=True) as client:
                runs = client.read_flow_runs(
                    deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=["reindex"])),
                    flow_run_filter=FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.COMPLETED]))))
            return len(runs)

        wait_for(lambda: completed() >= 1, 120, "the first scheduled reindex run", step=1)
        # A training run exports a newer retriever: the next scheduled run must index with it.
        RetrieverEmbedder.from_init("scratch", scratch_config=TINY, proj_size=16, max_doc_len=64, seed=1) \
            .save_pretrained(exports / "step_0000002")
        wait_for(lambda: completed() >= 3, 120, "two more completed reindex runs", step=1)

        # A `realm.retriever.saved` event (what pretrain_ict emits) triggers a run too.
        def triggered() -> bool:  # scheduled runs carry a "scheduled ..." idempotency key
            with temporary_settings({PREFECT_API_URL: api}), get_client(sync_client=True) as client:
                runs = client.read_flow_runs(deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=["reindex"])))
            return any(not (r.idempotency_key or "").startswith("scheduled") for r in runs)

        def emit_then_check() -> bool:
            # The server's trigger service loads new automations periodically; an event it sees
            # before that is (rightly) not acted on, so on a loaded machine the test emits again.
            # From a fresh process: this test process's events client may already be bound to
            # the session's test-harness server (other tests emit events through it).
            subprocess.run([sys.executable, "-c", EMIT], cwd=work, env=env, check=True, timeout=60)
            return _eventually(triggered, 10)

        wait_for(emit_then_check, 120, "a reindex run triggered by the realm.retriever.saved event", step=0)
        (work / "stop").touch()
        reader.wait(timeout=30)
        seen = json.loads((work / "reader.json").read_text())
        assert not seen["errors"], seen["errors"][:3]
        assert seen["searches"] > 20 and len(seen["seen"]) >= 2  # the reader lived through a swap
        meta = json.loads((work / "index" / "versions" / seen["seen"][-1] / "index_meta.json").read_text())
        from realm_core.retrieval.embed import encoder_hash

        assert meta["embeddings"]["encoder_hash"] == encoder_hash(exports / "step_0000002")
    finally:
        for proc in reversed(procs):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        if procs and 'served' in locals() and served.stdout is not None:
            log = served.stdout.read()
            if "Traceback" in log:
                print(log[-4000:])


def _eventually(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(1)
    return False


def _healthy(api: str) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(f"{api}/health", timeout=2) as resp:
            return resp.status == 200
    except OSError:
        return False
