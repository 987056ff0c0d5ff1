"""Flow `evaluate`: open-QA test EM, fine-tuned Recall@k and the reader's oracle, per method.

    python -m flows.evaluate [--params FILE] [--set evaluate.dataset=wq ...]
    python -m flows.evaluate --set evaluate.dataset_file=my_questions.jsonl   # a user's NQ-open JSONL

`dvc repro` runs it once per dataset (`evaluate@nq`, `@wq`, `@ct`).
"""

from __future__ import annotations

import sys

import flows  # noqa: F401  (offline-safe environment defaults before Prefect loads)
from prefect import flow
from prefect.states import Failed

from flows.cli import main
from realm_core.config import EvaluateConfig
from realm_core.qa.evaluate import check_inputs
from tasks.evaluate import publish_eval_summary, score_methods


@flow(name="evaluate")
def evaluate_flow(cfg: EvaluateConfig):
    """Score every fine-tuned method; metrics file, predictions with evidence, a summary artifact."""
    state = score_methods(cfg, return_state=True)
    metrics = state.result(raise_on_failure=False)
    if state.is_failed() or not isinstance(metrics, dict):
        return Failed(message=state.message)
    publish_eval_summary(cfg, metrics)
    return {m: {k: metrics[m][k] for k in ("em", "recall@5", "reader_oracle") if k in metrics[m]}
            for m in cfg.methods if m in metrics}


def _run(cfg: EvaluateConfig):
    state = evaluate_flow(cfg, return_state=True)
    if state.is_completed():
        print(f"evaluate {cfg.dataset}: {state.result()}")
    return state


if __name__ == "__main__":
    sys.exit(main("evaluate", _run, check_inputs))
