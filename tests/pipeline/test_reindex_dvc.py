"""The `pipeline` flow reproduces `dvc repro`; `reindex` after a corpus change leaves DVC truthful.

A temporary git + DVC repo with the real dvc.yaml and tiny params (a small dump, a 1-layer
scratch retriever trained for 2 steps). `python -m flows.pipeline build_index@ict` runs
prepare_corpus -> pretrain_ict -> build_index@ict through DVC; then the corpus changes (one more
dump), `dvc repro prepare_corpus` rebuilds the blocks, and `python -m flows.reindex` re-embeds
only the new blocks and records the result: `dvc status build_index@ict` is clean and reproducing
that stage has nothing to do.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import yaml

from tests.conftest import ROOT, stage_env
from tests.pipeline.test_dvc_repro import sh


def test_pipeline_flow_then_reindex_keeps_dvc_status_clean(prefect_api, tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    for name in ("realm_core", "tasks", "flows"):
        shutil.copytree(ROOT / name, repo / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("data/wikipedia_xml", "data/passages"):
        shutil.copytree(ROOT / name, repo / name)
    shutil.copy(ROOT / "dvc.yaml", repo / "dvc.yaml")
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["prepare_corpus"].update(sources=["data/wikipedia_xml/wikibrain/*"], workers=1)
    params["pretrain_ict"].update(init="scratch", scratch_config={"layers": 1, "hidden": 32, "heads": 2, "intermediate": 64},
                                  num_layers=0, steps=2, batch_size=4, warmup_steps=1, max_doc_len=64, eval_batches=1)
    params["build_index"].update(rows_per_shard=64, batch_size=64)
    (repo / "params.yaml").write_text(yaml.safe_dump(params))

    env = stage_env(prefect_api)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    env.pop("PYTHONPATH")  # the stages import the repo's own copy, as in a user's checkout
    for args in (["git", "init", "-q"], ["git", "config", "user.email", "t@example.invalid"],
                 ["git", "config", "user.name", "test"], ["dvc", "init", "-q"], ["dvc", "config", "core.analytics", "false"],
                 ["git", "add", "-A"], ["git", "commit", "-qm", "workspace"]):
        sh(args, repo, env)

    # 1. The UI entry point: exactly `dvc repro build_index@ict` (and its upstream stages).
    run = sh([sys.executable, "-m", "flows.pipeline", "build_index@ict"], repo, env)
    assert "'ran': ['prepare_corpus', 'pretrain_ict', 'build_index@ict']" in run.stdout, run.stdout[-2000:]
    assert "up to date" in sh(["dvc", "status", "build_index@ict"], repo, env).stdout.lower()
    first = json.loads((repo / "metrics/build_index/ict.json").read_text())

    # 2. A newer corpus: one more dump. The index is now stale for DVC.
    params["prepare_corpus"]["sources"].append("data/wikipedia_xml/wikipedia2vec/*")
    (repo / "params.yaml").write_text(yaml.safe_dump(params))
    sh(["dvc", "repro", "prepare_corpus"], repo, env)
    assert "build_index@ict" in sh(["dvc", "status", "build_index@ict"], repo, env).stdout

    # 3. reindex: only the new blocks go through the encoder, and DVC records the result.
    out = sh([sys.executable, "-m", "flows.reindex"], repo, env)
    assert "recorded in `build_index@ict`" in out.stdout and "True" in out.stdout, out.stdout[-2000:]
    second = json.loads((repo / "metrics/build_index/ict.json").read_text())
    blocks = pq.read_table(repo / "artifacts/corpus/blocks.parquet", columns=["block_id"]).column(0).to_numpy()
    assert second["rows"] == len(blocks) > first["rows"]
    assert second["rows_embedded"] == len(blocks) - first["rows"]  # the old dump's blocks are unchanged
    assert "up to date" in sh(["dvc", "status", "build_index@ict"], repo, env).stdout.lower()
    # The stage itself has nothing to do. (Its upstream pretrain_ict is stale, rightly: ICT trains
    # on the corpus; reindex refreshes the index for the retriever as it is.)
    again = sh(["dvc", "repro", "--single-item", "build_index@ict"], repo, env)
    assert "Running stage" not in again.stdout, again.stdout

    from realm_core.retrieval import index

    live = index.load_current(repo / "artifacts/index/ict")
    assert np.array_equal(live.ids, blocks)  # exactly the new corpus, in its order
