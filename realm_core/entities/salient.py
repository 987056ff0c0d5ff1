"""The `tag_entities` stage: salient spans (tagger entities + dates) for every block.

Blocks are tagged sentence by sentence (`sentence_starts`), so no span ever crosses a sentence
boundary — REALM masks one span inside one sentence. Work is split in shards of consecutive
blocks; each shard is written atomically to `<output_dir>/tag_entities.work/<key>/` and a rerun
skips finished shards (the key covers the blocks file, the tagger weights and the settings, so a
stale shard is never reused). `tag_shard` is the unit an orchestrator runs in parallel;
`merge_shards` writes `salient_spans.parquet`.

Device and precision: `resolve` turns the config's `device`/`precision` (maybe "auto") into what
this machine runs. The flow resolves once and hands the resolved config to every shard task, so a
task in another process or on a Dask worker tags with the same precision; the precision is part of
the shard key (bf16 and fp32 taggers can disagree on a borderline word) and of the metrics.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from realm_core.config import TagEntitiesConfig
from realm_core.devices import resolve_stage
from realm_core.entities.dates import find_dates
from realm_core.errors import RealmError
from realm_core.io import atomic_path, write_text_atomic

SPANS_SCHEMA = pa.schema([
    pa.field("block_id", pa.int64(), nullable=False),
    pa.field("start", pa.int32(), nullable=False),
    pa.field("end", pa.int32(), nullable=False),
    pa.field("label", pa.string(), nullable=False),
    pa.field("score", pa.float32(), nullable=False),
])
SPANS_FILE = "salient_spans.parquet"
WORK_DIR_NAME = "tag_entities.work"
VERSION = "tag_entities/1"
_TAGGERS: dict[str, object] = {}  # per-process cache: shard tasks in one worker reuse the model


def resolve(cfg: TagEntitiesConfig) -> TagEntitiesConfig:
    """`cfg` with `device` and `precision` resolved for this machine (idempotent)."""
    return resolve_stage(cfg, "tag_entities")


def plan(cfg: TagEntitiesConfig) -> tuple[int, int, Path]:
    """Validate the inputs; returns (number of blocks, number of shards, shard directory)."""
    cfg = resolve(cfg)
    blocks = Path(cfg.blocks)
    if not blocks.is_file():
        raise RealmError(f"{blocks}: no such file (run prepare_corpus first)")
    try:
        pf = pq.ParquetFile(blocks)
    except Exception as exc:  # pyarrow raises several types for non-Parquet input
        raise RealmError(f"{blocks}: not a Parquet file ({str(exc).splitlines()[0]})") from None
    missing = {"block_id", "text", "sentence_starts"} - set(pf.schema_arrow.names)
    if missing:
        raise RealmError(f"{blocks}: not a blocks file (missing column '{sorted(missing)[0]}')")
    n = pf.metadata.num_rows
    if n == 0:
        raise RealmError(f"{blocks}: empty corpus (0 blocks)")
    key = _key(cfg, blocks)
    return n, math.ceil(n / cfg.shard_blocks), Path(cfg.output_dir) / WORK_DIR_NAME / key


def _key(cfg: TagEntitiesConfig, blocks: Path) -> str:
    st = blocks.stat()
    tagger = Path(cfg.tagger)
    weights = ""
    if tagger.is_dir():
        weights = "|".join(f"{p.name}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in sorted(tagger.iterdir()) if p.is_file())
    ident = {"v": VERSION, "blocks": [str(blocks.resolve()), st.st_size, st.st_mtime_ns], "tagger": [cfg.tagger, weights],
             "settings": [cfg.include_dates, cfg.min_score, cfg.max_len, cfg.shard_blocks, cfg.precision]}
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]


def load_tagger(name: str, device: str | None = None, precision: str = "fp32"):
    """The tagger for `name` on `device` ("auto"/None: CUDA if present, else the CPU) in compute
    precision `precision` (cached per process); RealmError if it is not a token classifier."""
    from realm_core.devices import resolve_device, resolve_precision

    dev = resolve_device(device)
    precision = resolve_precision(precision, dev)
    key = f"{name}|{dev}|{precision}"
    if key not in _TAGGERS:
        from realm_core.entities.tagging import EntityTagger
        from realm_core.pretrained import resolve_pretrained

        path = resolve_pretrained(name)
        _check_is_classifier(path)
        try:
            tagger = (EntityTagger.load(path, device=dev, precision=precision) if Path(path).is_dir()
                      else _load_hub_tagger(path, dev, precision))
        except RealmError:
            raise
        except (OSError, ValueError) as exc:
            raise RealmError(f"tagger '{name}': cannot load a token-classification model ({str(exc).splitlines()[0]})") from None
        labels = set(tagger.id2label.values())
        if not labels or not all(lbl == "O" or lbl[:2] in ("B-", "I-") for lbl in labels) or labels == {"O"}:
            raise RealmError(f"tagger '{name}': not an IOB token classifier (labels {sorted(labels)[:6]})")
        _TAGGERS[key] = tagger
    return _TAGGERS[key]


def _load_hub_tagger(name: str, device, precision: str):
    from transformers import AutoModelForTokenClassification

    from realm_core.entities.tagging import EntityTagger
    from realm_core.pretrained import load_tokenizer

    model = AutoModelForTokenClassification.from_pretrained(name).to(device).eval()
    return EntityTagger(model, load_tokenizer(name), precision=precision)


def _check_is_classifier(path: str) -> None:
    config = Path(path) / "config.json"
    if config.is_file():
        arch = json.loads(config.read_text()).get("architectures") or []
        if arch and not any(a.endswith("ForTokenClassification") for a in arch):
            raise RealmError(f"tagger '{path}': {arch[0]} is not a token classifier")


def read_rows(blocks: str | Path, start: int, stop: int) -> pa.Table:
    """Rows [start, stop) of a blocks file, reading only the row groups that hold them."""
    pf = pq.ParquetFile(blocks)
    groups, offset, first = [], 0, None
    for g in range(pf.num_row_groups):
        rows = pf.metadata.row_group(g).num_rows
        if offset + rows > start and offset < stop:
            groups.append(g)
            first = offset if first is None else first
        offset += rows
    table = pf.read_row_groups(groups, columns=["block_id", "text", "sentence_starts"])
    return table.slice(start - first, stop - start)


def tag_table(tagger, table: pa.Table, cfg: TagEntitiesConfig) -> pa.Table:
    """Salient spans of the blocks in `table`, in block order then position."""
    ids = table.column("block_id").to_pylist()
    texts = table.column("text").to_pylist()
    starts = table.column("sentence_starts").to_pylist()
    sentences, owners = [], []  # owner = (row, sentence char offset)
    for row, (text, st) in enumerate(zip(texts, starts)):
        bounds = list(st) + [len(text)]
        for a, b in zip(bounds, bounds[1:]):
            sentence = text[a:b].rstrip()
            if sentence.strip():
                sentences.append(sentence)
                owners.append((row, a))
    entities = tagger.tag(sentences, batch_size=cfg.batch_size, max_len=cfg.max_len) if sentences else []
    cols: dict[str, list] = {name: [] for name in SPANS_SCHEMA.names}
    per_block: list[list[tuple[int, int, str, float]]] = [[] for _ in ids]
    for (row, offset), sentence, ents in zip(owners, sentences, entities):
        spans = [(offset + s, offset + e, label, score) for s, e, label, score in ents if score >= cfg.min_score]
        if cfg.include_dates:
            taken = [(s, e) for s, e, _, _ in spans]
            for s, e in find_dates(sentence):
                s, e = offset + s, offset + e
                if not any(s < te and ts < e for ts, te in taken):  # an entity already covers it
                    spans.append((s, e, "DATE", 1.0))
        per_block[row].extend(spans)
    for row, spans in enumerate(per_block):
        for s, e, label, score in sorted(spans):
            cols["block_id"].append(ids[row])
            cols["start"].append(s)
            cols["end"].append(e)
            cols["label"].append(label)
            cols["score"].append(round(float(score), 4))
    return pa.table(cols, schema=SPANS_SCHEMA)


def tag_shard(cfg: TagEntitiesConfig, shard: int, shard_dir: str | Path) -> dict:
    """Tag shard `shard` unless it is already done; returns its counts (blocks, spans). `cfg`
    should come resolved from the orchestrator (see `resolve`)."""
    cfg = resolve(cfg)
    shard_dir = Path(shard_dir)
    marker = shard_dir / f"shard_{shard:05d}.json"
    if marker.is_file():
        return {**json.loads(marker.read_text()), "resumed": True}
    n_blocks = pq.ParquetFile(cfg.blocks).metadata.num_rows
    start, stop = shard * cfg.shard_blocks, min(n_blocks, (shard + 1) * cfg.shard_blocks)
    table = tag_table(load_tagger(cfg.tagger, cfg.device, cfg.precision), read_rows(cfg.blocks, start, stop), cfg)
    shard_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(shard_dir / f"shard_{shard:05d}.parquet") as tmp:
        pq.write_table(table, tmp, compression="zstd")
    counts = {"shard": shard, "blocks": stop - start, "spans": table.num_rows}
    write_text_atomic(marker, json.dumps(counts))
    return {**counts, "resumed": False}


def merge_shards(cfg: TagEntitiesConfig, n_shards: int, shard_dir: Path, seconds: float) -> dict:
    """Concatenate finished shards into salient_spans.parquet; returns (and writes) metrics."""
    cfg = resolve(cfg)
    missing = [i for i in range(n_shards) if not (shard_dir / f"shard_{i:05d}.json").is_file()]
    if missing:
        raise RealmError(f"{shard_dir}: shard {missing[0]} is not finished")
    tables = [pq.read_table(shard_dir / f"shard_{i:05d}.parquet") for i in range(n_shards)]
    spans = pa.concat_tables(tables) if tables else SPANS_SCHEMA.empty_table()
    final = Path(cfg.output_dir) / SPANS_FILE
    with atomic_path(final) as tmp:
        pq.write_table(spans, tmp, compression="zstd", row_group_size=65536)
    n_blocks = pq.ParquetFile(cfg.blocks).metadata.num_rows
    labels = Counter(spans.column("label").to_pylist())
    ids = spans.column("block_id").to_numpy()
    with_span = int(np.unique(ids).size)
    metrics = {
        "blocks": n_blocks,
        "spans": spans.num_rows,
        "spans_per_label": dict(sorted(labels.items())),
        "blocks_with_span": with_span,
        "blocks_with_span_share": round(with_span / n_blocks, 4),
        "spans_per_block": round(spans.num_rows / n_blocks, 2),
        "seconds": round(seconds, 2),
        "blocks_per_s": round(n_blocks / seconds, 2) if seconds else None,
        "device": cfg.device,
        "precision": cfg.precision,
    }
    write_text_atomic(cfg.metrics_file, json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    shutil.rmtree(shard_dir.parent, ignore_errors=True)
    return metrics


def torch_threads_for(workers: int) -> int:
    """Intra-op threads per shard process so that workers x threads = cores."""
    return max(1, (os.cpu_count() or 1) // max(1, workers))
