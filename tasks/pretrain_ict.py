"""Tasks of the pretrain_ict stage."""

from __future__ import annotations

from prefect import task
from prefect.artifacts import create_markdown_artifact, update_progress_artifact
from prefect.states import Failed

from realm_core.config import PretrainICTConfig
from realm_core.errors import RealmError
from realm_core.training.ict_stage import init_label, run_pretrain_ict
from tasks.curves import TrainingCurves


@task(name="train_ict", cache_result_in_memory=False)
def train_ict_task(cfg: PretrainICTConfig):
    """Save the step-0 init, then train/resume ICT; curves to the log, the UI and dvclive."""
    curves = TrainingCurves("pretrain_ict", cfg.steps, cfg.plots_dir,
                            ("loss", "accuracy", "masked_accuracy", "unmasked_accuracy", "lr", "grad_norm"),
                            lambda r: f"step {r['step']}/{cfg.steps}  loss {r['loss']:.4f}  acc "
                                      f"{r.get('accuracy', float('nan')):.3f}  masked acc "
                                      f"{r.get('masked_accuracy', float('nan')):.3f}  lr {r['lr']:.2e}  "
                                      f"{r['steps_per_s']:.2f} steps/s")
    try:
        metrics = run_pretrain_ict(cfg, on_log=curves, info=curves.logger.info)
    except RealmError as exc:
        return Failed(message=str(exc))
    finally:
        curves.close()
    if metrics["completed"]:
        update_progress_artifact(curves.progress, 100.0)
    return metrics


@task(name="publish_ict_summary")
def publish_ict_summary(cfg: PretrainICTConfig, m: dict) -> None:
    """Markdown artifact: ICT accuracy before/after, steps and time."""
    def row(name: str, s: dict) -> str:
        return (f"| {name} | {s.get('accuracy', float('nan')):.3f} | {s.get('masked_accuracy', float('nan')):.3f} | "
                f"{s.get('chance', float('nan')):.3f} |")

    rows = ["# pretrain_ict", "", f"Retriever `{cfg.output_dir}` from init `{cfg.init}` (its step-0 twin: "
            f"`{cfg.init_output_dir}`): {m['steps']} steps of {cfg.batch_size} over {m['train_blocks']:,} training "
            f"blocks in {m['train_seconds']} s ({m['processes']} process(es), {m['device']}, {m['precision']}).", "",
            f"Init: {m['init_label']}.", "",
            f"Held-out ICT accuracy ({cfg.eval_batches} batches of {cfg.batch_size // cfg.grad_accum} from the "
            f"{m['heldout_blocks']:,} held-out blocks that training never sees; in-batch negatives, no dropout):", "",
            "| model | accuracy | masked accuracy | chance |", "|---|---:|---:|---:|",
            row(init_label(cfg.init).split(":")[0], m["before"]), row("after ICT", m.get("after", {}))]
    create_markdown_artifact("\n".join(rows), key="pretrain-ict-summary", description="pretrain_ict summary")
