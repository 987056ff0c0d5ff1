"""The report flow on a real Prefect server with synthetic metrics, and its CLI's one-line errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from realm_core.config import ReportConfig
from tests.conftest import ROOT, stage_env
from tests.realm_core.qa.test_report import PNG_MAGIC, write_inputs


def test_flow_writes_the_report_figures_and_artifact(prefect_api, tmp_path):
    from prefect.artifacts import Artifact

    from flows.report import report_flow

    cfg = write_inputs(tmp_path)
    summary = report_flow(cfg)
    out = tmp_path / "reports"
    assert summary["results"] == str(out / "results.md") and summary["notes"] == []
    assert [Path(f).name for f in summary["figures"]] == ["em.png", "recall_at_k.png", "pretrain_curves.png",
                                                          "finetune_loss.png"]
    assert all(Path(f).read_bytes().startswith(PNG_MAGIC) for f in summary["figures"])
    artifact = Artifact.get("report")
    assert artifact is not None and "## Open-domain QA (REALM Table 1)" in artifact.data
    assert f"Figure: `{out / 'recall_at_k.png'}`" in artifact.data and "![" not in artifact.data


def test_flow_fails_with_the_missing_file_named(prefect_api, tmp_path):
    from flows.report import report_flow

    cfg = write_inputs(tmp_path, finetune=False)
    (tmp_path / "eval" / "ct.json").unlink()
    state = report_flow(cfg, return_state=True)
    assert state.is_failed() and f"{tmp_path / 'eval' / 'ct.json'}: no such file" in state.message
    assert not (tmp_path / "reports" / "results.md").exists()


def test_cli_help_and_one_line_error(tmp_path):
    from flows.cli import build_parser

    help_ = build_parser("report").format_help()
    assert all(f"  {name}  (default:" in help_ for name in ReportConfig.model_fields)
    args = [sys.executable, "-m", "flows.report", "--set", f"report.eval_dir={tmp_path}/none",
            "--set", f"report.output_dir={tmp_path}/reports"]
    proc = subprocess.run(args, cwd=ROOT, env=stage_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and proc.stderr.strip().count("\n") == 0, proc.stderr
    assert f"{tmp_path}/none/nq.json: no such file" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "reports").exists()
