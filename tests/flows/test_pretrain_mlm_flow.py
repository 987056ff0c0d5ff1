"""pretrain_mlm on a real Prefect server, with a tiny encoder on the fixed 48-block ICT fixture.

These tests check the plumbing (flow result, metrics, model, curves, the time-budget failure and
the CLI), not what the masked LM learns (tests/realm_core/training/test_mlm.py has that).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from realm_core.config import PretrainMLMConfig
from realm_core.modeling.encoder import KnowledgeAugEncoder
from tests.conftest import ROOT, stage_env
from tests.realm_core.training.ict_fixture import TINY_BERT, write_blocks


@pytest.fixture(scope="module")
def blocks(tmp_path_factory):
    return write_blocks(tmp_path_factory.mktemp("mlm_corpus") / "blocks.parquet")


def mlm_config(tmp, blocks, **kw) -> PretrainMLMConfig:
    base = dict(blocks=str(blocks), init="scratch", scratch_config=TINY_BERT, steps=4, batch_size=8, lr=1e-3,
                warmup_steps=1, max_len=48, heldout_fraction=0.2, eval_batches=1, checkpoint_every=2,
                output_dir=str(tmp / "models" / "pretrain_mlm"), checkpoint_dir=str(tmp / "ckpt"),
                metrics_file=str(tmp / "metrics" / "pretrain_mlm.json"),
                plots_dir=str(tmp / "metrics" / "pretrain_mlm"))
    return PretrainMLMConfig(**{**base, **kw})


def test_flow_writes_the_encoder_metrics_and_curves(prefect_api, blocks, tmp_path):
    from flows.pretrain_mlm import pretrain_mlm_flow

    result = pretrain_mlm_flow(mlm_config(tmp_path, blocks))
    metrics = json.loads((tmp_path / "metrics" / "pretrain_mlm.json").read_text())
    assert result["steps"] == metrics["steps"] == 4 and metrics["completed"]
    assert result["before"] == metrics["before"] and {"accuracy", "loss"} <= set(metrics["after"])
    assert metrics["train_blocks"] + metrics["heldout_blocks"] == 48 and metrics["final_train"]
    model = KnowledgeAugEncoder.from_pretrained(tmp_path / "models" / "pretrain_mlm")
    assert model.init_name == "scratch" and (model.max_query_len, model.max_candidate_len) == (96, 288)
    curve = (tmp_path / "metrics" / "pretrain_mlm" / "plots" / "metrics" / "train" / "loss.tsv").read_text()
    assert curve.splitlines()[0].split("\t")[:2] == ["step", "loss"] and len(curve.splitlines()) == 2


def test_time_budget_fails_the_flow_and_keeps_the_checkpoint(prefect_api, blocks, tmp_path):
    from flows.pretrain_mlm import pretrain_mlm_flow

    state = pretrain_mlm_flow(mlm_config(tmp_path, blocks, time_budget_s=1e-6, eval_batches=0), return_state=True)
    assert state.is_failed() and "time budget reached at step 1/4" in state.message
    assert (tmp_path / "ckpt" / "latest").exists() and not (tmp_path / "models" / "pretrain_mlm").exists()


def test_cli_help_and_one_line_errors(tmp_path):
    from flows.cli import build_parser

    help_ = build_parser("pretrain_mlm").format_help()  # what `--help` prints
    assert all(f"  {name}  (default:" in help_ for name in PretrainMLMConfig.model_fields)
    args = [sys.executable, "-m", "flows.pretrain_mlm", "--set", f"pretrain_mlm.blocks={tmp_path}/none.parquet"]
    proc = subprocess.run(args, cwd=ROOT, env=stage_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and proc.stderr.strip().count("\n") == 0, proc.stderr
    assert "blocks file not found" in proc.stderr and "Traceback" not in proc.stderr
