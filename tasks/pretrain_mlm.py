"""Tasks of the pretrain_mlm stage."""

from __future__ import annotations

from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_progress_artifact, update_progress_artifact
from prefect.states import Failed

from realm_core.config import PretrainMLMConfig
from realm_core.errors import RealmError
from realm_core.training.mlm_stage import run_pretrain_mlm


class _Curves:
    """Training records -> Prefect log, progress artifact and dvclive curves (for `dvc plots`).

    dvclive starts fresh on a fresh run and appends on a resumed one (the loop announces a resume
    with its first record), so the curves follow the checkpoint's history.
    """

    def __init__(self, cfg: PretrainMLMConfig) -> None:
        self.cfg = cfg
        self.logger = get_run_logger()
        self.progress = create_progress_artifact(0.0, key="pretrain-mlm-progress", description="pretrain_mlm")
        self.live = None
        self.live_failed = False

    def _open_live(self, resume: bool) -> None:
        from dvclive import Live  # import on first use: it is slow to import

        try:
            self.live = Live(self.cfg.plots_dir, resume=resume, save_dvc_exp=False, dvcyaml=None)
        except Exception as exc:  # noqa: BLE001 - e.g. dvclive 3.49 raises SCMError in a git repo without commits
            self.live_failed = True
            self.logger.warning("dvclive curves disabled (%s: %s); the log and metrics file still have them",
                                type(exc).__name__, exc)

    def __call__(self, rec: dict[str, Any]) -> None:
        if self.live is None and not self.live_failed:
            self._open_live(resume=rec.get("event") == "resume")
        if rec.get("event") != "train":
            self.logger.info("%s", rec)
            return
        self.logger.info("step %d/%d  loss %.4f  masked-LM acc %.3f  lr %.2e  %.2f steps/s", rec["step"],
                         self.cfg.steps, rec["loss"], rec.get("accuracy", float("nan")), rec["lr"], rec["steps_per_s"])
        update_progress_artifact(self.progress, 100.0 * rec["step"] / self.cfg.steps)
        if self.live is None:
            return
        self.live.step = rec["step"]
        for key in ("loss", "accuracy", "lr", "grad_norm"):
            if key in rec:
                self.live.log_metric(f"train/{key}", rec[key])
        self.live.make_summary()

    def close(self) -> None:
        if self.live is not None:
            self.live.end()


@task(name="train_mlm", cache_result_in_memory=False)
def train_mlm_task(cfg: PretrainMLMConfig):
    """Train/resume the masked LM; curves to the log, the UI and dvclive."""
    curves = _Curves(cfg)
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
