"""The `build_index` stage: a retriever and the blocks in, a versioned FAISS index out.

Layout of `output_dir` (the index root):

    embeddings/          shards + manifest.json (see embed.py): resumable shard by shard
    versions/<v>/        index.faiss, ids.npy, index_meta.json (see index.py)
    CURRENT              the live version

The stage is three steps an orchestrator can spread out: `plan` (validate inputs, create or reuse
the manifest), `embed_one` for every shard (independent; any order, any process), `finish`
(verify every shard's sha256, build the index, publish a version, write metrics).

Embeddings made with another encoder, corpus or compute precision are never mixed in: when the
retriever, the blocks or the resolved `precision` changed since the shards were written, `plan`
starts a new embedding directory, and says so. If only the corpus (or the shard layout) changed,
the old directory is kept aside as `embeddings.prev` and every new shard copies the vectors of
unchanged blocks from it, so a newer dump costs encoder time only for the blocks that changed
(`incremental.py`); it is deleted once the new index is published. When CURRENT already holds an index built from exactly these
embeddings with the same index settings, `finish` keeps it instead of publishing an identical copy.

Device and precision: `device`/`precision` may say "auto"; `resolve` turns them into what this
machine runs ("cpu"/"cuda", "fp32"/"bf16"/"fp16") and every step resolves what it is handed, but an
orchestrator must resolve ONCE and hand the resolved config to every shard task (flows/build_index.py
does): a task on another machine would otherwise resolve "auto" against its own hardware. The
manifest records the precision and `embed_one` refuses a shard task whose precision differs.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any, Callable

from realm_core.config import BuildIndexConfig
from realm_core.devices import resolve_stage
from realm_core.errors import RealmError
from realm_core.io import write_text_atomic
from realm_core.retrieval import embed, incremental, index

EMBEDDINGS = "embeddings"
_EMBEDDERS: dict[tuple[str, str, str], Any] = {}  # (path, encoder hash, device) -> loaded embedder, per process
_REUSE: dict[tuple[str, str, str], Any] = {}  # (prev dir, encoder hash, precision) -> ReuseSource, per process


def resolve(cfg: BuildIndexConfig) -> BuildIndexConfig:
    """`cfg` with `device` and `precision` resolved for this machine (idempotent)."""
    return resolve_stage(cfg, "build_index")


def embeddings_dir(cfg: BuildIndexConfig) -> Path:
    """Where the stage keeps its embedding shards."""
    return Path(cfg.output_dir) / EMBEDDINGS


def previous_dir(cfg: BuildIndexConfig) -> Path:
    """Where the embeddings of the previous corpus wait while a changed corpus is re-embedded."""
    return Path(cfg.output_dir) / incremental.PREVIOUS


def plan(cfg: BuildIndexConfig, info: Callable[[str], None] = print) -> dict[str, Any]:
    """Validate the inputs and return the embedding manifest (fresh, resumed or rebuilt); when
    only the corpus changed, keep the old embeddings aside for reuse."""
    cfg = resolve(cfg)
    if not Path(cfg.blocks).is_file():
        raise RealmError(f"build_index.blocks: {cfg.blocks}: no such file")
    out, prev = embeddings_dir(cfg), previous_dir(cfg)
    rebuild = False
    encoder, corpus = embed.encoder_hash(cfg.retriever), embed.corpus_hash(cfg.blocks)
    if (out / embed.MANIFEST).is_file():
        old = embed.read_manifest(out)
        changed = [name for name, now in (("encoder", encoder), ("corpus", corpus)) if old.get(f"{name}_hash") != now]
        layout = old.get("rows_per_shard") != cfg.rows_per_shard or old.get("dtype") != cfg.dtype
        precision_changed = embed.manifest_precision(old) != cfg.precision
        if changed or layout or precision_changed:
            rebuild = True
            if "encoder" in changed or precision_changed:
                why = "another encoder" if "encoder" in changed else f"{embed.manifest_precision(old)} precision"
                info(f"{out}: existing embeddings were made with {why}; re-embedding every block in {cfg.precision}")
            else:
                info(f"{out}: the {' and '.join(changed) or 'shard layout'} changed; re-embedding only blocks "
                     "whose content is new, reusing the rest")
                shutil.rmtree(prev, ignore_errors=True)
                out.rename(prev)
    if prev.is_dir() and _prev_identity(prev) != (encoder, cfg.precision):
        shutil.rmtree(prev, ignore_errors=True)  # another encoder's (or precision's) vectors are of no use
    manifest = embed.init_embeddings(cfg.blocks, cfg.retriever, out, rows_per_shard=cfg.rows_per_shard,
                                     dtype=cfg.dtype, precision=cfg.precision, device=cfg.device, rebuild=rebuild,
                                     hashes=(encoder, corpus))
    if incremental.load_keys(out, manifest["total_rows"]) is None:
        incremental.write_keys(out, incremental.content_keys(cfg.blocks))
    done = sum(embed.shard_record(out, i, manifest) is not None for i in range(manifest["n_shards"]))
    if done:
        info(f"{out}: {done}/{manifest['n_shards']} shards already embedded with this retriever and corpus; reusing them")
    return manifest


def _prev_identity(prev: Path) -> tuple[str, str] | None:
    try:
        old = embed.read_manifest(prev)
        return old["encoder_hash"], embed.manifest_precision(old)
    except (RealmError, KeyError):
        return None


def embed_one(cfg: BuildIndexConfig, i: int, manifest: dict[str, Any]) -> dict[str, Any]:
    """Embed shard `i` unless it is done; returns its record plus `reused`. `cfg` should come
    resolved from the orchestrator; a precision other than the manifest's is a RealmError."""
    cfg = resolve(cfg)
    out = embeddings_dir(cfg)
    record = embed.shard_record(out, i, manifest)
    if record is not None:
        return {**record, "reused": True}
    key = (str(Path(cfg.retriever).resolve()), manifest["encoder_hash"], cfg.device)
    if key not in _EMBEDDERS:
        from realm_core.modeling.embedder import RetrieverEmbedder

        _EMBEDDERS.clear()
        _EMBEDDERS[key] = RetrieverEmbedder.from_pretrained(cfg.retriever, device=cfg.device)
    prev = previous_dir(cfg)
    reuse = None
    if prev.is_dir():
        rkey = (str(prev.resolve()), manifest["encoder_hash"], cfg.precision)
        if rkey not in _REUSE:
            _REUSE.clear()
            _REUSE[rkey] = incremental.ReuseSource(prev, manifest["encoder_hash"], cfg.precision)
        reuse = _REUSE[rkey]
    record = embed.embed_shard(i, out, embedder=_EMBEDDERS[key], batch_size=cfg.batch_size, manifest=manifest,
                               precision=cfg.precision, reuse=reuse)
    return {**record, "reused": False}


def finish(cfg: BuildIndexConfig, records: list[dict[str, Any]], seconds: float,
           info: Callable[[str], None] = print) -> dict[str, Any]:
    """Verify the shards, build and publish the index version (or keep an identical live one);
    write and return the metrics."""
    t0 = time.monotonic()
    cfg = resolve(cfg)
    out = embeddings_dir(cfg)
    manifest = embed.finalize_embeddings(out, verify=True)
    params = {"nprobe": cfg.nprobe or None, "efSearch": cfg.ef_search or None}
    live = _live_meta(cfg.output_dir)
    source = (live or {}).get("embeddings", {})
    same = (live is not None and live.get("factory") == cfg.factory and live.get("search_params") == params
            and all(source.get(k) == manifest[k] for k in ("encoder_hash", "corpus_hash"))
            and source.get("precision", "fp32") == embed.manifest_precision(manifest)
            and live.get("n") == manifest["total_rows"])
    if same:
        version = live["version"]
        info(f"{cfg.output_dir}: CURRENT ({version}) already indexes these embeddings with {cfg.factory}; kept")
    else:
        version = index.build_index_version(out, cfg.output_dir, factory=cfg.factory, train_size=cfg.train_size,
                                            seed=cfg.seed, nprobe=cfg.nprobe or None,
                                            ef_search=cfg.ef_search or None, keep=cfg.keep_versions)
        info(f"{cfg.output_dir}: published index version {version} ({cfg.factory}, {manifest['total_rows']:,} vectors)")
    _REUSE.clear()
    shutil.rmtree(previous_dir(cfg), ignore_errors=True)  # published: the old corpus's vectors are done with
    embedded = [r for r in records if not r["reused"]]
    rows_embedded = sum(r.get("embedded_rows", r["rows"]) for r in embedded)
    # The throughput of the run(s) that embedded the vectors now indexed, from the shard records:
    # a rerun that reuses every shard still reports how the vectors were made, not its own no-op.
    made_rows = sum(r.get("embedded_rows", r["rows"]) for r in records)
    made_seconds = sum(r.get("seconds", 0.0) for r in records)
    metrics = {
        "rows": manifest["total_rows"], "dim": manifest["dim"], "dtype": manifest["dtype"],
        "device": cfg.device, "precision": embed.manifest_precision(manifest),
        "shards": manifest["n_shards"], "shards_embedded": len(embedded), "shards_reused": len(records) - len(embedded),
        "rows_embedded": rows_embedded, "rows_copied": sum(r.get("reused_rows", 0) for r in embedded),
        "embed_blocks_per_s": round(made_rows / made_seconds, 1) if made_seconds and made_rows else None,
        "embed_seconds": round(made_seconds, 1),
        "factory": cfg.factory, "version": version, "version_reused": same,
        "encoder_hash": manifest["encoder_hash"][:16], "corpus_hash": manifest["corpus_hash"][:16],
        "index_seconds": round(time.monotonic() - t0, 2), "seconds": round(seconds + time.monotonic() - t0, 1),
    }
    write_text_atomic(cfg.metrics_file, json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    return metrics


def _live_meta(root: str | Path) -> dict[str, Any] | None:
    try:
        version = index.current_version(root)
        if version is None:
            return None
        return json.loads((Path(root) / index.VERSIONS / version / index.META_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError, RealmError):
        return None  # unreadable: build a fresh version rather than trust it


def run_build_index(cfg: BuildIndexConfig, info: Callable[[str], None] = print) -> dict[str, Any]:
    """All three steps in this process (the flow runs the shards as tasks instead)."""
    t0 = time.monotonic()
    cfg = resolve(cfg)
    manifest = plan(cfg, info)
    records = [embed_one(cfg, i, manifest) for i in range(manifest["n_shards"])]
    return finish(cfg, records, time.monotonic() - t0, info)
