"""Tasks of the train_tagger stage."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_progress_artifact, update_progress_artifact
from prefect.states import Failed

from realm_core.config import TrainTaggerConfig
from realm_core.entities.train_stage import run_train_tagger
from realm_core.errors import RealmError


@task(name="fine_tune_tagger", cache_result_in_memory=False)
def fine_tune_tagger(cfg: TrainTaggerConfig):
    """Train/resume the tagger; loss and dev F1 go to the log, step progress to the UI."""
    logger = get_run_logger()
    artifact_id = create_progress_artifact(0.0, key="train-tagger-progress", description="train_tagger")

    def on_event(rec: dict) -> None:
        if rec["event"] == "train":
            logger.info("step %d/%d  loss %.4f  lr %.2e  %.0f s", rec["step"], cfg.max_steps, rec["loss"], rec["lr"], rec["elapsed_s"])
            update_progress_artifact(artifact_id, 100.0 * rec["step"] / cfg.max_steps)
        elif rec["event"] == "eval":
            logger.info("step %d  dev F1 %.4f (best %.4f at step %d)", rec["step"], rec["f1"], rec["best"]["value"],
                        rec["best"]["step"])
        else:
            logger.info("%s", rec)

    try:
        metrics = run_train_tagger(cfg, log=on_event)
    except RealmError as exc:
        return Failed(message=str(exc))
    if metrics["completed"]:
        update_progress_artifact(artifact_id, 100.0)
    return metrics


@task(name="publish_tagger_summary")
def publish_tagger_summary(cfg: TrainTaggerConfig, m: dict) -> None:
    """Markdown artifact: per-type P/R/F1 on test and dev, training time."""
    rows = ["# train_tagger", "", f"Model: `{cfg.output_dir}` (init `{cfg.init}`), best step {m['best_step']} of {m['steps']}"
            f" ({m['device']}, {m['precision']}), "
            f"{m['train_sentences']:,} training sentences, {m['train_seconds']} s", "",
            "| split | type | precision | recall | F1 |", "|---|---|---:|---:|---:|"]
    for split in ("test", "dev"):
        for typ, s in m[split].items():
            rows.append(f"| {split} | {typ} | {s['precision']:.4f} | {s['recall']:.4f} | {s['f1']:.4f} |")
    create_markdown_artifact("\n".join(rows), key="train-tagger-summary", description="train_tagger summary")
