"""Config of the `train_tagger` stage (params.yaml section `train_tagger`, `python -m flows.train_tagger`)."""

from __future__ import annotations

from pydantic import Field

from realm_core.config.base import DEFAULT_TOKENIZER, DEVICE_PATTERN, PRECISION_PATTERN, StageConfig


class TrainTaggerConfig(StageConfig):
    """Fine-tune a BERT-family token classifier on CoNLL-2003 (REALM's salient-span tagger)."""

    train_file: str = "data/conll2003/eng.train"
    """CoNLL-2003 training file (original 4-column format, IOB1 tags; converted to IOB2)."""

    dev_file: str = "data/conll2003/eng.testa"
    """Development file: checkpoint selection by entity-level F1."""

    test_file: str = "data/conll2003/eng.testb"
    """Test file: the reported entity-level P/R/F1 per type and overall."""

    init: str = DEFAULT_TOKENIZER
    """Encoder to start from: package:<module>, a local directory, a hub name such as
    bert-base-uncased, or "scratch" (a small BERT from `scratch_config`, e.g. for smoke runs).
    Its classification head is newly initialised."""

    scratch_config: dict[str, int | float] = {}
    """BertConfig overrides for init "scratch" (layers, hidden, heads, intermediate, or BertConfig
    keys); empty = 2 layers, hidden 128, 2 heads, intermediate 512."""

    tokenizer: str = DEFAULT_TOKENIZER
    """Vocabulary of a "scratch" init (pretrained inits bring their own)."""

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

    device: str = Field(default="auto", pattern=DEVICE_PATTERN)
    """Where training and scoring run: auto (CUDA when present, else CPU), cpu, cuda or cuda:N."""

    precision: str = Field(default="auto", pattern=PRECISION_PATTERN)
    """Compute precision: auto (bf16 autocast on CUDA with bf16 and on CPUs with native bf16 such as
    AVX512-BF16, where it is 1.7x faster per step; else fp32), fp32, bf16, or fp16 (CUDA only, with
    a gradient scaler). Weights, optimizer state and the saved model stay float32."""

    case_feature: bool = True
    """Feed word capitalisation through the segment (token type) embedding, recovering the case
    cue an uncased encoder loses; recorded in the saved config so tagging uses it too."""

    metrics_file: str = "metrics/train_tagger.json"
    """Test/dev F1 (overall and per type), training time and steps."""
