"""Tasks of the evaluate_retrieval stage."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.states import Failed

from realm_core.config import DEFAULT_TOKENIZER, EvaluateRetrievalConfig
from realm_core.errors import RealmError
from realm_core.modeling.embedder import read_config
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
    for name, spec in cfg.retrievers.items():
        init = _init_of(spec.model)
        rows.append(f"- `{name}`: `{spec.model}` (init `{init}`)")
    if any(_init_of(s.model) == DEFAULT_TOKENIZER for s in cfg.retrievers.values()):
        rows.append("- The package init is all-MiniLM-L6-v2, trained contrastively on question-passage pairs "
                    "(NQ-train, SQuAD, TriviaQA among them), so the retriever before ICT is the \"MiniLM init "
                    "(before ICT)\", not an untrained one; the corpus holds the SQuAD dev paragraphs and the "
                    "NQ-open gold passages, so its NQ figures are optimistic.")
    rows += ["", f"Retrieved blocks per question (DPR format): `{cfg.output_dir}/{cfg.dataset}/<retriever>.json`"]
    create_markdown_artifact("\n".join(rows), key=f"evaluate-retrieval-{cfg.dataset}",
                             description=f"evaluate_retrieval {cfg.dataset}")


def _init_of(model_dir: str) -> str:
    """The init a saved retriever started from (its config.json), or "?" if unreadable."""
    try:
        return str(read_config(model_dir).get("init", "?"))
    except RealmError:
        return "?"
