"""Tasks of the reindex flow: DVC bookkeeping around an incremental index build."""

from __future__ import annotations

import json
from pathlib import Path

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact

from tasks.dvc_workspace import dvc_workspace, run_dvc

# Changes under which an index built now is what `dvc repro <stage>` would build: its data inputs
# and its params. A changed code dependency is not: then only `dvc repro` may record the stage.
PARAMS_FILE = "params.yaml"


@task(name="dvc_stage_status")
def dvc_stage_status(stage: str, data_deps: list[str]) -> dict:
    """`dvc status <stage>`: may this run's output be committed to the stage afterwards?"""
    logger = get_run_logger()
    with dvc_workspace():
        code, output = run_dvc(["status", stage, "--json"], lambda line: None)
    if code != 0:
        return {"commit": False, "reason": f"dvc status {stage} failed: {output.strip()[-300:]}"}
    try:
        status = json.loads(output[output.index("{"):]) if "{" in output else {}
    except ValueError:
        return {"commit": False, "reason": f"dvc status {stage}: unreadable output"}
    allowed = {str(Path(d)) for d in data_deps} | {PARAMS_FILE}
    blocking = []
    for entry in status.get(stage, []):
        if isinstance(entry, dict):
            for path in entry.get("changed deps", {}):
                if str(Path(path)) not in allowed:
                    blocking.append(path)
    if blocking:
        reason = (f"code dependencies of {stage} changed since it last ran ({', '.join(sorted(blocking)[:4])}); "
                  f"the index is rebuilt but not recorded: run `dvc repro {stage}`")
        logger.warning(reason)
        return {"commit": False, "reason": reason}
    return {"commit": True, "reason": "data/params changes only" if status.get(stage) else "up to date"}


@task(name="dvc_commit_stage")
def dvc_commit_stage(stage: str) -> dict:
    """Record the rebuilt output in dvc.lock, then confirm `dvc status` is clean for the stage."""
    logger = get_run_logger()
    with dvc_workspace():
        code, output = run_dvc(["commit", "--force", stage], logger.info)
        if code != 0:
            raise RuntimeError(f"dvc commit {stage} failed: {output.strip()[-300:]}")
        _, status = run_dvc(["status", stage], logger.info)
    clean = "up to date" in status or "Data and pipelines are up to date" in status
    logger.info("dvc status %s: %s", stage, "up to date" if clean else status.strip()[-300:])
    return {"committed": True, "dvc_status_clean": clean}


@task(name="publish_reindex_summary")
def publish_reindex_summary(retriever: str, root: str, m: dict, dvc: dict) -> None:
    """Markdown artifact: blocks reused / re-embedded, time, the published version, DVC state."""
    rows = ["# reindex", "", f"Retriever `{retriever}` -> index root `{root}`", "", "| | |", "|---|---|",
            f"| blocks | {m['rows']:,} |",
            f"| re-embedded | {m['rows_embedded']:,} |",
            f"| reused (unchanged content, same encoder) | {m['rows'] - m['rows_embedded']:,} |",
            f"| index version | `{m['version']}`{' (unchanged: already current)' if m['version_reused'] else ''} |",
            f"| time | {m['seconds']} s |",
            f"| DVC | {dvc.get('summary', '')} |"]
    create_markdown_artifact("\n".join(rows), key="reindex-summary", description="reindex summary")
