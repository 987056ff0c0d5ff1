"""Argument errors of the experiment scripts: one line naming the bad value, exit 1, nothing run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_script(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "scripts" / args[0]), *args[1:]], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("args, message", [
    (["--states", "end,middle"],
     "error: --states takes a comma-separated subset of ['start', 'end'], got 'end,middle'"),
    (["--states", "start", "--end-models", "r", "e", "i"],
     "error: --end-models replaces the end state, but --states leaves it out"),
], ids=["unknown-state", "end-models-without-end"])
def test_realm_heldout_rejects_bad_state_arguments(tmp_path, args, message):
    out = tmp_path / "heldout.json"
    r = run_script("realm_heldout.py", *args, "--out", str(out), cwd=tmp_path)
    assert r.returncode == 1
    assert r.stderr.strip().splitlines() == [message]
    assert not out.exists()


def test_realm_heldout_names_a_missing_end_model(tmp_path):
    out = tmp_path / "heldout.json"
    r = run_script("realm_heldout.py", "--states", "end", "--end-models", str(tmp_path / "no_retriever"),
                   str(tmp_path / "no_encoder"), str(tmp_path / "no_index"), "--out", str(out), cwd=tmp_path)
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "no_retriever" in lines[0], r.stderr
    assert not out.exists()


def test_realm_ablations_gpu_rejects_an_unknown_override(tmp_path):
    out = tmp_path / "abl.json"
    r = run_script("realm_ablations_gpu.py", "--device", "cpu", "--workdir", str(tmp_path / "w"), "--out", str(out),
                   "--set", "pretrain_realm.no_such_key=1", cwd=tmp_path)
    assert r.returncode == 1
    assert r.stderr.strip().splitlines() == [
        "error: --set 'pretrain_realm.no_such_key=1': expected STAGE.KEY=VALUE with STAGE one of "
        "['pretrain_mlm', 'pretrain_ict', 'pretrain_realm'] and KEY a key of its params.yaml section"]
    assert not out.exists()
