"""Flow `prepare_corpus`: Wikipedia dumps and passage files -> `<output_dir>/blocks.parquet`.

    python -m flows.prepare_corpus [--params FILE] [--set prepare_corpus.KEY=VALUE ...]
"""

from __future__ import annotations

import os
import sys

import flows  # noqa: F401  (offline-safe environment defaults before Prefect loads)
from prefect import flow
from prefect.states import Failed

from flows.cli import main
from realm_core.config import PrepareCorpusConfig
from realm_core.corpus.sources import open_sources, resolve_sources
from flows.runners import shard_runner
from tasks.prepare_corpus import build_blocks, clean_and_pack, publish_summary, run_prepare_corpus


@flow(name="prepare_corpus")
def prepare_corpus_flow(cfg: PrepareCorpusConfig):
    """Parse, clean, split and pack the configured sources into blocks.parquet."""
    if cfg.dask_address:
        # The flow reads the dumps; each batch of pages is a `clean_and_pack` task on the flow's
        # task runner (Dask, see _run), collected in order, so the output is the local one.
        metrics = run_prepare_corpus(cfg, submit=lambda fn, *args: clean_and_pack.submit(*args))
        if not isinstance(metrics, dict):
            return metrics  # a Failed state with the one-line message
    else:
        state = build_blocks(cfg, return_state=True)
        metrics = state.result(raise_on_failure=False)
        if state.is_failed() or not isinstance(metrics, dict):
            return Failed(message=state.message)
    publish_summary(cfg, metrics)
    return {"blocks": metrics["blocks"], "pages_read": metrics["pages_read"], "docs_kept": metrics["docs_kept"]}


def preflight(cfg: PrepareCorpusConfig) -> None:
    """Resolve globs and sniff every source before any Prefect server starts."""
    open_sources(resolve_sources(cfg.sources))


def _run(cfg: PrepareCorpusConfig):
    flow_ = prepare_corpus_flow
    if cfg.dask_address:
        flow_ = flow_.with_options(task_runner=shard_runner(cfg.workers or os.cpu_count() or 1, cfg.dask_address))
    state = flow_(cfg, return_state=True)
    if state.is_completed():
        print(f"prepare_corpus: {state.result()}")
    return state


if __name__ == "__main__":
    sys.exit(main("prepare_corpus", _run, preflight))
