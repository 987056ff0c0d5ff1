"""Tasks of the pretrain_mlm stage."""

from __future__ import annotations

from prefect import task
from prefect.artifacts import create_markdown_artifact, update_progress_artifact
from prefect.states import Failed

from realm_core.config import PretrainMLMConfig
from realm_core.errors import RealmError
from realm_core.training.mlm_stage import run_pretrain_mlm
from tasks.curves import TrainingCurves


@task(name="train_mlm", cache_result_in_memory=False)
def train_mlm_task(cfg: PretrainMLMConfig):
    """Train/resume the masked LM; curves to the log, the UI and dvclive."""
    curves = TrainingCurves("pretrain_mlm", cfg.steps, cfg.plots_dir, ("loss", "accuracy", "lr", "grad_norm"),
                            lambda r: f"step {r['step']}/{cfg.steps}  loss {r['loss']:.4f}  masked-LM acc "
                                      f"{r.get('accuracy', float('nan')):.3f}  lr {r['lr']:.2e}  "
                                      f"{r['steps_per_s']:.2f} steps/s")
    try:
        metrics = run_pretrain_mlm(cfg, on_log=curves, info=curves.logger.info)
    except RealmError as exc:
        return Failed(message=str(exc))
    finally:
        curves.close()
    if metrics["completed"]:
        update_progress_artifact(curves.progress, 100.0)
    return metrics


@task(name="publish_mlm_summary")
def publish_mlm_summary(cfg: PretrainMLMConfig, m: dict) -> None:
    """Markdown artifact: held-out masked-LM accuracy and loss before/after, steps and time."""
    def row(name: str, s: dict) -> str:
        return f"| {name} | {s.get('accuracy', float('nan')):.3f} | {s.get('loss', float('nan')):.3f} |"

    rows = ["# pretrain_mlm", "", f"Encoder `{cfg.output_dir}` from init `{cfg.init}`: {m['steps']} steps of "
            f"{cfg.batch_size} examples (max_len {cfg.max_len}) over {m['train_blocks']:,} training blocks in "
            f"{m['train_seconds']} s ({m['processes']} process(es), {m['device']}, {m['precision']}).", "",
            f"Held-out masked LM ({cfg.eval_batches} batches of {cfg.batch_size // cfg.grad_accum} from the "
            f"{m['heldout_blocks']:,} held-out blocks that training never sees; {cfg.mask_prob:.0%} of the wordpieces "
            f"masked BERT-style, no dropout; accuracy and loss per masked wordpiece):", "",
            "| model | accuracy | loss |", "|---|---:|---:|",
            row("before (init)", m["before"]), row("after MLM", m.get("after", {}))]
    create_markdown_artifact("\n".join(rows), key="pretrain-mlm-summary", description="pretrain_mlm summary")
