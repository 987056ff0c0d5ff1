"""The worker side of `prepare_corpus`: clean wikitext, split sentences, pack blocks.

Kept apart from `prepare.py` so that a spawned worker process imports only what it runs (no
config package, no parquet writing): start-up is paid once per worker, and on small inputs it
was a visible share of the stage's CPU time.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import asdict

from realm_core.corpus.blocks import Blocks, BlockPacker, PackStats
from realm_core.wiki.wikitext import WikitextError, wikitext_to_paragraphs

_PACKER: BlockPacker | None = None
_KEEP_LISTS = False


def _init_worker(tokenizer_json: str, block_size: int, keep_lists: bool) -> None:
    global _PACKER, _KEEP_LISTS
    # One thread per worker: the pool is the parallelism, Rust threads would oversubscribe.
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    os.environ.setdefault("RAYON_NUM_THREADS", "1")
    _PACKER = BlockPacker(tokenizer_json, block_size)
    _KEEP_LISTS = keep_lists


def _process_batch(source: str, docs: list[tuple[str, str, str, bool]]) -> tuple[Blocks, dict]:
    """Clean and pack a batch of kept documents; returns blocks and counters."""
    assert _PACKER is not None
    _PACKER.stats = PackStats()
    out = Blocks()
    counts: Counter = Counter()
    for doc_id, title, body, is_wikitext in docs:
        if is_wikitext:
            try:
                paragraphs, dropped = wikitext_to_paragraphs(body, keep_lists=_KEEP_LISTS)
            except WikitextError:
                counts["drop:parse_error"] += 1
                continue
            counts["paragraphs_dropped_markup"] += dropped
        else:
            paragraphs = [" ".join(body.split())]
        counts["paragraphs"] += len(paragraphs)
        if _PACKER.pack(source, doc_id, title, paragraphs, out) == 0:
            counts["drop:no_text_after_cleaning"] += 1
        else:
            counts["docs_kept"] += 1
    for key, value in asdict(_PACKER.stats).items():
        if key == "docs_title_too_long":
            counts["drop:title_too_long"] += value
            counts["drop:no_text_after_cleaning"] -= value
        else:
            counts[key] += value
    return out, dict(counts)


_WORKER_SETTINGS: tuple | None = None


def process_batch(settings: tuple[str, int, bool], source: str, docs: list[tuple[str, str, str, bool]]) -> tuple[Blocks, dict]:
    """`_process_batch` for an executor whose workers were not set up by `_init_worker` (a Dask
    worker, a Prefect task): `settings` = (tokenizer, block_size, keep_lists); the worker loads
    the tokenizer on its first batch and keeps it for the next ones."""
    global _WORKER_SETTINGS
    if _WORKER_SETTINGS != settings:
        from realm_core.pretrained import load_tokenizer_json  # only here: Dask/Prefect workers

        tokenizer, block_size, keep_lists = settings
        _init_worker(load_tokenizer_json(tokenizer), block_size, keep_lists)
        _WORKER_SETTINGS = settings
    return _process_batch(source, docs)
