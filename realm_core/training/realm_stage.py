"""The `pretrain_realm` stage: ICT retriever + "our BERT" in, the REALM retriever and encoder out.

The run (REALM_NOTES §2): index version 0 is the ICT retriever's embeddings (build_index's, when
their manifest matches; else embedded at step 0); every step draws `batch_size` masked sentences
from the training blocks, retrieves ∅ + top-(k−1) from the live index, and trains both models on
the marginal likelihood; the schedule re-embeds the corpus with a snapshot of the retriever
(`realm_index.Refresher`). Held-out examples (from blocks no stage trains on) are scored at step
0, every `eval_every` steps and at the end: masked accuracy of the marginal, of the reader with ∅
alone, RU; the `baseline` BERT is scored once on the same examples. A rerun that finds training
complete reports the run that produced the models (the figures ride in the checkpoint).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from realm_core import devices
from realm_core.config import PretrainRealmConfig
from realm_core.errors import RealmError
from realm_core.io import write_text_atomic
from realm_core.modeling.embedder import RetrieverEmbedder
from realm_core.modeling.encoder import KnowledgeAugEncoder
from realm_core.retrieval import embed
from realm_core.training import checkpoint as ckpt
from realm_core.training import distributed
from realm_core.training.loop import LoopConfig, train
from realm_core.training.realm import (CandidateBuilder, RealmModel, RealmStream, baseline_accuracy, evaluate_realm,
                                       realm_objective)
from realm_core.training.realm_data import ExampleSource, RealmCorpus, fixed_examples
from realm_core.training.realm_index import (IndexVersions, LiveIndex, Refresher, RefreshRunner, RefreshSchedule,
                                             embed_corpus)

EVAL_SEED = 12345  # the held-out example draw: the same for every run and ablation


def _initial_vectors(cfg: PretrainRealmConfig, corpus: RealmCorpus, info) -> np.ndarray | None:
    """build_index's embeddings of the retriever, in corpus row order, when they are its and the corpus's."""
    if not cfg.initial_index:
        return None
    try:
        manifest = embed.read_manifest(cfg.initial_index)
    except RealmError as exc:
        info(f"initial index not reused ({exc}); embedding the corpus at step 0")
        return None
    same = (manifest.get("encoder_hash") == embed.encoder_hash(cfg.retriever)
            and manifest.get("corpus_hash") == embed.corpus_hash(cfg.blocks))
    if not same:
        info(f"{cfg.initial_index}: embeddings of another retriever or corpus; embedding the corpus at step 0")
        return None
    ids = embed.load_ids(cfg.initial_index, manifest)
    vectors = np.concatenate([v for _, v in embed.iter_embeddings(cfg.initial_index)]).astype(np.float32)
    order = {int(b): i for i, b in enumerate(ids)}
    try:
        return vectors[[order[int(b)] for b in corpus.block_ids]]
    except KeyError:
        return None


def _settings(cfg: PretrainRealmConfig, corpus: RealmCorpus) -> dict[str, Any]:
    keys = ("retriever", "encoder", "num_candidates", "allow_trivial", "masking", "loss", "max_query_len",
            "max_candidate_len", "max_masks", "refresh_schedule", "refresh_mode", "batch_size", "heldout_fraction",
            "eval_examples")
    return {"objective": "realm", **{k: getattr(cfg, k) for k in keys},
            "blocks": {"rows": len(corpus), "fingerprint": embed.corpus_hash(cfg.blocks)[:16]}}


def load_models(cfg: PretrainRealmConfig, device) -> RealmModel:
    """The retriever and encoder the run starts from (each seeded, on `device`)."""
    retriever = RetrieverEmbedder.from_pretrained(cfg.retriever)
    encoder = KnowledgeAugEncoder.from_init(cfg.encoder, max_query_len=cfg.max_query_len,
                                            max_candidate_len=cfg.max_candidate_len, seed=cfg.seed)
    encoder.max_query_len, encoder.max_candidate_len = cfg.max_query_len, cfg.max_candidate_len
    if retriever.tokenizer.get_vocab() != encoder.tokenizer.get_vocab():
        raise RealmError(f"pretrain_realm: retriever {cfg.retriever} and encoder {cfg.encoder} use different "
                         f"vocabularies; REALM passes the same wordpieces to both")
    return RealmModel(retriever, encoder).to(device)


def run_pretrain_realm(cfg: PretrainRealmConfig, on_log: Callable[[dict[str, Any]], None] | None = None,
                       info: Callable[[str], None] = print, runner: RefreshRunner | None = None) -> dict[str, Any]:
    """Train (or resume) REALM; write and return the metrics (rank 0; other ranks {"rank": r})."""
    resolved = devices.resolve_stage(cfg, "pretrain_realm")
    device, precision = torch.device(resolved.device), resolved.precision
    rank = distributed.init_from_env(device)
    if device.type == "cuda" and rank.distributed:
        device = devices.resolve_device(f"cuda:{rank.local_rank}", key="pretrain_realm.device")
    if rank.distributed and cfg.refresh_mode == "async":
        raise RealmError("pretrain_realm.refresh_mode: async runs in one process; use sync under torchrun")
    micro, rest = divmod(cfg.batch_size, cfg.grad_accum * rank.world_size)
    if rest or micro < 1:
        raise RealmError(f"pretrain_realm.batch_size {cfg.batch_size} must split into grad_accum {cfg.grad_accum} "
                         f"x {rank.world_size} process(es)")
    try:
        torch.manual_seed(cfg.seed)
        model = load_models(cfg, device)
        corpus = RealmCorpus(cfg.blocks, cfg.salient_spans, model.retriever.tokenizer,
                             max_doc_len=model.retriever.max_doc_len, max_candidate_len=cfg.max_candidate_len,
                             heldout_fraction=cfg.heldout_fraction)
        heldout = fixed_examples(corpus, "heldout", cfg.eval_examples, seed=EVAL_SEED, masking="salient",
                                 max_query_len=cfg.max_query_len, max_masks=cfg.max_masks)
        if cfg.eval_examples and not heldout:
            raise RealmError(f"{cfg.blocks}: no held-out block yields an example (heldout_fraction {cfg.heldout_fraction})")
        source = ExampleSource(corpus, "train", seed=cfg.seed + rank.rank, masking=cfg.masking,
                               max_query_len=cfg.max_query_len, max_masks=cfg.max_masks)
        builder = CandidateBuilder(corpus, model.encoder, k=cfg.num_candidates, allow_trivial=cfg.allow_trivial,
                                   precision=precision)
        versions = IndexVersions(Path(cfg.checkpoint_dir) / "index")
        if rank.is_main:
            versions.clean_temporary()
        stream = RealmStream(source, builder, batch_size=micro, versions=versions, template=model.retriever)
        schedule = RefreshSchedule(cfg.refresh_schedule)
        refresher = Refresher(stream, model.retriever, corpus.doc_ids, versions, schedule=schedule,
                              mode=cfg.refresh_mode, precision=precision, batch_size=cfg.refresh_batch_size,
                              runner=runner, info=info, last_step=cfg.steps, main=rank.is_main,
                              barrier=distributed.barrier)
        retrieval = cfg.num_candidates > 1

        def cold_start() -> None:
            """Index version 0, from the retriever the run starts with (rank 0 builds, all load)."""
            if rank.is_main:
                vectors = _initial_vectors(cfg, corpus, info)
                reused = vectors is not None
                if vectors is None:
                    vectors = embed_corpus(model.retriever, corpus.doc_ids, precision=precision,
                                           batch_size=cfg.refresh_batch_size)
                versions.save(LiveIndex(0, 0, _snapshot(model.retriever), vectors))
                info(f"index v0: {len(vectors):,} blocks ({'reused ' + cfg.initial_index if reused else 'embedded'})")
            distributed.barrier()
            stream.install(versions.load(0, model.retriever))

        def ensure_live() -> None:
            if retrieval and stream.live is None:
                cold_start()

        def after_step(step: int, _model) -> None:
            stream.step = step
            if retrieval:
                refresher.after_step(step)
                if rank.is_main and stream.refreshes and stream.refreshes[-1].installed_step == step:
                    keep = _named_versions(cfg.checkpoint_dir) | {stream.live.version, refresher.pending_version}
                    versions.prune(keep, temporary=False)  # an async refresh may be writing one

        def evaluate(m) -> dict[str, float]:
            ensure_live()
            return evaluate_realm(m, builder, stream.live, heldout, batch_size=cfg.eval_batch_size, precision=precision)

        class _Lazy:  # the stream, building index version 0 on first use (after a resume, it is loaded)
            def __next__(self):
                ensure_live()
                return next(stream)

            def state_dict(self):
                return {**stream.state_dict(), "step": stream.step}

            def load_state_dict(self, state):
                stream.load_state_dict(state)
                stream.step = int(state.get("step", 0))

        if rank.distributed:
            # Index v0 needs every rank (rank 0 embeds, all load, a barrier between), and the loop's
            # step-0 evaluation runs on rank 0 alone: build it now, not lazily inside that evaluation.
            ensure_live()
        warmup = None if cfg.warmup_steps < 0 else cfg.warmup_steps
        loop_cfg = LoopConfig(steps=cfg.steps, lr=cfg.lr, lr_groups=(("retriever.", cfg.retriever_lr),),
                              warmup_steps=warmup, seed=cfg.seed, log_every=cfg.log_every,
                              grad_accum=cfg.grad_accum, precision=precision,
                              eval_every=cfg.eval_every or cfg.steps,  # 0: at step 0 and the end only
                              eval_at_start=cfg.eval_examples > 0, checkpoint_dir=cfg.checkpoint_dir,
                              checkpoint_every=cfg.checkpoint_every, keep_checkpoints=cfg.keep_checkpoints,
                              resume=cfg.resume, time_budget_s=cfg.time_budget_s or None)
        try:
            result = train(model, realm_objective(cfg.loss == "per_example"), _Lazy(), loop_cfg,
                           settings=_settings(cfg, corpus), on_log=on_log, after_step=after_step,
                           evaluate=evaluate if cfg.eval_examples else None,
                           export=lambda m: (m.retriever.save_pretrained(cfg.retriever_output_dir),
                                             m.encoder.save_pretrained(cfg.encoder_output_dir)))
        finally:
            refresher.finish()
        if not rank.is_main:
            return {"rank": rank.rank, "completed": result.completed, "steps": result.step}
    finally:
        distributed.shutdown()
    metrics = _metrics(cfg, result, stream, heldout, device, precision, rank.world_size, info)
    write_text_atomic(cfg.metrics_file, json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    return metrics


def _snapshot(retriever: RetrieverEmbedder) -> RetrieverEmbedder:
    import copy

    return copy.deepcopy(retriever).eval()


def _named_versions(checkpoint_dir: str) -> set[int]:
    """Index versions that saved checkpoints name (they must survive pruning)."""
    named = set()
    root = Path(checkpoint_dir)
    for child in root.iterdir() if root.is_dir() else []:
        if child.is_dir() and child.name.startswith("step_"):
            try:
                index = ckpt.read_state(child).get("data", {}).get("index")
            except (RealmError, OSError, ValueError):
                continue
            if index:
                named.add(int(index["version"]))
    return named


def _metrics(cfg: PretrainRealmConfig, result, stream: RealmStream, heldout, device, precision, processes,
             info) -> dict[str, Any]:
    evals = [{k: v for k, v in e.items()} for e in result.evals]
    refreshes = [r.to_json() for r in stream.refreshes]
    metrics: dict[str, Any] = {
        "completed": result.completed, "steps": result.step, "target_steps": cfg.steps,
        "train_seconds": round(result.total_elapsed_s, 1), "resumed_at": result.resumed_at,
        "device": device.type, "precision": precision, "processes": processes,
        "num_candidates": cfg.num_candidates, "masking": cfg.masking, "loss": cfg.loss,
        "allow_trivial": cfg.allow_trivial, "refresh_schedule": cfg.refresh_schedule,
        "refresh_mode": cfg.refresh_mode, "batch_size": cfg.batch_size,
        "refreshes": len(refreshes), "refresh_seconds": round(sum(r["seconds"] for r in refreshes), 1),
        "refresh_history": refreshes, "max_staleness_steps": stream.max_staleness,
        "evals": evals,
        "final_train": {k: round(float(v), 4) for k, v in result.last_metrics.items() if isinstance(v, (int, float))},
    }
    if evals:
        metrics["ru_first"] = evals[0].get("retrieval_utility")
        metrics["ru_last"] = evals[-1].get("retrieval_utility")
    if result.completed and evals:
        last = evals[-1]
        baseline = baseline_accuracy(KnowledgeAugEncoder.from_pretrained(cfg.baseline, device=device), heldout,
                                     precision=precision) if cfg.baseline else {}
        metrics["heldout"] = {
            "marginal_accuracy": last.get("accuracy"), "null_accuracy": last.get("null_accuracy"),
            "baseline_accuracy": baseline.get("accuracy"), "retrieval_utility": last.get("retrieval_utility"),
            "p_null": last.get("p_null"), "answer_in_candidates": last.get("answer_in_candidates"),
            "nll": last.get("nll"), "baseline_nll": baseline.get("nll"), "examples": last.get("examples"),
            "masks": last.get("masks"), "step": last.get("step"),
        }
        info(f"held-out: {metrics['heldout']}")
    return metrics


def check_inputs(cfg: PretrainRealmConfig) -> None:
    """Fail fast, before Prefect starts: device, refresh schedule, the input files and models."""
    from realm_core.modeling.embedder import read_config
    from realm_core.modeling.encoder import _is_encoder_dir

    devices.resolve_stage(cfg, "pretrain_realm")
    RefreshSchedule(cfg.refresh_schedule)
    for path, what in ((cfg.blocks, "blocks"), (cfg.salient_spans, "salient spans")):
        if not Path(path).is_file():
            raise RealmError(f"{path}: {what} file not found (pretrain_realm.{'blocks' if what == 'blocks' else 'salient_spans'})")
    read_config(cfg.retriever)
    for key in ("encoder", "baseline"):
        value = getattr(cfg, key)
        if value and Path(value).exists() and not _is_encoder_dir(Path(value)):
            raise RealmError(f"pretrain_realm.{key}: {value} is not a saved encoder (run pretrain_mlm)")
