"""The `evaluate_retrieval` stage: zero-shot Recall@k of BM25 and dense retrievers on a QA test set.

For one dataset (nq / wq / ct) and split, every question is run against the default corpus by
BM25 and by each configured dense retriever (query tower of its checkpoint + its published FAISS
index), and a retrieved block counts as a hit when it `has_answer` (DPR's rule: the answer's token
sequence in the block text; CuratedTREC's regex `search`ed in it). Next to the recalls the stage
reports `answer_coverage`, the share of questions whose answer occurs in *some* block: the ceiling
every retriever is bounded by on a corpus this small.

Outputs: `<metrics_dir>/<dataset>.json` shaped {"answer_coverage", "n_questions", "bm25": {...},
"<retriever>": {"recall@k": ...}} and, for inspection, `<output_dir>/<dataset>/<retriever>.json`
in DPR's retrieval format: [{"question", "answers", "ctxs": [{"id", "title", "text", "score",
"has_answer"}]}].

A dense index must have been built from this corpus with this retriever: the stage checks the
index's recorded encoder and corpus hashes against the checkpoint and blocks it is given, and
refuses a mismatch instead of reporting recalls of the wrong index. The query towers run on
`device` in `precision`, resolved once per run and recorded in the metrics next to the precision
each index was embedded in (they need not agree: queries are float32 vectors either way).
"""

from __future__ import annotations

import json
import time
import unicodedata
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pyarrow.parquet as pq

from realm_core.config import EvaluateRetrievalConfig, RetrieverSpec
from realm_core.errors import RealmError
from realm_core.io import atomic_path, write_text_atomic
from realm_core.qa.datasets import QAExample, load_qa
from realm_core.qa.metrics import answer_tokens, compile_regex, contains_tokens, passage_tokens
from realm_core.qa.retrieval_metrics import (
    covered_questions,
    fold_for_literals,
    recall_at_k,
    regex_hit,
    required_literals,
)
from realm_core.retrieval import embed, index


class Blocks:
    """block_id -> (title, text), with per-block answer-matching forms computed once."""

    def __init__(self, path: str | Path) -> None:
        path = Path(path)
        if not path.is_file():
            raise RealmError(f"evaluate_retrieval.blocks: {path}: no such file")
        try:
            table = pq.read_table(path, columns=["block_id", "title", "text"])
        except Exception as exc:  # pyarrow raises several types for bad files
            raise RealmError(f"{path}: not a blocks file ({exc})") from None
        if table.num_rows == 0:
            raise RealmError(f"{path}: empty corpus")
        self.path = path
        self.ids = table.column("block_id").to_numpy()
        self.titles = table.column("title").to_pylist()
        self.texts = table.column("text").to_pylist()
        self.row = {int(b): i for i, b in enumerate(self.ids)}
        self._tokens: dict[int, list[str]] = {}
        self._nfc: dict[int, tuple[str, str]] = {}

    def tokens(self, row: int) -> list[str]:
        if row not in self._tokens:
            self._tokens[row] = passage_tokens(self.texts[row])
        return self._tokens[row]

    def nfc(self, row: int) -> tuple[str, str]:
        if row not in self._nfc:
            text = unicodedata.normalize("NFC", self.texts[row])
            self._nfc[row] = (text, fold_for_literals(text))
        return self._nfc[row]


class AnswerMatcher:
    """`has_answer` for one question against corpus blocks, with the block side cached."""

    def __init__(self, example: QAExample) -> None:
        self.regex = example.answer_type == "regex"
        if self.regex:
            compiled = [compile_regex(a) for a in example.answers]
            self.patterns = [(c, required_literals(c.pattern)) for c in compiled if c is not None]
        else:
            self.needles = [t for t in (list(answer_tokens(a)) for a in example.answers) if t]

    def __call__(self, blocks: Blocks, row: int) -> bool:
        if self.regex:
            text, folded = blocks.nfc(row)
            return any(regex_hit(p, lit, text, folded) for p, lit in self.patterns)
        toks = blocks.tokens(row)
        return any(contains_tokens(toks, n) for n in self.needles)


def check_index(spec: RetrieverSpec, blocks_path: str | Path, corpus_hash: str) -> index.DenseIndex:
    """Load the CURRENT index of `spec` after checking it was built with `spec.model` over these blocks."""
    loaded = index.load_current(spec.index)
    source = loaded.meta.get("embeddings") or {}
    wanted = embed.encoder_hash(spec.model)
    if source.get("encoder_hash") != wanted:
        raise RealmError(f"{spec.index}: index/retriever mismatch: built with encoder {str(source.get('encoder_hash'))[:12]}, "
                         f"but {spec.model} is {wanted[:12]}; rebuild the index (dvc repro build_index)")
    if source.get("corpus_hash") != corpus_hash:
        raise RealmError(f"{spec.index}: index/corpus mismatch: built over another corpus than {blocks_path}; "
                         "rebuild the index (dvc repro build_index)")
    return loaded


def resolve(cfg: EvaluateRetrievalConfig) -> EvaluateRetrievalConfig:
    """`cfg` with `device` and `precision` resolved for this machine (imports torch)."""
    from realm_core.devices import resolve_stage

    return resolve_stage(cfg, "evaluate_retrieval")


def _dense_search(name: str, spec: RetrieverSpec, questions: list[str], k: int, cfg: EvaluateRetrievalConfig,
                  corpus_hash: str) -> tuple[np.ndarray, np.ndarray]:
    from realm_core.modeling.embedder import RetrieverEmbedder  # torch only when a dense retriever is scored

    dense = check_index(spec, cfg.blocks, corpus_hash)
    model = RetrieverEmbedder.from_pretrained(spec.model, device=cfg.device)
    queries = model.embed_queries(questions, batch_size=cfg.query_batch_size, precision=cfg.precision)
    if queries.shape[1] != dense.dim:
        raise RealmError(f"retriever {name}: {spec.model} embeds to {queries.shape[1]} dims, its index "
                         f"{spec.index} holds {dense.dim}")
    return dense.search(np.ascontiguousarray(queries, dtype=np.float32), k)


def _score(examples: Sequence[QAExample], ids: np.ndarray, scores: np.ndarray, blocks: Blocks,
           ks: Sequence[int], n_ctxs: int) -> tuple[dict[str, float], list[dict[str, Any]]]:
    hits, records = [], []
    for ex, row_ids, row_scores in zip(examples, ids, scores):
        match = AnswerMatcher(ex)
        rows = [blocks.row.get(int(b), -1) for b in row_ids]
        flags = [r >= 0 and match(blocks, r) for r in rows]
        hits.append(flags)
        ctxs = [{"id": str(int(b)), "title": blocks.titles[r], "text": blocks.texts[r], "score": float(s),
                 "has_answer": bool(f)}
                for b, r, s, f in list(zip(row_ids, rows, row_scores, flags))[:n_ctxs] if r >= 0]
        records.append({"question": ex.question, "answers": list(ex.answers), "ctxs": ctxs})
    return {k: round(v, 4) for k, v in recall_at_k(hits, ks).items()}, records


def run_evaluate_retrieval(cfg: EvaluateRetrievalConfig, info: Callable[[str], None] = print) -> dict[str, Any]:
    """Score every retriever on `cfg.dataset`; write the metrics and DPR-style files; return the metrics."""
    t0 = time.monotonic()
    if cfg.retrievers:  # BM25 alone needs no torch
        cfg = resolve(cfg)
    examples = load_qa(cfg.dataset, cfg.split, cfg.data_dir)
    blocks = Blocks(cfg.blocks)
    corpus_hash = embed.corpus_hash(cfg.blocks)
    index_precision = {}
    for name, spec in cfg.retrievers.items():  # fail before any slow work on a bad pairing
        source = check_index(spec, cfg.blocks, corpus_hash).meta.get("embeddings") or {}
        index_precision[name] = source.get("precision", "fp32")  # indexes from before it was recorded: fp32
    questions = [ex.question for ex in examples]
    k = max(cfg.ks)
    covered = covered_questions(examples, blocks.texts)
    metrics: dict[str, Any] = {"dataset": cfg.dataset, "split": cfg.split, "n_questions": len(examples),
                               "answer_coverage": round(sum(covered) / len(covered), 4), "n_blocks": len(blocks.ids)}
    if cfg.retrievers:  # the query towers' device and precision; each index's embedding precision
        metrics.update(device=cfg.device, precision=cfg.precision, index_precision=index_precision)
    info(f"{cfg.dataset}/{cfg.split}: {len(examples)} questions, answer coverage {metrics['answer_coverage']:.3f} "
         f"over {len(blocks.ids):,} blocks")
    runs: list[tuple[str, Callable[[], tuple[np.ndarray, np.ndarray]]]] = []
    if cfg.bm25:
        runs.append(("bm25", lambda: _bm25_search(cfg.blocks, questions, k)))
    for name, spec in cfg.retrievers.items():
        runs.append((name, lambda name=name, spec=spec: _dense_search(name, spec, questions, k, cfg, corpus_hash)))
    outputs = {}
    for name, search in runs:
        t1 = time.monotonic()
        ids, scores = search()
        recalls, records = _score(examples, ids, scores, blocks, cfg.ks, cfg.ctxs)
        metrics[name] = recalls
        outputs[name] = records
        info(f"{name}: " + "  ".join(f"{key} {value:.3f}" for key, value in recalls.items())
             + f"  ({time.monotonic() - t1:.1f} s)")
    out_dir = Path(cfg.output_dir) / cfg.dataset
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, records in outputs.items():
        with atomic_path(out_dir / f"{name}.json") as tmp:
            tmp.write_text(json.dumps(records, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    metrics["seconds"] = round(time.monotonic() - t0, 1)
    write_text_atomic(Path(cfg.metrics_dir) / f"{cfg.dataset}.json", json.dumps(metrics, indent=2) + "\n")
    return metrics


def _bm25_search(blocks_path: str | Path, questions: list[str], k: int) -> tuple[np.ndarray, np.ndarray]:
    from realm_core.retrieval.bm25 import BM25Index

    return BM25Index.build_from_blocks(blocks_path).search(questions, k)


def check_inputs(cfg: EvaluateRetrievalConfig) -> None:
    """Fail fast, before Prefect starts: the QA files, the blocks, each retriever's checkpoint and index."""
    load_qa(cfg.dataset, cfg.split, cfg.data_dir)
    if cfg.retrievers:
        resolve(cfg)  # e.g. device: cuda on a machine without one
    if not Path(cfg.blocks).is_file():
        raise RealmError(f"evaluate_retrieval.blocks: {cfg.blocks}: no such file")
    for spec in cfg.retrievers.values():
        embed.encoder_hash(spec.model)
        if index.current_version(spec.index) is None:
            raise RealmError(f"{spec.index}: no index published there (run build_index first)")
