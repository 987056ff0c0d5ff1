"""The `prepare_corpus` stage: sources -> cleaned, sentence-split, packed blocks.parquet.

Shape of the work:
- the main process streams each source (memory independent of its size) and decides which pages
  to keep; kept pages go in ~1 MB batches to worker processes that clean wikitext, split
  sentences and pack blocks; results come back *in submission order*, so the output does not
  depend on the number of workers;
- every `chunk_pages` pages of a source form a checkpoint: a part file written atomically under
  `<output_dir>/prepare_corpus.work/`. A rerun after a crash skips finished chunks (it re-reads
  the dump, which is cheap next to cleaning it);
- finally the parts are merged into `blocks.parquet` with fixed-size row groups (again
  independent of workers and chunking), written to a temp name and renamed.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections import Counter, deque
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from realm_core.config import PrepareCorpusConfig
from realm_core.corpus.blocks import BLOCKS_SCHEMA, Blocks
from realm_core.corpus.sources import Doc, Source, iter_docs, open_sources, resolve_sources
from realm_core.corpus.worker import _init_worker, _process_batch, process_batch
from realm_core.errors import RealmError
from realm_core.io import ReadTracker, atomic_path, write_text_atomic

from realm_core.pretrained import load_tokenizer_json

# Bump when the cleaning/packing logic changes, so stale checkpoint parts are never reused.
PIPELINE_VERSION = "prepare_corpus/1"
BATCH_BYTES = 1 << 20
BATCH_DOCS = 256
WORK_DIR_NAME = "prepare_corpus.work"
BLOCKS_FILE = "blocks.parquet"


@dataclass
class Progress:
    """What the progress callback receives (about every `interval` seconds and per source)."""

    source: str
    source_index: int
    n_sources: int
    pages_read: int
    docs_kept: int
    blocks: int
    bytes_read: int
    bytes_total: int
    elapsed_s: float
    source_elapsed_s: float
    resumed_chunks: int = 0


class _InlineExecutor:
    """Runs batches in this process (workers == 1): same code path, no pool overhead."""

    def submit(self, fn, *args) -> Future:
        fut: Future = Future()
        fut.set_result(fn(*args))
        return fut

    def shutdown(self, cancel_futures: bool = False) -> None:
        pass


class _ExternalExecutor:
    """Batches through a caller's `submit` (see `prepare_corpus`), as `process_batch` calls."""

    def __init__(self, submit: Callable[..., Any], settings: tuple[str, int, bool]) -> None:
        self._submit, self._settings = submit, settings

    def submit(self, fn, source: str, docs) -> Any:
        return self._submit(process_batch, self._settings, source, docs)

    def shutdown(self, cancel_futures: bool = False) -> None:
        pass


# ----------------------------------------------------------------------------- main side


@dataclass
class _Chunk:
    index: int
    counts: Counter = field(default_factory=Counter)
    blocks: Blocks = field(default_factory=Blocks)
    pending: int = 0  # batches submitted but not yet collected
    closed: bool = False  # all pages of the chunk have been read


def prepare_corpus(cfg: PrepareCorpusConfig, progress: Callable[[Progress], None] | None = None,
                   interval: float = 5.0, submit: Callable[..., Any] | None = None) -> dict:
    """Run the stage; returns the metrics dict (also written to `cfg.metrics_file`).

    Batches of pages are cleaned and packed on `cfg.workers` spawned processes by default. An
    orchestrator can take that work instead: `submit(process_batch, settings, source, docs)` must
    return a future (`.result()`) of `process_batch(settings, source, docs)`, e.g. a Prefect task
    on a Dask cluster; up to 2 x `cfg.workers` batches are in flight. The output is the same."""
    t0 = time.monotonic()
    sources = open_sources(resolve_sources(cfg.sources))
    tokenizer_json = load_tokenizer_json(cfg.tokenizer)
    out_dir = Path(cfg.output_dir)
    work_root = out_dir / WORK_DIR_NAME
    settings_key = _hash({
        "version": PIPELINE_VERSION, "tokenizer": hashlib.sha256(tokenizer_json.encode()).hexdigest(),
        "block_size": cfg.block_size, "drop_title_prefixes": cfg.drop_title_prefixes,
        "keep_lists": cfg.keep_lists, "chunk_pages": cfg.chunk_pages,
    })
    workers = cfg.workers or os.cpu_count() or 1
    if submit is not None:
        executor = _ExternalExecutor(submit, (cfg.tokenizer, cfg.block_size, cfg.keep_lists))
    elif workers == 1:
        _init_worker(tokenizer_json, cfg.block_size, cfg.keep_lists)
        executor = _InlineExecutor()
    else:
        executor = ProcessPoolExecutor(
            max_workers=workers, mp_context=get_context("spawn"), initializer=_init_worker,
            initargs=(tokenizer_json, cfg.block_size, cfg.keep_lists),
        )
    per_source: dict[str, dict] = {}
    part_dirs: list[Path] = []
    try:
        for i, source in enumerate(sources):
            part_dir = work_root / f"{source.name}.{_source_key(source, settings_key)}"
            part_dirs.append(part_dir)
            per_source[source.name] = _run_source(
                source, i, len(sources), part_dir, cfg, executor, workers, progress, interval, t0
            )
    except BaseException:
        executor.shutdown(cancel_futures=True)
        raise
    executor.shutdown()

    n_blocks, wordpieces = _merge(part_dirs, out_dir / BLOCKS_FILE, cfg.row_group_size, sources)
    metrics = _metrics(per_source, part_dirs, n_blocks, wordpieces, cfg.block_size, time.monotonic() - t0)
    write_text_atomic(cfg.metrics_file, json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    shutil.rmtree(work_root, ignore_errors=True)
    return metrics


def _run_source(source: Source, index: int, n_sources: int, part_dir: Path, cfg: PrepareCorpusConfig,
                executor, workers: int, progress, interval: float, t0: float) -> dict:
    part_dir.mkdir(parents=True, exist_ok=True)
    tracker = ReadTracker()
    total_bytes = source.path.stat().st_size
    max_inflight = 2 * workers
    inflight: deque[tuple[_Chunk, Future]] = deque()
    totals: Counter = Counter()
    resumed = 0
    started = last_report = time.monotonic()

    def report(force: bool = False) -> None:
        nonlocal last_report
        if progress is not None and (force or time.monotonic() - last_report >= interval):
            last_report = time.monotonic()
            progress(Progress(source.name, index, n_sources, totals["pages_read"], totals["docs_kept"],
                              totals["blocks"], tracker.position(), total_bytes, time.monotonic() - t0,
                              time.monotonic() - started, resumed))

    def collect_one() -> None:
        chunk, fut = inflight.popleft()
        blocks, counts = fut.result()
        chunk.blocks.extend(blocks)
        chunk.counts.update(counts)
        chunk.pending -= 1
        totals["docs_kept"] += counts.get("docs_kept", 0)
        totals["blocks"] += len(blocks)
        if chunk.closed and chunk.pending == 0:
            _write_part(part_dir, chunk)
        report()

    chunk = _Chunk(0)
    chunk_done = _part_done(part_dir, 0)
    batch: list[tuple[str, str, str, bool]] = []
    batch_bytes = 0

    def submit() -> None:
        nonlocal batch, batch_bytes
        if batch:
            chunk.pending += 1
            inflight.append((chunk, executor.submit(_process_batch, source.name, batch)))
            batch, batch_bytes = [], 0
            while len(inflight) >= max_inflight:
                collect_one()

    def close_chunk() -> None:
        nonlocal chunk, chunk_done, resumed
        if chunk_done:
            resumed += 1
            done = json.loads((part_dir / f"chunk_{chunk.index:06d}.json").read_text())
            totals["docs_kept"] += done["counts"].get("docs_kept", 0)
            totals["blocks"] += done["blocks"]
        else:
            submit()
            chunk.closed = True
            if chunk.pending == 0:
                _write_part(part_dir, chunk)
        chunk = _Chunk(chunk.index + 1)
        chunk_done = _part_done(part_dir, chunk.index)

    pages_in_chunk = 0
    doc: Doc
    for doc in iter_docs(source, cfg.drop_title_prefixes, tracker):
        totals["pages_read"] += 1
        pages_in_chunk += 1
        if not chunk_done:
            chunk.counts["pages_read"] += 1
            if doc.drop is not None:
                chunk.counts[f"drop:{doc.drop}"] += 1
            else:
                batch.append((doc.doc_id, doc.title, doc.body, doc.is_wikitext))
                batch_bytes += len(doc.body)
                if batch_bytes >= BATCH_BYTES or len(batch) >= BATCH_DOCS:
                    submit()
        if pages_in_chunk == cfg.chunk_pages:
            close_chunk()
            pages_in_chunk = 0
        report()
    if pages_in_chunk or chunk.index == 0:
        close_chunk()
    while inflight:
        collect_one()
    report(force=True)
    return {"format": source.format, "pages_read": totals["pages_read"], "resumed_chunks": resumed,
            "bytes": total_bytes}


def _part_done(part_dir: Path, index: int) -> bool:
    return (part_dir / f"chunk_{index:06d}.json").is_file()


def _write_part(part_dir: Path, chunk: _Chunk) -> None:
    """Parquet first, then the JSON marker: the marker's existence means the chunk is complete."""
    with atomic_path(part_dir / f"chunk_{chunk.index:06d}.parquet") as tmp:
        # Uncompressed: parts live only until the merge, which compresses once (zstd cost CPU
        # twice for the same bytes).
        pq.write_table(chunk.blocks.to_table(), tmp, compression="none")
    write_text_atomic(part_dir / f"chunk_{chunk.index:06d}.json",
                      json.dumps({"counts": dict(chunk.counts), "blocks": len(chunk.blocks)}))
    chunk.blocks = Blocks()


def _merge(part_dirs: list[Path], final: Path, row_group_size: int, sources: list[Source]) -> tuple[int, np.ndarray]:
    """Concatenate parts in order into `final` with fixed-size row groups; check id uniqueness."""
    ids: list[np.ndarray] = []
    wordpieces: list[np.ndarray] = []
    for part_dir in part_dirs:
        for part in sorted(part_dir.glob("chunk_*.parquet")):
            cols = pq.read_table(part, columns=["block_id", "n_wordpieces"])
            ids.append(cols.column(0).to_numpy())
            wordpieces.append(cols.column(1).to_numpy())
    all_ids = np.concatenate(ids) if ids else np.zeros(0, np.int64)
    if all_ids.size == 0:
        names = ", ".join(s.name for s in sources)
        raise RealmError(f"prepare_corpus: no text blocks from {names} (every page was dropped; see the counts above)")
    uniq, counts = np.unique(all_ids, return_counts=True)
    if uniq.size != all_ids.size:
        dup = int(uniq[counts > 1][0])
        raise RealmError(f"prepare_corpus: duplicate block_id {dup}: a source repeats a document id")

    with atomic_path(final) as tmp:
        writer = pq.ParquetWriter(tmp, BLOCKS_SCHEMA, compression="zstd")
        carry: pa.Table | None = None  # rows that did not fill a row group yet
        try:
            for part_dir in part_dirs:
                for part in sorted(part_dir.glob("chunk_*.parquet")):
                    table = pq.read_table(part).cast(BLOCKS_SCHEMA)
                    if carry is not None:
                        table = pa.concat_tables([carry, table])
                    full = table.num_rows - table.num_rows % row_group_size
                    # Row groups of exactly row_group_size rows, whatever the part boundaries were,
                    # so the file is the same for any chunking or worker count.
                    for start in range(0, full, row_group_size):
                        writer.write_table(table.slice(start, row_group_size).combine_chunks(), row_group_size=row_group_size)
                    carry = table.slice(full) if full < table.num_rows else None
            if carry is not None:
                writer.write_table(carry.combine_chunks(), row_group_size=row_group_size)
        finally:
            writer.close()
    return int(all_ids.size), np.concatenate(wordpieces)


def _metrics(per_source: dict[str, dict], part_dirs: list[Path], n_blocks: int, wordpieces: np.ndarray,
             block_size: int, seconds: float) -> dict:
    """Counts per source and overall, from the chunk markers (so resumed chunks count too)."""
    total: Counter = Counter()
    sources_out = {}
    for (name, info), part_dir in zip(per_source.items(), part_dirs):
        counts: Counter = Counter()
        blocks = 0
        for marker in sorted(part_dir.glob("chunk_*.json")):
            done = json.loads(marker.read_text())
            counts.update(done["counts"])
            blocks += done["blocks"]
        total.update(counts)
        sources_out[name] = {
            "format": info["format"], "bytes": info["bytes"], "pages_read": counts["pages_read"],
            "docs_kept": counts["docs_kept"], "blocks": blocks, "dropped": _dropped(counts),
            "resumed_chunks": info["resumed_chunks"],
        }
    edges = list(range(0, block_size, 32)) + [block_size + 1]  # last bin ends at block_size
    hist, _ = np.histogram(wordpieces, bins=edges)
    input_bytes = sum(v["bytes"] for v in per_source.values())
    return {
        "sources": sources_out,
        "pages_read": total["pages_read"],
        "docs_kept": total["docs_kept"],
        "dropped": _dropped(total),
        "paragraphs": total["paragraphs"],
        "paragraphs_dropped_markup": total["paragraphs_dropped_markup"],
        "sentences": total["sentences"],
        "long_sentences_split": total["long_sentences_split"],
        "blocks_truncated": total["blocks_truncated"],
        "blocks": n_blocks,
        "wordpieces": {
            "block_size": block_size,
            "mean": round(float(wordpieces.mean()), 2),
            "median": float(np.median(wordpieces)),
            "max": int(wordpieces.max()),
            "histogram": [
                {"from": int(lo), "to": int(hi) - 1, "blocks": int(n)} for lo, hi, n in zip(edges, edges[1:], hist)
            ],
        },
        "seconds": round(seconds, 2),
        "pages_per_s": round(total["pages_read"] / seconds, 1) if seconds else None,
        "input_bytes_on_disk": input_bytes,
    }


def _dropped(counts: Counter) -> dict[str, int]:
    return {k.split(":", 1)[1]: v for k, v in sorted(counts.items()) if k.startswith("drop:") and v}


def _hash(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


def _source_key(source: Source, settings_key: str) -> str:
    st = source.path.stat()
    return _hash({"settings": settings_key, "name": source.name, "size": st.st_size, "mtime_ns": st.st_mtime_ns})
