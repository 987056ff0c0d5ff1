"""The loop past one process: golden ICT losses, and torchrun with gloo matching one process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

from realm_core.training.ict import train_ict
from tests.realm_core.training.ict_fixture import GOLDEN_ARGS, write_blocks

# The first 5 ICT losses of GOLDEN_ARGS, recorded with the loop before it gained gradient
# accumulation, mixed precision, evaluation hooks, parameter groups and DDP. A refactor that
# changes what training computes moves them.
GOLDEN_LOSSES = [2.183051347732544, 2.016296148300171, 2.0817997455596924, 2.1255908012390137, 2.1240670680999756]
WORKER = Path(__file__).with_name("ict_fixture.py")


@pytest.fixture(scope="module")
def fixed_blocks(tmp_path_factory) -> Path:
    return write_blocks(tmp_path_factory.mktemp("ict_fixed") / "blocks.parquet")


def test_golden_ict_losses(fixed_blocks, tmp_path):
    losses = []
    train_ict(fixed_blocks, tmp_path / "out", **GOLDEN_ARGS,
              on_log=lambda r: losses.append(r["loss"]) if r.get("event") == "train" else None)
    assert losses == pytest.approx(GOLDEN_LOSSES, abs=1e-5)


def _torchrun(n: int, out: Path, blocks: Path, ckpt: Path | None = None, budget: float = 0.0,
              dropout: float = 0.0) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[3])}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={n}", str(WORKER),
           str(out), str(blocks), str(ckpt or ""), str(budget), str(dropout)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text())


def test_two_gloo_processes_match_one_process_with_the_same_global_batch(fixed_blocks, tmp_path):
    # Dropout off (embedding head and BERT): each process draws its own masks.
    one = _torchrun(1, tmp_path / "one.json", fixed_blocks)
    two = _torchrun(2, tmp_path / "two.json", fixed_blocks)
    assert one["world"] == 1 and two["world"] == 2 and one["step"] == two["step"] == 4
    # Same in-batch negatives (each rank scores its 4 queries against all 8 gathered blocks) and
    # the same mean-loss gradient; only float summation order differs.
    assert two["losses"] == pytest.approx(one["losses"], abs=1e-4)
    a = load_file(str(tmp_path / "one.model/model.safetensors"))
    b = load_file(str(tmp_path / "two.model/model.safetensors"))
    assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-3


def test_torchrun_resumes_from_rank_0s_checkpoint(fixed_blocks, tmp_path):
    straight = _torchrun(2, tmp_path / "a.json", fixed_blocks)
    stopped = _torchrun(2, tmp_path / "b.json", fixed_blocks, ckpt=tmp_path / "ckpt", budget=1e-9)
    assert stopped["step"] == 1 and not (tmp_path / "b.model").exists()
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["latest", "step_0000001"]
    resumed = _torchrun(2, tmp_path / "b.json", fixed_blocks, ckpt=tmp_path / "ckpt")
    assert resumed["resumed_from"] == 1 and resumed["step"] == 4
    assert resumed["losses"] == pytest.approx(straight["losses"][1:], abs=1e-5)
    a = load_file(str(tmp_path / "a.model/model.safetensors"))
    b = load_file(str(tmp_path / "b.model/model.safetensors"))
    assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-5


@pytest.mark.gpu
@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("precision", ["bf16", "fp16", "fp32"])
def test_ict_trains_on_cuda(fixed_blocks, tmp_path, precision):
    result = train_ict(fixed_blocks, tmp_path / "out", **{**GOLDEN_ARGS, "device": "cuda", "precision": precision,
                                                          "checkpoint_dir": tmp_path / "ckpt"})
    assert result.completed and result.last_metrics["loss"] < 3.0
    weights = load_file(str(tmp_path / "out/model.safetensors"))
    assert all(str(v.dtype) == "torch.float32" for v in weights.values())
    if precision == "fp32":  # without dropout (its RNG differs by device) the GPU follows the CPU
        no_dropout = {**GOLDEN_ARGS, "dropout": 0.0, "scratch_config": {**GOLDEN_ARGS["scratch_config"],
                      "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}}
        gpu = train_ict(fixed_blocks, tmp_path / "g", **{**no_dropout, "device": "cuda"})
        cpu = train_ict(fixed_blocks, tmp_path / "c", **no_dropout)
        assert gpu.last_metrics["loss"] == pytest.approx(cpu.last_metrics["loss"], abs=1e-3)
