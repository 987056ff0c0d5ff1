"""ORQA's Inverse Cloze Task: the warm start of the REALM retriever (REALM_NOTES §2.8).

For each block, one sentence chosen uniformly is the pseudo-query (`[CLS] q [SEP]`, at most
`max_query_len` wordpieces). With probability `mask_rate` (0.9) the sentence is removed from the
block, otherwise the block keeps it; a block with a single sentence cannot lose it and is skipped
for that epoch when the draw says "remove" (ORQA drops those examples). The block is encoded as
`[CLS] title [SEP] rest [SEP]` (≤ `max_doc_len`), and the loss is in-batch softmax
cross-entropy: logits = Q·Dᵀ, the diagonal is the target. Metrics are accuracy on the masked
(sentence removed) and unmasked examples.

Held-out blocks (`heldout.py`, a fixed ~5 % by block id) are never trained on: training draws
from the "train" part only and the before/after accuracy is scored on the "heldout" part.

Under torchrun every rank builds its share of each batch (rows rank·b/W … (rank+1)·b/W of the
same global draw) and scores its queries against the documents of all ranks (gathered with their
gradients, `distributed.gather_with_grad`), as ORQA and DPR do, so N processes see the same
in-batch negatives as one process with the whole batch.

Data order is reproducible and resumable: epoch e shuffles the blocks with a generator seeded
by (seed, e), and the same generator draws every example's sentence and mask decision, so the
stream is a pure function of (seed, position) and its position (epoch, offset) is all a
checkpoint needs. The tail of an epoch that cannot fill a batch is skipped, so a batch never
holds the same block twice.

Initialisation matters more than usual here, because the score is the [CLS] pooled output and
has no temperature. Measured on real blocks: the package's 6-layer MiniLM gives blocks distinct
[CLS] vectors (mean cosine 0.62) and already scores 0.69 in-batch accuracy at batch 16 before
any ICT step; a randomly initialised BERT (and MiniLM cut to 2 layers) gives nearly identical
vectors (cosine 0.9999), so training starts on a plateau, and the embedding dropout's noise on
unscaled dot products hides the little signal there is. Tiny from-scratch runs therefore want
dropout 0 (and a larger `initializer_range`); see tests/realm_core/training/test_ict.py.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch
import torch.nn.functional as F

from realm_core import devices
from realm_core.config import DEFAULT_TOKENIZER
from realm_core.errors import RealmError
from realm_core.modeling.embedder import SCRATCH, RetrieverEmbedder
from realm_core.modeling.inputs import InputBuilder
from realm_core.training import distributed
from realm_core.training.heldout import held_out_mask
from realm_core.training.loop import LoopConfig, LoopResult, train

_COLUMNS = ["block_id", "title", "text", "sentence_starts"]


PARTS = ("all", "train", "heldout")


class ICTBlocks:
    """The columns ICT needs from blocks.parquet, held as Arrow arrays (compact, sliceable).

    `part` keeps only the training blocks ("train"), only the held-out ones ("heldout", see
    heldout.py) or every block ("all")."""

    def __init__(self, path: str | Path, part: str = "all", heldout_fraction: float = 0.0, *,
                 table: pa.Table | None = None) -> None:
        """Read `path` (or take `table`, the file's ICT columns already read) and keep `part`."""
        if part not in PARTS:
            raise RealmError(f"ICT: part must be one of {PARTS}, got {part!r}")
        path = Path(path)
        table = _read_ict_columns(path) if table is None else table
        if part != "all":
            held = held_out_mask(table.column("block_id").to_numpy(), heldout_fraction)
            table = table.filter(pa.array(held if part == "heldout" else ~held))
            if table.num_rows == 0:
                raise RealmError(f"{path}: no {part} blocks with heldout_fraction {heldout_fraction} "
                                 f"(of {len(held)} blocks, {int(held.sum())} held out)")
        self.path, self.part, self.heldout_fraction = path, part, heldout_fraction
        self.table = table.combine_chunks()
        self.n_sentences = pc.list_value_length(self.table.column("sentence_starts")).to_numpy(zero_copy_only=False)
        self.n_sentences = np.nan_to_num(self.n_sentences.astype(np.float64)).astype(np.int64)
        ids = self.table.column("block_id").to_numpy()
        self.fingerprint = hashlib.sha256(ids.tobytes()).hexdigest()[:16]

    @classmethod
    def split(cls, path: str | Path, heldout_fraction: float, *,
              require_heldout: bool = True) -> tuple["ICTBlocks", "ICTBlocks | None"]:
        """(training part, held-out part) from one read of `path`; the held-out part is None when
        no block is held out, which is an error only with `require_heldout`."""
        table = _read_ict_columns(Path(path))
        held = held_out_mask(table.column("block_id").to_numpy(), heldout_fraction)
        train = cls(path, "train", heldout_fraction, table=table)
        if not held.any() and not require_heldout:
            return train, None
        return train, cls(path, "heldout", heldout_fraction, table=table)

    def __len__(self) -> int:
        return self.table.num_rows

    def rows(self, indices: np.ndarray) -> tuple[list[str], list[str], list[list[int]]]:
        """(titles, texts, sentence_starts) of the given row numbers."""
        part = self.table.take(indices)
        return (part.column("title").to_pylist(), part.column("text").to_pylist(),
                part.column("sentence_starts").to_pylist())


def _read_ict_columns(path: Path) -> pa.Table:
    if not path.is_file():
        raise RealmError(f"{path}: blocks file not found")
    try:
        table = pq.read_table(path, columns=_COLUMNS)
    except Exception as exc:  # pyarrow raises several types for bad files and missing columns
        raise RealmError(f"{path}: cannot read ICT columns {_COLUMNS} ({exc})") from None
    if table.num_rows == 0:
        raise RealmError(f"{path}: no blocks")
    return table


@dataclass
class ICTBatch:
    """Model inputs for one step, plus which examples had their sentence removed."""

    queries: dict[str, torch.Tensor]
    documents: dict[str, torch.Tensor]
    masked: torch.Tensor  # bool [batch]
    rows: np.ndarray  # block row numbers, for inspection


def split_example(text: str, starts: list[int], sentence: int, remove: bool) -> tuple[str, str]:
    """(pseudo-query sentence, block body): the body without the sentence if `remove`."""
    begin = starts[sentence]
    end = starts[sentence + 1] if sentence + 1 < len(starts) else len(text)
    query = text[begin:end].strip()
    if not remove:
        return query, text
    return query, " ".join(part for part in (text[:begin].strip(), text[end:].strip()) if part)


class ICTStream:
    """Endless, seeded stream of ICT batches (a `BatchStream`; position = (epoch, offset))."""

    def __init__(self, blocks: ICTBlocks, inputs: InputBuilder, *, batch_size: int, seed: int,
                 mask_rate: float = 0.9, max_query_len: int = 64, max_doc_len: int = 288,
                 rank: int = 0, world_size: int = 1) -> None:
        """`batch_size` is the in-batch set over all ranks; this rank builds its 1/world_size."""
        if batch_size < 2:
            raise RealmError(f"ICT: batch_size must be >= 2 (in-batch negatives), got {batch_size}")
        if batch_size % world_size:
            raise RealmError(f"ICT: in-batch size {batch_size} is not divisible by {world_size} processes")
        self.rank, self.world_size = rank, world_size
        if not 0.0 <= mask_rate <= 1.0:
            raise RealmError(f"ICT: mask_rate must be in [0, 1], got {mask_rate}")
        self.blocks, self.inputs = blocks, inputs
        self.batch_size, self.seed, self.mask_rate = batch_size, seed, mask_rate
        self.max_query_len, self.max_doc_len = max_query_len, max_doc_len
        self.epoch, self.offset = 0, 0
        self._plan_epoch: int | None = None

    def _plan(self, epoch: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(rows, sentence index, remove?) of every usable example of `epoch`, in order."""
        if self._plan_epoch != epoch:
            rng = np.random.default_rng([self.seed, epoch])
            n = len(self.blocks)
            rows = rng.permutation(n)
            n_sent = self.blocks.n_sentences[rows]
            sentence = np.minimum((rng.random(n) * n_sent).astype(np.int64), np.maximum(n_sent - 1, 0))
            remove = rng.random(n) < self.mask_rate
            usable = (n_sent >= 1) & ~(remove & (n_sent < 2))
            self._cache = rows[usable], sentence[usable], remove[usable]
            self._plan_epoch = epoch
            if len(self._cache[0]) < self.batch_size:
                raise RealmError(f"{self.blocks.path}: only {len(self._cache[0])} usable ICT examples in an "
                                 f"epoch, fewer than batch_size {self.batch_size}")
        return self._cache

    def __iter__(self) -> "ICTStream":
        return self

    def __next__(self) -> ICTBatch:
        """The next batch of `batch_size` distinct blocks."""
        rows, sentence, remove = self._plan(self.epoch)
        if self.offset + self.batch_size > len(rows):  # drop the epoch's ragged tail
            self.epoch, self.offset = self.epoch + 1, 0
            rows, sentence, remove = self._plan(self.epoch)
        share = self.batch_size // self.world_size
        sl = slice(self.offset + self.rank * share, self.offset + (self.rank + 1) * share)
        self.offset += self.batch_size
        return self.make_batch(rows[sl], sentence[sl], remove[sl])

    def make_batch(self, rows: np.ndarray, sentence: np.ndarray, remove: np.ndarray) -> ICTBatch:
        """Build a batch from explicit (row, sentence, remove) choices."""
        titles, texts, starts = self.blocks.rows(rows)
        queries, bodies = [], []
        for text, st, j, rm in zip(texts, starts, sentence, remove):
            q, body = split_example(text, st, int(j), bool(rm))
            queries.append(q)
            bodies.append(body)
        return ICTBatch(self.inputs.queries(queries, self.max_query_len),
                        self.inputs.documents(titles, bodies, self.max_doc_len),
                        torch.as_tensor(np.asarray(remove, dtype=bool)), np.asarray(rows))

    def state_dict(self) -> dict[str, Any]:
        """The position of the next batch (JSON)."""
        return {"epoch": self.epoch, "offset": self.offset}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a position saved by `state_dict`."""
        self.epoch, self.offset = int(state["epoch"]), int(state["offset"])


def ict_loss(q: torch.Tensor, d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """In-batch softmax loss: logits = q·dᵀ, target = the diagonal. Returns (loss, logits)."""
    logits = q @ d.transpose(0, 1)
    return F.cross_entropy(logits, torch.arange(len(q), device=logits.device)), logits


def ict_objective(model: torch.nn.Module, batch: ICTBatch, gather: bool = True) -> tuple[torch.Tensor, dict[str, Any]]:
    """The loop's objective: loss plus accuracy on masked / unmasked examples.

    `model` is the embedder or DDP around it; with `gather` (training under torchrun) the
    documents of every rank are the negatives. Evaluation on one rank passes gather=False."""
    device = next(model.parameters()).device
    q, d = model(queries={k: v.to(device) for k, v in batch.queries.items()},
                 documents={k: v.to(device) for k, v in batch.documents.items()})
    rank = distributed.info() if gather else distributed.DistInfo()
    if rank.distributed:
        d = distributed.gather_with_grad(d)
    # Scores and the softmax in float32 even under autocast: the logits are unscaled dot products.
    with torch.autocast(device.type, enabled=False):
        logits = q.float() @ d.float().transpose(0, 1)
        target = torch.arange(len(q), device=device) + rank.rank * len(q)
        loss = F.cross_entropy(logits, target)
    with torch.no_grad():
        correct = (logits.argmax(dim=1) == target).float().cpu()
        masked = batch.masked
        metrics = {
            "accuracy": correct.mean().item(),
            "masked_accuracy": correct[masked].mean().item() if masked.any() else None,
            "unmasked_accuracy": correct[~masked].mean().item() if (~masked).any() else None,
        }
    return loss, metrics


def evaluate_ict(model: RetrieverEmbedder, blocks: ICTBlocks | str | Path, *, batch_size: int, batches: int,
                 seed: int = 12345, mask_rate: float = 0.9) -> dict[str, float]:
    """ICT accuracy in eval mode (no dropout) over `batches` fresh batches drawn with `seed`."""
    if not isinstance(blocks, ICTBlocks):
        blocks = ICTBlocks(blocks)
    stream = ICTStream(blocks, model.inputs, batch_size=batch_size, seed=seed, mask_rate=mask_rate,
                       max_query_len=model.max_query_len, max_doc_len=model.max_doc_len)
    was_training = model.training
    model.eval()
    sums = {"loss": 0.0, "correct": 0.0, "n": 0, "masked_correct": 0.0, "masked_n": 0}
    try:
        with torch.inference_mode():
            for _ in range(batches):
                batch = next(stream)
                loss, metrics = ict_objective(model, batch, gather=False)
                m = int(batch.masked.sum())
                sums["loss"] += loss.item()
                sums["correct"] += metrics["accuracy"] * batch_size
                sums["n"] += batch_size
                if m:
                    sums["masked_correct"] += metrics["masked_accuracy"] * m
                    sums["masked_n"] += m
    finally:
        model.train(was_training)
    return {
        "loss": sums["loss"] / max(1, batches),
        "accuracy": sums["correct"] / max(1, sums["n"]),
        "masked_accuracy": sums["masked_correct"] / sums["masked_n"] if sums["masked_n"] else math.nan,
        "chance": 1.0 / batch_size,
        "batch_size": batch_size,
        "examples": sums["n"],
    }


def train_ict(blocks_path: str | Path | ICTBlocks, out_dir: str | Path, *, steps: int, batch_size: int, lr: float,
              grad_accum: int = 1, precision: str = "fp32",
              init: str = SCRATCH, scratch_config: dict[str, Any] | None = None, num_layers: int | None = None,
              proj_size: int = 128, untied: bool = False, tokenizer: str = DEFAULT_TOKENIZER,
              warmup_steps: int | None = None, seed: int = 0, mask_rate: float = 0.9, max_query_len: int = 64,
              max_doc_len: int = 288, dropout: float = 0.1, checkpoint_dir: str | Path | None = None,
              checkpoint_every: int = 100, keep_checkpoints: int = 2, resume: str = "auto",
              time_budget_s: float | None = None, log_every: int = 10, metrics_path: str | Path | None = None,
              on_log: Callable[[dict[str, Any]], None] | None = None, device: str | None = None,
              export_partial: bool = False) -> LoopResult:
    """Pre-train a retriever embedder with ICT on `blocks_path`; the result goes to `out_dir`.

    `batch_size` is the global number of examples per optimizer step: `grad_accum` micro-steps,
    each an in-batch set of batch_size / grad_accum examples spread over the torchrun processes
    (a process group must already be joined, see `distributed.init_from_env`). `precision` is a
    resolved precision ("fp32", "bf16", "fp16"); `device` "auto"/None picks CUDA when present.

    The embedder comes from `RetrieverEmbedder.from_init(init, ...)` (seeded by `seed`), trains
    for `steps` steps of `batch_size` in-batch examples with the shared loop (checkpoints in
    `checkpoint_dir` every `checkpoint_every` steps, `resume` "auto"/"never", a wall-clock
    `time_budget_s`), and is written with `save_pretrained(out_dir)` when training completes
    (also when stopped early if `export_partial`). Returns the loop's result.
    """
    blocks = blocks_path if isinstance(blocks_path, ICTBlocks) else ICTBlocks(blocks_path)
    device = devices.resolve_device(device)
    rank = distributed.info()
    if batch_size % grad_accum or (batch_size // grad_accum) % rank.world_size or batch_size // grad_accum < 2:
        raise RealmError(f"ICT: batch_size {batch_size} must split into grad_accum {grad_accum} in-batch sets of "
                         f">= 2 examples, each divisible by {rank.world_size} process(es)")
    in_batch = batch_size // grad_accum
    model = RetrieverEmbedder.from_init(init, proj_size=proj_size, num_layers=num_layers, untied=untied,
                                        scratch_config=scratch_config, max_query_len=max_query_len,
                                        max_doc_len=max_doc_len, dropout=dropout, tokenizer=tokenizer,
                                        seed=seed, device=device)
    stream = ICTStream(blocks, model.inputs, batch_size=in_batch, seed=seed, mask_rate=mask_rate,
                       max_query_len=max_query_len, max_doc_len=max_doc_len, rank=rank.rank,
                       world_size=rank.world_size)
    settings = {
        "objective": "ict", "init": init, "scratch_config": scratch_config, "num_layers": num_layers,
        "proj_size": proj_size, "untied": untied, "tokenizer": tokenizer, "batch_size": batch_size,
        "mask_rate": mask_rate, "max_query_len": max_query_len, "max_doc_len": max_doc_len, "dropout": dropout,
        "blocks": {"rows": len(blocks), "block_ids_sha256": blocks.fingerprint},
    }
    if grad_accum != 1:  # a different in-batch set is a different objective
        settings["in_batch"] = in_batch
    cfg = LoopConfig(steps=steps, lr=lr, warmup_steps=warmup_steps, seed=seed, log_every=log_every,
                     grad_accum=grad_accum, precision=precision,
                     checkpoint_dir=str(checkpoint_dir) if checkpoint_dir is not None else None,
                     checkpoint_every=checkpoint_every, keep_checkpoints=keep_checkpoints, resume=resume,
                     time_budget_s=time_budget_s, metrics_path=str(metrics_path) if metrics_path else None,
                     export_partial=export_partial)
    return train(model, ict_objective, stream, cfg, settings=settings, on_log=on_log,
                 export=lambda m: m.save_pretrained(out_dir))
