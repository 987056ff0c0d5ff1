"""Tasks of the prepare_corpus stage."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_progress_artifact, update_progress_artifact
from prefect.states import Failed

from realm_core.config import PrepareCorpusConfig
from realm_core.corpus.prepare import Progress, prepare_corpus
from realm_core.corpus.worker import process_batch
from realm_core.errors import RealmError


@task(name="clean_and_pack", cache_result_in_memory=False)
def clean_and_pack(settings: tuple, source: str, docs: list) -> tuple:
    """One batch of pages -> blocks (the shard task when prepare_corpus runs on Dask)."""
    return process_batch(settings, source, docs)


def run_prepare_corpus(cfg: PrepareCorpusConfig, submit=None):
    """realm_core's prepare_corpus with progress in the log (pages/s) and in the UI; `submit`
    sends the batches elsewhere (see the flow)."""
    logger = get_run_logger()
    artifact_id = create_progress_artifact(0.0, key="prepare-corpus-progress", description="prepare_corpus: reading sources")

    def on_progress(p: Progress) -> None:
        done = (p.source_index + (p.bytes_read / p.bytes_total if p.bytes_total else 1.0)) / p.n_sources
        rate = p.pages_read / p.source_elapsed_s if p.source_elapsed_s else 0.0
        logger.info("%s [%d/%d]: %d pages read, %d kept, %d blocks, %.1f%% of file, %.0f pages/s%s",
                    p.source, p.source_index + 1, p.n_sources, p.pages_read, p.docs_kept, p.blocks,
                    100 * p.bytes_read / max(p.bytes_total, 1), rate,
                    f", {p.resumed_chunks} chunks resumed" if p.resumed_chunks else "")
        update_progress_artifact(artifact_id, min(100.0, 100 * done), description=f"prepare_corpus: {p.source}")

    try:
        metrics = prepare_corpus(cfg, progress=on_progress, submit=submit)
    except RealmError as exc:
        # Expected failure (bad input): fail the run with the one-line message, no traceback.
        return Failed(message=str(exc))
    update_progress_artifact(artifact_id, 100.0, description="prepare_corpus: done")
    return metrics


@task(name="build_blocks", cache_result_in_memory=False)
def build_blocks(cfg: PrepareCorpusConfig):
    """Run realm_core's prepare_corpus (local worker processes) with progress in the log and UI."""
    return run_prepare_corpus(cfg)


@task(name="publish_summary")
def publish_summary(cfg: PrepareCorpusConfig, metrics: dict) -> str:
    """Markdown artifact: pages read, kept, dropped per reason, blocks, wordpiece histogram."""
    return str(create_markdown_artifact(summary_markdown(cfg, metrics), key="prepare-corpus-summary",
                                        description="prepare_corpus summary"))


def summary_markdown(cfg: PrepareCorpusConfig, m: dict) -> str:
    wp = m["wordpieces"]
    top = max(h["blocks"] for h in wp["histogram"]) or 1
    rows = [
        "# prepare_corpus",
        "",
        f"Output: `{cfg.output_dir}/blocks.parquet` ({m['blocks']:,} blocks, block_size {wp['block_size']})",
        "",
        "| | count |", "|---|---:|",
        f"| pages read | {m['pages_read']:,} |", f"| documents kept | {m['docs_kept']:,} |",
        *[f"| dropped: {reason} | {n:,} |" for reason, n in m["dropped"].items()],
        f"| paragraphs | {m['paragraphs']:,} |",
        f"| paragraphs dropped (markup left) | {m['paragraphs_dropped_markup']:,} |",
        f"| sentences | {m['sentences']:,} |", f"| long sentences split | {m['long_sentences_split']:,} |",
        f"| blocks | {m['blocks']:,} |",
        f"| time | {m['seconds']} s ({m['pages_per_s']} pages/s) |",
        "", "## Per source", "", "| source | format | pages | kept | blocks |", "|---|---|---:|---:|---:|",
        *[f"| {n} | {s['format']} | {s['pages_read']:,} | {s['docs_kept']:,} | {s['blocks']:,} |"
          for n, s in m["sources"].items()],
        "", f"## Wordpieces per block (mean {wp['mean']}, median {wp['median']}, max {wp['max']})", "",
        "| wordpieces | blocks | |", "|---|---:|---|",
        *[f"| {h['from']}–{h['to']} | {h['blocks']:,} | {'█' * round(30 * h['blocks'] / top)} |" for h in wp["histogram"]],
    ]
    return "\n".join(rows)
