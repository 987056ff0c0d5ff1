"""The `evaluate` stage: open-QA test scores of every fine-tuned method on one dataset.

For each method's fine-tuned model (`models/qa/<dataset>/<method>`: retriever/, reader/, qa.json
naming the frozen index it was trained against):
- **EM**: the reader's answer (argmax over every (block, span) of the top 5, mapped back to the
  block's original text) against the references with ORQA's normalisation; CuratedTREC by
  `re.match` of each pattern on the raw prediction (`realm_core.qa.metrics.answer_correct`);
- **Recall@k** of the fine-tuned retriever over the frozen index, with `evaluate_retrieval`'s
  has_answer rule (DPR's), so it sits beside the zero-shot figures;
- **reader_oracle**: share of questions with a gold span (wordpiece match / regex) in the top 5,
  the reader's ceiling, and **em_answerable**, EM among those questions.

`answer_coverage` (the share of questions whose answer occurs in some block) is the ceiling of
everything on a 7.7k-block corpus. Predictions are written DPR-style, with the evidence read:
`<output_dir>/<dataset>/<method>.json` = [{"question", "answers", "prediction", "score", "em",
"ctxs": [{"id", "title", "text", "score", "p_z", "has_answer"}]}].

NQ's full test (`full_test`): the 3,610 NQ-open dev questions, minus those of the small-scale
train/dev split (fine-tuning saw them), scored with the NQ models; most answers are not in this
corpus, so its coverage is reported beside it. `dataset_file` scores a user's NQ-open JSONL file
instead of the test split. `compile` compiles each reader's encoder with Inductor before it
predicts (`SpanReader.compile_for_inference`); the metrics then say whether it compiled.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from realm_core import devices
from realm_core.config import EvaluateConfig, QAMethod
from realm_core.qa.wordpieces import WordpieceCorpus
from realm_core.errors import RealmError
from realm_core.io import atomic_path, write_text_atomic
from realm_core.qa.datasets import QAExample, load_nq_open, load_qa
from realm_core.qa.gold import GoldFinder
from realm_core.qa.metrics import answer_correct
from realm_core.qa.retrieval_metrics import covered_questions, recall_at_k
from realm_core.retrieval.evaluate import AnswerMatcher, Blocks
from realm_core.training.qa import OpenQAModel, prepare
from realm_core.training.qa_stage import QA_FORMAT

def read_qa_json(model_dir: str | Path) -> dict[str, Any]:
    """`qa.json` of a fine-tuned model directory; RealmError if it is not one."""
    path = Path(model_dir) / "qa.json"
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RealmError(f"{model_dir}: no fine-tuned model there (no qa.json; run finetune_qa first)") from None
    except ValueError as exc:
        raise RealmError(f"{path}: invalid JSON ({exc})") from None
    if not isinstance(record, dict) or record.get("format") != QA_FORMAT:
        raise RealmError(f"{path}: not a fine-tuned open-QA model (expected format {QA_FORMAT!r})")
    return record


def resolve_index(index: str, model_dir: Path) -> str:
    """The index root a qa.json names. Stages record it relative to the project root, which is
    the working directory of every stage; from another directory (`realm ask` run elsewhere) it is
    looked up relative to each parent of `model_dir` (the project root of
    `models/qa/<dataset>/<method>`)."""
    path = Path(index)
    if not index or path.is_absolute() or path.exists():
        return index
    for base in model_dir.resolve().parents:
        if (base / path).exists():
            return str(base / path)
    return index


def load_finetuned(model_dir: str | Path, corpus: WordpieceCorpus, texts: list[str], blocks_path: str | Path,
                   device: torch.device) -> tuple[OpenQAModel, dict[str, Any]]:
    """The fine-tuned model in `model_dir` over its frozen index, and its qa.json."""
    from realm_core.training.qa_stage import build_model

    model_dir = Path(model_dir)
    record = read_qa_json(model_dir)
    bm25 = record.get("retriever_init") == "bm25"
    index = "" if bm25 else resolve_index(str(record.get("index", "")), model_dir)
    method = QAMethod(retriever="bm25" if bm25 else str(model_dir / "retriever"), index=index,
                      reader=str(model_dir / "reader"))
    beam = int(record["reader_beam"])
    model = build_model(method, corpus, texts, blocks_path, reader_kw={}, retriever_beam=beam, reader_beam=beam,
                        seed=0, device=device, frozen_index=None if bm25 else index,
                        index_encoder=None if bm25 else record.get("index_encoder_hash"))
    return model, record


def score_method(model: OpenQAModel, examples: Sequence[QAExample], blocks: Blocks, finder: GoldFinder, *,
                 ks: Sequence[int], ctxs: int, batch_size: int, precision: str, query_len: int
                 ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Metrics and DPR-style prediction records of one model on `examples`."""
    items = prepare(examples, model.reader, finder, query_len=query_len)
    preds = model.predict(items, k=max(ks), batch_size=batch_size, precision=precision)
    hits, records, em, oracle = [], [], [], []
    for ex, pred in zip(examples, preds):
        match = AnswerMatcher(ex)
        flags = [r >= 0 and match(blocks, r) for r in pred["rows"]]
        hits.append(flags)
        correct = answer_correct(pred["prediction"], ex.answers, ex.answer_type)
        em.append(correct)
        oracle.append(pred["reader_oracle"])
        p_z = pred["p_z"]
        records.append({
            "question": ex.question, "answers": list(ex.answers), "prediction": pred["prediction"],
            "score": round(pred["score"], 4), "em": bool(correct),
            "ctxs": [{"id": str(int(blocks.ids[r])), "title": blocks.titles[r], "text": blocks.texts[r],
                      "score": round(s, 4), "p_z": round(p_z[i], 4) if i < len(p_z) else None,
                      "has_answer": bool(f), "read": i < len(p_z)}
                     for i, (r, s, f) in enumerate(zip(pred["rows"][:ctxs], pred["scores"], flags)) if r >= 0],
        })
    n = len(examples)
    answerable = [e for e, o in zip(em, oracle) if o]
    metrics = {"n_questions": n, "em": round(sum(em) / n, 4),
               **{k: round(v, 4) for k, v in recall_at_k(hits, ks).items()},
               "reader_oracle": round(sum(oracle) / n, 4),
               "em_answerable": round(sum(answerable) / len(answerable), 4) if answerable else 0.0}
    return metrics, records


def run_evaluate(cfg: EvaluateConfig, info: Callable[[str], None] = print) -> dict[str, Any]:
    """Score every method of `cfg.methods`; write the metrics and predictions; return the metrics."""
    t0 = time.monotonic()
    resolved = devices.resolve_stage(cfg, "evaluate")
    device, precision = torch.device(resolved.device), resolved.precision
    corpus = WordpieceCorpus(cfg.wordpieces)
    blocks = Blocks(cfg.blocks)
    texts = blocks.texts
    if len(texts) != len(corpus):
        raise RealmError(f"{cfg.wordpieces}: {len(corpus)} blocks, {cfg.blocks} has {len(texts)}; rerun tokenize_corpus")
    sets = _question_sets(cfg)
    metrics: dict[str, Any] = {"dataset": cfg.dataset, "n_blocks": len(texts), "methods": list(cfg.methods),
                               "device": device.type, "precision": precision}
    models = {m: Path(cfg.models_dir) / cfg.dataset / m for m in cfg.methods}
    sections: dict[str, dict[str, Any]] = {}
    for name, (split, examples) in sets.items():
        covered = covered_questions(examples, texts)
        sections[name] = {"split": split, "n_questions": len(examples),
                          "answer_coverage": round(sum(covered) / len(covered), 4)}
        info(f"{cfg.dataset}/{split}: {len(examples):,} questions, answer coverage "
             f"{sections[name]['answer_coverage']:.3f}")
    finder = None
    outputs: dict[str, dict[str, list]] = {name: {} for name in sets}
    # One model at a time, over every question set: at scale each holds its own index in memory,
    # and a compiled model is compiled once.
    for method, model_dir in models.items():
        t1 = time.monotonic()
        model, record = load_finetuned(model_dir, corpus, texts, cfg.blocks, device)
        compiled = None
        if cfg.compile:
            failed = model.reader.compile_for_inference(precision)
            compiled = not failed
            info(f"{method}: reader compiled in {time.monotonic() - t1:.1f} s" if compiled
                 else f"{method}: compiling the reader failed ({failed}); predicting eagerly")
        if finder is None:
            finder = GoldFinder(corpus, texts, model.reader.tokenizer, max_width=model.reader.max_span_width)
        for name, (split, examples) in sets.items():
            scores, records = score_method(model, examples, blocks, finder, ks=cfg.ks, ctxs=cfg.ctxs,
                                           batch_size=cfg.batch_size, precision=precision,
                                           query_len=int(record.get("query_len", 64)))
            scores.update(model=str(model_dir), retriever=record.get("retriever_init"),
                          reader=record.get("reader_init"), dev_em=record.get("dev_em"),
                          **({} if compiled is None else {"compiled": compiled}),
                          seconds=round(time.monotonic() - t1, 1))
            t1 = time.monotonic()
            sections[name][method] = scores
            outputs[name][method] = records
            info(f"{method} on {cfg.dataset}/{split}: EM {scores['em']:.3f}  R@5 "
                 f"{scores.get('recall@5', float('nan')):.3f}  reader oracle {scores['reader_oracle']:.3f}  "
                 f"({scores['seconds']} s)")
        del model
    for name, section in sections.items():
        if name == "main":
            metrics.update(section)
        else:
            metrics[name] = section
    out_dir = Path(cfg.output_dir) / cfg.dataset
    for name, per_method in outputs.items():
        folder = out_dir if name == "main" else out_dir / name
        folder.mkdir(parents=True, exist_ok=True)
        for method, records in per_method.items():
            with atomic_path(folder / f"{method}.json") as tmp:
                tmp.write_text(json.dumps(records, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    metrics["seconds"] = round(time.monotonic() - t0, 1)
    write_text_atomic(Path(cfg.metrics_dir) / f"{cfg.dataset}.json", json.dumps(metrics, indent=2) + "\n")
    return metrics


def _question_sets(cfg: EvaluateConfig) -> dict[str, tuple[str, list[QAExample]]]:
    sets = _all_question_sets(cfg)
    if cfg.max_questions:
        sets = {k: (split, ex[: cfg.max_questions]) for k, (split, ex) in sets.items()}
    return sets


def _all_question_sets(cfg: EvaluateConfig) -> dict[str, tuple[str, list[QAExample]]]:
    if cfg.dataset_file:
        return {"main": ("file:" + cfg.dataset_file, load_nq_open(cfg.dataset_file))}
    sets = {"main": ("test", load_qa(cfg.dataset, "test", cfg.data_dir))}
    if cfg.dataset == "nq" and cfg.full_test:
        seen = {ex.qid for split in ("train", "dev") for ex in load_qa("nq", split, cfg.data_dir)}
        sets["full_test"] = ("full_test", [ex for ex in load_qa("nq", "full_test", cfg.data_dir) if ex.qid not in seen])
    return sets


def check_inputs(cfg: EvaluateConfig) -> None:
    """Fail fast, before Prefect starts: the questions, the tokenized corpus, every method's model."""
    devices.resolve_stage(cfg, "evaluate")
    _question_sets(cfg)
    WordpieceCorpus(cfg.wordpieces)
    if not Path(cfg.blocks).is_file():
        raise RealmError(f"evaluate.blocks: {cfg.blocks}: no such file")
    if not cfg.methods:
        raise RealmError("evaluate.methods: empty; name at least one fine-tuned method")
    for method in cfg.methods:
        read_qa_json(Path(cfg.models_dir) / cfg.dataset / method)
