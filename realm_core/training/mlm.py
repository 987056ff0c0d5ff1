"""BERT's masked LM over the corpus blocks: "our BERT" (REALM_NOTES §7.2 step 0).

The trained `KnowledgeAugEncoder` is REALM's no-retrieval baseline and the init of its
knowledge-augmented encoder (the reader), as BERT is in the paper.

Examples are BERT segment pairs built from one block: a sentence of the block (chosen uniformly,
`sentence_starts`) is segment A and the rest of the block is segment B,
`[CLS] A [SEP] B [SEP]` with segment ids 0 up to the first [SEP] and 1 after it. That is the shape
of REALM's reader input `[CLS] x [SEP] z_body [SEP]` (§1.3), so the encoder learns to use a second
segment that holds context for the first. Lengths: of `max_len - 3` wordpieces, A keeps at most
half (more when B is short) and B gets the rest. A block with one sentence gives
`[CLS] A [SEP] [SEP]`, the shape of REALM's null document. With `random_context_prob` p > 0, B is
instead, for a share p of the examples, the whole text of another training block, as BERT's
segment B is a random one half of the time. The option exists because REALM's reader reads
retrieved blocks that lack the answer; measured at p = 0.5, it did not lower what reading them
costs (docs/results.md, "A random segment B"), so the default is 0. The draw comes from the
example's own generator before its masks; with p = 0 nothing is drawn and the stream is the same
as without it.

Masking is BERT's (`create_pretraining_data.py`): round(mask_prob · n) of the n non-special
wordpieces (at least one) are picked without replacement; 80 % become [MASK], 10 % a random
non-special word, 10 % stay; all picked positions are scored. Logits are computed only there
(`positions` [B, M], padded with 0 and a -100 target), as REALM's `mlm_positions` are.

Held-out blocks (`heldout.py`, the same ~5 % by block id as every stage) are never trained on:
`ICTBlocks.split` gives the two parts, training draws from "train" only and the before/after
accuracy is scored on "heldout".

Data order is reproducible and resumable as in `ict.py`: epoch e shuffles the blocks and draws
each block's sentence with a generator seeded by (seed, e); example i of the epoch masks with a
generator seeded by (seed, e, i). The stream is a pure function of (seed, position), its position
(epoch, offset) is all a checkpoint needs, and under torchrun rank r builds rows r·b/W … (r+1)·b/W
of the same global draw, so N processes train on exactly the examples one process would.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from realm_core.errors import RealmError
from realm_core.modeling.encoder import KnowledgeAugEncoder
from realm_core.modeling.inputs import InputBuilder
from realm_core.training import distributed
from realm_core.training.ict import ICTBlocks, split_example
from realm_core.training.loop import LoopConfig, LoopResult, train

IGNORE = -100  # target of a padding position (F.cross_entropy's ignore_index)


@dataclass
class MLMBatch:
    """Model inputs for one step and what is scored: `targets[i, j]` is the original wordpiece at
    `positions[i, j]`, or IGNORE where row i has fewer than M masks."""

    inputs: dict[str, torch.Tensor]  # input_ids (masked), attention_mask, token_type_ids [B, L]
    positions: torch.Tensor  # long [B, M]
    targets: torch.Tensor  # long [B, M]
    rows: np.ndarray  # block row numbers, for inspection

    @property
    def n_masked(self) -> int:
        """Scored positions in the batch."""
        return int((self.targets != IGNORE).sum())


def pair_ids(a: list[int], b: list[int], max_len: int, cls_id: int, sep_id: int) -> tuple[list[int], int]:
    """`[CLS] a [SEP] b [SEP]` within `max_len`: a keeps at most half of the `max_len - 3`
    wordpieces (more when b leaves room) and b gets the rest. Returns the ids and where segment 1
    starts (just after the first [SEP])."""
    budget = max_len - 3
    a = a[: max(budget // 2, budget - len(b))]
    b = b[: budget - len(a)]
    return [cls_id, *a, sep_id, *b, sep_id], len(a) + 2


class MLMMasker:
    """BERT's masking of one example, given its generator (pure: same rng state, same result)."""

    def __init__(self, tokenizer, *, mask_prob: float = 0.15) -> None:
        if not 0.0 < mask_prob <= 1.0:
            raise RealmError(f"MLM: mask_prob must be in (0, 1], got {mask_prob}")
        self.mask_prob = mask_prob
        self.mask_id = tokenizer.mask_token_id
        if self.mask_id is None:
            raise RealmError("MLM: the tokenizer has no [MASK] token")
        self.special = np.asarray(sorted(set(tokenizer.all_special_ids)), dtype=np.int64)
        # Random replacements are real words: never [CLS]/[SEP]/[PAD]/[MASK]/[UNK].
        self.words = np.setdiff1d(np.arange(len(tokenizer), dtype=np.int64), self.special)

    def __call__(self, ids: list[int], rng: np.random.Generator) -> tuple[list[int], list[int], list[int]]:
        """(masked ids, scored positions in increasing order, their original ids)."""
        arr = np.asarray(ids, dtype=np.int64)
        candidates = np.flatnonzero(~np.isin(arr, self.special))
        if len(candidates) == 0:
            return list(ids), [], []
        n = min(len(candidates), max(1, int(round(self.mask_prob * len(candidates)))))
        picked = np.sort(rng.choice(candidates, size=n, replace=False))
        targets = arr[picked].copy()
        draw = rng.random(n)
        out = arr.copy()
        out[picked[draw < 0.8]] = self.mask_id
        swap = picked[(draw >= 0.8) & (draw < 0.9)]
        out[swap] = rng.choice(self.words, size=len(swap))
        return out.tolist(), picked.tolist(), targets.tolist()


class MLMStream:
    """Endless, seeded stream of masked-LM batches (a `BatchStream`; position = (epoch, offset))."""

    def __init__(self, blocks: ICTBlocks, tokenizer, *, batch_size: int, seed: int, max_len: int = 128,
                 mask_prob: float = 0.15, random_context_prob: float = 0.0, rank: int = 0,
                 world_size: int = 1) -> None:
        """`batch_size` counts the examples of a micro-step over all ranks; this rank builds its
        1/world_size share."""
        if batch_size < 1 or batch_size % world_size:
            raise RealmError(f"MLM: batch size {batch_size} does not split over {world_size} process(es)")
        if max_len < 5:
            raise RealmError(f"MLM: max_len must be >= 5, got {max_len}")
        if not 0.0 <= random_context_prob < 1.0:
            raise RealmError(f"MLM: random_context_prob must be in [0, 1), got {random_context_prob}")
        if random_context_prob > 0 and len(blocks) < 2:
            raise RealmError(f"{blocks.path}: a random context needs at least 2 blocks, got {len(blocks)}")
        self.random_context_prob = random_context_prob
        self.blocks, self.inputs = blocks, InputBuilder(tokenizer)
        self.masker = MLMMasker(tokenizer, mask_prob=mask_prob)
        self.batch_size, self.seed, self.max_len = batch_size, seed, max_len
        self.rank, self.world_size = rank, world_size
        self.epoch, self.offset = 0, 0
        self._plan_epoch: int | None = None

    def _plan(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """(rows, sentence index) of every usable example of `epoch`, in order."""
        if self._plan_epoch != epoch:
            rng = np.random.default_rng([self.seed, epoch])
            rows = rng.permutation(len(self.blocks))
            n_sent = self.blocks.n_sentences[rows]
            sentence = np.minimum((rng.random(len(rows)) * n_sent).astype(np.int64), np.maximum(n_sent - 1, 0))
            usable = n_sent >= 1
            self._cache = rows[usable], sentence[usable]
            self._plan_epoch = epoch
            if len(self._cache[0]) < self.batch_size:
                raise RealmError(f"{self.blocks.path}: only {len(self._cache[0])} blocks with sentences, fewer "
                                 f"than the MLM batch size {self.batch_size}")
        return self._cache

    def __iter__(self) -> "MLMStream":
        return self

    def __next__(self) -> MLMBatch:
        """The next batch (this rank's share of `batch_size` distinct blocks)."""
        rows, sentence = self._plan(self.epoch)
        if self.offset + self.batch_size > len(rows):  # drop the epoch's ragged tail
            self.epoch, self.offset = self.epoch + 1, 0
            rows, sentence = self._plan(self.epoch)
        share = self.batch_size // self.world_size
        start = self.offset + self.rank * share
        self.offset += self.batch_size
        sl = slice(start, start + share)
        rngs = [np.random.default_rng([self.seed, self.epoch, i]) for i in range(start, start + share)]
        return self.make_batch(rows[sl], sentence[sl], rngs)

    def make_batch(self, rows: np.ndarray, sentence: np.ndarray, rngs: list[np.random.Generator]) -> MLMBatch:
        """Build a batch from explicit (row, sentence) choices, one masking generator per row."""
        _, texts, starts = self.blocks.rows(rows)
        firsts, rests = [], []
        for text, st, j in zip(texts, starts, sentence):
            a, b = split_example(text, st, int(j), remove=True)
            firsts.append(a)
            rests.append(b)
        for i, text in self._random_contexts(rows, rngs).items():
            rests[i] = text
        pieces = self.inputs.wordpieces(firsts + rests)
        seqs, segments, positions, targets = [], [], [], []
        for a, b, rng in zip(pieces[: len(rows)], pieces[len(rows):], rngs):
            ids, seg = pair_ids(a, b, self.max_len, self.inputs.cls_id, self.inputs.sep_id)
            masked, pos, tgt = self.masker(ids, rng)
            seqs.append(masked)
            segments.append(seg)
            positions.append(pos)
            targets.append(tgt)
        width = max(1, max(len(p) for p in positions))
        pos_t = torch.zeros((len(rows), width), dtype=torch.long)
        tgt_t = torch.full((len(rows), width), IGNORE, dtype=torch.long)
        for i, (p, t) in enumerate(zip(positions, targets)):
            pos_t[i, : len(p)] = torch.as_tensor(p, dtype=torch.long)
            tgt_t[i, : len(t)] = torch.as_tensor(t, dtype=torch.long)
        return MLMBatch(self.inputs.pad(seqs, segments), pos_t, tgt_t, np.asarray(rows))

    def _random_contexts(self, rows: np.ndarray, rngs: list[np.random.Generator]) -> dict[int, str]:
        """{example: the text of another block} for the examples whose segment B is random."""
        if self.random_context_prob == 0:
            return {}
        picks: dict[int, int] = {}
        for i, (row, rng) in enumerate(zip(rows, rngs)):
            if rng.random() < self.random_context_prob:
                other = int(rng.integers(len(self.blocks) - 1))
                picks[i] = other + (other >= row)  # any block but the example's own
        if not picks:
            return {}
        _, texts, _ = self.blocks.rows(np.asarray(list(picks.values()), dtype=np.int64))
        return dict(zip(picks, texts))

    def state_dict(self) -> dict[str, Any]:
        """The position of the next batch (JSON)."""
        return {"epoch": self.epoch, "offset": self.offset}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a position saved by `state_dict`."""
        self.epoch, self.offset = int(state["epoch"]), int(state["offset"])


def mlm_objective(model: torch.nn.Module, batch: MLMBatch) -> tuple[torch.Tensor, dict[str, Any]]:
    """The loop's objective: mean cross-entropy over the batch's masked positions, plus accuracy.

    `model` is the encoder or DDP around it. Under torchrun each rank's loss is the mean over its
    own masks and DDP averages the ranks, a mean of means (the ranks' mask counts differ slightly)."""
    device = next(model.parameters()).device
    logits = model(**{k: v.to(device) for k, v in batch.inputs.items()}, positions=batch.positions.to(device))
    targets = batch.targets.to(device)
    # The softmax over the vocabulary in float32 even under autocast (bf16 logits lose ~3 digits).
    with torch.autocast(device.type, enabled=False):
        flat = logits.float().reshape(-1, logits.size(-1))
        loss = F.cross_entropy(flat, targets.reshape(-1), ignore_index=IGNORE)
    with torch.no_grad():
        scored = targets != IGNORE
        correct = (logits.argmax(dim=-1) == targets) & scored
        accuracy = correct.sum().float() / scored.sum().clamp(min=1)
    return loss, {"accuracy": accuracy.item()}


def evaluate_mlm(model: KnowledgeAugEncoder, blocks: ICTBlocks | str | Path, *, batch_size: int, batches: int,
                 seed: int = 12345, max_len: int = 128, mask_prob: float = 0.15) -> dict[str, float]:
    """Masked-LM accuracy and loss (both per masked wordpiece) in eval mode, no dropout, over
    `batches` batches drawn with `seed`: the same seed gives the same batches, so before and after
    training are scored on identical inputs. A held-out part smaller than `batch_size` is scored in
    batches of all its blocks (later batches are new epochs: other sentences, other masks)."""
    if not isinstance(blocks, ICTBlocks):
        blocks = ICTBlocks(blocks)
    batch_size = max(1, min(batch_size, int((blocks.n_sentences >= 1).sum())))
    stream = MLMStream(blocks, model.tokenizer, batch_size=batch_size, seed=seed, max_len=max_len,
                       mask_prob=mask_prob)
    was_training = model.training
    model.eval()
    loss_sum, correct, n = 0.0, 0.0, 0
    try:
        with torch.inference_mode():
            for _ in range(batches):
                batch = next(stream)
                loss, metrics = mlm_objective(model, batch)
                m = batch.n_masked
                loss_sum += loss.item() * m
                correct += metrics["accuracy"] * m
                n += m
    finally:
        model.train(was_training)
    return {"loss": loss_sum / max(1, n), "accuracy": correct / max(1, n), "tokens": n}


def train_mlm(model: KnowledgeAugEncoder, blocks: ICTBlocks | str | Path, out_dir: str | Path, *, steps: int,
              batch_size: int, lr: float, grad_accum: int = 1, precision: str = "fp32",
              warmup_steps: int | None = None, seed: int = 0, max_len: int = 128, mask_prob: float = 0.15,
              random_context_prob: float = 0.0, identity: dict[str, Any] | None = None, checkpoint_dir: str | Path | None = None,
              checkpoint_every: int = 100, keep_checkpoints: int = 2, resume: str = "auto",
              time_budget_s: float | None = None, log_every: int = 10, metrics_path: str | Path | None = None,
              on_log: Callable[[dict[str, Any]], None] | None = None) -> LoopResult:
    """Train `model` (a fresh `KnowledgeAugEncoder.from_init(...)`, already on its device) with
    the masked LM on `blocks`; `save_pretrained(out_dir)` when training completes.

    `batch_size` is the global number of examples per optimizer step: `grad_accum` micro-steps
    spread over the torchrun processes (a process group must already be joined, see
    `distributed.init_from_env`). `identity` (JSON: init, scratch_config, ...) says which initial
    model this is; with the data and masking settings it is stored in every checkpoint, so a
    resume with another init or data starts over ("auto") or fails ("must"). Checkpoints,
    `resume` and `time_budget_s` are the shared loop's (`loop.py`). Returns the loop's result."""
    blocks = blocks if isinstance(blocks, ICTBlocks) else ICTBlocks(blocks)
    rank = distributed.info()
    if batch_size % grad_accum or (batch_size // grad_accum) % rank.world_size:
        raise RealmError(f"MLM: batch_size {batch_size} must split into grad_accum {grad_accum} micro-batches, "
                         f"each divisible by {rank.world_size} process(es)")
    positions = model.mlm.config.max_position_embeddings
    if max_len > positions:
        raise RealmError(f"MLM: max_len {max_len} exceeds the model's {positions} positions")
    micro = batch_size // grad_accum
    stream = MLMStream(blocks, model.tokenizer, batch_size=micro, seed=seed, max_len=max_len, mask_prob=mask_prob,
                       random_context_prob=random_context_prob, rank=rank.rank, world_size=rank.world_size)
    settings = {
        "objective": "mlm", **(identity or {}), "batch_size": batch_size, "max_len": max_len,
        "mask_prob": mask_prob, "blocks": {"rows": len(blocks), "block_ids_sha256": blocks.fingerprint},
    }
    if random_context_prob:  # only when set: checkpoints of runs without it still resume
        settings["random_context_prob"] = random_context_prob
    if grad_accum != 1:
        settings["micro_batch"] = micro
    cfg = LoopConfig(steps=steps, lr=lr, warmup_steps=warmup_steps, seed=seed, log_every=log_every,
                     grad_accum=grad_accum, precision=precision,
                     checkpoint_dir=str(checkpoint_dir) if checkpoint_dir is not None else None,
                     checkpoint_every=checkpoint_every, keep_checkpoints=keep_checkpoints, resume=resume,
                     time_budget_s=time_budget_s, metrics_path=str(metrics_path) if metrics_path else None)
    # The tied decoder/word-embedding tensors are checkpointed once (checkpoint.py dedupes aliases).
    return train(model, mlm_objective, stream, cfg, settings=settings, on_log=on_log,
                 export=lambda m: m.save_pretrained(out_dir))
