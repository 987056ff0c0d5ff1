"""prepare_corpus on the shipped real data: invariants, determinism, resume, bad input."""

from __future__ import annotations

import gzip
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from realm_core.config import PrepareCorpusConfig
from realm_core.corpus.blocks import BLOCKS_SCHEMA
from realm_core.corpus.prepare import WORK_DIR_NAME, prepare_corpus
from realm_core.errors import RealmError
from realm_core.wiki.wikitext import RESIDUE
from tests.conftest import DATA, GENSIM_DUMP, ROOT, stage_env

DEFAULT_SOURCES = [str(DATA / "wikipedia_xml" / "*" / "*"), str(DATA / "passages" / "*.jsonl.gz")]


def run(tmp: Path, name: str, sources=None, **kw) -> tuple[Path, dict]:
    out = tmp / name
    cfg = PrepareCorpusConfig(sources=sources or DEFAULT_SOURCES, output_dir=str(out),
                              metrics_file=str(out / "metrics.json"), **kw)
    return out / "blocks.parquet", prepare_corpus(cfg)


@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    return run(tmp_path_factory.mktemp("prep"), "a", workers=2)


def test_counts_schema_and_row_groups(default_run):
    path, metrics = default_run
    pf = pq.ParquetFile(path)
    assert pf.schema_arrow == BLOCKS_SCHEMA
    assert pf.metadata.num_rows == metrics["blocks"] > 7000
    assert all(pf.metadata.row_group(i).num_rows == 8192 for i in range(pf.num_row_groups - 1))
    gensim = metrics["sources"][GENSIM_DUMP.name]
    assert gensim["pages_read"] == 206 and gensim["dropped"]["redirect"] == 99
    assert gensim["docs_kept"] + sum(v for k, v in gensim["dropped"].items() if k != "redirect") == 206 - 99
    assert metrics["sources"]["squad_dev.jsonl.gz"]["docs_kept"] == 2067
    assert metrics["sources"]["nq_open_gold.jsonl.gz"]["docs_kept"] == 2600
    assert json.loads((path.parent / "metrics.json").read_text()) == metrics


def test_every_block_is_clean_and_within_budget(default_run, tokenizer):
    path, _ = default_run
    table = pq.read_table(path)
    titles, texts = table.column("title").to_pylist(), table.column("text").to_pylist()
    counts = [len(ids) for ids in tokenizer(titles, texts)["input_ids"]]  # [CLS] t [SEP] x [SEP]
    assert counts == table.column("n_wordpieces").to_pylist()
    assert max(counts) <= 288
    for title, text, starts in zip(titles, texts, table.column("sentence_starts").to_pylist()):
        assert not [r for r in RESIDUE if r in text], (title, text[:200])
        assert starts[0] == 0 and starts == sorted(starts) and starts[-1] < len(text)
        assert all(s == 0 or text[s - 1] == " " for s in starts)
    assert len(set(table.column("block_id").to_pylist())) == table.num_rows


def test_identical_bytes_across_runs_workers_and_chunking(default_run, tmp_path):
    first, _ = default_run
    again, _ = run(tmp_path, "b", workers=2)
    single, _ = run(tmp_path, "c", workers=1, chunk_pages=40)
    assert first.read_bytes() == again.read_bytes() == single.read_bytes()


def test_resume_after_kill_reuses_finished_chunks(tmp_path):
    sources = [str(GENSIM_DUMP), str(DATA / "passages" / "*.jsonl.gz")]
    out = tmp_path / "killed"
    code = (
        "import sys; from realm_core.config import PrepareCorpusConfig as C; "
        "from realm_core.corpus.prepare import prepare_corpus as p; "
        f"p(C(sources={sources!r}, output_dir={str(out)!r}, metrics_file={str(out / 'm.json')!r}, workers=1, chunk_pages=10))"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], env=stage_env(), cwd=ROOT)
    work = out / WORK_DIR_NAME
    deadline = time.monotonic() + 120
    while len(list(work.glob("*/chunk_*.json"))) < 3 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, "finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "blocks.parquet").exists()
    done_before = len(list(work.glob("*/chunk_*.json")))
    assert done_before >= 3
    path, metrics = run(tmp_path, "killed", sources=sources, workers=1, chunk_pages=10)
    resumed = sum(s["resumed_chunks"] for s in metrics["sources"].values())
    assert resumed >= done_before - 1  # the chunk being written at the kill may be redone
    clean, _ = run(tmp_path, "clean", sources=sources, workers=2, chunk_pages=10)
    assert path.read_bytes() == clean.read_bytes()
    assert not work.exists()


def test_truncated_source_fails_and_writes_nothing(tmp_path):
    bad = tmp_path / "truncated.xml.bz2"
    data = GENSIM_DUMP.read_bytes()
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(RealmError, match="truncated.xml.bz2: truncated or corrupt compressed data"):
        run(tmp_path, "t", sources=[str(DATA / "wikipedia_xml" / "wikibrain" / "en_test.xml"), str(bad)], workers=2)
    out = tmp_path / "t"
    assert not (out / "blocks.parquet").exists()
    assert not [p for p in out.iterdir() if p.name != WORK_DIR_NAME]


def test_all_pages_dropped_is_an_error(tmp_path):
    only_redirects = tmp_path / "redirects.xml"
    only_redirects.write_text(
        '<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.10/"><page><title>A</title><ns>0</ns><id>1</id>'
        '<redirect title="B"/><revision><text>#REDIRECT [[B]]</text></revision></page></mediawiki>'
    )
    with pytest.raises(RealmError, match="no text blocks from redirects.xml"):
        run(tmp_path, "r", sources=[str(only_redirects)], workers=1)
    assert not (tmp_path / "r" / "blocks.parquet").exists()


def _golden_module():
    spec = importlib.util.spec_from_file_location("golden_blocks", ROOT / "scripts" / "golden_blocks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_blocks_match_the_golden_digests(default_run):
    """Every block of the shipped Wikipedia dumps (title, text digest, wordpiece count, sentence
    starts, id, order) equals tests/assets/corpus/golden_blocks.jsonl.gz, which was written from
    the corpus before the parser speed work: faster cleaning must not change the corpus."""
    golden_mod = _golden_module()
    with gzip.open(golden_mod.GOLDEN, "rt") as fh:
        golden = [json.loads(line) for line in fh]
    path, _ = default_run
    got = golden_mod.rows(path, golden_mod.WIKI_SOURCES)
    assert len(golden) == 2952
    for want, have in zip(golden, got):
        assert have == want, f"block {want['source']}:{want['doc_id']}#{want['block_index']} ({want['title']}) changed"
    assert len(got) == len(golden)
