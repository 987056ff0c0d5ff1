"""Incremental re-embedding: reuse the vectors of blocks whose content and encoder did not change.

A block's embedding is a function of (document-tower input, encoder): the title and text, and the
checkpoint (whose config fixes `max_doc_len`). So every embedding directory stores a content key
per row (`keys.npy`: 64-bit blake2b of title and text), and when the corpus changes under an
unchanged encoder (a newer dump: pages edited, added, removed), the previous directory becomes a
`ReuseSource`: a new shard copies the vectors of rows whose key the previous embeddings already
hold and runs the encoder only on the rest. The work is proportional to what changed; the result
has exactly the new corpus's rows, in its order, with its block ids.

A different encoder (a retrained retriever, REALM's periodic refresh) invalidates everything:
nothing is reused across encoder hashes, nor across compute precisions (a bf16 vector next to
fp32 ones would make the index depend on which blocks happened to change).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from realm_core.errors import RealmError
from realm_core.io import atomic_path
from realm_core.retrieval import embed

KEYS_FILE = "keys.npy"
PREVIOUS = "embeddings.prev"  # sibling of the embeddings dir while a changed corpus is re-embedded


def content_keys(blocks_path: str | Path) -> np.ndarray:
    """uint64 key per row of blocks.parquet: blake2b-64 of the document tower's inputs."""
    keys = []
    for batch in pq.ParquetFile(blocks_path).iter_batches(batch_size=8192, columns=["title", "text"]):
        for title, text in zip(batch.column(0).to_pylist(), batch.column(1).to_pylist()):
            digest = hashlib.blake2b(f"{title}\x1f{text}".encode("utf-8"), digest_size=8).digest()
            keys.append(int.from_bytes(digest, "little"))
    return np.asarray(keys, dtype=np.uint64)


def write_keys(out_dir: str | Path, keys: np.ndarray) -> None:
    """Store the content keys of an embedding directory (atomically)."""
    with atomic_path(Path(out_dir) / KEYS_FILE) as tmp, open(tmp, "wb") as fh:
        np.save(fh, np.asarray(keys, dtype=np.uint64), allow_pickle=False)


def load_keys(out_dir: str | Path, rows: int) -> np.ndarray | None:
    """The content keys of an embedding directory, or None if it has none (older layout)."""
    path = Path(out_dir) / KEYS_FILE
    if not path.is_file():
        return None
    try:
        keys = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError):
        return None  # unreadable keys only cost reuse, never correctness
    return keys if keys.dtype == np.uint64 and keys.shape == (rows,) else None


class ReuseSource:
    """The finished shards of a previous embedding directory, looked up by content key."""

    def __init__(self, prev_dir: str | Path, encoder_hash: str, precision: str = "fp32") -> None:
        self.dir = Path(prev_dir)
        self.manifest = embed.read_manifest(self.dir)
        if self.manifest["encoder_hash"] != encoder_hash:
            raise RealmError(f"{self.dir}: made with another encoder; its vectors cannot be reused")
        if embed.manifest_precision(self.manifest) != precision:
            raise RealmError(f"{self.dir}: embedded in {embed.manifest_precision(self.manifest)}, not {precision}; "
                             "its vectors cannot be reused")
        keys = load_keys(self.dir, self.manifest["total_rows"])
        per = self.manifest["rows_per_shard"]
        done = [i for i in range(self.manifest["n_shards"]) if keys is not None
                and embed.shard_record(self.dir, i, self.manifest) is not None]
        rows = np.concatenate([np.arange(i * per, min((i + 1) * per, self.manifest["total_rows"])) for i in done]) \
            if done else np.zeros(0, dtype=np.int64)
        order = np.argsort(keys[rows], kind="stable") if len(rows) else rows
        self._rows = rows[order].astype(np.int64)
        self._keys = np.asarray(keys[self._rows]) if len(rows) else np.zeros(0, dtype=np.uint64)
        self._shards: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self._rows)

    def lookup(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(found mask, previous row per key; -1 where not found)."""
        keys = np.asarray(keys, dtype=np.uint64)
        if not len(self._keys):
            return np.zeros(len(keys), dtype=bool), np.full(len(keys), -1, dtype=np.int64)
        pos = np.clip(np.searchsorted(self._keys, keys), 0, len(self._keys) - 1)
        found = self._keys[pos] == keys
        return found, np.where(found, self._rows[pos], -1)

    def vectors(self, rows: np.ndarray) -> np.ndarray:
        """float32 vectors of previous rows (each must be in a finished shard)."""
        per = self.manifest["rows_per_shard"]
        rows = np.asarray(rows, dtype=np.int64)
        out = np.empty((len(rows), self.manifest["dim"]), dtype=np.float32)
        shards, offsets = np.divmod(rows, per)
        for shard in np.unique(shards):  # one fancy-indexed read per shard, not one per row
            shard = int(shard)
            if shard not in self._shards:
                self._shards[shard] = embed.load_shard(self.dir, shard, self.manifest)
            pick = shards == shard
            out[pick] = self._shards[shard][offsets[pick]]
        return out
