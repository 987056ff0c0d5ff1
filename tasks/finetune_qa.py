"""Tasks of the finetune_qa stage."""

from __future__ import annotations

from prefect import task
from prefect.artifacts import create_markdown_artifact, update_progress_artifact
from prefect.states import Failed

from realm_core.config import FinetuneQAConfig
from realm_core.errors import RealmError
from realm_core.training.qa_stage import run_finetune_qa
from tasks.curves import TrainingCurves


@task(name="finetune", cache_result_in_memory=False)
def finetune_task(cfg: FinetuneQAConfig):
    """Train/resume; curves to the log, the UI and dvclive; dev EM at each evaluation."""
    curves = TrainingCurves("finetune_qa", cfg.steps, cfg.plots_dir,
                            ("loss", "reader_loss", "retriever_loss", "reader_oracle", "lr"),
                            lambda r: f"step {r['step']}/{cfg.steps}  loss {r['loss']:.4f}  reader "
                                      f"{r.get('reader_loss', float('nan')):.4f}  retriever "
                                      f"{r.get('retriever_loss', float('nan')):.4f}  oracle "
                                      f"{r.get('reader_oracle', float('nan')):.2f}  {r['steps_per_s']:.2f} steps/s")
    try:
        metrics = run_finetune_qa(cfg, on_log=curves, info=curves.logger.info)
    except RealmError as exc:
        return Failed(message=str(exc))
    finally:
        curves.close()
    if metrics["completed"]:
        update_progress_artifact(curves.progress, 100.0)
    return metrics


@task(name="publish_finetune_summary")
def publish_finetune_summary(cfg: FinetuneQAConfig, m: dict) -> None:
    """Markdown artifact: dev EM over steps and the exported checkpoint."""
    rows = [f"# finetune_qa: {cfg.dataset} / {cfg.method}", "",
            f"Retriever `{m['retriever']}`, reader `{m['reader']}`: {m['steps']} steps of {cfg.batch_size} questions "
            f"({m['train_questions']:,} training questions) in {m['train_seconds']} s on {m['device']} ({m['precision']}).",
            "", "| step | dev EM | reader oracle |", "|---:|---:|---:|"]
    rows += [f"| {e['step']} | {e.get('em', float('nan')):.3f} | {e.get('reader_oracle', float('nan')):.3f} |"
             for e in m.get("dev", [])]
    if m.get("best"):
        rows += ["", f"Exported to `{cfg.output_dir}`: step {m['best']['step']}, dev EM {m['best']['dev_em']:.3f} "
                     f"over {m['dev_questions']} dev questions."]
    create_markdown_artifact("\n".join(rows), key=f"finetune-qa-{cfg.dataset}-{cfg.method}".replace("_", "-"),
                             description=f"finetune_qa {cfg.dataset}/{cfg.method}")
