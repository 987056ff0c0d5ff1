"""Config of the `pretrain_ict` stage (params.yaml section `pretrain_ict`, `python -m flows.pretrain_ict`)."""

from __future__ import annotations

from pydantic import Field

from realm_core.config.base import DEFAULT_TOKENIZER, DEVICE_PATTERN, PRECISION_PATTERN, StageConfig


class PretrainICTConfig(StageConfig):
    """Warm-start the retriever with ORQA's Inverse Cloze Task over the blocks -> models/ict."""

    blocks: str = "artifacts/corpus/blocks.parquet"
    """Path to a blocks.parquet written by prepare_corpus."""

    init: str = DEFAULT_TOKENIZER
    """Where the embedder starts: "scratch" (a small BERT, see `scratch_config`), package:<module>,
    a local BERT directory, a hub name such as bert-base-uncased, or a saved retriever directory.
    The default, the packaged all-MiniLM-L6-v2, is not untrained: it was trained contrastively on
    question-passage pairs (NQ-train, SQuAD, TriviaQA among them)."""

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
    """Examples per optimizer step over all processes. Each of the `grad_accum` micro-steps is an
    in-batch set of batch_size / grad_accum examples, split evenly over the torchrun processes;
    the other blocks of the set (from every process) are each query's negatives."""

    grad_accum: int = Field(default=1, ge=1)
    """Micro-steps per optimizer step (gradient accumulation): more examples per step in the same
    memory, but each micro-step's in-batch negatives are only its own batch_size / grad_accum."""

    heldout_fraction: float = Field(default=0.05, ge=0, lt=1)
    """Share of blocks (chosen by block id, the same in every stage) that training never sees; the
    ICT accuracy before/after training is scored on them."""

    device: str = Field(default="auto", pattern=DEVICE_PATTERN)
    """Where training runs: auto (CUDA when present, else CPU), cpu, cuda or cuda:N. Under torchrun
    with CUDA each process uses cuda:LOCAL_RANK."""

    precision: str = Field(default="auto", pattern=PRECISION_PATTERN)
    """Compute precision of training: auto (bf16 autocast on CUDA with bf16 and on CPUs with native
    bf16 such as AVX512-BF16, else fp32), fp32, bf16, or fp16 (CUDA only, with a gradient scaler).
    Weights, optimizer state and the saved retriever stay float32."""

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
    """The same retriever before any ICT step: the init baseline of evaluate_retrieval ("MiniLM init
    (before ICT)" by default, which is not untrained: see `init`)."""

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
    """ICT batches (of batch_size / grad_accum) drawn from the held-out blocks with a fixed seed,
    scored without dropout before and after training."""

    metrics_file: str = "metrics/pretrain_ict.json"
    """Final ICT accuracies (masked/unmasked) before and after training, steps, time."""

    plots_dir: str = "metrics/pretrain_ict"
    """dvclive directory: per-step training curves for `dvc plots`."""
