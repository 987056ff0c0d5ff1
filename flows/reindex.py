"""Flow `reindex`: re-embed what changed with the newest (or a named) retriever; swap the index.

    python -m flows.reindex [--params FILE] [--set reindex.KEY=VALUE ...]

Blocks, shard layout and index type come from the `build_index` section, so the result is what
`dvc repro build_index@ict` would build from the same inputs. How DVC stays truthful:
- reindexing the DVC-tracked retriever (`tracked_retriever`) into the tracked root: if only data
  inputs (blocks, retriever) or params changed since the stage last ran, the new output is
  recorded with `dvc commit <dvc_stage>` and `dvc status` is clean afterwards; if stage code
  changed, the index is still rebuilt but not recorded (the run says to `dvc repro`);
- any other retriever (a training run's newest export) goes to `untracked_output_dir`, which DVC
  does not track, so nothing DVC records becomes false.
`reindex.device`/`reindex.precision` replace the build_index section's (a serving machine picks its
own); when the resolved precision differs from what build_index would use, the tracked index is
rebuilt but not recorded in DVC, since `dvc repro` would build other vectors.
Served on a schedule and on `realm.retriever.saved` events by `python -m flows.serve`.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import flows  # noqa: F401  (offline-safe environment defaults before Prefect loads)
from prefect import flow, get_run_logger
from prefect.states import Failed
from prefect.task_runners import ThreadPoolTaskRunner

from flows.build_index import embed_and_index
from flows.cli import build_parser, load_config, quiet_reported_failures
from realm_core.config import BuildIndexConfig, ReindexConfig
from realm_core.devices import resolve_stage
from realm_core.errors import RealmError
from realm_core.retrieval import build_stage
from realm_core.retrieval.refresh import resolve_retriever
from tasks.reindex import dvc_commit_stage, dvc_stage_status, publish_reindex_summary

quiet_reported_failures()  # a served run that fails with an expected error logs one line, no traceback


def load_configs(overrides: list[str] | None = None, params_file: str | None = None) -> tuple[ReindexConfig, BuildIndexConfig]:
    """The reindex section and the build_index section it builds with (params.yaml + overrides)."""
    import argparse

    args = argparse.Namespace(params=params_file, overrides=list(overrides or []))
    return load_config("reindex", args), load_config("build_index", args)


# One shard at a time in this process: the embedder (and torch's intra-op threads) use every core
# already, and loading models from several threads at once races in transformers' lazy imports.
@flow(name="reindex", task_runner=ThreadPoolTaskRunner(max_workers=1))
def reindex_flow(overrides: list[str] | None = None, params_file: str | None = None):
    """Incrementally re-index the corpus with the configured retriever and publish a new version."""
    logger = get_run_logger()
    t0 = time.monotonic()
    try:
        cfg, build = load_configs(overrides, params_file)
        cfg = resolve_stage(cfg, "reindex")  # once: every shard task embeds on this device, in this precision
        retriever = resolve_retriever(cfg.retriever)
        tracked = bool(cfg.dvc_stage) and retriever.resolve() == Path(cfg.tracked_retriever).resolve()
        root = cfg.output_dir if tracked else cfg.untracked_output_dir
        bcfg = build.model_copy(update={
            "retriever": str(retriever), "output_dir": root, "keep_versions": cfg.keep_versions,
            "metrics_file": cfg.metrics_file if tracked else f"{root}/metrics.json",
            "device": cfg.device, "precision": cfg.precision})
        stage_precision = build_stage.resolve(build).precision if tracked else bcfg.precision
    except RealmError as exc:
        logger.error("%s", exc)
        return Failed(message=str(exc))
    logger.info("retriever %s -> %s (%s), on %s in %s", retriever, root,
                f"DVC stage {cfg.dvc_stage}" if tracked else "untracked by DVC", bcfg.device, bcfg.precision)
    dvc = dvc_stage_status(cfg.dvc_stage, [build.blocks, cfg.tracked_retriever]) if tracked else {"commit": False}
    if tracked and dvc["commit"] and stage_precision != bcfg.precision:
        dvc = {"commit": False, "reason": f"reindex.precision resolves to {bcfg.precision}, build_index.precision to "
                                          f"{stage_precision}: the index is rebuilt but not recorded in {cfg.dvc_stage}"}
    metrics = embed_and_index(bcfg, "reindex-progress", os.cpu_count() or 1)
    if not isinstance(metrics, dict):
        return metrics
    if tracked and dvc["commit"]:
        dvc.update(dvc_commit_stage(cfg.dvc_stage))
        dvc["summary"] = f"recorded in `{cfg.dvc_stage}` (dvc status clean: {dvc['dvc_status_clean']})"
    else:
        dvc["summary"] = dvc.get("reason") or "not tracked by DVC"
    publish_reindex_summary(str(retriever), root, metrics, dvc)
    logger.info("re-embedded %d of %d blocks, version %s, %.1f s", metrics["rows_embedded"], metrics["rows"],
                metrics["version"], time.monotonic() - t0)
    return {"retriever": str(retriever), "root": root, "version": metrics["version"],
            "rows": metrics["rows"], "rows_embedded": metrics["rows_embedded"], "dvc": dvc["summary"]}


def main(argv: list[str] | None = None) -> int:
    args = build_parser("reindex").parse_args(argv)
    try:
        cfg, _ = load_configs(args.overrides, args.params)  # both sections must validate
        resolve_retriever(cfg.retriever)  # fail fast, before a Prefect server starts
        resolve_stage(cfg, "reindex")  # e.g. device: cuda on a machine without one
    except RealmError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    state = reindex_flow(args.overrides, args.params, return_state=True)
    if state.is_failed():
        print(f"error: {state.message}", file=sys.stderr)
        return 1
    print(f"reindex: {state.result()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
