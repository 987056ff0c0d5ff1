"""Flow `report`: reports/results.md and its PNGs, beside the REALM paper's Tables 1 and 2.

    python -m flows.report [--params FILE] [--set report.output_dir=/tmp/report ...]

Reads the evaluate, evaluate_retrieval and pre-training metrics (realm_core/qa/report.py lists
them); `dvc repro report` runs it after those stages.
"""

from __future__ import annotations

import sys

import flows  # noqa: F401  (offline-safe environment defaults before Prefect loads)
from prefect import flow
from prefect.states import Failed

from flows.cli import main
from realm_core.config import ReportConfig
from realm_core.qa.report import check_inputs
from tasks.report import publish_report, write_report


@flow(name="report")
def report_flow(cfg: ReportConfig):
    """Write results.md and the figures; publish the report as a markdown artifact."""
    state = write_report(cfg, return_state=True)
    summary = state.result(raise_on_failure=False)
    if state.is_failed() or not isinstance(summary, dict):
        return Failed(message=state.message)
    publish_report(cfg, summary)
    return summary


def _run(cfg: ReportConfig):
    state = report_flow(cfg, return_state=True)
    if state.is_completed():
        summary = state.result()
        print(f"report: {summary['results']} ({len(summary['figures'])} figures)")
    return state


if __name__ == "__main__":
    sys.exit(main("report", _run, check_inputs))
