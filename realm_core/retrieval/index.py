"""FAISS maximum-inner-product index over block embeddings, versioned and swapped atomically.

REALM scores with a raw dot product (no normalisation), so every index uses
METRIC_INNER_PRODUCT. The default "Flat" is exact (`IndexFlatIP`, what the released REALM code
does by brute force); any FAISS factory string works for scale, e.g. "IVF4096,Flat",
"HNSW32" or "IVF4096,PQ16" (trained on a seeded sample), with `nprobe` / `efSearch` stored as
the version's default search parameters.

Layout under an index root:

    CURRENT                    text file naming the live version
    versions/<version>/
      index.faiss              faiss.write_index (FAISS' own binary format, no pickle)
      ids.npy                  int64 row -> block_id
      index_meta.json          factory, metric, n, dim, search params, the embedding manifest's
                               hashes it was built from, created time

A version directory is built under a temporary name and renamed into place; only then is CURRENT
replaced (write to a temporary file, `os.replace`). A reader therefore sees the old index or the
new one, never a half-written one. Old versions beyond `keep` are deleted, never the live one.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from realm_core.errors import RealmError
from realm_core.io import atomic_path, write_text_atomic
from realm_core.retrieval import embed

FORMAT = "realm-index/1"
CURRENT = "CURRENT"
VERSIONS = "versions"
INDEX_FILE = "index.faiss"
IDS_FILE = "ids.npy"
META_FILE = "index_meta.json"
SMALL_BATCH = 16  # query batches smaller than this search on one thread (see DenseIndex.search)


@dataclass
class DenseIndex:
    """A FAISS inner-product index plus its row -> block_id map."""

    index: Any  # faiss.Index
    ids: np.ndarray
    meta: dict[str, Any]
    path: Path | None = None

    @property
    def dim(self) -> int:
        """Vector dimension."""
        return int(self.index.d)

    @property
    def ntotal(self) -> int:
        """Number of indexed vectors."""
        return int(self.index.ntotal)

    def set_search_params(self, *, nprobe: int | None = None, ef_search: int | None = None) -> None:
        """Set IVF `nprobe` / HNSW `efSearch` (ignored by index types without them)."""
        _apply_params(self.index, nprobe, ef_search)

    def search(self, queries: np.ndarray, k: int, *, batch_size: int = 4096) -> tuple[np.ndarray, np.ndarray]:
        """Top-`k` blocks by inner product for each query row.

        Returns (block_ids int64 [n, k], scores float32 [n, k]), best first; slots with no result
        (k > ntotal, or an approximate index that found fewer) hold id -1 and score -inf.
        """
        q = np.asarray(queries)
        if q.ndim != 2 or q.shape[1] != self.dim:
            raise RealmError(f"index search: queries must be [n, {self.dim}], got shape {list(q.shape)}"
                             + (f" (index {self.path})" if self.path else ""))
        if k < 1:
            raise RealmError(f"index search: k must be >= 1, got {k}")
        q = np.ascontiguousarray(q, dtype=np.float32)
        out_ids = np.full((len(q), k), -1, dtype=np.int64)
        out_scores = np.full((len(q), k), -np.inf, dtype=np.float32)
        # FAISS 1.15 splits a handful of queries across OpenMP threads by database slices, which is
        # 10-100x slower than one thread on this 2-core machine (1M x 128 Flat, 1 query: 19 ms on
        # 1 thread, 120 ms on 2; benchmarks/embed_search.py). Interactive single queries -- the
        # concurrent reader of a re-index -- therefore run on one thread.
        threads = faiss.omp_get_max_threads()
        if len(q) < SMALL_BATCH and threads > 1:
            faiss.omp_set_num_threads(1)
        try:
            for lo in range(0, len(q), max(1, batch_size)):
                scores, rows = self.index.search(q[lo: lo + batch_size], k)
                found = rows >= 0
                out_ids[lo: lo + len(rows)][found] = self.ids[rows[found]]
                out_scores[lo: lo + len(rows)][found] = scores[found]
        finally:
            faiss.omp_set_num_threads(threads)
        return out_ids, out_scores


def build_index(vectors: np.ndarray | None = None, ids: np.ndarray | None = None, *,
                embeddings_dir: str | Path | None = None, factory: str = "Flat", train_size: int = 100_000,
                seed: int = 0, nprobe: int | None = None, ef_search: int | None = None) -> DenseIndex:
    """Build an index from an in-memory `vectors` [n, d] + `ids` [n], or from a complete embedding
    directory (`embeddings_dir`, streamed shard by shard). Trainable types (IVF, PQ) train on up to
    `train_size` rows sampled with `seed`."""
    if (vectors is None) == (embeddings_dir is None):
        raise RealmError("build_index: pass either vectors (+ ids) or embeddings_dir")
    if embeddings_dir is not None:
        manifest = embed.read_manifest(embeddings_dir)
        ids = embed.load_ids(embeddings_dir, manifest)
        n, dim = manifest["total_rows"], manifest["dim"]
        source = {"embeddings_dir": str(embeddings_dir), **{k: manifest[k] for k in
                  ("encoder_hash", "corpus_hash", "dtype", "rows_per_shard", "total_rows")},
                  "precision": embed.manifest_precision(manifest)}
        shards = lambda: embed.iter_embeddings(embeddings_dir)  # noqa: E731
    else:
        vectors = np.asarray(vectors)
        if vectors.ndim != 2 or ids is None or np.asarray(ids).shape != (len(vectors),):
            raise RealmError("build_index: vectors must be [n, d] and ids [n]")
        ids = np.asarray(ids, dtype=np.int64)
        n, dim = vectors.shape
        source = {}
        shards = lambda: iter([(0, vectors)])  # noqa: E731
    if n == 0:
        raise RealmError("build_index: no vectors to index")
    try:
        index = faiss.index_factory(int(dim), factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as exc:
        raise RealmError(f"index factory {factory!r}: {_faiss_message(exc)}") from None
    if not index.is_trained:
        sample = _train_sample(shards, n, min(n, train_size), seed)
        try:
            index.train(sample)
        except RuntimeError as exc:
            raise RealmError(f"index {factory!r}: training on {len(sample)} vectors failed "
                             f"({_faiss_message(exc)}); use fewer lists/centroids or 'Flat'") from None
    for _, shard in shards():
        index.add(np.ascontiguousarray(shard, dtype=np.float32))
    _apply_params(index, nprobe, ef_search)
    meta = {"format": FORMAT, "factory": factory, "metric": "inner_product", "n": int(n), "dim": int(dim),
            "search_params": {"nprobe": nprobe, "efSearch": ef_search}, "embeddings": source,
            "faiss_version": faiss.__version__}
    return DenseIndex(index, ids, meta)


def save_version(index: DenseIndex, root: str | Path, *, version: str | None = None, keep: int = 3,
                 make_current: bool = True) -> str:
    """Write `index` as a new version under `root/versions/`, swap CURRENT to it (unless
    `make_current` is False) and delete all but the newest `keep` versions. Returns the name."""
    root = Path(root)
    versions = root / VERSIONS
    versions.mkdir(parents=True, exist_ok=True)
    version = version or _new_version_name(versions, index.meta)
    if version.startswith(".") or "/" in version or (versions / version).exists():
        raise RealmError(f"{versions / version}: version name is invalid or already taken")
    meta = {**index.meta, "version": version, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "created_ns": time.time_ns()}
    with atomic_path(versions / version) as tmp:
        tmp.mkdir()
        faiss.write_index(index.index, str(tmp / INDEX_FILE))
        with open(tmp / IDS_FILE, "wb") as fh:
            np.save(fh, np.asarray(index.ids, dtype=np.int64), allow_pickle=False)
        (tmp / META_FILE).write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
    index.meta, index.path = meta, versions / version
    if make_current:
        set_current(root, version)
    prune_versions(root, keep)
    return version


def build_index_version(embeddings_dir: str | Path, root: str | Path, *, factory: str = "Flat",
                        train_size: int = 100_000, seed: int = 0, nprobe: int | None = None,
                        ef_search: int | None = None, keep: int = 3, version: str | None = None) -> str:
    """Build from a complete embedding directory, save as a new version and make it CURRENT."""
    index = build_index(embeddings_dir=embeddings_dir, factory=factory, train_size=train_size, seed=seed,
                        nprobe=nprobe, ef_search=ef_search)
    return save_version(index, root, version=version, keep=keep)


def set_current(root: str | Path, version: str) -> None:
    """Point CURRENT at an existing version (also how to roll back), by atomic rename."""
    root = Path(root)
    _read_meta(root / VERSIONS / version)  # refuse to publish something unreadable
    write_text_atomic(root / CURRENT, version + "\n")


def current_version(root: str | Path) -> str | None:
    """The live version's name, or None when CURRENT does not exist."""
    pointer = Path(root) / CURRENT
    if not pointer.is_file():
        return None
    name = pointer.read_text(encoding="utf-8").strip()
    if not name or "/" in name or name.startswith("."):
        raise RealmError(f"{pointer}: garbled pointer {name[:60]!r}")
    return name


def list_versions(root: str | Path) -> list[str]:
    """Complete versions, oldest first (by creation time)."""
    versions = Path(root) / VERSIONS
    if not versions.is_dir():
        return []
    found = []
    for child in versions.iterdir():
        if child.is_dir() and not child.name.startswith("."):
            try:
                created = json.loads((child / META_FILE).read_text(encoding="utf-8")).get("created_ns", 0)
            except (OSError, ValueError):
                created = 0
            found.append((created, child.name))
    return [name for _, name in sorted(found)]


def prune_versions(root: str | Path, keep: int) -> None:
    """Delete all but the newest `keep` versions; the CURRENT one always stays."""
    live = current_version(root)
    names = list_versions(root)
    for name in names[: max(0, len(names) - max(1, keep))]:
        if name != live:
            shutil.rmtree(Path(root) / VERSIONS / name, ignore_errors=True)


def load_version(root: str | Path, version: str, *, mmap: bool = False) -> DenseIndex:
    """Load one version; a missing or garbled part is a RealmError naming the file."""
    path = Path(root) / VERSIONS / version
    meta = _read_meta(path)
    flags = faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY if mmap else 0
    try:
        index = faiss.read_index(str(path / INDEX_FILE), flags)
    except RuntimeError as exc:
        raise RealmError(f"{path / INDEX_FILE}: cannot read FAISS index ({_faiss_message(exc)})") from None
    try:
        ids = np.load(path / IDS_FILE, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise RealmError(f"{path / IDS_FILE}: unreadable ({exc})") from None
    if ids.dtype != np.int64 or ids.shape != (index.ntotal,) or meta.get("n") != index.ntotal or meta.get("dim") != index.d:
        raise RealmError(f"{path}: inconsistent version: index has {index.ntotal}x{index.d}, ids "
                         f"{ids.dtype}{list(ids.shape)}, meta n={meta.get('n')} dim={meta.get('dim')}")
    params = meta.get("search_params") or {}
    _apply_params(index, params.get("nprobe"), params.get("efSearch"))
    return DenseIndex(index, ids, meta, path)


def load_current(root: str | Path, *, mmap: bool = False) -> DenseIndex:
    """Load the version CURRENT names (retrying if a concurrent swap pruned it meanwhile)."""
    for _ in range(3):
        version = current_version(root)
        if version is None:
            raise RealmError(f"{Path(root) / CURRENT}: no index has been published under {root}")
        if (Path(root) / VERSIONS / version).is_dir():
            return load_version(root, version, mmap=mmap)
    raise RealmError(f"{Path(root) / CURRENT}: names {version!r}, which does not exist")


def _read_meta(path: Path) -> dict[str, Any]:
    if not path.is_dir():
        raise RealmError(f"{path}: index version does not exist")
    try:
        meta = json.loads((path / META_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise RealmError(f"{path / META_FILE}: unreadable ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise RealmError(f"{path / META_FILE}: not an index version (expected format {FORMAT!r})")
    return meta


def _train_sample(shards, n: int, size: int, seed: int) -> np.ndarray:
    rows = np.sort(np.random.default_rng(seed).choice(n, size=size, replace=False))
    parts = []
    for start, shard in shards():
        sel = rows[(rows >= start) & (rows < start + len(shard))] - start
        if len(sel):
            parts.append(np.asarray(shard[sel], dtype=np.float32))
    return np.ascontiguousarray(np.concatenate(parts))


def _apply_params(index, nprobe: int | None, ef_search: int | None) -> None:
    space = faiss.ParameterSpace()
    for name, value in (("nprobe", nprobe), ("efSearch", ef_search)):
        if value is None:
            continue
        try:
            space.set_index_parameter(index, name, int(value))
        except RuntimeError:
            pass  # this index type has no such knob (e.g. nprobe on a flat index)


def _new_version_name(versions: Path, meta: dict[str, Any]) -> str:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    tag = (meta.get("embeddings") or {}).get("encoder_hash", "")[:8]
    base = f"{stamp}-{tag}" if tag else stamp
    name, n = base, 1
    while (versions / name).exists():
        n += 1
        name = f"{base}-{n}"
    return name


def _faiss_message(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    for line in lines:
        if line.lower().startswith("error"):
            return line
    return lines[-1] if lines else type(exc).__name__
