"""Embed every block with a retriever checkpoint, shard by shard, resumably.

Output directory (DESIGN.md §3):

    manifest.json        what the shards are: encoder hash, corpus hash, compute precision, dim,
                         dtype, rows per shard, total rows, shard count, which shards are done,
                         complete flag (and the device that planned them, for the record)
    ids.npy              int64 row -> block_id, in blocks.parquet order
    shard_00000.npy      float32 (or float16) [rows, dim], rows [0, R) of blocks.parquet
    shard_00000.json     the shard's record: rows, sha256 of the .npy, hashes it was made with

A shard is done when its .npy has been renamed into place and its record written after it, so a
kill at any moment costs at most the shard in progress. Shards are independent: an orchestrator
calls `init_embeddings` once, runs `embed_shard(i, ...)` for every i as parallel tasks (each
writes only its own two files), then `finalize_embeddings`; `embed_corpus` does all of that in
order in one process.

Consistency: the encoder hash is the sha256 of the checkpoint's config, weights and tokenizer
files; the corpus hash is the sha256 of every block's id, title and text (the inputs of the
document tower). Existing shards made with other hashes are never mixed in: that is a
RealmError asking for a rebuild. The compute precision (fp32, bf16, fp16; `realm_core.devices`)
is part of that identity too: bf16 vectors differ from fp32 ones in the third digit, and an index
whose neighbours depend on which shard a block fell in is not one index. Every shard is embedded
with the manifest's precision, whatever process runs it; vectors are stored float32 (or `dtype`)
in any case. A manifest from before precision was recorded was made in fp32.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pyarrow.parquet as pq

from realm_core.errors import RealmError, first_line
from realm_core.io import atomic_path, write_text_atomic

FORMAT = "realm-embeddings/1"
MANIFEST = "manifest.json"
IDS_FILE = "ids.npy"
DTYPES = ("float32", "float16")
PRECISIONS = ("fp32", "bf16", "fp16")  # resolved compute precisions (no "auto" in a manifest)
_ENCODER_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "vocab.txt",
                  "special_tokens_map.json")


def shard_path(out_dir: str | Path, i: int) -> Path:
    """`<out_dir>/shard_{i:05d}.npy`."""
    return Path(out_dir) / f"shard_{i:05d}.npy"


def encoder_hash(model_dir: str | Path) -> str:
    """sha256 over the checkpoint files that determine the embeddings (config, weights, tokenizer)."""
    model_dir = Path(model_dir)
    if not (model_dir / "model.safetensors").is_file() or not (model_dir / "config.json").is_file():
        raise RealmError(f"{model_dir}: not a retriever checkpoint (needs config.json and model.safetensors)")
    digest = hashlib.sha256()
    for name in _ENCODER_FILES:
        path = model_dir / name
        if path.is_file():
            digest.update(name.encode() + b"\0")
            _update_file(digest, path)
    return digest.hexdigest()


def corpus_hash(blocks_path: str | Path) -> str:
    """sha256 of (block_id, title, text) of every row in order: independent of compression and
    row groups, so re-writing the same blocks does not invalidate embeddings."""
    digest = hashlib.sha256()
    pf = _open_blocks(blocks_path)
    for batch in pf.iter_batches(batch_size=8192, columns=["block_id", "title", "text"]):
        digest.update(batch.column(0).to_numpy().astype("<i8").tobytes())
        for col in (1, 2):
            values = [s.encode("utf-8") for s in batch.column(col).to_pylist()]
            digest.update(np.asarray([len(v) for v in values], dtype="<i8").tobytes())
            digest.update(b"".join(values))
    return digest.hexdigest()


def manifest_precision(manifest: dict[str, Any]) -> str:
    """The compute precision a manifest's shards were embedded in ("fp32" for manifests written
    before it was recorded: the embedder had no other mode then)."""
    return manifest.get("precision", "fp32")


def init_embeddings(blocks_path: str | Path, model_dir: str | Path, out_dir: str | Path, *,
                    rows_per_shard: int = 4096, dtype: str = "float32", precision: str = "fp32",
                    device: str | None = None, rebuild: bool = False,
                    hashes: tuple[str, str] | None = None) -> dict[str, Any]:
    """Create (or validate and return) the manifest of `out_dir` for embedding `blocks_path` with
    the checkpoint `model_dir` in compute precision `precision` (resolved: fp32, bf16 or fp16).
    An existing manifest made with another encoder, corpus, precision or layout is a RealmError
    unless `rebuild`, which deletes the old shards first. `hashes` = (encoder hash, corpus hash)
    when the caller has just computed them (each is a full read). `device` (resolved) is recorded
    as the device the stage chose; it is not part of the identity (fp32 on a GPU and a CPU agree
    to rounding)."""
    from realm_core.modeling.embedder import read_config  # torch/transformers only when embedding

    if rows_per_shard < 1:
        raise RealmError(f"embeddings: rows_per_shard must be >= 1, got {rows_per_shard}")
    if dtype not in DTYPES:
        raise RealmError(f"embeddings: dtype must be one of {DTYPES}, got {dtype!r}")
    if precision not in PRECISIONS:
        raise RealmError(f"embeddings: precision must be a resolved one of {PRECISIONS}, got {precision!r}")
    out_dir, blocks_path, model_dir = Path(out_dir), Path(blocks_path), Path(model_dir)
    cfg = read_config(model_dir)
    total = _open_blocks(blocks_path).metadata.num_rows
    if total == 0:
        raise RealmError(f"{blocks_path}: empty corpus, nothing to embed")
    wanted = {
        "format": FORMAT, "encoder_hash": hashes[0] if hashes else encoder_hash(model_dir),
        "corpus_hash": hashes[1] if hashes else corpus_hash(blocks_path), "precision": precision,
        "dim": int(cfg["proj_size"]), "dtype": dtype, "rows_per_shard": rows_per_shard, "total_rows": total,
        "n_shards": -(-total // rows_per_shard),
    }
    if (out_dir / MANIFEST).is_file():
        if rebuild:
            clear_embeddings(out_dir)
        else:
            old = read_manifest(out_dir)
            for key, value in wanted.items():
                if (manifest_precision(old) if key == "precision" else old.get(key)) != value:
                    raise RealmError(
                        f"{out_dir / MANIFEST}: index/corpus mismatch: {key} is {old.get(key)!r} there but "
                        f"{value!r} for {blocks_path} embedded with {model_dir}; rebuild (rebuild=True or "
                        "delete the directory) instead of mixing embeddings")
            # Same content, maybe at another path or with a new mtime: remember where it is now.
            old.update(encoder=str(model_dir), corpus=str(blocks_path), max_doc_len=cfg["max_doc_len"],
                       encoder_stat=_stat(model_dir / "model.safetensors"), corpus_stat=_stat(blocks_path),
                       precision=precision, device=device or old.get("device"))
            _write_manifest(out_dir, old)
            return old
    manifest = {**wanted, "encoder": str(model_dir), "corpus": str(blocks_path),
                "encoder_stat": _stat(model_dir / "model.safetensors"), "corpus_stat": _stat(blocks_path),
                "max_doc_len": cfg["max_doc_len"], "device": device, "shards_done": [], "complete": False,
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    ids = pq.read_table(blocks_path, columns=["block_id"]).column(0).to_numpy().astype(np.int64)
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_dir / IDS_FILE) as tmp, open(tmp, "wb") as fh:
        np.save(fh, ids, allow_pickle=False)
    _write_manifest(out_dir, manifest)
    return manifest


def embed_shard(i: int, out_dir: str | Path, *, embedder=None, batch_size: int = 32, device: str | None = None,
                precision: str | None = None, manifest: dict[str, Any] | None = None, reuse=None) -> dict[str, Any]:
    """Embed shard `i` of an initialised `out_dir` unless it is already done; returns its record.

    `embedder` (a loaded `RetrieverEmbedder`) saves reloading the checkpoint for every shard; it
    must be the checkpoint the manifest names (else it is loaded onto `device`). The shard is
    embedded in the manifest's precision; `precision`, if given, must be that one (a caller that
    resolved another is told, rather than mixing). `reuse` (an `incremental.ReuseSource` of the
    same encoder and precision) supplies the vectors of rows whose content it already embedded;
    only the other rows go through the encoder (the record counts both). Safe to run for
    different `i` in parallel.
    """
    out_dir = Path(out_dir)
    manifest = manifest or read_manifest(out_dir)
    if not 0 <= i < manifest["n_shards"]:
        raise RealmError(f"{out_dir}: shard {i} out of range (0..{manifest['n_shards'] - 1})")
    wanted = manifest_precision(manifest)
    if precision is not None and precision != wanted:
        raise RealmError(f"{out_dir / MANIFEST}: precision mismatch: its shards are embedded in {wanted}, "
                         f"this run asks for {precision}; rebuild instead of mixing precisions")
    record = shard_record(out_dir, i, manifest)
    if record is not None:
        return record
    _check_unchanged(manifest)
    start = i * manifest["rows_per_shard"]
    stop = min(start + manifest["rows_per_shard"], manifest["total_rows"])
    titles, texts = _read_rows(Path(manifest["corpus"]), start, stop)
    t0 = time.monotonic()
    vectors = np.empty((stop - start, manifest["dim"]), dtype=np.float32)
    todo = np.arange(stop - start)
    if reuse is not None:
        from realm_core.retrieval.incremental import load_keys

        keys = load_keys(out_dir, manifest["total_rows"])
        if keys is not None:
            found, prev = reuse.lookup(keys[start:stop])
            if found.any():
                vectors[found] = reuse.vectors(prev[found])
                todo = np.flatnonzero(~found)
    if len(todo):
        if embedder is None:
            from realm_core.modeling.embedder import RetrieverEmbedder

            embedder = RetrieverEmbedder.from_pretrained(manifest["encoder"], device=device)
        fresh = embedder.embed_documents([titles[j] for j in todo], [texts[j] for j in todo], batch_size=batch_size,
                                         max_len=manifest["max_doc_len"], precision=wanted)
        if fresh.shape != (len(todo), manifest["dim"]):
            raise RealmError(f"{manifest['encoder']}: embedder returned {fresh.shape}, the manifest expects "
                             f"({len(todo)}, {manifest['dim']})")
        vectors[todo] = fresh
    vectors = np.ascontiguousarray(vectors, dtype=manifest["dtype"])
    path = shard_path(out_dir, i)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.save(fh, vectors, allow_pickle=False)
    record = {"shard": i, "start": start, "rows": stop - start, "sha256": _file_sha256(path),
              "encoder_hash": manifest["encoder_hash"], "corpus_hash": manifest["corpus_hash"], "precision": wanted,
              "device": str(embedder.device) if embedder is not None else None, "embedded_rows": int(len(todo)), "reused_rows": int(stop - start - len(todo)),
              "seconds": round(time.monotonic() - t0, 3)}
    write_text_atomic(path.with_suffix(".json"), json.dumps(record, indent=1))
    return record


def shard_record(out_dir: str | Path, i: int, manifest: dict[str, Any], *, verify: bool = False) -> dict[str, Any] | None:
    """The record of a finished shard `i` after checking its file (shape, dtype; with `verify` also
    the sha256), or None if the shard is not done. A recorded but bad shard is a RealmError."""
    path = shard_path(out_dir, i)
    marker = path.with_suffix(".json")
    if not marker.is_file():
        return None  # a .npy without its record was cut short before it counted: redo it
    try:
        record = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise RealmError(f"{marker}: unreadable shard record ({exc}); delete it and {path.name} to re-embed") from None
    if record.get("encoder_hash") != manifest["encoder_hash"] or record.get("corpus_hash") != manifest["corpus_hash"]:
        raise RealmError(f"{path}: index/corpus mismatch: made with another encoder or corpus than "
                         f"{out_dir}/{MANIFEST}; rebuild")
    if record.get("precision", "fp32") != manifest_precision(manifest):
        raise RealmError(f"{path}: precision mismatch: embedded in {record.get('precision', 'fp32')}, "
                         f"{out_dir}/{MANIFEST} is {manifest_precision(manifest)}; rebuild")
    load_shard(out_dir, i, manifest)
    if verify and _file_sha256(path) != record.get("sha256"):
        raise RealmError(f"{path}: content does not match its sha256 in {marker.name} (corrupted); re-embed it")
    return record


def load_shard(out_dir: str | Path, i: int, manifest: dict[str, Any] | None = None, *, mmap: bool = True) -> np.ndarray:
    """Shard `i` as an array (memory-mapped by default), checked against the manifest."""
    manifest = manifest or read_manifest(out_dir)
    path = shard_path(out_dir, i)
    rows = min(manifest["rows_per_shard"], manifest["total_rows"] - i * manifest["rows_per_shard"])
    try:
        arr = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise RealmError(f"{path}: unreadable embedding shard ({first_line(exc)}); delete it and its .json to re-embed") from None
    if arr.shape != (rows, manifest["dim"]) or arr.dtype != np.dtype(manifest["dtype"]):
        raise RealmError(f"{path}: corrupted shard: {arr.dtype}{list(arr.shape)}, expected "
                         f"{manifest['dtype']}[{rows}, {manifest['dim']}]; delete it and its .json to re-embed")
    return arr


def finalize_embeddings(out_dir: str | Path, *, verify: bool = True) -> dict[str, Any]:
    """Check every shard (sha256 too with `verify`), record them in the manifest and mark it
    complete; a missing shard is a RealmError naming it."""
    out_dir = Path(out_dir)
    manifest = read_manifest(out_dir)
    missing = [i for i in range(manifest["n_shards"]) if shard_record(out_dir, i, manifest, verify=verify) is None]
    if missing:
        raise RealmError(f"{out_dir}: {len(missing)} shard(s) not embedded yet, first {shard_path(out_dir, missing[0]).name}")
    manifest.update(shards_done=list(range(manifest["n_shards"])), complete=True)
    _write_manifest(out_dir, manifest)
    return manifest


def embed_corpus(blocks_path: str | Path, model_dir: str | Path, out_dir: str | Path, *, rows_per_shard: int = 4096,
                 batch_size: int = 32, dtype: str = "float32", device: str | None = None, precision: str = "fp32",
                 rebuild: bool = False, progress: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Embed all of `blocks_path` into `out_dir`, skipping finished shards; returns the manifest.

    `device` ("auto", "cpu", "cuda[:N]"; None: the CPU) and `precision` ("auto" or fp32/bf16/
    fp16) are resolved once here, so every shard of the run uses the same ones.

    `progress`, if given, receives {"shard", "n_shards", "rows_done", "total_rows", "elapsed_s",
    "skipped"} after every shard.
    """
    from realm_core.devices import resolve_device, resolve_precision
    from realm_core.modeling.embedder import RetrieverEmbedder

    t0 = time.monotonic()
    dev = resolve_device(device or "cpu")
    precision = resolve_precision(precision, dev)
    manifest = init_embeddings(blocks_path, model_dir, out_dir, rows_per_shard=rows_per_shard, dtype=dtype,
                               precision=precision, device=str(dev), rebuild=rebuild)
    embedder = None
    rows_done = 0
    for i in range(manifest["n_shards"]):
        record = shard_record(out_dir, i, manifest)
        skipped = record is not None
        if record is None:
            embedder = embedder or RetrieverEmbedder.from_pretrained(model_dir, device=dev)
            record = embed_shard(i, out_dir, embedder=embedder, batch_size=batch_size, manifest=manifest)
            manifest["shards_done"] = sorted(set(manifest["shards_done"]) | {i})
            _write_manifest(out_dir, manifest)
        rows_done += record["rows"]
        if progress is not None:
            progress({"shard": i, "n_shards": manifest["n_shards"], "rows_done": rows_done,
                      "total_rows": manifest["total_rows"], "elapsed_s": time.monotonic() - t0, "skipped": skipped})
    return finalize_embeddings(out_dir, verify=False)


def iter_embeddings(out_dir: str | Path) -> Iterator[tuple[int, np.ndarray]]:
    """(first row, shard array) for every shard of a complete embedding directory."""
    manifest = read_manifest(out_dir)
    if not manifest.get("complete"):
        raise RealmError(f"{out_dir}/{MANIFEST}: embeddings are not complete (run finalize_embeddings)")
    for i in range(manifest["n_shards"]):
        yield i * manifest["rows_per_shard"], load_shard(out_dir, i, manifest)


def load_ids(out_dir: str | Path, manifest: dict[str, Any] | None = None) -> np.ndarray:
    """The int64 row -> block_id array, checked against the manifest's row count."""
    manifest = manifest or read_manifest(out_dir)
    path = Path(out_dir) / IDS_FILE
    try:
        ids = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise RealmError(f"{path}: unreadable ({first_line(exc)})") from None
    if ids.dtype != np.int64 or ids.shape != (manifest["total_rows"],):
        raise RealmError(f"{path}: expected int64[{manifest['total_rows']}], found {ids.dtype}{list(ids.shape)}")
    return ids


def read_manifest(out_dir: str | Path) -> dict[str, Any]:
    """The manifest of an embedding directory; RealmError if missing or not ours."""
    path = Path(out_dir) / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RealmError(f"{path}: no embedding manifest (run init_embeddings / embed_corpus first)") from None
    except (OSError, ValueError) as exc:
        raise RealmError(f"{path}: unreadable manifest ({first_line(exc)})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise RealmError(f"{path}: not an embedding manifest (expected format {FORMAT!r})")
    return manifest


def clear_embeddings(out_dir: str | Path) -> None:
    """Delete the manifest, ids and shards of `out_dir` (other files are left alone)."""
    out_dir = Path(out_dir)
    for path in [out_dir / MANIFEST, out_dir / IDS_FILE, *out_dir.glob("shard_*.npy"), *out_dir.glob("shard_*.json"),
                 *out_dir.glob(".shard_*.tmp-*")]:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def _check_unchanged(manifest: dict[str, Any]) -> None:
    """The corpus and checkpoint named in the manifest must still be what it was made from. A
    stat match is trusted; otherwise the content is re-hashed (a touched file is still fine)."""
    blocks, model_dir = Path(manifest["corpus"]), Path(manifest["encoder"])
    if _stat(blocks) != manifest["corpus_stat"] and corpus_hash(blocks) != manifest["corpus_hash"]:
        raise RealmError(f"{blocks}: index/corpus mismatch: the corpus changed since {MANIFEST} was written; rebuild")
    if _stat(model_dir / "model.safetensors") != manifest["encoder_stat"] and encoder_hash(model_dir) != manifest["encoder_hash"]:
        raise RealmError(f"{model_dir}: index/corpus mismatch: the checkpoint changed since {MANIFEST} was written; rebuild")


def _read_rows(path: Path, start: int, stop: int) -> tuple[list[str], list[str]]:
    """Titles and texts of rows [start, stop), reading only the row groups that hold them."""
    pf = _open_blocks(path)
    titles: list[str] = []
    texts: list[str] = []
    first = 0
    for g in range(pf.num_row_groups):
        n = pf.metadata.row_group(g).num_rows
        lo, hi = max(start, first), min(stop, first + n)
        if lo < hi:
            part = pf.read_row_group(g, columns=["title", "text"]).slice(lo - first, hi - lo)
            titles += part.column(0).to_pylist()
            texts += part.column(1).to_pylist()
        first += n
        if first >= stop:
            break
    return titles, texts


def _open_blocks(path: str | Path) -> pq.ParquetFile:
    path = Path(path)
    if not path.is_file():
        raise RealmError(f"{path}: blocks file not found")
    try:
        pf = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises ArrowInvalid/OSError for non-Parquet files
        raise RealmError(f"{path}: not a readable Parquet file ({first_line(exc)})") from None
    missing = {"block_id", "title", "text"} - set(pf.schema_arrow.names)
    if missing:
        raise RealmError(f"{path}: missing column(s) {sorted(missing)}")
    return pf


def _write_manifest(out_dir: Path, manifest: dict[str, Any]) -> None:
    write_text_atomic(Path(out_dir) / MANIFEST, json.dumps(manifest, indent=1) + "\n")


def _stat(path: Path) -> list[int]:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns]


def _update_file(digest, path: Path) -> None:
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    _update_file(digest, path)
    return digest.hexdigest()

