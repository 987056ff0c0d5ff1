"""Flow `pretrain_mlm`: "our BERT", a masked LM trained on the corpus blocks.

    python -m flows.pretrain_mlm [--params FILE] [--set pretrain_mlm.KEY=VALUE ...]

Writes `models/pretrain_mlm`: REALM's no-retrieval baseline and the init of its
knowledge-augmented encoder (the reader). With `time_budget_s`, a run that runs out of time
checkpoints, exits with an error line saying so and writes no encoder; rerunning continues from
the checkpoint.

    torchrun --nproc-per-node N -m flows.pretrain_mlm [...]

trains with DistributedDataParallel on N processes (gloo on CPU, NCCL on GPU). Rank 0 runs the
Prefect flow (logs, artifacts, metrics, model, checkpoints); the other ranks train without
Prefect, so one torchrun job is one flow run.
"""

from __future__ import annotations

import sys

import flows  # noqa: F401  (offline-safe environment defaults before Prefect loads)
from prefect import flow
from prefect.states import Failed

from flows.cli import main
from realm_core.config import PretrainMLMConfig
from realm_core.training.distributed import env_rank
from realm_core.training.mlm_stage import check_inputs, run_pretrain_mlm
from tasks.pretrain_mlm import publish_mlm_summary, train_mlm_task


@flow(name="pretrain_mlm")
def pretrain_mlm_flow(cfg: PretrainMLMConfig):
    """Train the masked LM (resuming if possible), score it on held-out blocks before/after."""
    state = train_mlm_task(cfg, return_state=True)
    metrics = state.result(raise_on_failure=False)
    if state.is_failed() or not isinstance(metrics, dict):
        return Failed(message=state.message)
    publish_mlm_summary(cfg, metrics)
    if not metrics["completed"]:
        return Failed(message=f"pretrain_mlm: time budget reached at step {metrics['steps']}/{cfg.steps}; "
                              f"checkpoint kept in {cfg.checkpoint_dir}, rerun to continue")
    return {"steps": metrics["steps"], "before": metrics["before"], "after": metrics["after"],
            "train_seconds": metrics["train_seconds"]}


def _run(cfg: PretrainMLMConfig):
    state = pretrain_mlm_flow(cfg, return_state=True)
    if state.is_completed():
        print(f"pretrain_mlm: {state.result()}")
    return state


def _run_worker(cfg: PretrainMLMConfig) -> None:
    """A torchrun rank other than 0: train only (rank 0's flow run reports for the job)."""
    run_pretrain_mlm(cfg, info=lambda line: None)


if __name__ == "__main__":
    sys.exit(main("pretrain_mlm", _run if env_rank() == 0 else _run_worker, check_inputs))
