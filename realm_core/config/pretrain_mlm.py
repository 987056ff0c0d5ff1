"""Config of the `pretrain_mlm` stage (params.yaml section `pretrain_mlm`, `python -m flows.pretrain_mlm`)."""

from __future__ import annotations

from pydantic import Field

from realm_core.config.base import DEFAULT_TOKENIZER, DEVICE_PATTERN, PRECISION_PATTERN, StageConfig


class PretrainMLMConfig(StageConfig):
    """Train "our BERT" with BERT's masked LM over the blocks -> models/pretrain_mlm (the
    no-retrieval baseline and the init of REALM's knowledge-augmented encoder)."""

    blocks: str = "artifacts/corpus/blocks.parquet"
    """Path to a blocks.parquet written by prepare_corpus."""

    init: str = DEFAULT_TOKENIZER
    """Where the encoder starts: "scratch" (a small BERT, see `scratch_config`), package:<module>,
    a local BERT directory, a hub name such as bert-base-uncased (whose MLM head is kept), or a
    saved encoder directory. The default, the packaged all-MiniLM-L6-v2, is a sentence embedder
    without an MLM head: the head (tied to its word embeddings) is new and drawn from `seed`."""

    num_layers: int = Field(default=0, ge=0)
    """Keep only the first N transformer layers of a pretrained init (0 = all)."""

    scratch_config: dict[str, int | float] = {}
    """BertConfig overrides for init "scratch" (layers, hidden, heads, intermediate, or BertConfig
    keys); empty = 2 layers, hidden 128, 2 heads, intermediate 512."""

    tokenizer: str = DEFAULT_TOKENIZER
    """Vocabulary of a "scratch" init (pretrained inits bring their own)."""

    steps: int = Field(default=300, ge=1)
    """Optimizer steps."""

    batch_size: int = Field(default=32, ge=1)
    """Examples (block segment pairs) per optimizer step over all processes, split evenly over the
    `grad_accum` micro-steps and the torchrun processes."""

    grad_accum: int = Field(default=1, ge=1)
    """Micro-steps per optimizer step (gradient accumulation): the same batch in less memory."""

    lr: float = Field(default=1e-4, gt=0)
    """Peak learning rate (BERT AdamW, linear warmup then decay)."""

    warmup_steps: int = Field(default=-1, ge=-1)
    """Warmup steps; -1 = REALM's rule min(10000, max(100, steps/10))."""

    mask_prob: float = Field(default=0.15, gt=0, le=1)
    """Share of an example's non-special wordpieces that is masked and scored (at least one), BERT's
    80/10/10: [MASK] / a random word / unchanged."""

    random_context_prob: float = Field(default=0.0, ge=0, lt=1)
    """Share of the examples whose segment B is the whole text of another training block instead of
    the rest of their own (BERT draws a random B half of the time); 0 = always their own block.
    The held-out scores always use the block's own rest."""

    max_len: int = Field(default=128, ge=8, le=512)
    """Wordpieces of a whole training input `[CLS] A [SEP] B [SEP]` (A: one sentence of the block, at
    most about half; B: the rest of the block). The saved encoder is set up for REALM's reader
    lengths (query 96 + document 288) whatever this is."""

    heldout_fraction: float = Field(default=0.05, ge=0, lt=1)
    """Share of blocks (chosen by block id, the same in every stage) that training never sees; the
    masked-LM accuracy before/after training is scored on them."""

    device: str = Field(default="auto", pattern=DEVICE_PATTERN)
    """Where training runs: auto (CUDA when present, else CPU), cpu, cuda or cuda:N. Under torchrun
    with CUDA each process uses cuda:LOCAL_RANK."""

    precision: str = Field(default="auto", pattern=PRECISION_PATTERN)
    """Compute precision of training: auto (bf16 autocast on CUDA with bf16 and on CPUs with native
    bf16 such as AVX512-BF16, else fp32), fp32, bf16, or fp16 (CUDA only, with a gradient scaler).
    Weights, optimizer state and the saved encoder stay float32."""

    seed: int = 0
    """Seeds a new MLM head / scratch weights, the data order, the sentence choice and the masks."""

    output_dir: str = "models/pretrain_mlm"
    """The trained encoder (HF BertForMaskedLM directory + realm_encoder.json)."""

    checkpoint_dir: str = "checkpoints/pretrain_mlm"
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
    stopped run exports nothing, so DVC never records a half-trained encoder."""

    log_every: int = Field(default=10, ge=1)
    """Steps per logged metrics window (loss, accuracy, lr, grad norm, throughput)."""

    eval_batches: int = Field(default=8, ge=0)
    """Masked-LM batches (of batch_size / grad_accum) drawn from the held-out blocks with a fixed
    seed, scored without dropout before and after training (the same batches both times)."""

    metrics_file: str = "metrics/pretrain_mlm.json"
    """Held-out masked-LM accuracy and loss before and after training, steps, time."""

    plots_dir: str = "metrics/pretrain_mlm"
    """dvclive directory: per-step training curves for `dvc plots`."""
