"""Open-QA fine-tuning and prediction: ORQA's model, which REALM reuses (REALM_NOTES §1.5, §3).

Per question:
- the query tower embeds the question; MIPS over the **frozen** block embeddings (the index
  `build_index` published for the pre-trained retriever; never rebuilt) gives the top
  `retriever_beam` blocks; their logits f(q, b) = q · e_b carry gradients into the query tower;
- **retriever loss** ("early update"): the marginal NLL of the beam's answer-bearing blocks;
- the reader reads the top `reader_beam` (5) blocks; each span logit gets its block's f(q, b)
  added, and one softmax runs over every (block, span) pair; **reader loss**: the marginal NLL of
  the gold spans (every occurrence of every answer in those blocks);
- each loss is 0 for a question without a positive; the step's loss is their mean over questions.

Unlike ORQA (one question per step) a step holds `batch_size` questions. `retriever: bm25` is the
lexical reference of Table 1 (Lee et al.'s BERT baseline): BM25 picks the blocks, there is no
retriever loss, and no retrieval score is added to the span logits.

Nothing is tokenised in the loop: block wordpieces come from the memory-mapped `WordpieceCorpus`,
answers are matched on those ids (`realm_core.qa.gold`), and questions are tokenised once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from realm_core.qa.wordpieces import WordpieceCorpus
from realm_core.errors import RealmError
from realm_core.modeling.embedder import RetrieverEmbedder
from realm_core.modeling.reader import MASK_VALUE, SpanReader
from realm_core.qa.datasets import QAExample
from realm_core.qa.gold import Gold, GoldFinder
from realm_core.retrieval import embed, index

NEG = -1e4  # logit of a missing beam slot (fewer blocks than the beam)


@dataclass
class QAItem:
    """A question ready for the model: retriever ids, reader question wordpieces, its gold."""

    example: QAExample
    query: list[int]
    question: list[int]
    gold: Gold


def prepare(examples: Sequence[QAExample], reader: SpanReader, finder: GoldFinder, *,
            query_len: int = 64) -> list[QAItem]:
    """Tokenise every question once and attach its gold finder."""
    questions = [ex.question for ex in examples]
    queries = reader.inputs.query_ids(questions, query_len)
    return [QAItem(ex, q, r, g) for ex, q, r, g in zip(examples, queries, reader.question_ids(questions),
                                                         finder.find_all(examples))]


class FrozenBlocks:
    """The frozen document side: a published FAISS index and its vectors, in corpus row order."""

    def __init__(self, index_root: str | Path, corpus: WordpieceCorpus, *, retriever: str | Path | None = None) -> None:
        index_root = Path(index_root)
        self.dense = index.load_current(index_root)
        source = self.dense.meta.get("embeddings") or {}
        if source.get("corpus_hash") != corpus.meta.get("corpus_hash"):
            raise RealmError(f"{index_root}: index built over another corpus than {corpus.path} was tokenized "
                             "from; rebuild one of them (dvc repro)")
        self.encoder_hash = source.get("encoder_hash")
        if retriever is not None and self.encoder_hash != embed.encoder_hash(retriever):
            raise RealmError(f"{index_root}: index/retriever mismatch: not built with {retriever} "
                             "(dvc repro build_index)")
        emb_dir = index_root / "embeddings"
        manifest = embed.read_manifest(emb_dir)
        ids = embed.load_ids(emb_dir, manifest)
        vectors = np.concatenate([v for _, v in embed.iter_embeddings(emb_dir)]).astype(np.float32)
        where = {int(b): i for i, b in enumerate(ids)}
        try:
            self.vectors = vectors[[where[int(b)] for b in corpus.block_ids]]
        except KeyError:
            raise RealmError(f"{emb_dir}: embeddings miss blocks of {corpus.path}; rebuild the index") from None
        self.row_of, self.root = corpus.row_of, index_root
        self.version = index.current_version(index_root)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(corpus rows [n, k] (-1 = none), scores [n, k]) of the top k blocks per query."""
        ids, scores = self.dense.search(queries, k)
        rows = np.asarray([[self.row_of.get(int(b), -1) if b >= 0 else -1 for b in r] for r in ids], dtype=np.int64)
        return rows, scores


class BM25Blocks:
    """BM25 over the same blocks, as a retriever with no trainable part."""

    def __init__(self, blocks_path: str | Path, corpus: WordpieceCorpus) -> None:
        from realm_core.retrieval.bm25 import BM25Index

        self.bm25, self.row_of = BM25Index.build_from_blocks(blocks_path), corpus.row_of

    def search(self, questions: list[str], k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top k corpus rows and BM25 scores per question."""
        ids, scores = self.bm25.search(questions, k)
        rows = np.asarray([[self.row_of.get(int(b), -1) if b >= 0 else -1 for b in r] for r in ids], dtype=np.int64)
        return rows, scores


@dataclass
class QABatch:
    """The questions of one (micro-)step."""

    items: list[QAItem]


class QAStream:
    """Endless, seeded stream of question batches (a `BatchStream`; position = (epoch, offset))."""

    def __init__(self, items: Sequence[QAItem], *, batch_size: int, seed: int, rank: int = 0,
                 world_size: int = 1) -> None:
        if len(items) < batch_size:
            raise RealmError(f"finetune_qa: {len(items)} training questions, fewer than batch_size {batch_size}")
        if batch_size % world_size:
            raise RealmError(f"finetune_qa: batch_size {batch_size} is not divisible by {world_size} processes")
        self.items, self.batch_size, self.seed = list(items), batch_size, seed
        self.rank, self.world_size = rank, world_size
        self.epoch, self.offset = 0, 0

    def __iter__(self) -> "QAStream":
        return self

    def __next__(self) -> QABatch:
        """The next `batch_size` questions (this rank's share under torchrun)."""
        if self.offset + self.batch_size > len(self.items):
            self.epoch, self.offset = self.epoch + 1, 0
        order = np.random.default_rng([self.seed, self.epoch]).permutation(len(self.items))
        share = self.batch_size // self.world_size
        lo = self.offset + self.rank * share
        self.offset += self.batch_size
        return QABatch([self.items[i] for i in order[lo: lo + share]])

    def state_dict(self) -> dict[str, Any]:
        """The position of the next batch (JSON)."""
        return {"epoch": self.epoch, "offset": self.offset}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a position saved by `state_dict`."""
        self.epoch, self.offset = int(state["epoch"]), int(state["offset"])


class OpenQAModel(nn.Module):
    """Query tower + span reader over frozen blocks; `forward(batch)` is the training loss."""

    def __init__(self, retriever: RetrieverEmbedder | None, reader: SpanReader, corpus: WordpieceCorpus,
                 texts: Sequence[str], blocks: FrozenBlocks | BM25Blocks, *, retriever_beam: int = 5000,
                 reader_beam: int = 5) -> None:
        super().__init__()
        if retriever is None and not isinstance(blocks, BM25Blocks):
            raise RealmError("finetune_qa: a dense index needs a retriever")
        self.retriever, self.reader = retriever, reader
        self.corpus, self.texts, self.blocks = corpus, texts, blocks
        self.retriever_beam = max(retriever_beam, reader_beam)
        self.reader_beam = reader_beam

    @property
    def device(self) -> torch.device:
        """Where the parameters live."""
        return next(self.parameters()).device

    # ------------------------------------------------------------------ retrieval

    def embed(self, items: Sequence[QAItem]) -> torch.Tensor | None:
        """Query embeddings [B, d] (with gradients when training); None for BM25."""
        if self.retriever is None:
            return None
        batch = self.reader.inputs.pad([it.query for it in items], [len(it.query) for it in items])
        batch = {k: v.to(self.device) for k, v in batch.items()}
        return self.retriever.encode_queries(**batch).float()

    def retrieve(self, items: Sequence[QAItem], q: torch.Tensor | None, k: int) -> tuple[np.ndarray, torch.Tensor]:
        """Top-k corpus rows [B, k] and their logits [B, k] (differentiable in q; BM25: scores, constant)."""
        if q is None:
            rows, scores = self.blocks.search([it.example.question for it in items], k)
            logits = torch.as_tensor(np.where(rows >= 0, scores, NEG), dtype=torch.float32, device=self.device)
            return rows, logits
        rows, _ = self.blocks.search(q.detach().cpu().numpy(), k)
        vectors = torch.from_numpy(self.blocks.vectors[np.maximum(rows, 0)]).to(q.device)
        logits = torch.einsum("bd,bkd->bk", q, vectors)
        return rows, logits.masked_fill(torch.from_numpy(rows < 0).to(q.device), NEG)

    # ------------------------------------------------------------------ reading

    def read(self, items: Sequence[QAItem], rows: np.ndarray, block_logits: torch.Tensor
             ) -> tuple[torch.Tensor, list[tuple[list[int], int, int]]]:
        """Reader logits [B, k, L, W] over the first k = rows.shape[1] blocks (span score + block
        logit, except for BM25), and the reader inputs (ids, first, last block position) per pair."""
        pairs = []
        for it, row in zip(items, rows):
            for r in row:
                pairs.append(self.reader.pair(it.question, self.corpus.body(int(r)) if r >= 0 else []))
        spans = self._read_by_length(pairs)
        spans = spans.view(len(items), rows.shape[1], *spans.shape[1:])
        if self.retriever is not None:
            spans = spans + block_logits[:, :, None, None]
        return spans, pairs

    def _read_by_length(self, pairs, rows_per_chunk: int = 8) -> torch.Tensor:
        """Span logits [n, L, W] with the pairs run in length-sorted chunks, each padded only to its
        own longest row: blocks range from a few to 288 wordpieces, and one batch padded to its
        longest row spends much of its work on padding. Rows are independent, so the result is
        the same as one batch (padding positions hold MASK_VALUE)."""
        n = len(pairs)
        order = np.argsort([len(p[0]) for p in pairs], kind="stable")
        width = max(len(p[0]) for p in pairs)
        outs = []
        for part in np.array_split(order, max(1, -(-n // rows_per_chunk))):
            out = self.reader(**self.reader.batch([pairs[i] for i in part]))
            outs.append(nn.functional.pad(out, (0, 0, 0, width - out.shape[1]), value=MASK_VALUE))
        inverse = torch.from_numpy(np.argsort(order)).to(outs[0].device)
        return torch.cat(outs)[inverse]

    def gold_mask(self, items: Sequence[QAItem], rows: np.ndarray, pairs, shape) -> torch.Tensor:
        """[B, k, L, W] True at the gold spans of each question inside the blocks it reads."""
        mask = torch.zeros(shape, dtype=torch.bool)
        k = rows.shape[1]
        for b, (it, row) in enumerate(zip(items, rows)):
            for j, r in enumerate(row):
                if r < 0:
                    continue
                _, first, last = pairs[b * k + j]
                for s, e in it.gold.spans(int(r)):
                    if first + e <= last:
                        mask[b, j, first + s, e - s] = True
        return mask.to(self.device)

    def forward(self, batch: QABatch) -> tuple[torch.Tensor, dict[str, Any]]:
        """The loss of one step and its metrics."""
        items = batch.items
        q = self.embed(items)
        rows, logits = self.retrieve(items, q, self.retriever_beam if q is not None else self.reader_beam)
        zero = logits.new_zeros(())
        metrics: dict[str, Any] = {}
        if q is not None:
            positive = torch.from_numpy(np.stack([it.gold.has_answer(r) & (r >= 0) for it, r in zip(items, rows)]))
            positive = positive.to(logits.device)
            retr = _marginal_nll(logits, positive)
            metrics["retriever_loss"] = float(retr.detach().mean())
            metrics["answer_in_beam"] = float(positive.any(-1).float().mean())
        else:
            retr = zero.expand(len(items))
        top = rows[:, : self.reader_beam]
        spans, pairs = self.read(items, top, logits[:, : self.reader_beam])
        gold = self.gold_mask(items, top, pairs, spans.shape)
        flat, flat_gold = spans.flatten(1), gold.flatten(1)
        reader = _marginal_nll(flat, flat_gold)
        loss = (retr + reader).mean()
        best = flat.argmax(-1)
        metrics.update(loss=float(loss.detach()), reader_loss=float(reader.detach().mean()),
                       reader_oracle=float(flat_gold.any(-1).float().mean()),
                       span_accuracy=float(flat_gold.gather(1, best[:, None]).float().mean()))
        return loss, metrics

    # ------------------------------------------------------------------ prediction

    @torch.no_grad()
    def predict(self, items: Sequence[QAItem], *, k: int = 100, batch_size: int = 8,
                precision: str = "fp32") -> list[dict[str, Any]]:
        """For each question: the top-k retrieved rows and logits, and the reader's answer over the
        top `reader_beam` (argmax over every (block, span)), mapped back to the block's text."""
        from realm_core.devices import autocast

        was_training = self.training
        self.eval()
        out: list[dict[str, Any]] = []
        try:
            for lo in range(0, len(items), batch_size):
                chunk = items[lo: lo + batch_size]
                with autocast(self.device, precision):
                    q = self.embed(chunk)
                    rows, logits = self.retrieve(chunk, q, max(k, self.reader_beam))
                    top = rows[:, : self.reader_beam]
                    spans, pairs = self.read(chunk, top, logits[:, : self.reader_beam])
                spans = spans.float()
                for b, it in enumerate(chunk):
                    out.append(self._answer(it, rows[b], logits[b].float(), spans[b], pairs, b))
        finally:
            self.train(was_training)
        return out

    def _answer(self, it: QAItem, rows: np.ndarray, logits: torch.Tensor, spans: torch.Tensor, pairs, b: int
                ) -> dict[str, Any]:
        k5 = self.reader_beam
        flat = spans.flatten()
        best = int(flat.argmax())
        length, width = spans.shape[1], spans.shape[2]
        j, pos, w = best // (length * width), (best // width) % length, best % width
        _, first, _ = pairs[b * k5 + j]
        row = int(rows[j])
        text, score = "", float(flat[best])
        if row >= 0 and score > MASK_VALUE / 2:
            offsets = self.corpus.body_offsets(row)
            s, e = pos - first, pos - first + w
            text = self.texts[row][int(offsets[s, 0]): int(offsets[e, 1])]
        top = logits[:k5]
        p_z = torch.softmax(top, dim=0).tolist()
        gold = [bool(len(it.gold.spans(int(r)))) for r in rows[:k5] if r >= 0]
        return {"rows": [int(r) for r in rows], "scores": [float(s) for s in logits], "p_z": p_z,
                "prediction": text, "score": score, "block": j, "reader_oracle": any(gold)}


def _marginal_nll(logits: torch.Tensor, positive: torch.Tensor) -> torch.Tensor:
    """Per row: logsumexp(all) − logsumexp(positives); 0 where a row has no positive."""
    has = positive.any(-1)
    pos = logits.masked_fill(~positive, -math.inf).logsumexp(-1)
    nll = logits.logsumexp(-1) - pos
    return torch.where(has, nll, torch.zeros_like(nll))
