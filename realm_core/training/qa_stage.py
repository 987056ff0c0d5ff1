"""The `finetune_qa` stage: one (dataset, method) fine-tuning run, resumable, best dev EM exported.

`method` names a retriever + reader pair in `methods` (ORQA: ICT retriever + "our BERT";
REALM: REALM's retriever + its knowledge-augmented encoder; the mixed pairs of Table 2 and BM25 +
reader are more entries). The document vectors are the ones `build_index` published for the
retriever and stay frozen; the query tower and the reader train (`realm_core.training.qa`).

Dev EM (ORQA's normalisation; CuratedTREC's regex) is scored at step 0, every `eval_every` steps
and at the end; the best model goes to `output_dir` as `retriever/`, `reader/` and `qa.json`
(the method, its inits, the frozen index it must be used with, the step and dev EM it was chosen
at). Under torchrun every process trains; rank 0 evaluates and exports.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import pyarrow.parquet as pq
import torch

from realm_core import devices
from realm_core.config import FinetuneQAConfig, QAMethod
from realm_core.qa.wordpieces import WordpieceCorpus
from realm_core.errors import RealmError
from realm_core.io import write_text_atomic
from realm_core.modeling.dropout import use_fast_dropout
from realm_core.modeling.embedder import RetrieverEmbedder
from realm_core.modeling.reader import SpanReader
from realm_core.qa.datasets import load_qa
from realm_core.qa.gold import GoldFinder
from realm_core.qa.metrics import answer_correct, token_f1
from realm_core.retrieval import embed
from realm_core.training import distributed
from realm_core.training.loop import LoopConfig, train
from realm_core.training.qa import BM25Blocks, FrozenBlocks, OpenQAModel, QAItem, QAStream, prepare

QA_FORMAT = "realm-openqa/1"


def method_of(cfg: FinetuneQAConfig) -> QAMethod:
    """The configured method; RealmError naming the key when it is not defined."""
    if cfg.method not in cfg.methods:
        raise RealmError(f"finetune_qa.method: '{cfg.method}' is not in finetune_qa.methods "
                         f"({', '.join(sorted(cfg.methods))})")
    return cfg.methods[cfg.method]


def read_texts(blocks: str | Path) -> list[str]:
    """Block texts in row order (what spans are mapped back into)."""
    try:
        return pq.read_table(blocks, columns=["text"]).column(0).to_pylist()
    except FileNotFoundError:
        raise RealmError(f"{blocks}: no such file") from None
    except Exception as exc:  # pyarrow raises several types for bad files
        raise RealmError(f"{blocks}: not a blocks file ({exc})") from None


def build_model(method: QAMethod, corpus: WordpieceCorpus, texts: list[str], blocks_path: str | Path, *,
                reader_kw: dict[str, Any], retriever_beam: int, reader_beam: int, seed: int,
                device: torch.device, frozen_index: str | None = None, index_encoder: str | None = None
                ) -> OpenQAModel:
    """The model of `method`: a fresh one (inits) or a fine-tuned one (`frozen_index` given)."""
    reader = SpanReader.from_init(method.reader, seed=seed, **reader_kw)
    corpus.check(blocks_path, reader.tokenizer, key="wordpieces")
    if method.retriever == "bm25":
        return OpenQAModel(None, reader, corpus, texts, BM25Blocks(blocks_path, corpus),
                           retriever_beam=retriever_beam, reader_beam=reader_beam).to(device)
    retriever = RetrieverEmbedder.from_pretrained(method.retriever)
    blocks = FrozenBlocks(frozen_index or method.index, corpus,
                          retriever=None if frozen_index else method.retriever)
    if index_encoder is not None and blocks.encoder_hash != index_encoder:
        raise RealmError(f"{frozen_index}: the index changed since this model was fine-tuned against it; "
                         "rerun finetune_qa (dvc repro)")
    return OpenQAModel(retriever, reader, corpus, texts, blocks, retriever_beam=retriever_beam,
                       reader_beam=reader_beam).to(device)


# Model selection: dev EM, ties broken by token F1. A tie at EM 0 is common early on small dev sets,
# and then the run that learned something should win over the untrained step 0. The F1 term is
# below EM's resolution (1/len(dev) >= 1e-4 for any dev split under 10k questions).
SELECT_F1_WEIGHT = 1e-4


def dev_em(model: OpenQAModel, items: list[QAItem], *, batch_size: int, precision: str) -> dict[str, float]:
    """EM, token F1, the reader's oracle on `items` (top `reader_beam` blocks), and `select`
    (EM, ties broken by F1) that the best checkpoint is chosen by."""
    preds = model.predict(items, k=model.reader_beam, batch_size=batch_size, precision=precision)
    em = [answer_correct(p["prediction"], it.example.answers, it.example.answer_type) for it, p in zip(items, preds)]
    f1 = [token_f1(p["prediction"], it.example.answers, it.example.answer_type) for it, p in zip(items, preds)]
    n = len(items)
    return {"em": sum(em) / n, "f1": sum(f1) / n, "reader_oracle": sum(p["reader_oracle"] for p in preds) / n,
            "select": sum(em) / n + SELECT_F1_WEIGHT * sum(f1) / n}


def save_qa(model: OpenQAModel, path: Path, record: dict[str, Any]) -> None:
    """retriever/ (when there is one), reader/ and qa.json under `path` (a fresh directory)."""
    path.mkdir(parents=True, exist_ok=True)
    if model.retriever is not None:
        model.retriever.save_pretrained(path / "retriever")
    model.reader.save_pretrained(path / "reader")
    (path / "qa.json").write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")


def run_finetune_qa(cfg: FinetuneQAConfig, on_log: Callable[[dict[str, Any]], None] | None = None,
                    info: Callable[[str], None] = print) -> dict[str, Any]:
    """Fine-tune (or resume) one method on one dataset; write and return the metrics (rank 0)."""
    method = method_of(cfg)
    resolved = devices.resolve_stage(cfg, "finetune_qa")
    device, precision = torch.device(resolved.device), resolved.precision
    rank = distributed.init_from_env(device)
    if device.type == "cuda" and rank.distributed:
        device = devices.resolve_device(f"cuda:{rank.local_rank}", key="finetune_qa.device")
    micro, rest = divmod(cfg.batch_size, cfg.grad_accum * rank.world_size)
    if rest or micro < 1:
        raise RealmError(f"finetune_qa.batch_size {cfg.batch_size} must split into grad_accum {cfg.grad_accum} "
                         f"x {rank.world_size} process(es)")
    try:
        corpus = WordpieceCorpus(cfg.wordpieces)
        texts = read_texts(cfg.blocks)
        if len(texts) != len(corpus):
            raise RealmError(f"{cfg.wordpieces}: {len(corpus)} blocks, {cfg.blocks} has {len(texts)}; "
                             "rerun tokenize_corpus")
        reader_kw = {"span_hidden": cfg.span_hidden, "max_span_width": cfg.max_span_width, "seq_len": cfg.seq_len,
                     "max_question_len": cfg.max_question_len}
        model = build_model(method, corpus, texts, cfg.blocks, reader_kw=reader_kw, retriever_beam=cfg.retriever_beam,
                            reader_beam=cfg.reader_beam, seed=cfg.seed, device=device)
        # Same dropout, cheaper CPU masks: torch's were ~30 % of a CPU step (modeling/dropout.py).
        use_fast_dropout(model)
        finder = GoldFinder(corpus, texts, model.reader.tokenizer, max_width=cfg.max_span_width)
        train_items = prepare(load_qa(cfg.dataset, "train", cfg.data_dir), model.reader, finder, query_len=cfg.query_len)
        n_train_all = len(train_items)
        if cfg.skip_unanswerable:
            train_items = [it for it in train_items if it.gold.regex or it.gold.rows]
        dev = load_qa(cfg.dataset, "dev", cfg.data_dir)
        dev_items = prepare(dev[: cfg.dev_questions or None], model.reader, finder, query_len=cfg.query_len)
        if not dev_items:
            raise RealmError(f"finetune_qa: dataset '{cfg.dataset}' has no dev questions to select a model on")
        if rank.is_main:
            info(f"{cfg.dataset}/{cfg.method}: {len(train_items):,} training questions ({n_train_all - len(train_items):,} "
                 f"without an answer in the corpus left out), {len(dev_items):,} dev; retriever {method.retriever}, "
                 f"reader {method.reader}; {rank.world_size} process(es), device {device}, precision {precision}")
        # QAStream splits its batch_size over the processes: give it the micro-step over all of them.
        stream = QAStream(train_items, batch_size=micro * rank.world_size, seed=cfg.seed, rank=rank.rank,
                          world_size=rank.world_size)
        index_hash = getattr(model.blocks, "encoder_hash", None)
        record = {"format": QA_FORMAT, "dataset": cfg.dataset, "method": cfg.method,
                  "retriever_init": method.retriever, "reader_init": method.reader,
                  "index": method.index if method.retriever != "bm25" else "",
                  "index_encoder_hash": index_hash, "corpus_hash": corpus.meta.get("corpus_hash"),
                  "retriever_beam": cfg.retriever_beam, "reader_beam": cfg.reader_beam, "query_len": cfg.query_len}

        def evaluate(m) -> dict[str, float]:
            return dev_em(m, dev_items, batch_size=cfg.eval_batch_size, precision=precision)

        def save_model(m, path: Path) -> None:
            save_qa(m, path, record)

        warmup = None if cfg.warmup_steps < 0 else cfg.warmup_steps
        loop_cfg = LoopConfig(steps=cfg.steps, lr=cfg.lr, lr_groups=(("retriever.", cfg.retriever_lr),),
                              warmup_steps=warmup, seed=cfg.seed, log_every=cfg.log_every,
                              grad_accum=cfg.grad_accum, precision=precision, eval_every=cfg.eval_every or cfg.steps,
                              eval_at_start=True, best_metric="select", best_output_dir=cfg.output_dir,
                              checkpoint_dir=cfg.checkpoint_dir, checkpoint_every=cfg.checkpoint_every,
                              keep_checkpoints=cfg.keep_checkpoints, resume=cfg.resume,
                              time_budget_s=cfg.time_budget_s or None)
        settings = {**record, "train_questions": len(train_items), "dev_questions": len(dev_items),
                    "reader": reader_kw, "skip_unanswerable": cfg.skip_unanswerable}
        result = train(model, lambda m, batch: m(batch), stream, loop_cfg, settings=settings, on_log=on_log,
                       evaluate=evaluate, save_model=save_model)
        if not rank.is_main:
            return {"rank": rank.rank, "completed": result.completed, "steps": result.step}
    finally:
        distributed.shutdown()
    metrics: dict[str, Any] = {
        "dataset": cfg.dataset, "method": cfg.method, "completed": result.completed, "steps": result.step,
        "target_steps": cfg.steps, "train_seconds": round(result.total_elapsed_s, 1), "resumed_at": result.resumed_at,
        "batch_size": cfg.batch_size, "train_questions": len(train_items), "train_questions_all": n_train_all,
        "dev_questions": len(dev_items), "device": device.type, "precision": precision,
        "processes": rank.world_size, "retriever": method.retriever, "reader": method.reader,
        "dev": [{k: (round(v, 4) if isinstance(v, float) else v) for k, v in e.items()} for e in result.evals],
        "final_train": {k: round(float(v), 4) for k, v in result.last_metrics.items() if isinstance(v, (int, float))},
    }
    if result.best:
        chosen = next(e for e in result.evals if e["step"] == result.best["step"])
        metrics["best"] = {"step": result.best["step"], "dev_em": round(chosen["em"], 4), "dev_f1": round(chosen["f1"], 4)}
        if result.completed:
            qa_json = Path(cfg.output_dir) / "qa.json"
            saved = json.loads(qa_json.read_text())
            saved.update(best_step=result.best["step"], dev_em=round(chosen["em"], 4), dev_f1=round(chosen["f1"], 4))
            write_text_atomic(qa_json, json.dumps(saved, indent=2, sort_keys=True) + "\n")
            info(f"best dev EM {chosen['em']:.3f} (F1 {chosen['f1']:.3f}) at step {result.best['step']} -> {cfg.output_dir}")
    write_text_atomic(cfg.metrics_file, json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    return metrics


def check_inputs(cfg: FinetuneQAConfig) -> None:
    """Fail fast, before Prefect starts: method, QA files, tokenized corpus, models and index."""
    method = method_of(cfg)
    devices.resolve_stage(cfg, "finetune_qa")
    load_qa(cfg.dataset, "train", cfg.data_dir)
    load_qa(cfg.dataset, "dev", cfg.data_dir)
    WordpieceCorpus(cfg.wordpieces)
    if not Path(cfg.blocks).is_file():
        raise RealmError(f"finetune_qa.blocks: {cfg.blocks}: no such file")
    if method.retriever != "bm25":
        embed.encoder_hash(method.retriever)
        from realm_core.retrieval import index

        if index.current_version(method.index) is None:
            raise RealmError(f"finetune_qa.methods.{cfg.method}.index: {method.index}: no index published there "
                             "(run build_index first)")
