"""Incremental re-indexing: a changed corpus re-embeds only changed blocks; kills lose nothing."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from realm_core.config import BuildIndexConfig, PrepareCorpusConfig
from realm_core.corpus.prepare import prepare_corpus
from realm_core.modeling.embedder import RetrieverEmbedder
from realm_core.retrieval import build_stage, embed, incremental, index
from tests.conftest import ROOT, WIKI_XML

TINY = {"layers": 1, "hidden": 32, "heads": 2, "intermediate": 64}
DUMP = WIKI_XML / "wikibrain" / "en_test.xml"


def edited_dump(tmp: Path, every: int = 10) -> Path:
    """The shipped dump with every `every`-th article (not redirect) opening with one new sentence:
    10% of the pages edited, as between two dumps. (An edit at the top shifts the greedy block
    packing of the rest of that page, so all of its blocks may change; other pages' do not.)"""
    xml = DUMP.read_text(encoding="utf-8")
    count = 0

    def edit(match: re.Match) -> str:
        nonlocal count
        count += 1
        return f"{match.group(0)}The page was revised in edit number {count}. " if count % every == 0 else match.group(0)

    path = tmp / "en_test_edited.xml"
    path.write_text(re.sub(r'<text xml:space="preserve">(?!#REDIRECT)', edit, xml), encoding="utf-8")
    return path


def blocks_of(dump: Path, out: Path) -> Path:
    prepare_corpus(PrepareCorpusConfig(sources=[str(dump)], output_dir=str(out), metrics_file=str(out / "m.json"),
                                       workers=1))
    return out / "blocks.parquet"


@pytest.fixture(scope="module")
def corpora(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("incremental")
    model = RetrieverEmbedder.from_init("scratch", scratch_config=TINY, proj_size=16, max_doc_len=96, seed=0)
    return (blocks_of(DUMP, tmp / "old"), blocks_of(edited_dump(tmp), tmp / "new"),
            model.save_pretrained(tmp / "retriever"))


def config(blocks, retriever, root, **kw) -> BuildIndexConfig:
    base = dict(blocks=str(blocks), retriever=str(retriever), output_dir=str(root), rows_per_shard=64, batch_size=32,
                metrics_file=str(Path(root).parent / f"{Path(root).name}.json"))
    return BuildIndexConfig(**{**base, **kw})


def quiet(message: str) -> None:
    pass


def test_changed_corpus_reembeds_only_changed_blocks_and_matches_a_full_rebuild(corpora, tmp_path):
    old, new, retriever = corpora
    first = build_stage.run_build_index(config(old, retriever, tmp_path / "index"), quiet)
    messages = []
    again = build_stage.run_build_index(config(new, retriever, tmp_path / "index"), messages.append)

    old_keys = set(incremental.content_keys(old).tolist())
    new_keys = incremental.content_keys(new)
    changed = int(sum(k not in old_keys for k in new_keys.tolist()))
    assert 0 < changed < 0.5 * len(new_keys)
    assert again["rows_embedded"] == changed and again["rows_copied"] == len(new_keys) - changed
    assert any("reusing the rest" in m for m in messages)
    assert not build_stage.previous_dir(config(new, retriever, tmp_path / "index")).exists()
    assert again["version"] != first["version"]

    full = build_stage.run_build_index(config(new, retriever, tmp_path / "full"), quiet)
    assert full["rows_embedded"] == len(new_keys)
    inc_index, full_index = index.load_current(tmp_path / "index"), index.load_current(tmp_path / "full")
    ids = pq.read_table(new, columns=["block_id"]).column(0).to_numpy()
    assert np.array_equal(inc_index.ids, ids) and np.array_equal(full_index.ids, ids)  # exactly the new blocks
    queries = np.random.default_rng(0).standard_normal((50, 16)).astype(np.float32)
    (a_ids, a_scores), (b_ids, b_scores) = inc_index.search(queries, 10), full_index.search(queries, 10)
    assert np.array_equal(a_ids, b_ids)
    np.testing.assert_allclose(a_scores, b_scores, rtol=1e-4, atol=1e-4)


def test_a_new_encoder_reuses_nothing(corpora, tmp_path):
    old, new, retriever = corpora
    build_stage.run_build_index(config(old, retriever, tmp_path / "index"), quiet)
    other = RetrieverEmbedder.from_init("scratch", scratch_config=TINY, proj_size=16, max_doc_len=96, seed=1)
    other_dir = other.save_pretrained(tmp_path / "other")
    result = build_stage.run_build_index(config(new, other_dir, tmp_path / "index"), quiet)
    assert result["rows_embedded"] == result["rows"] and result["rows_copied"] == 0


KILLABLE = """
import sys, time
from realm_core.config import BuildIndexConfig
from realm_core.retrieval import build_stage, embed
cfg = BuildIndexConfig.model_validate_json(sys.argv[1])
slow = embed.embed_shard
def embed_shard(*a, **kw):  # widen the window between shards so the kill lands mid-run
    time.sleep(0.3)
    return slow(*a, **kw)
embed.embed_shard = embed_shard
build_stage.run_build_index(cfg, print)
"""


def test_kill_9_mid_reembedding_then_rerun_reuses_shards_and_current_stays_whole(corpora, tmp_path):
    old, new, retriever = corpora
    root = tmp_path / "index"
    build_stage.run_build_index(config(old, retriever, root), quiet)
    live_before = index.current_version(root)

    seen, errors, stop = set(), [], threading.Event()

    def reader():  # what a concurrent searcher sees while the index is re-embedded and swapped
        while not stop.is_set():
            try:
                version = index.current_version(root)
                loaded = index.load_version(root, version)
                loaded.search(np.ones((1, 16), dtype=np.float32), 3)
                seen.add(version)
            except Exception as exc:  # noqa: BLE001 - any failure is what the test is about
                errors.append(repr(exc))
            time.sleep(0.01)

    thread = threading.Thread(target=reader)
    thread.start()
    cfg = config(new, retriever, root, rows_per_shard=16)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", KILLABLE, cfg.model_dump_json()], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    emb = build_stage.embeddings_dir(cfg)
    new_hash = embed.corpus_hash(new)

    def new_shards_done() -> int:  # the old corpus's shards sit in the same place until plan() moves them
        try:
            if json.loads((emb / embed.MANIFEST).read_text())["corpus_hash"] != new_hash:
                return 0
        except (OSError, ValueError):
            return 0
        return len(list(emb.glob("shard_*.json")))

    deadline = time.monotonic() + 120
    while new_shards_done() < 3 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_at_kill = new_shards_done()
    assert index.current_version(root) == live_before  # nothing published by the killed run

    result = build_stage.run_build_index(cfg, quiet)
    stop.set()
    thread.join()
    assert result["shards_reused"] >= done_at_kill >= 3 and result["shards_embedded"] == result["shards"] - result["shards_reused"]
    assert not errors, errors[:3]
    assert seen <= {live_before, result["version"]} and live_before in seen
    assert index.load_current(root).ntotal == result["rows"]
    manifest = json.loads((emb / embed.MANIFEST).read_text())
    assert manifest["complete"] and manifest["corpus_hash"] == embed.corpus_hash(new)
