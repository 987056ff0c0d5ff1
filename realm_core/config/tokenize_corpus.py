"""Config of the `tokenize_corpus` stage (params.yaml section `tokenize_corpus`, `python -m flows.tokenize_corpus`)."""

from __future__ import annotations

from realm_core.config.base import DEFAULT_TOKENIZER, StageConfig


class TokenizeCorpusConfig(StageConfig):
    """Every block body as wordpiece ids + character offsets, memory-mapped by the readers
    (finetune_qa, evaluate, realm ask) so nothing re-tokenises the corpus."""

    blocks: str = "artifacts/corpus/blocks.parquet"
    """Path to a blocks.parquet written by prepare_corpus."""

    tokenizer: str = DEFAULT_TOKENIZER
    """The readers' vocabulary (package:<module>, a model directory, or a hub name such as
    bert-base-uncased). Every reader checks it tokenizes the same way and refuses otherwise."""

    output_dir: str = "artifacts/corpus/wordpieces"
    """ids.npy, offsets.npy, starts.npy, block_ids.npy, meta.json (written atomically)."""
