"""pretrain_ict -> build_index -> evaluate_retrieval on a real Prefect server, with a tiny retriever.

The corpus is the NQ-open gold passages (so NQ answers are in it); the retriever is a small BERT
from scratch trained for a few ICT steps: these tests check the plumbing, the files and the
failure modes, not retrieval quality (docs/results.md has that).
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from safetensors.numpy import load_file

from realm_core.config import BuildIndexConfig, EvaluateRetrievalConfig, PrepareCorpusConfig, PretrainICTConfig
from realm_core.corpus.prepare import prepare_corpus
from realm_core.devices import resolve_device, resolve_precision
from realm_core.errors import RealmError
from realm_core.retrieval import build_stage, embed, index
from realm_core.retrieval.evaluate import run_evaluate_retrieval
from realm_core.training.ict_stage import run_pretrain_ict
from tests.conftest import DATA, ROOT, stage_env

TINY = {"layers": 1, "hidden": 32, "heads": 2, "intermediate": 64}


@pytest.fixture(scope="module")
def blocks(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("corpus")
    cfg = PrepareCorpusConfig(sources=[str(DATA / "passages" / "nq_open_gold.jsonl.gz")], output_dir=str(tmp),
                              metrics_file=str(tmp / "m.json"), workers=1)
    prepare_corpus(cfg)
    return tmp / "blocks.parquet"


def ict_config(tmp, blocks, **kw) -> PretrainICTConfig:
    base = dict(blocks=str(blocks), init="scratch", scratch_config=TINY, steps=4, batch_size=8, lr=1e-3,
                warmup_steps=1, max_doc_len=96, max_query_len=32, eval_batches=1, checkpoint_every=2,
                output_dir=str(tmp / "models" / "ict"), init_output_dir=str(tmp / "models" / "ict_init"),
                checkpoint_dir=str(tmp / "ckpt"), metrics_file=str(tmp / "metrics" / "pretrain_ict.json"),
                plots_dir=str(tmp / "metrics" / "pretrain_ict"))
    return PretrainICTConfig(**{**base, **kw})


MODELS = {"init": "ict_init", "ict": "ict"}  # evaluate's retriever name -> pretrain_ict's output
AUTO_DEVICE = str(resolve_device("auto"))
AUTO_PRECISION = resolve_precision("auto", AUTO_DEVICE)


def index_config(tmp, blocks, name: str, **kw) -> BuildIndexConfig:
    base = dict(blocks=str(blocks), retriever=str(tmp / "models" / MODELS[name]), output_dir=str(tmp / "index" / name),
                rows_per_shard=1000, batch_size=64, metrics_file=str(tmp / "metrics" / f"build_index_{name}.json"))
    return BuildIndexConfig(**{**base, **kw})


def eval_config(tmp, blocks, **kw) -> EvaluateRetrievalConfig:
    base = dict(blocks=str(blocks), data_dir=str(DATA), ctxs=5, output_dir=str(tmp / "retrieval"),
                metrics_dir=str(tmp / "metrics" / "retrieval"),
                retrievers={name: {"model": str(tmp / "models" / model), "index": str(tmp / "index" / name)}
                            for name, model in MODELS.items()})
    return EvaluateRetrievalConfig.model_validate({**base, **kw})


@pytest.fixture(scope="module")
def pipeline(prefect_api, blocks, tmp_path_factory):
    """The three flows, in dvc.yaml's order, on the tiny retriever."""
    from flows.build_index import build_index_flow
    from flows.evaluate_retrieval import evaluate_retrieval_flow
    from flows.pretrain_ict import pretrain_ict_flow

    tmp = tmp_path_factory.mktemp("retriever")
    ict = pretrain_ict_flow(ict_config(tmp, blocks))
    built = {name: build_index_flow(index_config(tmp, blocks, name)) for name in ("init", "ict")}
    evaluated = evaluate_retrieval_flow(eval_config(tmp, blocks))
    return tmp, ict, built, evaluated


def test_pretrain_ict_writes_both_retrievers_metrics_and_curves(pipeline):
    tmp, ict, _, _ = pipeline
    metrics = json.loads((tmp / "metrics" / "pretrain_ict.json").read_text())
    assert ict["steps"] == metrics["steps"] == 4 and metrics["completed"]
    assert {"accuracy", "masked_accuracy", "chance"} <= set(metrics["before"]) <= set(metrics["after"])
    trained = load_file(str(tmp / "models" / "ict" / "model.safetensors"))
    init = load_file(str(tmp / "models" / "ict_init" / "model.safetensors"))
    assert trained.keys() == init.keys() and any(not np.array_equal(trained[k], init[k]) for k in trained)
    curve = (tmp / "metrics" / "pretrain_ict" / "plots" / "metrics" / "train" / "loss.tsv").read_text().splitlines()
    # one logged window (log_every 10 > 4 steps: flushed at the last step) after the header
    assert curve[0].split("\t")[:2] == ["step", "loss"]
    assert len(curve) == 2


def test_build_index_publishes_a_version_per_retriever(pipeline, blocks):
    tmp, _, built, _ = pipeline
    n_blocks = embed.read_manifest(tmp / "index" / "ict" / "embeddings")["total_rows"]
    for name, result in built.items():
        assert result["rows"] == n_blocks and result["shards_embedded"] == -(-n_blocks // 1000)
        live = index.load_current(tmp / "index" / name)
        assert live.ntotal == n_blocks and live.meta["embeddings"]["encoder_hash"] == embed.encoder_hash(tmp / "models" / MODELS[name])
        # device/precision "auto", resolved once by the flow and recorded with the vectors
        assert (result["device"], result["precision"]) == (AUTO_DEVICE, AUTO_PRECISION)
        assert live.meta["embeddings"]["precision"] == AUTO_PRECISION


def test_evaluate_retrieval_metrics_and_dpr_files(pipeline):
    tmp, _, _, evaluated = pipeline
    metrics = json.loads((tmp / "metrics" / "retrieval" / "nq.json").read_text())
    assert metrics["n_questions"] == evaluated["n_questions"] == 530
    # The corpus is the gold passages themselves: every NQ answer is in it, and BM25 finds most.
    assert metrics["answer_coverage"] == 1.0
    assert (metrics["device"], metrics["precision"]) == (AUTO_DEVICE, AUTO_PRECISION)
    assert metrics["index_precision"] == {"init": AUTO_PRECISION, "ict": AUTO_PRECISION}
    keys = {"recall@1", "recall@5", "recall@20", "recall@100"}
    for name in ("bm25", "init", "ict"):
        assert set(metrics[name]) == keys
        values = [metrics[name][k] for k in ("recall@1", "recall@5", "recall@20", "recall@100")]
        assert values == sorted(values) and 0.0 <= values[0] and values[-1] <= metrics["answer_coverage"]
    assert metrics["bm25"]["recall@20"] > 0.8
    records = json.loads((tmp / "retrieval" / "nq" / "ict.json").read_text())
    assert len(records) == 530 and set(records[0]) == {"question", "answers", "ctxs"}
    ctx = records[0]["ctxs"][0]
    assert set(ctx) == {"id", "title", "text", "score", "has_answer"} and len(records[0]["ctxs"]) == 5
    # has_answer in the file is what recall@1 counts.
    assert sum(r["ctxs"][0]["has_answer"] for r in records) / 530 == pytest.approx(metrics["ict"]["recall@1"], abs=1e-4)


def test_build_index_resumes_reuses_and_rebuilds(pipeline, blocks, tmp_path):
    tmp = pipeline[0]
    cfg = index_config(tmp, blocks, "ict", output_dir=str(tmp_path / "ict"), rows_per_shard=400,
                       metrics_file=str(tmp_path / "m.json"))
    first = build_stage.run_build_index(cfg, info=lambda m: None)
    out = build_stage.embeddings_dir(cfg)
    # A kill mid-shard leaves at most an unrecorded .npy: that shard alone is redone.
    embed.shard_path(out, 1).with_suffix(".json").unlink()
    messages = []
    again = build_stage.run_build_index(cfg, info=messages.append)
    assert again["shards_embedded"] == 1 and again["shards_reused"] == first["shards"] - 1
    assert again["version_reused"] and again["version"] == first["version"]
    # A different retriever in the same root: the old shards are not mixed in.
    other = cfg.model_copy(update={"retriever": str(tmp / "models" / "ict_init")})
    rebuilt = build_stage.run_build_index(other, info=messages.append)
    assert rebuilt["shards_embedded"] == first["shards"] and not rebuilt["version_reused"]
    assert any("another encoder" in m for m in messages)
    assert index.current_version(cfg.output_dir) == rebuilt["version"]
    assert len(index.list_versions(cfg.output_dir)) == 2


def test_evaluate_refuses_an_index_of_another_retriever(pipeline, blocks):
    tmp = pipeline[0]
    swapped = eval_config(tmp, blocks, retrievers={"ict": {"model": str(tmp / "models" / "ict"),
                                                           "index": str(tmp / "index" / "init")}})
    with pytest.raises(RealmError, match="index/retriever mismatch"):
        run_evaluate_retrieval(swapped, info=lambda m: None)


def test_cli_errors_are_one_line(pipeline, blocks, tmp_path):
    tmp = pipeline[0]
    cases = [
        ("build_index", [f"build_index.retriever={tmp_path}/missing", f"build_index.blocks={blocks}"],
         "not a retriever checkpoint"),
        ("pretrain_ict", [f"pretrain_ict.blocks={tmp_path}/none.parquet"], "blocks file not found"),
        ("evaluate_retrieval", [f"evaluate_retrieval.blocks={blocks}", "evaluate_retrieval.dataset=xx"], "dataset"),
        ("build_index", [f"build_index.retriever={tmp}/models/ict", f"build_index.blocks={blocks}",
                         "build_index.device=cuda:9"], "build_index.device: 'cuda:9' requested but"),
    ]
    for stage, sets, expected in cases:
        args = [sys.executable, "-m", f"flows.{stage}"] + [a for s in sets for a in ("--set", s)]
        proc = subprocess.run(args, cwd=ROOT, env=stage_env(), capture_output=True, text=True, timeout=120)
        assert proc.returncode == 1, (stage, proc.stderr[-800:])
        assert proc.stderr.strip().count("\n") == 0 and expected in proc.stderr, (stage, proc.stderr)
        assert "Traceback" not in proc.stderr


def test_time_budget_stops_with_a_checkpoint_then_resumes(blocks, tmp_path):
    cfg = ict_config(tmp_path, blocks, steps=6, time_budget_s=0.001, eval_batches=0)
    stopped = run_pretrain_ict(cfg, info=lambda m: None)
    assert not stopped["completed"] and stopped["steps"] == 1
    assert not (tmp_path / "models" / "ict").exists()  # nothing half-trained for DVC to record
    done = run_pretrain_ict(cfg.model_copy(update={"time_budget_s": 0.0}), info=lambda m: None)
    assert done["completed"] and done["resumed_at"] == [1] and done["steps"] == 6
