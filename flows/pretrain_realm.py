"""Flow `pretrain_realm`: REALM pre-training with the index re-embedded while training.

    python -m flows.pretrain_realm [--params FILE] [--set pretrain_realm.KEY=VALUE ...]

Starts from the ICT retriever (`models/ict`, index version 0 = build_index@ict's embeddings) and
"our BERT" (`models/pretrain_mlm`); writes `models/realm` (retriever) and `models/realm_encoder`.
Each index refresh is a task run of this flow (`refresh vN (snapshot of step S)`); in async mode
it runs beside training on the task runner. A run stopped by `time_budget_s` (or killed) resumes
from its checkpoint with the same example order and the index version it had.

    torchrun --nproc-per-node N -m flows.pretrain_realm [...]

trains on N processes (sync refreshes; rank 0 runs the flow, embeds and writes).
"""

from __future__ import annotations

import sys

import flows  # noqa: F401  (offline-safe environment defaults before Prefect loads)
from prefect import flow
from prefect.states import Failed

from flows.cli import main
from realm_core.config import PretrainRealmConfig
from realm_core.training.distributed import env_rank
from realm_core.training.realm_stage import check_inputs, run_pretrain_realm
from tasks.pretrain_realm import publish_realm_summary, train_realm_task


@flow(name="pretrain_realm")
def pretrain_realm_flow(cfg: PretrainRealmConfig):
    """Train (resuming if possible) and score on held-out examples."""
    state = train_realm_task(cfg, return_state=True)
    metrics = state.result(raise_on_failure=False)
    if state.is_failed() or not isinstance(metrics, dict):
        return Failed(message=state.message)
    publish_realm_summary(cfg, metrics)
    if not metrics["completed"]:
        return Failed(message=f"pretrain_realm: time budget reached at step {metrics['steps']}/{cfg.steps}; "
                              f"checkpoint kept in {cfg.checkpoint_dir}, rerun to continue")
    return {"steps": metrics["steps"], "heldout": metrics.get("heldout"), "ru_first": metrics.get("ru_first"),
            "ru_last": metrics.get("ru_last"), "refreshes": metrics["refreshes"],
            "train_seconds": metrics["train_seconds"]}


def _run(cfg: PretrainRealmConfig):
    state = pretrain_realm_flow(cfg, return_state=True)
    if state.is_completed():
        print(f"pretrain_realm: {state.result()}")
    return state


def _run_worker(cfg: PretrainRealmConfig) -> None:
    """A torchrun rank other than 0: train only."""
    run_pretrain_realm(cfg, info=lambda line: None)


if __name__ == "__main__":
    sys.exit(main("pretrain_realm", _run if env_rank() == 0 else _run_worker, check_inputs))
