"""Tasks of the evaluate_retrieval stage."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.states import Failed

from realm_core.config import EvaluateRetrievalConfig
from realm_core.errors import RealmError
from realm_core.retrieval.evaluate import run_evaluate_retrieval


@task(name="score_retrievers", cache_result_in_memory=False)
def score_retrievers(cfg: EvaluateRetrievalConfig):
    """Answer coverage, then Recall@k of BM25 and every dense retriever; each result to the log."""
    logger = get_run_logger()
    try:
        return run_evaluate_retrieval(cfg, info=logger.info)
    except RealmError as exc:
        return Failed(message=str(exc))


@task(name="publish_retrieval_summary")
def publish_retrieval_summary(cfg: EvaluateRetrievalConfig, m: dict) -> None:
    """Markdown artifact: the recall table against the coverage ceiling."""
    names = [n for n in ("bm25", *cfg.retrievers) if n in m]
    ks = [f"recall@{k}" for k in cfg.ks]
    rows = [f"# evaluate_retrieval: {cfg.dataset} ({cfg.split})", "",
            f"{m['n_questions']:,} questions over {m['n_blocks']:,} blocks; answer coverage (ceiling) "
            f"**{m['answer_coverage']:.3f}**"
            + (f"; query towers on {m['device']} in {m['precision']}" if "device" in m else ""),
            "", "| retriever | " + " | ".join(ks) + " |",
            "|---|" + "---:|" * len(ks)]
    rows += [f"| {n} | " + " | ".join(f"{m[n][k]:.3f}" for k in ks) + " |" for n in names]
    rows += ["", f"Retrieved blocks per question (DPR format): `{cfg.output_dir}/{cfg.dataset}/<retriever>.json`"]
    create_markdown_artifact("\n".join(rows), key=f"evaluate-retrieval-{cfg.dataset}",
                             description=f"evaluate_retrieval {cfg.dataset}")
