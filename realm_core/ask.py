"""`realm ask "question"`: answer one free question with a fine-tuned open-QA model.

The model is a `finetune_qa` output, `<models_dir>/<dataset>/<method>/` (retriever/, reader/,
qa.json naming the frozen index it was trained against); `method="newest"` picks the method
directory whose qa.json was written last. The question runs through exactly what `evaluate`
scores (`OpenQAModel.predict`): the query tower retrieves from the frozen index, the reader reads
the top `reader_beam` blocks and the answer is the best (block, span) mapped back to the block's
original text. A free question has no reference answers, so its `Gold` is empty.

Evidence: the top `k` retrieved blocks with their retrieval score f(q, b) (BM25's score for the
bm25 method); p(z|x), the softmax of those scores over the blocks read, exists only for the first
`reader_beam` of them. Each block's snippet is ~200 characters around the answer when the answer
occurs in it, else its beginning.

This module lives outside `realm_core/qa/` on purpose: that directory is a dependency of the
evaluate_retrieval, finetune_qa and evaluate DVC stages, and a file added there makes them stale.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from realm_core.errors import RealmError

DEFAULT_MODELS_DIR = "models/qa"
DEFAULT_WORDPIECES = "artifacts/corpus/wordpieces"
DEFAULT_BLOCKS = "artifacts/corpus/blocks.parquet"
NEWEST = "newest"
SNIPPET_CHARS = 200
_TRAIN_HINT = "run `dvc repro finetune_qa`"


@dataclass
class Evidence:
    """One retrieved block: rank (1-based), block id, title, snippet, retrieval score, p(z|x)
    (None for a block the reader did not read)."""

    rank: int
    id: int
    title: str
    snippet: str
    score: float
    p_z: float | None


@dataclass
class Answer:
    """`ask`'s result; `answer_rank` is the evidence rank the answer was read from (None: no answer)."""

    question: str
    answer: str
    score: float
    dataset: str
    method: str
    model_dir: str
    answer_rank: int | None
    reader_beam: int
    dev_em: float | None = None
    best_step: int | None = None
    evidence: list[Evidence] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """The `--json` object."""
        out = asdict(self)
        out["score"] = round(self.score, 4)
        for ev in out["evidence"]:
            ev["score"] = round(ev["score"], 4)
            ev["p_z"] = None if ev["p_z"] is None else round(ev["p_z"], 4)
        return out


# ---------------------------------------------------------------------------------------------
# Finding the model


def find_model_dir(models_dir: str | Path, dataset: str, method: str = NEWEST) -> Path:
    """`<models_dir>/<dataset>/<method>`, or the method directory with the newest qa.json.

    RealmError for an unknown dataset, an unknown or untrained method, or no model at all."""
    from realm_core.qa.datasets import DATASETS

    if dataset not in DATASETS:
        raise RealmError(f"unknown dataset {dataset!r}; expected one of {', '.join(DATASETS)}")
    root = Path(models_dir) / dataset
    trained = sorted(p for p in root.iterdir() if (p / "qa.json").is_file()) if root.is_dir() else []
    method = (method or NEWEST).strip()
    if method == NEWEST:
        if not trained:
            raise RealmError(f"{root}: no fine-tuned model yet (no <method>/qa.json); {_TRAIN_HINT}")
        return max(trained, key=lambda p: ((p / "qa.json").stat().st_mtime_ns, p.name))
    if not method or "/" in method or method.startswith("."):
        raise RealmError(f"unknown method {method!r}; give a method name such as orqa or realm, or {NEWEST}")
    path = root / method
    if (path / "qa.json").is_file():
        return path
    if trained:
        raise RealmError(f"{path}: no fine-tuned {method!r} model (no qa.json); trained for {dataset}: "
                         f"{', '.join(p.name for p in trained)}")
    raise RealmError(f"{path}: no fine-tuned model yet (no qa.json); {_TRAIN_HINT}")


# ---------------------------------------------------------------------------------------------
# Asking


def ask(question: str, *, dataset: str = "nq", method: str = NEWEST, k: int = 5,
        models_dir: str | Path = DEFAULT_MODELS_DIR, wordpieces: str | Path = DEFAULT_WORDPIECES,
        blocks: str | Path = DEFAULT_BLOCKS, device: str = "auto") -> Answer:
    """Answer `question` with the fine-tuned model of `dataset`/`method`; the top `k` blocks as evidence."""
    question = " ".join((question or "").split())
    if not question:
        raise RealmError("empty question; usage: realm ask \"who got the first nobel prize in physics\"")
    if k < 1:
        raise RealmError(f"--k must be at least 1, got {k}")
    model_dir = find_model_dir(models_dir, dataset, method)
    if not Path(blocks).is_file():
        raise RealmError(f"{blocks}: no such file (the corpus blocks; run `dvc repro prepare_corpus` or pass --blocks)")
    if not Path(wordpieces).is_dir():
        raise RealmError(f"{wordpieces}: no such directory (the tokenized corpus; run `dvc repro tokenize_corpus` "
                         "or pass --wordpieces)")

    from realm_core.devices import resolve_device
    from realm_core.modeling.hf_bert import quiet_transformers
    from realm_core.qa.datasets import QAExample
    from realm_core.qa.evaluate import load_finetuned
    from realm_core.qa.gold import GoldFinder
    from realm_core.qa.wordpieces import WordpieceCorpus
    from realm_core.retrieval.evaluate import Blocks
    from realm_core.training.qa import prepare

    dev = resolve_device(device, key="--device")
    corpus = WordpieceCorpus(wordpieces)
    table = Blocks(blocks)
    if len(table.texts) != len(corpus):
        raise RealmError(f"{wordpieces}: {len(corpus)} blocks, {blocks} has {len(table.texts)}; "
                         "rerun tokenize_corpus")
    with quiet_transformers(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model, record = load_finetuned(model_dir, corpus, table.texts, blocks, dev)
        finder = GoldFinder(corpus, table.texts, model.reader.tokenizer, max_width=model.reader.max_span_width)
        example = QAExample(qid="ask", question=question, answers=[], answer_type="text")
        items = prepare([example], model.reader, finder, query_len=int(record.get("query_len", 64)))
        pred = model.predict(items, k=k, batch_size=1, precision="fp32")[0]

    text, p_z = pred["prediction"], pred["p_z"]
    answer_row = pred["rows"][pred["block"]] if text else None
    evidence = []
    for i, (row, score) in enumerate(zip(pred["rows"][:k], pred["scores"])):
        if row < 0:
            continue
        evidence.append(Evidence(rank=i + 1, id=int(table.ids[row]), title=str(table.titles[row] or ""),
                                 snippet=snippet(table.texts[row], text), score=float(score),
                                 p_z=float(p_z[i]) if i < len(p_z) else None))
    answer_rank = pred["block"] + 1 if answer_row is not None and pred["block"] < k else None
    return Answer(question=question, answer=text, score=float(pred["score"]), dataset=dataset,
                  method=str(record.get("method") or model_dir.name), model_dir=str(model_dir),
                  answer_rank=answer_rank, reader_beam=model.reader_beam, dev_em=record.get("dev_em"),
                  best_step=record.get("best_step"), evidence=evidence)


def snippet(text: str, answer: str, width: int = SNIPPET_CHARS) -> str:
    """About `width` characters of `text` (whitespace collapsed) centred on the first occurrence
    of `answer` (case-insensitive), or its beginning; cut at word boundaries, with "…" marks."""
    text = " ".join(text.split())
    needle = " ".join(answer.split())
    if len(text) <= width:
        return text
    match = re.search(re.escape(needle), text, re.IGNORECASE) if needle else None
    if match is None:
        start = 0
    else:
        middle = (match.start() + match.end()) // 2
        start = max(0, min(middle - width // 2, len(text) - width))
    end = min(len(text), start + width)
    if start > 0:
        cut = text.find(" ", start, start + 30)
        if cut != -1 and (match is None or cut < match.start()):
            start = cut + 1
    if end < len(text):
        cut = text.rfind(" ", end - 30, end)
        if cut != -1 and (match is None or cut >= match.end()):
            end = cut
    return ("…" if start > 0 else "") + text[start:end] + ("…" if end < len(text) else "")


def format_answer(ans: Answer) -> str:
    """The human-readable report: the answer and its score, then each evidence block."""
    lines = [f"Answer: {ans.answer}  (score {ans.score:.2f})" if ans.answer else "Answer: (none found)",
             f"Model:  {ans.method} on {ans.dataset} ({ans.model_dir}"
             + (f"; dev EM {ans.dev_em:.3f} at step {ans.best_step})" if ans.dev_em is not None else ")"), "",
             f"Evidence (retrieval score; p(z|x) over the top {ans.reader_beam} blocks read):"]
    for ev in ans.evidence:
        p_z = f"p(z|x) {ev.p_z:.3f}" if ev.p_z is not None else "not read"
        mark = "  <- answer" if ev.rank == ans.answer_rank else ""
        lines.append(f"{ev.rank:>3}. {ev.title or '(untitled)'}  [block {ev.id}]  score {ev.score:.2f}  {p_z}{mark}")
        lines.append(f"     {ev.snippet}")
    return "\n".join(lines)
