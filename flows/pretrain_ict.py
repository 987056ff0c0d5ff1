"""Flow `pretrain_ict`: warm-start the retriever with the Inverse Cloze Task (ORQA).

    python -m flows.pretrain_ict [--params FILE] [--set pretrain_ict.KEY=VALUE ...]

Writes `models/ict` (trained) and `models/ict_init` (the same retriever before training). With
`time_budget_s`, a run that runs out of time checkpoints, exits with an error line saying so and
writes no retriever; rerunning continues from the checkpoint.

    torchrun --nproc-per-node N -m flows.pretrain_ict [...]

trains with DistributedDataParallel on N processes (gloo on CPU, NCCL on GPU). Rank 0 runs the
Prefect flow (logs, artifacts, metrics, models, checkpoints); the other ranks train without
Prefect, so one torchrun job is one flow run.
"""

from __future__ import annotations

import sys

import flows  # noqa: F401  (offline-safe environment defaults before Prefect loads)
from prefect import flow
from prefect.events import emit_event
from prefect.states import Failed

from flows.cli import main
from realm_core.config import PretrainICTConfig
from realm_core.training.distributed import env_rank
from realm_core.training.ict_stage import check_inputs, run_pretrain_ict
from tasks.pretrain_ict import publish_ict_summary, train_ict_task


@flow(name="pretrain_ict")
def pretrain_ict_flow(cfg: PretrainICTConfig):
    """Save the step-0 init, train (resuming if possible), score ICT accuracy before/after."""
    state = train_ict_task(cfg, return_state=True)
    metrics = state.result(raise_on_failure=False)
    if state.is_failed() or not isinstance(metrics, dict):
        return Failed(message=state.message)
    publish_ict_summary(cfg, metrics)
    if not metrics["completed"]:
        return Failed(message=f"pretrain_ict: time budget reached at step {metrics['steps']}/{cfg.steps}; "
                              f"checkpoint kept in {cfg.checkpoint_dir}, rerun to continue")
    # The served `reindex` deployment listens for this (python -m flows.serve).
    emit_event(event="realm.retriever.saved", resource={"prefect.resource.id": f"realm.retriever.{cfg.output_dir}"},
               payload={"path": cfg.output_dir, "steps": metrics["steps"]})
    return {"steps": metrics["steps"], "before": metrics["before"], "after": metrics["after"],
            "train_seconds": metrics["train_seconds"]}


def _run(cfg: PretrainICTConfig):
    state = pretrain_ict_flow(cfg, return_state=True)
    if state.is_completed():
        print(f"pretrain_ict: {state.result()}")
    return state


def _run_worker(cfg: PretrainICTConfig) -> None:
    """A torchrun rank other than 0: train only (rank 0's flow run reports for the job)."""
    run_pretrain_ict(cfg, info=lambda line: None)


if __name__ == "__main__":
    sys.exit(main("pretrain_ict", _run if env_rank() == 0 else _run_worker, check_inputs))
