"""Flow `evaluate_retrieval`: zero-shot Recall@k on one QA dataset (BM25, the init before ICT, ICT).

    python -m flows.evaluate_retrieval [--params FILE] [--set evaluate_retrieval.dataset=wq ...]

`dvc repro` runs it once per dataset (`evaluate_retrieval@nq`, `@wq`, `@ct`).
"""

from __future__ import annotations

import sys

import flows  # noqa: F401  (offline-safe environment defaults before Prefect loads)
from prefect import flow
from prefect.states import Failed

from flows.cli import main
from realm_core.config import EvaluateRetrievalConfig
from realm_core.retrieval.evaluate import check_inputs
from tasks.evaluate_retrieval import publish_retrieval_summary, score_retrievers


@flow(name="evaluate_retrieval")
def evaluate_retrieval_flow(cfg: EvaluateRetrievalConfig):
    """Score every retriever on the dataset; metrics file, DPR-style files and a summary artifact."""
    state = score_retrievers(cfg, return_state=True)
    metrics = state.result(raise_on_failure=False)
    if state.is_failed() or not isinstance(metrics, dict):
        return Failed(message=state.message)
    publish_retrieval_summary(cfg, metrics)
    return {k: v for k, v in metrics.items() if k not in ("dataset", "split", "n_blocks", "seconds")}


def _run(cfg: EvaluateRetrievalConfig):
    state = evaluate_retrieval_flow(cfg, return_state=True)
    if state.is_completed():
        print(f"evaluate_retrieval {cfg.dataset}: {state.result()}")
    return state


if __name__ == "__main__":
    sys.exit(main("evaluate_retrieval", _run, check_inputs))
