"""Flow `finetune_qa`: open-QA fine-tuning of one method on one dataset (ORQA's recipe).

    python -m flows.finetune_qa [--params FILE] [--set finetune_qa.dataset=wq --set finetune_qa.method=realm ...]

`dvc repro` runs it per dataset × method (`finetune_qa@nq-orqa`, `@nq-realm`, ...). The mixed
pairs of REALM's Table 2 and BM25 + reader are further `finetune_qa.methods` entries, run with
`--set finetune_qa.method=<name>` (see README). With `time_budget_s`, a run that runs out of time
checkpoints and exits with an error line; rerunning continues.

    torchrun --nproc-per-node N -m flows.finetune_qa [...]

trains on N processes; rank 0 runs the Prefect flow (dev EM, export, metrics).
"""

from __future__ import annotations

import sys

import flows  # noqa: F401  (offline-safe environment defaults before Prefect loads)
from prefect import flow
from prefect.states import Failed

from flows.cli import main
from realm_core.config import FinetuneQAConfig
from realm_core.training.distributed import env_rank
from realm_core.training.qa_stage import check_inputs, run_finetune_qa
from tasks.finetune_qa import finetune_task, publish_finetune_summary


@flow(name="finetune_qa")
def finetune_qa_flow(cfg: FinetuneQAConfig):
    """Fine-tune (resuming if possible), select on dev EM, export the best model."""
    state = finetune_task(cfg, return_state=True)
    metrics = state.result(raise_on_failure=False)
    if state.is_failed() or not isinstance(metrics, dict):
        return Failed(message=state.message)
    publish_finetune_summary(cfg, metrics)
    if not metrics["completed"]:
        return Failed(message=f"finetune_qa: time budget reached at step {metrics['steps']}/{cfg.steps}; "
                              f"checkpoint kept in {cfg.checkpoint_dir}, rerun to continue")
    return {"steps": metrics["steps"], "best": metrics.get("best"), "train_seconds": metrics["train_seconds"]}


def _run(cfg: FinetuneQAConfig):
    state = finetune_qa_flow(cfg, return_state=True)
    if state.is_completed():
        print(f"finetune_qa {cfg.dataset}/{cfg.method}: {state.result()}")
    return state


def _run_worker(cfg: FinetuneQAConfig) -> None:
    """A torchrun rank other than 0: train only."""
    run_finetune_qa(cfg, info=lambda line: None)


if __name__ == "__main__":
    sys.exit(main("finetune_qa", _run if env_rank() == 0 else _run_worker, check_inputs))
