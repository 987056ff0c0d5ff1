"""REALM pre-training: latent retrieval over ∅ + top-(k−1) and the marginal likelihood.

For a masked sentence x with targets y (REALM_NOTES §1.1-1.4, §2.3-2.4):
1. MIPS over the live index with the snapshot query tower that built it returns the top blocks;
   the source block is removed (trivial retrieval; `allow_trivial` keeps it), an example whose
   retrieved blocks include two with the same uid is skipped, and the null document goes first:
   k candidates in all (∅ + k−1).
2. The live towers re-embed x and all k candidates (the null document is `[CLS] [SEP] [SEP]`),
   so gradients reach the retriever: log p(z|x) = log_softmax_z(q·d_z), no temperature.
3. The knowledge-augmented encoder reads `[CLS] x [SEP] z_body [SEP]` for each z and scores the
   masks: log p(y_j|z,x).
4. Loss: the per-token marginal −(1/M) Σ_j log Σ_z p(z|x) p(y_j|z,x) (released code, default) or
   the per-example marginal −log Σ_z p(z|x) Π_j p(y_j|z,x) / M (paper).

Metrics per step: loss, masked accuracy of the marginal, retrieval utility RU = log p(y_j|x) −
log p(y_j|∅,x) per token (the code's definition), p(∅|x), the posterior p(∅|x,y), the share of
examples whose answer wordpieces occur in a retrieved candidate, and index staleness in steps.
`num_candidates: 1` is the no-retrieval ablation: the reader with ∅ only, the retriever unused.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from realm_core.errors import RealmError
from realm_core.modeling.embedder import RetrieverEmbedder
from realm_core.modeling.encoder import KnowledgeAugEncoder
from realm_core.training.realm_data import Example, ExampleSource, RealmCorpus, contains
from realm_core.training.realm_index import LiveIndex, RefreshRecord


class RealmModel(nn.Module):
    """The retriever (θ) and the knowledge-augmented encoder (φ), trained together."""

    def __init__(self, retriever: RetrieverEmbedder, encoder: KnowledgeAugEncoder) -> None:
        super().__init__()
        self.retriever, self.encoder = retriever, encoder

    def forward(self, query, documents, joint, positions, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(retrieval scores f(x,z) [B, k], MLM logits [B, k, M, vocab]).

        `documents` holds the B·(k−1) retrieved candidates followed by one null document row."""
        b = positions.size(0)
        if k > 1:
            q = self.retriever.encode_queries(**query)
            d = by_length(self.retriever.encode_documents, documents)
            cand, null = d[:-1].view(b, k - 1, -1), d[-1]
            scores = torch.cat([(q @ null).unsqueeze(1), torch.einsum("bd,bkd->bk", q, cand)], dim=1)
        else:  # ∅ only: p(∅|x) = 1, the retriever takes no part
            scores = torch.zeros(b, 1, device=positions.device)
        logits = by_length(self.encoder, joint, positions=positions.repeat_interleave(k, dim=0))
        return scores, logits.view(b, k, positions.size(1), -1)


def by_length(fn, inputs: dict[str, torch.Tensor], chunks: int = 2, **extra) -> torch.Tensor:
    """`fn(**inputs, **extra)` over rows sorted by length in `chunks` groups, each cut to its own
    longest row, then put back in order. Blocks vary from a few to 288 wordpieces (median ~160 on
    the default corpus), so one batch padded to its longest row spends a third of its work on
    padding; two groups save most of it. Row-wise models (BERT with an attention mask) give the
    same result either way. `extra` tensors are split by row with the inputs."""
    mask = inputs["attention_mask"]
    rows = mask.size(0)
    if rows < 2 * chunks:
        return fn(**inputs, **extra)
    lengths = mask.sum(1)
    order = torch.argsort(lengths)
    outs = []
    for part in torch.tensor_split(order, chunks):
        width = int(lengths[part].max())
        outs.append(fn(**{k: v[part, :width] for k, v in inputs.items()}, **{k: v[part] for k, v in extra.items()}))
    out = torch.cat(outs)
    return out[torch.argsort(order)]


def marginals(scores: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
    """The REALM quantities from scores [B, k] and logits [B, k, M, V], targets [B, M] (−100 pad).

    Returns log p(z|x) [B,k], log p(y_j|z,x) [B,k,M], the per-token log marginal [B,M], the
    per-example log marginal [B], and the mask [B,M]; float32 throughout."""
    mask = targets >= 0
    safe = targets.clamp(min=0)
    log_pz = F.log_softmax(scores.float(), dim=1)
    log_probs = F.log_softmax(logits.float(), dim=-1)
    log_py = log_probs.gather(-1, safe[:, None, :, None].expand(-1, log_probs.size(1), -1, 1)).squeeze(-1)
    log_py = log_py * mask[:, None, :]  # padding positions contribute log 1 = 0
    per_token = torch.logsumexp(log_pz[:, :, None] + log_py, dim=1)
    per_example = torch.logsumexp(log_pz + log_py.sum(-1), dim=1)
    return {"log_pz": log_pz, "log_py": log_py, "log_probs": log_probs, "per_token": per_token,
            "per_example": per_example, "mask": mask}


def realm_loss(m: dict[str, torch.Tensor], per_example: bool = False) -> torch.Tensor:
    """Negative log marginal likelihood per real mask (per token, or per example / its masks)."""
    n = m["mask"].sum().clamp(min=1)
    if per_example:
        return -m["per_example"].sum() / n
    return -(m["per_token"] * m["mask"]).sum() / n


@torch.no_grad()
def realm_metrics(m: dict[str, torch.Tensor], targets: torch.Tensor) -> dict[str, float]:
    """Masked accuracy of the marginal and of ∅ alone, RU, p(∅|x), p(∅|x,y) (batch means)."""
    mask = m["mask"]
    n = mask.sum().clamp(min=1)
    mixture = torch.logsumexp(m["log_pz"][:, :, None, None] + m["log_probs"], dim=1)  # [B,M,V]
    acc = ((mixture.argmax(-1) == targets) & mask).sum() / n
    null_acc = ((m["log_probs"][:, 0].argmax(-1) == targets) & mask).sum() / n
    ru = ((m["per_token"] - m["log_py"][:, 0]) * mask).sum() / n
    posterior = torch.softmax(m["log_pz"] + m["log_py"].sum(-1), dim=1)
    return {"accuracy": float(acc), "null_accuracy": float(null_acc), "retrieval_utility": float(ru),
            "p_null": float(m["log_pz"][:, 0].exp().mean()), "p_null_posterior": float(posterior[:, 0].mean())}


@dataclass
class RealmBatch:
    """Model inputs for one micro-step and what the metrics need."""

    query: dict[str, torch.Tensor]
    documents: dict[str, torch.Tensor]
    joint: dict[str, torch.Tensor]
    positions: torch.Tensor
    targets: torch.Tensor
    k: int
    answer_in_candidates: float  # share of examples whose answer ids occur in a retrieved body
    staleness: int  # steps between the index snapshot and now


class CandidateBuilder:
    """Examples -> candidates (MIPS over the live index) -> tensors."""

    def __init__(self, corpus: RealmCorpus, encoder: KnowledgeAugEncoder, *, k: int = 8,
                 allow_trivial: bool = False, precision: str = "fp32") -> None:
        if k < 1:
            raise RealmError(f"num_candidates must be >= 1 (1 = the null document only), got {k}")
        self.corpus, self.encoder, self.k = corpus, encoder, k
        self.allow_trivial, self.precision = allow_trivial, precision
        self.inputs = corpus.inputs
        self.skipped_duplicates = 0

    def retrieve(self, live: LiveIndex | None, examples: list[Example]) -> list[list[int] | None]:
        """Candidate rows (k−1 each) per example, or None for an example REALM skips."""
        if self.k == 1:
            return [[] for _ in examples]
        extra = 0 if self.allow_trivial else 1
        queries = self.inputs.pad([e.query.input_ids for e in examples], [len(e.query.input_ids) for e in examples])
        rows, _ = live.search(queries, self.k - 1 + extra, self.precision)
        out: list[list[int] | None] = []
        for ex, found in zip(examples, rows):
            found = [int(r) for r in found if r >= 0]
            uids = self.corpus.uids[found]
            if len(set(uids.tolist())) < len(uids):
                self.skipped_duplicates += 1
                out.append(None)
                continue
            if not self.allow_trivial:
                found = [r for r in found if self.corpus.uids[r] != self.corpus.uids[ex.row]]
            out.append(found[: self.k - 1])
        return out

    def tensors(self, examples: list[Example], candidates: list[list[int]], staleness: int = 0) -> RealmBatch:
        """Pad the retriever and reader inputs of `examples` with their `candidates`."""
        enc, corpus, k = self.encoder, self.corpus, self.k
        if any(len(c) != k - 1 for c in candidates):
            raise RealmError(f"the index returned fewer than {k - 1} candidates: corpus too small for "
                             f"num_candidates {k}")
        queries = [e.query.input_ids for e in examples]
        query = self.inputs.pad(queries, [len(q) for q in queries])
        doc_rows = [r for c in candidates for r in c]
        docs = [corpus.doc_ids[r] for r in doc_rows] + [np.asarray([self.inputs.cls_id, self.inputs.sep_id,
                                                                    self.inputs.sep_id])]
        starts = [int(corpus.doc_body_starts[r]) for r in doc_rows] + [2]
        documents = self.inputs.pad([d.tolist() for d in docs], starts)
        joint_seqs, seg = [], []
        hits = 0
        for ex, cands in zip(examples, candidates):
            for body in [None, *(corpus.body_ids[r] for r in cands)]:
                ids, s = enc.joint_ids(ex.query.input_ids, None if body is None else body.tolist())
                joint_seqs.append(ids)
                seg.append(s)
            hits += any(contains(corpus.body_ids[r], ex.targets) for r in cands)
        m = max(len(e.positions) for e in examples)
        positions = torch.zeros(len(examples), m, dtype=torch.long)
        targets = torch.full((len(examples), m), -100, dtype=torch.long)
        for i, e in enumerate(examples):
            positions[i, : len(e.positions)] = torch.as_tensor(e.positions)
            targets[i, : len(e.targets)] = torch.as_tensor(e.targets)
        return RealmBatch(query=query, documents=documents, joint=enc.pad(joint_seqs, seg), positions=positions,
                          targets=targets, k=k, answer_in_candidates=hits / len(examples), staleness=staleness)

    def batch(self, live: LiveIndex | None, examples: list[Example], staleness: int = 0) -> tuple[RealmBatch, list[Example]]:
        """The batch of the examples REALM keeps, and the ones it keeps."""
        cands = self.retrieve(live, examples)
        kept = [(e, c) for e, c in zip(examples, cands) if c is not None]
        if not kept:
            raise RealmError("every example of a batch retrieved duplicate blocks; deduplicate the corpus")
        return self.tensors([e for e, _ in kept], [c for _, c in kept], staleness), [e for e, _ in kept]


class RealmStream:
    """Endless, resumable REALM batches; holds the live index (a checkpoint names its version)."""

    def __init__(self, source: ExampleSource, builder: CandidateBuilder, *, batch_size: int,
                 versions=None, template: RetrieverEmbedder | None = None) -> None:
        self.source, self.builder, self.batch_size = source, builder, batch_size
        self.versions, self.template = versions, template
        self.live: LiveIndex | None = None
        self.step = 0  # optimizer steps taken (set by the trainer), for staleness
        self.refreshes: list[RefreshRecord] = []
        self.max_staleness = 0

    def next_version(self) -> int:
        """The number the next index version gets."""
        return (self.live.version + 1) if self.live is not None else 0

    def install(self, live: LiveIndex, record: RefreshRecord | None = None) -> None:
        """Retrieve from `live` from now on."""
        self.live = live
        if record is not None:
            self.refreshes.append(record)

    def __iter__(self) -> "RealmStream":
        return self

    def __next__(self) -> RealmBatch:
        staleness = self.step - self.live.step if self.live is not None else 0
        self.max_staleness = max(self.max_staleness, staleness)
        examples: list[Example] = []
        candidates: list[list[int]] = []
        for _ in range(100):  # refill what REALM skips (duplicate blocks among the retrieved)
            fresh = [self.source.next() for _ in range(self.batch_size - len(examples))]
            for ex, cands in zip(fresh, self.builder.retrieve(self.live, fresh)):
                if cands is not None:
                    examples.append(ex)
                    candidates.append(cands)
            if len(examples) >= self.batch_size:
                break
        if not examples:
            raise RealmError("every example retrieved duplicate blocks; deduplicate the corpus")
        return self.builder.tensors(examples, candidates, staleness)

    def state_dict(self) -> dict[str, Any]:
        """Example position, live index version and the refresh history (JSON)."""
        return {"examples": self.source.state_dict(),
                "index": None if self.live is None else {"version": self.live.version, "step": self.live.step},
                "refreshes": [r.to_json() for r in self.refreshes], "max_staleness": self.max_staleness,
                "skipped_duplicates": self.builder.skipped_duplicates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a checkpoint: the same next example, the index version it had."""
        self.source.load_state_dict(state["examples"])
        if state.get("index") is not None and self.versions is not None:
            self.live = self.versions.load(int(state["index"]["version"]), self.template)
        self.refreshes = [RefreshRecord(r["version"], r["snapshot_step"], r["installed_step"], r["seconds"])
                          for r in state.get("refreshes", [])]
        self.max_staleness = int(state.get("max_staleness", 0))
        self.builder.skipped_duplicates = int(state.get("skipped_duplicates", 0))


def realm_objective(per_example: bool = False):
    """The loop's objective `(model, batch) -> (loss, metrics)` (model: RealmModel or DDP of it)."""

    def objective(model: nn.Module, batch: RealmBatch) -> tuple[torch.Tensor, dict[str, Any]]:
        device = next(model.parameters()).device
        move = lambda d: {k: v.to(device) for k, v in d.items()}  # noqa: E731
        scores, logits = model(move(batch.query), move(batch.documents), move(batch.joint),
                               batch.positions.to(device), batch.k)
        targets = batch.targets.to(device)
        m = marginals(scores, logits, targets)
        loss = realm_loss(m, per_example)
        metrics = realm_metrics(m, targets)
        metrics.update(answer_in_candidates=batch.answer_in_candidates, staleness=float(batch.staleness))
        return loss, metrics

    return objective


@torch.no_grad()
def evaluate_realm(model: RealmModel, builder: CandidateBuilder, live: LiveIndex | None, examples: list[Example],
                   *, batch_size: int = 8, precision: str = "fp32") -> dict[str, float]:
    """Held-out figures over a fixed example list, dropout off: masked accuracy of the marginal
    and of ∅ alone, RU, p(∅|x), answer-in-candidates; examples REALM skips are not scored."""
    from realm_core.devices import autocast

    was = model.training
    model.eval()
    device = next(model.parameters()).device
    sums: dict[str, float] = {}
    n_masks = n_ex = 0
    try:
        for lo in range(0, len(examples), batch_size):
            batch, kept = builder.batch(live, examples[lo: lo + batch_size])
            move = lambda d: {k: v.to(device) for k, v in d.items()}  # noqa: E731
            with autocast(device, precision):
                scores, logits = model(move(batch.query), move(batch.documents), move(batch.joint),
                                       batch.positions.to(device), batch.k)
            targets = batch.targets.to(device)
            m = marginals(scores, logits, targets)
            metrics = realm_metrics(m, targets)
            masks = int(m["mask"].sum())
            for key in ("accuracy", "null_accuracy", "retrieval_utility"):
                sums[key] = sums.get(key, 0.0) + metrics[key] * masks
            for key in ("p_null", "p_null_posterior"):
                sums[key] = sums.get(key, 0.0) + metrics[key] * len(kept)
            sums["answer_in_candidates"] = sums.get("answer_in_candidates", 0.0) + batch.answer_in_candidates * len(kept)
            sums["nll"] = sums.get("nll", 0.0) + float(realm_loss(m)) * masks
            n_masks += masks
            n_ex += len(kept)
    finally:
        model.train(was)
    out = {k: v / max(1, n_masks) for k, v in sums.items() if k in ("accuracy", "null_accuracy", "retrieval_utility", "nll")}
    out.update({k: v / max(1, n_ex) for k, v in sums.items() if k in ("p_null", "p_null_posterior", "answer_in_candidates")})
    out.update(examples=n_ex, masks=n_masks)
    return {k: round(float(v), 4) for k, v in out.items()}


@torch.no_grad()
def baseline_accuracy(encoder: KnowledgeAugEncoder, examples: list[Example], *, batch_size: int = 32,
                      precision: str = "fp32") -> dict[str, float]:
    """A no-retrieval BERT on the same examples: `[CLS] masked_x [SEP]` alone."""
    from realm_core.devices import autocast

    was = encoder.training
    encoder.eval()
    device = encoder.device
    correct = total = 0
    nll = 0.0
    try:
        for lo in range(0, len(examples), batch_size):
            chunk = examples[lo: lo + batch_size]
            seqs = [e.query.input_ids for e in chunk]
            inputs = {k: v.to(device) for k, v in encoder.pad(seqs, [len(s) for s in seqs]).items()}
            m = max(len(e.positions) for e in chunk)
            pos = torch.zeros(len(chunk), m, dtype=torch.long)
            tgt = torch.full((len(chunk), m), -100, dtype=torch.long)
            for i, e in enumerate(chunk):
                pos[i, : len(e.positions)] = torch.as_tensor(e.positions)
                tgt[i, : len(e.targets)] = torch.as_tensor(e.targets)
            with autocast(device, precision):
                logits = encoder(**inputs, positions=pos.to(device))
            tgt = tgt.to(device)
            mask = tgt >= 0
            correct += int(((logits.argmax(-1) == tgt) & mask).sum())
            total += int(mask.sum())
            nll += float(F.cross_entropy(logits.float().flatten(0, 1), tgt.flatten(), ignore_index=-100,
                                         reduction="sum"))
    finally:
        encoder.train(was)
    return {"accuracy": round(correct / max(1, total), 4), "nll": round(nll / max(1, total), 4), "masks": total}


def seeded(seed: int) -> random.Random:
    """A `random.Random` for reproducible draws outside the stream."""
    return random.Random(seed)
