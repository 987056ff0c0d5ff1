"""The corpus as wordpiece ids, computed once and memory-mapped by every reader of it.

Open-QA fine-tuning, prediction, `realm ask` and answer matching all need each block's body
wordpieces, and prediction needs to map a wordpiece span back to the block's original text (the
TF code's `token_map`; decoding wordpieces would lose case, accents and spacing, which EM and
CuratedTREC's regexes see). HF's `RealmForOpenQA` re-tokenises every retrieved block for every
question; here the `tokenize_corpus` stage does it once and writes, under `output_dir`:

- `ids.npy` int32: every block's body wordpieces (no special tokens), concatenated in block order;
- `offsets.npy` int32 [n_tokens, 2]: each wordpiece's (start, end) character offsets in its block's
  `text`;
- `starts.npy` int64 [n_blocks + 1]: where each block's wordpieces begin in the two arrays above;
- `block_ids.npy` int64: the block id of each row (the row order of blocks.parquet);
- `meta.json`: format, corpus hash, tokenizer name and vocabulary hash, counts.

Readers `np.load(..., mmap_mode="r")` the arrays, so processes share the pages and nothing is
copied. The title is not part of a reader's input (REALM's `featurization.py` leaves it out of the
knowledge-augmented encoder, and this project's reader follows it), so titles are not stored here.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from realm_core.errors import RealmError
from realm_core.io import atomic_path

FORMAT = "realm-wordpiece-corpus/1"
FILES = ("ids.npy", "offsets.npy", "starts.npy", "block_ids.npy", "meta.json")


def vocab_hash(tokenizer) -> str:
    """sha256 of the tokenizer's vocabulary and normaliser: what decides the ids and offsets."""
    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    keep = {k: spec.get(k) for k in ("normalizer", "pre_tokenizer", "model")}
    return hashlib.sha256(json.dumps(keep, sort_keys=True).encode()).hexdigest()


def build(blocks_path: str | Path, tokenizer, out_dir: str | Path, *, tokenizer_name: str = "",
          batch_size: int = 2048) -> dict[str, Any]:
    """Tokenise every block body of `blocks_path` and publish the arrays in `out_dir` atomically."""
    from realm_core.retrieval.embed import corpus_hash
    from tokenizers import Tokenizer

    blocks_path, out_dir = Path(blocks_path), Path(out_dir)
    try:
        pf = pq.ParquetFile(blocks_path)
    except FileNotFoundError:
        raise RealmError(f"tokenize_corpus.blocks: {blocks_path}: no such file") from None
    except Exception as exc:  # pyarrow raises several types for bad files
        raise RealmError(f"{blocks_path}: not a blocks file ({exc})") from None
    missing = {"block_id", "text"} - set(pf.schema_arrow.names)
    if missing:
        raise RealmError(f"{blocks_path}: not a blocks file (no column {sorted(missing)[0]!r})")
    if pf.metadata.num_rows == 0:
        raise RealmError(f"{blocks_path}: empty corpus")
    backend = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
    backend.no_padding()
    backend.no_truncation()
    ids_parts, off_parts, lengths, block_ids = [], [], [], []
    for batch in pf.iter_batches(batch_size=batch_size, columns=["block_id", "text"]):
        block_ids.append(batch.column(0).to_numpy().astype(np.int64))
        for enc in backend.encode_batch(batch.column(1).to_pylist(), add_special_tokens=False):
            ids_parts.append(np.asarray(enc.ids, dtype=np.int32))
            off_parts.append(np.asarray(enc.offsets, dtype=np.int32).reshape(-1, 2))
            lengths.append(len(enc.ids))
    starts = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=starts[1:])
    meta = {"format": FORMAT, "blocks": str(blocks_path), "corpus_hash": corpus_hash(blocks_path),
            "tokenizer": tokenizer_name, "vocab_hash": vocab_hash(tokenizer), "n_blocks": len(lengths),
            "n_tokens": int(starts[-1])}
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    old = out_dir.with_name(f".{out_dir.name}.old")
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        np.save(tmp / "ids.npy", np.concatenate(ids_parts) if ids_parts else np.zeros(0, np.int32))
        np.save(tmp / "offsets.npy", np.concatenate(off_parts) if off_parts else np.zeros((0, 2), np.int32))
        np.save(tmp / "starts.npy", starts)
        np.save(tmp / "block_ids.npy", np.concatenate(block_ids))
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        if out_dir.exists():
            shutil.rmtree(old, ignore_errors=True)
            out_dir.rename(old)
    shutil.rmtree(old, ignore_errors=True)
    return meta


class WordpieceCorpus:
    """Memory-mapped view of a `tokenize_corpus` output: body ids and char offsets per block row."""

    def __init__(self, path: str | Path) -> None:
        path = Path(path)
        missing = [f for f in FILES if not (path / f).is_file()]
        if missing:
            raise RealmError(f"{path}: not a tokenized corpus (no {missing[0]}; run the tokenize_corpus stage)")
        try:
            self.meta = json.loads((path / "meta.json").read_text(encoding="utf-8"))
        except ValueError as exc:
            raise RealmError(f"{path / 'meta.json'}: invalid JSON ({exc})") from None
        if self.meta.get("format") != FORMAT:
            raise RealmError(f"{path / 'meta.json'}: format {self.meta.get('format')!r}, expected {FORMAT!r}")
        try:
            self.ids = np.load(path / "ids.npy", mmap_mode="r")
            self.offsets = np.load(path / "offsets.npy", mmap_mode="r")
            self.starts = np.load(path / "starts.npy")
            self.block_ids = np.load(path / "block_ids.npy")
        except (OSError, ValueError) as exc:
            raise RealmError(f"{path}: unreadable array ({exc})") from None
        if len(self.starts) != len(self.block_ids) + 1 or int(self.starts[-1]) != len(self.ids) \
                or self.offsets.shape != (len(self.ids), 2):
            raise RealmError(f"{path}: inconsistent arrays (ids, offsets and starts disagree); rebuild it")
        self.path = path
        self.row_of = {int(b): i for i, b in enumerate(self.block_ids)}

    def __len__(self) -> int:
        return len(self.block_ids)

    def body(self, row: int) -> np.ndarray:
        """Wordpiece ids of block `row` (a read-only view)."""
        return self.ids[self.starts[row]: self.starts[row + 1]]

    def body_offsets(self, row: int) -> np.ndarray:
        """[n, 2] character offsets of block `row`'s wordpieces in its text."""
        return self.offsets[self.starts[row]: self.starts[row + 1]]

    def check(self, blocks_path: str | Path, tokenizer, *, key: str = "wordpieces") -> None:
        """RealmError unless this was built from `blocks_path` with `tokenizer`'s vocabulary."""
        from realm_core.retrieval.embed import corpus_hash

        if self.meta.get("corpus_hash") != corpus_hash(blocks_path):
            raise RealmError(f"{key}: {self.path} was tokenized from another corpus than {blocks_path}; "
                             "rerun tokenize_corpus (dvc repro tokenize_corpus)")
        if self.meta.get("vocab_hash") != vocab_hash(tokenizer):
            raise RealmError(f"{key}: {self.path} was tokenized with another vocabulary than the model's; "
                             "set tokenize_corpus.tokenizer to the model's tokenizer and rerun it")


def run_tokenize_corpus(cfg, info=print) -> dict[str, Any]:
    """The `tokenize_corpus` stage: build the arrays for `cfg.blocks` with `cfg.tokenizer`."""
    import time

    from realm_core.pretrained import load_tokenizer

    t0 = time.monotonic()
    meta = build(cfg.blocks, load_tokenizer(cfg.tokenizer), cfg.output_dir, tokenizer_name=cfg.tokenizer)
    meta["seconds"] = round(time.monotonic() - t0, 2)
    info(f"{meta['n_blocks']:,} blocks -> {meta['n_tokens']:,} wordpieces in {cfg.output_dir} ({meta['seconds']} s)")
    return meta


def check_inputs(cfg) -> None:
    """Fail fast, before Prefect starts, on a missing blocks file or an unloadable tokenizer."""
    from realm_core.pretrained import load_tokenizer

    if not Path(cfg.blocks).is_file():
        raise RealmError(f"tokenize_corpus.blocks: {cfg.blocks}: no such file")
    load_tokenizer(cfg.tokenizer)
