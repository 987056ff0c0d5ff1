"""The pretrain_realm stage end to end on the tiny corpus: metrics, exported models, and resume.

A run stopped (time budget) or killed (SIGKILL while an index version is being written) and
rerun must continue from its last checkpoint with the same example order and the index version
it had, and end with the weights and figures of a run that was never interrupted (sync refresh).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from realm_core.errors import RealmError
from realm_core.modeling.embedder import RetrieverEmbedder
from realm_core.modeling.encoder import KnowledgeAugEncoder
from realm_core.training import checkpoint as ckpt
from realm_core.training.realm import RealmModel
from realm_core.training.realm_stage import check_inputs, run_pretrain_realm
from tests.conftest import ROOT, stage_env
from tests.realm_core.training.realm_fixture import realm_config, realm_params, write_corpus, write_models

STEPS = 6
RUN = dict(steps=STEPS, refresh_schedule="2", eval_every=3)  # refreshes after steps 2 and 4; evals at 0, 3, 6
TIMING = {"train_seconds", "resumed_at", "refresh_seconds"}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("realm_stage")
    return (*write_corpus(tmp / "corpus"), *write_models(tmp / "models"))


def run(tmp: Path, inputs, **kw):
    """One call of the stage; (metrics, per-step train losses, info lines)."""
    records, lines = [], []
    metrics = run_pretrain_realm(realm_config(tmp, *inputs, **{**RUN, **kw}), on_log=records.append, info=lines.append)
    losses = {r["step"]: r["loss"] for r in records if r.get("event") == "train"}
    return metrics, losses, lines


@pytest.fixture(scope="module")
def straight(inputs, tmp_path_factory):
    """The uninterrupted reference run."""
    tmp = tmp_path_factory.mktemp("straight")
    return (tmp, *run(tmp, inputs))


def weights(tmp: Path) -> dict[str, torch.Tensor]:
    out = {}
    for name in ("realm", "realm_encoder"):
        for f in sorted((tmp / "models" / name).glob("*.safetensors")):
            out.update({f"{name}/{k}": v for k, v in load_file(str(f)).items()})
    return out


def assert_same_run(tmp: Path, straight, metrics: dict, losses: dict[int, float]) -> None:
    """Weights within 1e-5, the same per-step losses and the same figures as the reference."""
    ref_tmp, ref_metrics, ref_losses, _ = straight
    a, b = weights(ref_tmp), weights(tmp)
    assert a and a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(b[key], a[key], atol=1e-5, rtol=0, msg=key)
    assert losses.keys() <= ref_losses.keys() and max(losses) == STEPS
    for step, loss in losses.items():
        assert loss == pytest.approx(ref_losses[step], abs=1e-5), step

    def figures(m):
        out = {k: v for k, v in m.items() if k not in TIMING}
        out["refresh_history"] = [{k: v for k, v in r.items() if k != "seconds"} for r in m["refresh_history"]]
        out["final_train"] = {k: v for k, v in m["final_train"].items() if k not in ("steps_per_s", "elapsed_s")}
        return out

    assert figures(metrics) == figures(ref_metrics)


def test_end_to_end_metrics_and_models(straight, inputs):
    tmp, metrics, losses, lines = straight
    assert metrics == json.loads((tmp / "metrics" / "pretrain_realm.json").read_text())
    assert metrics["completed"] and metrics["steps"] == STEPS and metrics["resumed_at"] == []
    assert (metrics["device"], metrics["precision"], metrics["num_candidates"]) == ("cpu", "fp32", 4)
    held = metrics["heldout"]
    for key in ("marginal_accuracy", "null_accuracy", "baseline_accuracy"):
        assert 0.0 <= held[key] <= 1.0, key
    assert isinstance(held["retrieval_utility"], float) and held["examples"] >= 1 and held["masks"] >= held["examples"]
    assert held["step"] == STEPS and held["nll"] > 0 and held["baseline_nll"] > 0
    assert [e["step"] for e in metrics["evals"]] == [0, 3, 6]
    assert metrics["ru_first"] == metrics["evals"][0]["retrieval_utility"]
    assert metrics["ru_last"] == metrics["evals"][-1]["retrieval_utility"] == held["retrieval_utility"]
    # Refreshes after steps 2 and 4 (none after the last step: that index would never be used).
    assert metrics["refreshes"] == 2
    history = [(r["version"], r["snapshot_step"], r["installed_step"]) for r in metrics["refresh_history"]]
    assert history == [(1, 2, 2), (2, 4, 4)]
    assert metrics["max_staleness_steps"] == 1  # the batch after a refresh has staleness 0, the next 1
    assert sorted(losses) == list(range(1, STEPS + 1)) and all(np.isfinite(list(losses.values())))
    assert any(line.startswith("index v1 (snapshot of step 2) live from step 2") for line in lines)
    assert set(metrics["final_train"]) >= {"loss", "accuracy", "retrieval_utility", "p_null", "staleness",
                                            "answer_in_candidates"}

    retriever = RetrieverEmbedder.from_pretrained(tmp / "models" / "realm")
    encoder = KnowledgeAugEncoder.from_pretrained(tmp / "models" / "realm_encoder")
    assert (encoder.max_query_len, encoder.max_candidate_len) == (32, 64)
    assert retriever.embed_queries(["who wrote hamlet"]).shape == (1, 16)
    # The exported models are the final checkpoint's weights (its shared tensors saved once).
    final = ckpt.read_latest(tmp / "ckpt")
    assert final.name == f"step_{STEPS:07d}"
    saved = load_file(str(final / "model.safetensors"))
    aliases = json.loads((final / "state.json").read_text())["aliases"]
    assert aliases  # the MLM decoder is tied to the word embeddings
    for key, value in RealmModel(retriever, encoder).state_dict().items():
        assert torch.equal(value, saved[aliases.get(key, key)]), key
    initial = KnowledgeAugEncoder.from_pretrained(inputs[3])
    assert not torch.equal(encoder.mlm.cls.predictions.bias, initial.mlm.cls.predictions.bias)  # it trained
    # Index versions no checkpoint names are gone; the checkpoints name the version they used.
    named = {ckpt.read_state(p)["data"]["index"]["version"] for p in (tmp / "ckpt").glob("step_*")}
    assert named == {2}
    assert {p.name for p in (tmp / "ckpt" / "index").iterdir()} <= {"v0001", "v0002"}

    # A rerun finds the run complete and reports the same figures (they ride in the checkpoint).
    again, again_losses, _ = run(tmp, inputs)
    assert again_losses == {} and again["completed"] and {k: v for k, v in again.items() if k not in TIMING} == \
        {k: v for k, v in metrics.items() if k not in TIMING}


def test_eval_every_zero_scores_at_the_start_and_the_end(inputs, tmp_path):
    metrics, _, _ = run(tmp_path, inputs, steps=2, eval_every=0, refresh_schedule="never", checkpoint_every=5)
    assert [e["step"] for e in metrics["evals"]] == [0, 2] and metrics["heldout"]["step"] == 2
    assert metrics["refreshes"] == 0 and metrics["max_staleness_steps"] == 1


def test_time_budget_stops_and_resumes_to_the_same_run(straight, inputs, tmp_path):
    losses, calls = {}, 0
    while True:
        metrics, got, _ = run(tmp_path, inputs, time_budget_s=1e-6)  # one step per call
        losses.update(got)
        calls += 1
        assert list(got) == [calls]
        if metrics["completed"]:
            break
        assert metrics["steps"] == calls and "heldout" not in metrics
        assert not (tmp_path / "models" / "realm").exists()
        latest = ckpt.read_latest(tmp_path / "ckpt")
        assert latest.name == f"step_{calls:07d}"
        index = ckpt.read_state(latest)["data"]["index"]
        # the index the checkpoint names: v0 until the refresh after step 2, v1 until step 4, then v2
        assert index == {"version": calls // 2, "step": calls // 2 * 2}
    assert calls == STEPS and metrics["resumed_at"] == [1, 2, 3, 4, 5]
    assert_same_run(tmp_path, straight, metrics, losses)


def test_sigkill_while_writing_an_index_version_resumes_to_the_same_run(straight, inputs, tmp_path):
    params = tmp_path / "params.json"
    params.write_text(json.dumps(realm_params(tmp_path, *inputs, **RUN)))
    worker = Path(__file__).with_name("realm_fixture.py")
    proc = subprocess.run([sys.executable, str(worker), str(params), "2"], cwd=ROOT, env=stage_env(),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == -9, proc.stderr[-3000:]
    # Killed after step 4 while index v2 was half written: nothing half written is visible.
    index = tmp_path / "ckpt" / "index"
    assert ckpt.read_latest(tmp_path / "ckpt").name == "step_0000003"
    assert (index / "v0001" / "meta.json").is_file() and not (index / "v0002").exists()
    leftovers = [p.name for p in index.iterdir() if p.name.startswith(".v0002.tmp-")]
    assert leftovers and not (tmp_path / "models").exists() and not (tmp_path / "metrics").exists()

    metrics, losses, _ = run(tmp_path, inputs)
    assert metrics["completed"] and metrics["resumed_at"] == [3] and sorted(losses) == [4, 5, 6]
    assert not [p.name for p in index.iterdir() if p.name.startswith(".")]  # the leftover is cleaned up
    assert_same_run(tmp_path, straight, metrics, losses)


def test_resume_must_refuses_other_settings_and_check_inputs_names_the_key(straight, inputs, tmp_path):
    tmp = straight[0]
    with pytest.raises(RealmError, match="num_candidates"):
        run(tmp, inputs, num_candidates=3, resume="must")
    cfg = realm_config(tmp_path, *inputs, salient_spans=str(tmp_path / "none.parquet"))
    with pytest.raises(RealmError, match=r"none.parquet: salient spans file not found \(pretrain_realm\.salient_spans"):
        check_inputs(cfg)
    with pytest.raises(RealmError, match="refresh schedule 'soon'"):
        check_inputs(realm_config(tmp_path, *inputs, refresh_schedule="soon"))


@pytest.mark.slow  # two torchrun processes and a Prefect server (~50 s)
def test_torchrun_two_gloo_processes_train_and_evaluate(inputs, tmp_path):
    """`torchrun --nproc-per-node 2 -m flows.pretrain_realm` (gloo): rank 0 builds index v0 and
    every sync refresh, all ranks retrieve from them, rank 0 alone evaluates and writes."""
    import yaml

    params = realm_params(tmp_path / "run", *inputs, steps=4, refresh_schedule="2", eval_examples=4, batch_size=4)
    (tmp_path / "p.yaml").write_text(yaml.safe_dump({"pretrain_realm": params}))
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                           "-m", "flows.pretrain_realm", "--params", str(tmp_path / "p.yaml")],
                          cwd=ROOT, env=stage_env(), capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    metrics = json.loads(Path(params["metrics_file"]).read_text())
    assert metrics["completed"] and metrics["processes"] == 2 and metrics["refreshes"] == 1
    assert set(metrics["heldout"]) >= {"marginal_accuracy", "null_accuracy", "baseline_accuracy", "retrieval_utility"}
    assert RetrieverEmbedder.from_pretrained(params["retriever_output_dir"]) is not None
