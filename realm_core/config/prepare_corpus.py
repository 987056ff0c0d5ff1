"""Config of the `prepare_corpus` stage (params.yaml section `prepare_corpus`, `python -m flows.prepare_corpus`)."""

from __future__ import annotations

from pydantic import Field, field_validator

from realm_core.config.base import DEFAULT_TOKENIZER, StageConfig


class PrepareCorpusConfig(StageConfig):
    """Parse Wikipedia dumps and passage files into REALM blocks (`<output_dir>/blocks.parquet`)."""

    sources: list[str] = Field(min_length=1)
    """Input files or glob patterns: MediaWiki XML dumps (.xml, .xml.bz2 incl. multistream, .xml.gz),
    passage JSONL ({id, title, text}, optionally .gz) or DPR psgs_w100 TSV. The format is sniffed
    from the content. Relative paths are relative to the working directory."""

    output_dir: str = "artifacts/corpus"
    """Directory that receives blocks.parquet (written to a temp name, then renamed)."""

    tokenizer: str = DEFAULT_TOKENIZER
    """BERT uncased WordPiece tokenizer used to measure blocks: a local directory, a hub name such as
    bert-base-uncased (needs HF_HUB_OFFLINE=0 and a network), or package:<module> for a model that a
    Python package ships (its get_model_path())."""

    block_size: int = Field(default=288, ge=32, le=4096)
    """Budget per block in wordpieces, counting [CLS] title [SEP] text [SEP] (ORQA/REALM use 288)."""

    drop_title_prefixes: list[str] = ["List of ", "Index of ", "Outline of "]
    """Pages whose title starts with one of these are dropped (the ORQA preprocessing rule)."""

    keep_lists: bool = False
    """Keep bulleted/numbered list items as text. Off by default, like WikiExtractor and ORQA's
    corpus: list items are fragments rather than prose."""

    workers: int = Field(default=0, ge=0)
    """Worker processes for text cleaning, sentence splitting and tokenisation; 0 = all cores.
    The output is byte-identical for every value."""

    dask_address: str = ""
    """Clean and pack the batches of pages as Prefect tasks on Dask instead of local processes: a
    scheduler address (tcp://host:8786), or "local" for a local cluster of `workers` processes.
    The output is the same; reading the dumps stays in the flow's process."""

    chunk_pages: int = Field(default=1000, ge=1)
    """Pages per checkpoint chunk: finished chunks are kept in <output_dir>/prepare_corpus.work and
    a rerun after a crash or kill resumes from the first unfinished chunk."""

    row_group_size: int = Field(default=8192, ge=1)
    """Rows per Parquet row group, so readers can load blocks in slices."""

    metrics_file: str = "metrics/prepare_corpus.json"
    """Where the stage's counts (pages read/kept/dropped per reason, blocks, wordpieces) go."""

    @field_validator("sources")
    @classmethod
    def _non_empty_entries(cls, value: list[str]) -> list[str]:
        if any(not s.strip() for s in value):
            raise ValueError("entries must be non-empty paths or globs")
        return value
