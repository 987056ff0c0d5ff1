"""The `build_index` stage: a retriever and the blocks in, a versioned FAISS index out.

Layout of `output_dir` (the index root):

    embeddings/          shards + manifest.json (see embed.py): resumable shard by shard
    versions/<v>/        index.faiss, ids.npy, index_meta.json (see index.py)
    CURRENT              the live version

The stage is three steps an orchestrator can spread out: `plan` (validate inputs, create or reuse
the manifest), `embed_one` for every shard (independent; any order, any process), `finish`
(verify every shard's sha256, build the index, publish a version, write metrics).

Embeddings made with another encoder or corpus are never mixed in: when the retriever or the blocks
changed since the shards were written, `plan` starts over (that is what a rebuild means here), and
says so. When CURRENT already holds an index built from exactly these embeddings with the same
index settings, `finish` keeps it instead of publishing an identical copy.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable

from realm_core.config import BuildIndexConfig
from realm_core.errors import RealmError
from realm_core.io import write_text_atomic
from realm_core.retrieval import embed, index

EMBEDDINGS = "embeddings"
_EMBEDDERS: dict[tuple[str, str], Any] = {}  # (path, encoder hash) -> loaded embedder, per process


def embeddings_dir(cfg: BuildIndexConfig) -> Path:
    """Where the stage keeps its embedding shards."""
    return Path(cfg.output_dir) / EMBEDDINGS


def plan(cfg: BuildIndexConfig, info: Callable[[str], None] = print) -> dict[str, Any]:
    """Validate the inputs and return the embedding manifest (fresh, resumed or rebuilt)."""
    if not Path(cfg.blocks).is_file():
        raise RealmError(f"build_index.blocks: {cfg.blocks}: no such file")
    out = embeddings_dir(cfg)
    rebuild = False
    if (out / embed.MANIFEST).is_file():
        old = embed.read_manifest(out)
        changed = [name for name, now in (("encoder", lambda: embed.encoder_hash(cfg.retriever)),
                                          ("corpus", lambda: embed.corpus_hash(cfg.blocks)))
                   if old.get(f"{name}_hash") != now()]
        layout = old.get("rows_per_shard") != cfg.rows_per_shard or old.get("dtype") != cfg.dtype
        if changed or layout:
            rebuild = True
            info(f"{out}: existing embeddings were made with another {' and '.join(changed) or 'shard layout'}; "
                 "re-embedding from scratch")
    manifest = embed.init_embeddings(cfg.blocks, cfg.retriever, out, rows_per_shard=cfg.rows_per_shard,
                                     dtype=cfg.dtype, rebuild=rebuild)
    done = sum(embed.shard_record(out, i, manifest) is not None for i in range(manifest["n_shards"]))
    if done:
        info(f"{out}: {done}/{manifest['n_shards']} shards already embedded with this retriever and corpus; reusing them")
    return manifest


def embed_one(cfg: BuildIndexConfig, i: int, manifest: dict[str, Any]) -> dict[str, Any]:
    """Embed shard `i` unless it is done; returns its record plus `reused`."""
    out = embeddings_dir(cfg)
    record = embed.shard_record(out, i, manifest)
    if record is not None:
        return {**record, "reused": True}
    key = (str(Path(cfg.retriever).resolve()), manifest["encoder_hash"])
    if key not in _EMBEDDERS:
        from realm_core.modeling.embedder import RetrieverEmbedder

        _EMBEDDERS.clear()
        _EMBEDDERS[key] = RetrieverEmbedder.from_pretrained(cfg.retriever)
    record = embed.embed_shard(i, out, embedder=_EMBEDDERS[key], batch_size=cfg.batch_size, manifest=manifest)
    return {**record, "reused": False}


def finish(cfg: BuildIndexConfig, records: list[dict[str, Any]], seconds: float,
           info: Callable[[str], None] = print) -> dict[str, Any]:
    """Verify the shards, build and publish the index version (or keep an identical live one);
    write and return the metrics."""
    t0 = time.monotonic()
    out = embeddings_dir(cfg)
    manifest = embed.finalize_embeddings(out, verify=True)
    params = {"nprobe": cfg.nprobe or None, "efSearch": cfg.ef_search or None}
    live = _live_meta(cfg.output_dir)
    same = (live is not None and live.get("factory") == cfg.factory and live.get("search_params") == params
            and all(live.get("embeddings", {}).get(k) == manifest[k] for k in ("encoder_hash", "corpus_hash"))
            and live.get("n") == manifest["total_rows"])
    if same:
        version = live["version"]
        info(f"{cfg.output_dir}: CURRENT ({version}) already indexes these embeddings with {cfg.factory}; kept")
    else:
        version = index.build_index_version(out, cfg.output_dir, factory=cfg.factory, train_size=cfg.train_size,
                                            seed=cfg.seed, nprobe=cfg.nprobe or None,
                                            ef_search=cfg.ef_search or None, keep=cfg.keep_versions)
        info(f"{cfg.output_dir}: published index version {version} ({cfg.factory}, {manifest['total_rows']:,} vectors)")
    embedded = [r for r in records if not r["reused"]]
    rows_embedded = sum(r["rows"] for r in embedded)
    embed_seconds = sum(r["seconds"] for r in embedded)
    metrics = {
        "rows": manifest["total_rows"], "dim": manifest["dim"], "dtype": manifest["dtype"],
        "shards": manifest["n_shards"], "shards_embedded": len(embedded), "shards_reused": len(records) - len(embedded),
        "rows_embedded": rows_embedded,
        "embed_blocks_per_s": round(rows_embedded / embed_seconds, 1) if embed_seconds else None,
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
    manifest = plan(cfg, info)
    records = [embed_one(cfg, i, manifest) for i in range(manifest["n_shards"])]
    return finish(cfg, records, time.monotonic() - t0, info)
