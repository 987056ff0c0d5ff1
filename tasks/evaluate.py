"""Tasks of the evaluate stage."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.states import Failed

from realm_core.config import EvaluateConfig
from realm_core.errors import RealmError
from realm_core.qa.evaluate import run_evaluate


@task(name="score_methods", cache_result_in_memory=False)
def score_methods(cfg: EvaluateConfig):
    """Predict with every fine-tuned method; each result to the log."""
    try:
        return run_evaluate(cfg, info=get_run_logger().info)
    except RealmError as exc:
        return Failed(message=str(exc))


@task(name="publish_eval_summary")
def publish_eval_summary(cfg: EvaluateConfig, m: dict) -> None:
    """Markdown artifact: EM, Recall@k and the oracle per method, against the coverage ceiling."""
    ks = [f"recall@{k}" for k in cfg.ks]
    rows = [f"# evaluate: {cfg.dataset}", ""]
    for title, section in (("test", m), *(("NQ full test (unseen questions)", m[s]) for s in ("full_test",) if s in m)):
        rows += [f"## {title}: {section['n_questions']:,} questions, answer coverage (ceiling) "
                 f"**{section['answer_coverage']:.3f}**", "",
                 "| method | EM | " + " | ".join(ks) + " | reader oracle | EM when answerable |",
                 "|---|---:|" + "---:|" * len(ks) + "---:|---:|"]
        rows += [f"| {name} | {section[name]['em']:.3f} | " + " | ".join(f"{section[name][k]:.3f}" for k in ks)
                 + f" | {section[name]['reader_oracle']:.3f} | {section[name]['em_answerable']:.3f} |"
                 for name in cfg.methods if name in section]
        rows.append("")
    rows.append(f"Predictions with their evidence: `{cfg.output_dir}/{cfg.dataset}/<method>.json`")
    create_markdown_artifact("\n".join(rows), key=f"evaluate-{cfg.dataset}", description=f"evaluate {cfg.dataset}")
