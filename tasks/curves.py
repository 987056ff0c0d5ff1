"""Training records -> Prefect log, progress artifact and dvclive curves (for `dvc plots`).

One class for every training stage's task. dvclive starts fresh on a fresh run and appends on a
resumed one (the loop announces a resume with its first record), so the curves follow the
checkpoint's history.
"""

from __future__ import annotations

from typing import Any, Callable

from prefect import get_run_logger
from prefect.artifacts import create_progress_artifact


class TrainingCurves:
    """`on_log` for the loop: `line(rec)` is the log line of a "train" record, `keys` its curves."""

    def __init__(self, stage: str, steps: int, plots_dir: str, keys: tuple[str, ...],
                 line: Callable[[dict[str, Any]], str]) -> None:
        self.steps, self.plots_dir, self.keys, self.line = steps, plots_dir, keys, line
        self.logger = get_run_logger()
        self.progress = create_progress_artifact(0.0, key=f"{stage.replace('_', '-')}-progress", description=stage)
        self.live = None
        self.live_failed = False

    def _open_live(self, resume: bool) -> None:
        from dvclive import Live  # import on first use: it is slow to import

        try:
            self.live = Live(self.plots_dir, resume=resume, save_dvc_exp=False, dvcyaml=None)
        except Exception as exc:  # noqa: BLE001 - e.g. dvclive 3.49 raises SCMError in a git repo without commits
            self.live_failed = True
            self.logger.warning("dvclive curves disabled (%s: %s); the log and metrics file still have them",
                                type(exc).__name__, exc)

    def __call__(self, rec: dict[str, Any]) -> None:
        from prefect.artifacts import update_progress_artifact

        if self.live is None and not self.live_failed:
            self._open_live(resume=rec.get("event") == "resume")
        if rec.get("event") != "train":
            self.logger.info("%s", rec)
            return
        self.logger.info("%s", self.line(rec))
        update_progress_artifact(self.progress, 100.0 * rec["step"] / self.steps)
        if self.live is None:
            return
        self.live.step = rec["step"]
        for key in self.keys:
            if rec.get(key) is not None:
                self.live.log_metric(f"train/{key}", rec[key])
        self.live.make_summary()

    def close(self) -> None:
        """Finish the dvclive run."""
        if self.live is not None:
            self.live.end()
