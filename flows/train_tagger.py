"""Flow `train_tagger`: fine-tune the salient-span NER tagger on CoNLL-2003.

    python -m flows.train_tagger [--params FILE] [--set train_tagger.KEY=VALUE ...]
"""

from __future__ import annotations

import sys
from pathlib import Path

import flows  # noqa: F401  (offline-safe environment defaults before Prefect loads)
from prefect import flow
from prefect.states import Failed

from flows.cli import main
from realm_core.config import TrainTaggerConfig
from realm_core.devices import resolve_stage
from realm_core.errors import RealmError
from tasks.train_tagger import fine_tune_tagger, publish_tagger_summary


@flow(name="train_tagger")
def train_tagger_flow(cfg: TrainTaggerConfig):
    """Train (resuming if possible), select on dev, report test P/R/F1."""
    state = fine_tune_tagger(cfg, return_state=True)
    metrics = state.result(raise_on_failure=False)
    if state.is_failed() or not isinstance(metrics, dict):
        return Failed(message=state.message)
    if not metrics["completed"]:  # no model was written, so DVC cannot record a half-trained one
        return Failed(message=f"train_tagger: time budget reached at step {metrics['steps']}/{cfg.max_steps}; "
                              f"checkpoint kept in {cfg.checkpoint_dir}, rerun to continue")
    publish_tagger_summary(cfg, metrics)
    return {k: metrics[k] for k in ("test_f1", "dev_f1", "steps", "train_seconds")}


def preflight(cfg: TrainTaggerConfig) -> None:
    resolve_stage(cfg, "train_tagger")  # a device that is not there fails before Prefect starts
    for key in ("train_file", "dev_file", "test_file"):
        if not Path(getattr(cfg, key)).is_file():
            raise RealmError(f"train_tagger.{key}: {getattr(cfg, key)}: no such file")


def _run(cfg: TrainTaggerConfig):
    state = train_tagger_flow(cfg, return_state=True)
    if state.is_completed():
        print(f"train_tagger: {state.result()}")
    return state


if __name__ == "__main__":
    sys.exit(main("train_tagger", _run, preflight))
