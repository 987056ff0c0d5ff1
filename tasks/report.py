"""Tasks of the report stage."""

from __future__ import annotations

import re
from pathlib import Path

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.states import Failed

from realm_core.config import ReportConfig
from realm_core.errors import RealmError
from realm_core.qa.report import run_report

_IMAGE = re.compile(r"^!\[([^\]]*)\]\(([^)]+)\)$", re.MULTILINE)


@task(name="write_report", cache_result_in_memory=False)
def write_report(cfg: ReportConfig):
    """results.md and its PNGs from the metrics files; absent optional inputs to the log."""
    logger = get_run_logger()
    try:
        return run_report(cfg, info=logger.info)
    except RealmError as exc:
        return Failed(message=str(exc))


@task(name="publish_report")
def publish_report(cfg: ReportConfig, summary: dict) -> None:
    """Markdown artifact: results.md, with each embedded figure replaced by its path."""
    text = Path(summary["results"]).read_text(encoding="utf-8")
    text = _IMAGE.sub(lambda m: f"Figure: `{Path(cfg.output_dir) / m.group(2)}`", text)
    create_markdown_artifact(text, key="report", description=f"report: {summary['results']}")
