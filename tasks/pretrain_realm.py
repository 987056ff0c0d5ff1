"""Tasks of the pretrain_realm stage: training, and each index refresh as its own task run."""

from __future__ import annotations

from typing import Any, Callable

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_progress_artifact, update_progress_artifact
from prefect.cache_policies import NO_CACHE
from prefect.states import Failed

from realm_core.config import PretrainRealmConfig
from realm_core.errors import RealmError
from realm_core.training.realm_stage import run_pretrain_realm

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


class _Curves:
    """Training records -> Prefect log, progress artifact and dvclive curves (for `dvc plots`)."""

    def __init__(self, cfg: PretrainRealmConfig) -> None:
        self.cfg = cfg
        self.logger = get_run_logger()
        self.progress = create_progress_artifact(0.0, key="pretrain-realm-progress", description="pretrain_realm")
        self.live = None
        self.live_failed = False

    def __call__(self, rec: dict[str, Any]) -> None:
        if self.live is None and not self.live_failed:
            from dvclive import Live  # slow to import

            try:
                self.live = Live(self.cfg.plots_dir, resume=rec.get("event") == "resume", save_dvc_exp=False,
                                 dvcyaml=None)
            except Exception as exc:  # noqa: BLE001 - e.g. a git repo without commits
                self.live_failed = True
                self.logger.warning("dvclive curves disabled (%s: %s)", type(exc).__name__, exc)
        if rec.get("event") != "train":
            self.logger.info("%s", rec)
            return
        self.logger.info("step %d/%d  loss %.4f  acc %.3f  null acc %.3f  RU %.4f  p(null) %.3f  stale %d  %.3f steps/s",
                         rec["step"], self.cfg.steps, rec["loss"], rec.get("accuracy", float("nan")),
                         rec.get("null_accuracy", float("nan")), rec.get("retrieval_utility", float("nan")),
                         rec.get("p_null", float("nan")), rec.get("staleness", 0), rec["steps_per_s"])
        update_progress_artifact(self.progress, 100.0 * rec["step"] / self.cfg.steps)
        if self.live is not None:
            self.live.step = rec["step"]
            for key in _CURVES:
                if rec.get(key) is not None:
                    self.live.log_metric(f"train/{key}", rec[key])
            self.live.make_summary()

    def close(self) -> None:
        if self.live is not None:
            self.live.end()


@task(name="train_realm", cache_result_in_memory=False)
def train_realm_task(cfg: PretrainRealmConfig):
    """Train/resume REALM; refreshes are task runs of their own (sync or beside training)."""
    curves = _Curves(cfg)
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
