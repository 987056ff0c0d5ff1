"""Config of the `pretrain_realm` stage (params.yaml section `pretrain_realm`, `python -m flows.pretrain_realm`)."""

from __future__ import annotations

from pydantic import Field, field_validator

from realm_core.config.base import DEVICE_PATTERN, PRECISION_PATTERN, StageConfig


class PretrainRealmConfig(StageConfig):
    """REALM pre-training: masked salient spans, latent retrieval over ∅ + top-(k−1), the marginal
    likelihood, the index re-embedded while training -> models/realm, models/realm_encoder."""

    blocks: str = "artifacts/corpus/blocks.parquet"
    """The knowledge corpus Z and the pre-training text X (blocks.parquet from prepare_corpus)."""

    salient_spans: str = "artifacts/corpus/salient_spans.parquet"
    """Salient spans (tag_entities): one of them is masked per example."""

    retriever: str = "models/ict"
    """The retriever to start from (θ): the ICT warm start, as in the paper."""

    encoder: str = "models/pretrain_mlm"
    """The knowledge-augmented encoder to start from (φ): "our BERT" from pretrain_mlm."""

    baseline: str = "models/pretrain_mlm"
    """The no-retrieval BERT whose held-out masked accuracy is `baseline_accuracy` (E1 c)."""

    initial_index: str = "artifacts/index/ict/embeddings"
    """Embeddings of every block by `retriever` (build_index's), reused as index version 0 when
    their manifest matches the retriever and the corpus; "" (or a mismatch) embeds at step 0."""

    retriever_output_dir: str = "models/realm"
    """The trained REALM retriever (HF-style directory; build_index@realm indexes it)."""

    encoder_output_dir: str = "models/realm_encoder"
    """The trained knowledge-augmented encoder (HF-style directory; a reader init for open-QA)."""

    num_candidates: int = Field(default=8, ge=1)
    """k: the null document plus k−1 retrieved blocks (paper: 8 in all). 1 = no retrieval (∅ only)."""

    allow_trivial: bool = False
    """Keep the source block among the candidates (the paper prohibits this "trivial retrieval")."""

    masking: str = Field(default="salient", pattern="^(salient|random_tokens|random_spans)$")
    """What is masked: a salient span, or as many random wordpieces / one random span of that length."""

    loss: str = Field(default="per_token", pattern="^(per_token|per_example)$")
    """Marginal over candidates per masked token (released code) or per example (paper)."""

    max_query_len: int = Field(default=96, ge=8, le=512)
    """Wordpieces of the masked sentence `[CLS] x [SEP]` (REALM launcher: 96)."""

    max_candidate_len: int = Field(default=288, ge=8, le=512)
    """Wordpieces of a candidate body in the reader, its [SEP]s included (launcher: 288)."""

    max_masks: int = Field(default=10, ge=1)
    """Masked wordpieces scored per example (longer spans stay masked, unscored)."""

    refresh_schedule: str = "0-100:25,100-:50"
    """When the index is re-embedded: "start-end:every,..." (end may be empty), "N" (every N
    steps) or "never"."""

    refresh_mode: str = Field(default="sync", pattern="^(sync|async)$")
    """sync: training waits for the new index (deterministic); async: a Prefect task embeds beside
    training and the new index is swapped in when ready (a due refresh is skipped while one runs)."""

    refresh_batch_size: int = Field(default=64, ge=1)
    """Blocks per forward pass when re-embedding the corpus."""

    steps: int = Field(default=200, ge=1)
    """Optimizer steps."""

    batch_size: int = Field(default=4, ge=1)
    """Masked sentences per optimizer step over all processes (paper 512; launcher 4)."""

    grad_accum: int = Field(default=1, ge=1)
    """Micro-steps per optimizer step."""

    lr: float = Field(default=3e-5, gt=0)
    """Peak learning rate of the encoder (φ) (paper: 3e-5 for both), BERT AdamW, linear warmup then decay."""

    retriever_lr: float = Field(default=1e-5, gt=0)
    """Peak learning rate of the retriever (θ). Its signal, r(z) = [p(y|z,x)/p(y|x) − 1]·p(z|x),
    is faint while the reader is weak, and Adam takes full-size steps on faint noisy gradients:
    at lr 1e-4 and batch 4 the ICT retriever drifts into noise (NQ Recall@5 0.78 → 0.11 in 120
    steps, docs/results.md). The paper's 3e-5 comes with batches of 512."""

    warmup_steps: int = Field(default=-1, ge=-1)
    """Warmup steps; -1 = REALM's rule min(10000, max(100, steps/10))."""

    heldout_fraction: float = Field(default=0.05, ge=0, lt=1)
    """Blocks never trained on (by block id, the same split as every stage); held-out examples
    come only from them."""

    eval_examples: int = Field(default=200, ge=0)
    """Held-out examples scored at step 0, every `eval_every` steps and at the end."""

    eval_every: int = Field(default=100, ge=0)
    """Steps between held-out evaluations (0 = only at step 0 and at the end)."""

    eval_batch_size: int = Field(default=8, ge=1)
    """Examples per evaluation forward pass."""

    device: str = Field(default="auto", pattern=DEVICE_PATTERN)
    """auto (CUDA when present), cpu, cuda or cuda:N; refreshes run on the same device."""

    precision: str = Field(default="auto", pattern=PRECISION_PATTERN)
    """auto (bf16 where native), fp32, bf16 or fp16 (CUDA); weights stay float32."""

    seed: int = 0
    """Seeds the example order, the span draws and dropout."""

    checkpoint_dir: str = "checkpoints/pretrain_realm"
    """Training checkpoints and the index versions they name (`index/`)."""

    checkpoint_every: int = Field(default=25, ge=1)
    """Steps between checkpoints."""

    keep_checkpoints: int = Field(default=2, ge=1)
    """Newest checkpoints kept."""

    resume: str = Field(default="auto", pattern="^(auto|must|never)$")
    """"auto": continue from the latest checkpoint with the same settings, else start over;
    "must": continue or fail; "never": start over."""

    time_budget_s: float = Field(default=0, ge=0)
    """Checkpoint and stop after this many seconds (0 = no limit); rerun to resume."""

    log_every: int = Field(default=10, ge=1)
    """Steps per logged metrics window."""

    metrics_file: str = "metrics/pretrain_realm.json"
    """Held-out marginal / null / baseline accuracy, RU first and last, refreshes, staleness."""

    plots_dir: str = "metrics/pretrain_realm"
    """dvclive directory: loss, accuracy, RU, p(∅|x), staleness per step for `dvc plots`."""

    @field_validator("refresh_schedule", mode="before")
    @classmethod
    def _schedule_as_text(cls, value):
        """`--set pretrain_realm.refresh_schedule=50` (or `-S` in dvc exp run) arrives as a YAML int."""
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value
