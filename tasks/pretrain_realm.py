"""Tasks of the pretrain_realm stage: training, and each index refresh as its own task run."""

from __future__ import annotations

from typing import Any, Callable

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, update_progress_artifact
from prefect.cache_policies import NO_CACHE
from prefect.states import Failed

from realm_core.config import PretrainRealmConfig
from realm_core.errors import RealmError
from realm_core.training.realm_stage import run_pretrain_realm
from tasks.curves import TrainingCurves

_CURVES = ("loss", "accuracy", "null_accuracy", "retrieval_utility", "p_null", "p_null_posterior",
           "answer_in_candidates", "staleness", "lr", "grad_norm")


@task(name="refresh_index", task_run_name="refresh v{version} (snapshot of step {step})", cache_policy=NO_CACHE)
def refresh_index(job: Callable[[], dict[str, Any]], version: int, step: int) -> dict[str, Any]:
    """Re-embed the corpus with the retriever snapshot of `step`; the result is index `version`."""
    result = job()
    get_run_logger().info("index v%d: %s blocks embedded in %s s (snapshot of step %d)", version, result["rows"],
                          result["seconds"], step)
    return result


class _Future:
    """A Prefect future seen as the trainer's `FutureLike`."""

    def __init__(self, future) -> None:
        self.future = future

    def done(self) -> bool:
        return self.future.state.is_final()

    def result(self) -> Any:
        return self.future.result()


class PrefectRunner:
    """Runs refreshes as task runs of the flow: sync blocks, async goes to the task runner."""

    def run(self, job, version: int, step: int) -> dict[str, Any]:
        return refresh_index(job, version, step)

    def submit(self, job, version: int, step: int) -> _Future:
        return _Future(refresh_index.submit(job, version, step))


@task(name="train_realm", cache_result_in_memory=False)
def train_realm_task(cfg: PretrainRealmConfig):
    """Train/resume REALM; refreshes are task runs of their own (sync or beside training)."""
    curves = TrainingCurves("pretrain_realm", cfg.steps, cfg.plots_dir, _CURVES,
                            lambda r: f"step {r['step']}/{cfg.steps}  loss {r['loss']:.4f}  acc "
                                      f"{r.get('accuracy', float('nan')):.3f}  null acc "
                                      f"{r.get('null_accuracy', float('nan')):.3f}  RU "
                                      f"{r.get('retrieval_utility', float('nan')):.4f}  p(null) "
                                      f"{r.get('p_null', float('nan')):.3f}  stale {r.get('staleness', 0):.0f}  "
                                      f"{r['steps_per_s']:.3f} steps/s")
    try:
        metrics = run_pretrain_realm(cfg, on_log=curves, info=curves.logger.info, runner=PrefectRunner())
    except RealmError as exc:
        return Failed(message=str(exc))
    finally:
        curves.close()
    if metrics["completed"]:
        update_progress_artifact(curves.progress, 100.0)
    return metrics


@task(name="publish_realm_summary")
def publish_realm_summary(cfg: PretrainRealmConfig, m: dict) -> None:
    """Markdown artifact: held-out accuracies, RU over evaluations, refreshes."""
    h = m.get("heldout", {})
    rows = ["# pretrain_realm", "",
            f"{m['steps']} steps of {cfg.batch_size} masked sentences ({cfg.masking} masks, k = {cfg.num_candidates}, "
            f"{cfg.loss} marginal) in {m['train_seconds']} s on {m['device']} ({m['precision']}); "
            f"{m['refreshes']} index refreshes ({cfg.refresh_mode}, `{cfg.refresh_schedule}`, {m['refresh_seconds']} s), "
            f"max staleness {m['max_staleness_steps']} steps.", "",
            "| held-out (blocks never trained on) | masked accuracy |", "|---|---:|",
            f"| REALM marginal over ∅ + top-{cfg.num_candidates - 1} | {h.get('marginal_accuracy')} |",
            f"| reader with ∅ only | {h.get('null_accuracy')} |",
            f"| no-retrieval BERT (`{cfg.baseline}`) | {h.get('baseline_accuracy')} |", "",
            "| step | accuracy | ∅-only accuracy | RU | p(∅|x) | answer in candidates |", "|---:|---:|---:|---:|---:|---:|"]
    rows += [f"| {e['step']} | {e.get('accuracy')} | {e.get('null_accuracy')} | {e.get('retrieval_utility')} | "
             f"{e.get('p_null')} | {e.get('answer_in_candidates')} |" for e in m.get("evals", [])]
    create_markdown_artifact("\n".join(rows), key="pretrain-realm-summary", description="pretrain_realm summary")
