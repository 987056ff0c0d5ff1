"""The shared training loop on a small real torch model: schedule, checkpoints, resume, budget."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from realm_core.errors import RealmError
from realm_core.training import checkpoint as ckpt
from realm_core.training.loop import LoopConfig, StepBatches, bert_warmup, build_optimizer, train


class Net(nn.Module):
    """Linear -> LayerNorm -> dropout -> Linear: has every parameter kind the optimizer groups."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.inp = nn.Linear(8, 16)
        self.layer_norm = nn.LayerNorm(16)
        self.drop = nn.Dropout(0.3)
        self.out = nn.Linear(16, 1)

    def forward(self, x):
        return self.out(self.drop(self.layer_norm(self.inp(x))))


def batch_at(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(step)
    x = torch.randn(16, 8, generator=g)
    return x, x.sum(dim=1, keepdim=True)


def objective(model, batch):
    x, y = batch
    # Uses the global Python and NumPy RNGs too, so resuming must restore them.
    noise = 1e-3 * (random.random() + np.random.rand())
    loss = ((model(x) - y) ** 2).mean() + noise
    return loss, {"noise": noise}


def cfg(tmp_path, **kw) -> LoopConfig:
    base = dict(steps=12, lr=1e-2, warmup_steps=3, log_every=2, checkpoint_dir=str(tmp_path / "ckpt"),
                checkpoint_every=4, keep_checkpoints=2, metrics_path=str(tmp_path / "metrics.jsonl"))
    return LoopConfig(**{**base, **kw})


def weights(model) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_optimizer_groups_and_schedule():
    model = Net()
    optimizer, scheduler = build_optimizer(model, LoopConfig(steps=10, lr=1.0, warmup_steps=4))
    decay, no_decay = optimizer.param_groups
    assert decay["weight_decay"] == 0.01 and no_decay["weight_decay"] == 0.0
    assert optimizer.defaults["eps"] == 1e-6
    names = {id(p): n for n, p in model.named_parameters()}
    assert sorted(names[id(p)] for p in decay["params"]) == ["inp.weight", "out.weight"]
    assert sorted(names[id(p)] for p in no_decay["params"]) == ["inp.bias", "layer_norm.bias", "layer_norm.weight", "out.bias"]
    lrs = []
    for _ in range(10):
        lrs.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    assert lrs == pytest.approx([0, 0.25, 0.5, 0.75, 1.0, 5 / 6, 4 / 6, 3 / 6, 2 / 6, 1 / 6])
    assert bert_warmup(200_000) == 10_000 and bert_warmup(500) == 100 and bert_warmup(50) == 50


def test_checkpoints_keep_last_k_and_log_metrics(tmp_path):
    records = []
    result = train(Net(), objective, batch_at, cfg(tmp_path), on_log=records.append)
    assert result.completed and result.step == 12 and result.stop_reason == "completed"
    ckdir = tmp_path / "ckpt"
    assert sorted(p.name for p in ckdir.iterdir()) == ["latest", "step_0000008", "step_0000012"]
    assert (ckdir / "latest").read_text().strip() == "step_0000012"
    step_dir = ckdir / "step_0000012"
    assert sorted(p.name for p in step_dir.iterdir()) == [
        "model.safetensors", "optimizer.safetensors", "rng.safetensors", "state.json"]
    opt = load_file(str(step_dir / "optimizer.safetensors"))
    assert {k.rsplit(".", 1)[1] for k in opt} == {"exp_avg", "exp_avg_sq", "step"}
    state = json.loads((step_dir / "state.json").read_text())["state"]
    assert state["step"] == 12 and state["data"] == {"step": 12}
    train_logs = [r for r in records if r["event"] == "train"]
    assert [r["step"] for r in train_logs] == [2, 4, 6, 8, 10, 12]
    assert {"loss", "grad_norm", "noise", "lr", "steps_per_s"} <= set(train_logs[0])
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert lines == records


class Interrupt(Exception):
    pass


def test_resume_after_interrupt_is_bitwise_identical(tmp_path):
    straight = Net()
    train(straight, objective, batch_at, cfg(tmp_path / "a"))

    def crash(record):
        if record["event"] == "train" and record["step"] == 6:
            raise Interrupt  # dies after step 6; the last checkpoint is step 4

    with pytest.raises(Interrupt):
        train(Net(), objective, batch_at, cfg(tmp_path / "b"), on_log=crash)
    # Pollute the global RNGs: the checkpoint must restore them.
    random.seed(99), np.random.seed(99), torch.manual_seed(99)
    resumed = Net()
    exported = []
    result = train(resumed, objective, batch_at, cfg(tmp_path / "b"), export=lambda m: exported.append(m))
    assert result.resumed_from == 4 and result.completed and exported == [resumed]
    for key, value in weights(straight).items():
        assert torch.equal(value, resumed.state_dict()[key]), key
    steps = [json.loads(x)["step"] for x in (tmp_path / "b/metrics.jsonl").read_text().splitlines()
             if json.loads(x)["event"] == "train"]
    assert steps == [2, 4, 6, 8, 10, 12]  # the log was cut back to the checkpoint, no duplicates

    # Running again finds the run complete: no training, but the export runs again.
    before = weights(resumed)
    again = train(resumed, objective, batch_at, cfg(tmp_path / "b"), export=lambda m: exported.append(m))
    assert again.completed and again.resumed_from == 12 and len(exported) == 2
    assert all(torch.equal(v, resumed.state_dict()[k]) for k, v in before.items())


def test_time_budget_checkpoints_and_exits(tmp_path):
    exported = []
    result = train(Net(), objective, batch_at, cfg(tmp_path, time_budget_s=0.0), export=exported.append)
    assert not result.completed and result.stop_reason == "time_budget" and result.step == 1
    assert exported == [] and ckpt.read_latest(tmp_path / "ckpt").name == "step_0000001"
    result = train(Net(), objective, batch_at, cfg(tmp_path), export=exported.append)
    assert result.completed and result.resumed_from == 1 and len(exported) == 1

    stops = iter([False, False, True])
    result = train(Net(), objective, batch_at, cfg(tmp_path / "s"), should_stop=lambda: next(stops))
    assert result.stop_reason == "should_stop" and result.step == 3


def test_resume_rules(tmp_path):
    train(Net(), objective, batch_at, cfg(tmp_path, steps=4))
    with pytest.raises(RealmError, match="lr=0.01.*0.02"):
        train(Net(), objective, batch_at, cfg(tmp_path, steps=4, lr=2e-2, resume="must"))
    with pytest.raises(RealmError, match="batch_size"):
        train(Net(), objective, batch_at, cfg(tmp_path, steps=4, resume="must"), settings={"batch_size": 8})
    # "auto" with other settings (a changed params.yaml): a new run, not a resume, and it says why.
    events = []
    result = train(Net(), objective, batch_at, cfg(tmp_path, steps=4), settings={"batch_size": 8},
                   on_log=events.append)
    assert result.resumed_from is None and result.step == 4
    assert events[0]["event"] == "restart" and "batch_size" in events[0]["reason"]
    assert train(Net(), objective, batch_at, cfg(tmp_path, steps=4), settings={"batch_size": 8}).resumed_from == 4
    result = train(Net(), objective, batch_at, cfg(tmp_path, steps=4, lr=2e-2, resume="never"))
    assert result.resumed_from is None and result.step == 4

    (tmp_path / "ckpt" / "latest").write_text("step_0000999\n")
    with pytest.raises(RealmError, match="does not exist"):
        train(Net(), objective, batch_at, cfg(tmp_path, steps=4, lr=2e-2))
    (tmp_path / "ckpt" / "latest").write_text("step_0000004\n")
    (tmp_path / "ckpt" / "step_0000004" / "state.json").write_text("{")
    with pytest.raises(RealmError, match="step_0000004"):
        train(Net(), objective, batch_at, cfg(tmp_path, steps=4, lr=2e-2))


def test_code_fingerprint_covers_every_source_file(tmp_path):
    from realm_core.training.loop import code_fingerprint

    (tmp_path / "pkg").mkdir()
    (tmp_path / "a.py").write_text("x = 1\n")
    (tmp_path / "pkg" / "b.py").write_text("y = 2\n")
    first = code_fingerprint(tmp_path)
    assert code_fingerprint(tmp_path) == first
    (tmp_path / "pkg" / "b.py").write_text("y = 3\n")
    assert code_fingerprint(tmp_path) != first
    (tmp_path / "pkg" / "b.py").write_text("y = 2\n")
    (tmp_path / "pkg" / "notes.txt").write_text("not code")
    assert code_fingerprint(tmp_path) == first
    assert code_fingerprint() == code_fingerprint()  # the installed realm_core: stable between calls


def test_a_finished_checkpoint_of_other_code_is_not_reused(tmp_path, monkeypatch):
    # DVC reruns a training stage because its code changed; "auto" must then train anew rather
    # than export the finished checkpoint the old code wrote.
    from realm_core.training import loop

    assert train(Net(), objective, batch_at, cfg(tmp_path, steps=4)).step == 4
    assert train(Net(), objective, batch_at, cfg(tmp_path, steps=4)).resumed_from == 4  # same code: reused
    monkeypatch.setattr(loop, "code_fingerprint", lambda: "edited-source")
    events = []
    result = train(Net(), objective, batch_at, cfg(tmp_path, steps=4), on_log=events.append)
    assert result.resumed_from is None and result.step == 4
    assert events[0]["event"] == "restart" and "other realm_core code" in events[0]["reason"]
    # "must" carries a run on across a code change, and says so.
    monkeypatch.setattr(loop, "code_fingerprint", lambda: "edited-again")
    events = []
    result = train(Net(), objective, batch_at, cfg(tmp_path, steps=4, resume="must"), on_log=events.append)
    assert result.resumed_from == 4 and events[0]["event"] == "code_changed"


def test_bad_settings_and_non_finite_loss(tmp_path):
    with pytest.raises(RealmError, match="steps"):
        train(Net(), objective, batch_at, LoopConfig(steps=0, lr=1e-3))
    with pytest.raises(RealmError, match="resume"):
        train(Net(), objective, batch_at, LoopConfig(steps=1, lr=1e-3, resume="yes"))
    nan = lambda model, batch: (model(batch[0]).sum() * float("nan"), {})  # noqa: E731
    with pytest.raises(RealmError, match="step 1"):
        train(Net(), nan, batch_at, LoopConfig(steps=2, lr=1e-3))


def test_step_batches_stream_position():
    stream = StepBatches(lambda step: step * 10)
    assert [next(stream) for _ in range(3)] == [0, 10, 20]
    state = stream.state_dict()
    other = StepBatches(lambda step: step * 10)
    other.load_state_dict(state)
    assert next(other) == 30


def mse(model, batch):
    x, y = batch
    return ((model(x) - y) ** 2).mean(), {}


def no_dropout_net() -> Net:
    net = Net()
    net.drop.p = 0.0
    return net


def test_gradient_accumulation_equals_the_whole_batch():
    # Two micro-batches of 8 with a mean loss give the gradient of the batch of 16.
    whole, accum = no_dropout_net(), no_dropout_net()
    train(whole, mse, batch_at, LoopConfig(steps=3, lr=1e-2, warmup_steps=0))
    halves = lambda step: tuple(t[(step % 2) * 8:(step % 2 + 1) * 8] for t in batch_at(step // 2))  # noqa: E731
    result = train(accum, mse, halves, LoopConfig(steps=3, lr=1e-2, warmup_steps=0, grad_accum=2))
    assert result.step == 3
    for key, value in whole.state_dict().items():
        torch.testing.assert_close(accum.state_dict()[key], value, rtol=1e-5, atol=1e-6)


def test_bf16_autocast_on_cpu_trains_with_float32_weights():
    seen = []

    def objective_bf16(model, batch):
        out = model(batch[0])
        seen.append(out.dtype)
        return ((out.float() - batch[1]) ** 2).mean(), {}

    model = no_dropout_net()
    losses = []
    train(model, objective_bf16, batch_at, LoopConfig(steps=30, lr=1e-2, warmup_steps=0, precision="bf16",
                                                      log_every=5),
          on_log=lambda r: losses.append(r["loss"]) if r["event"] == "train" else None)
    assert set(seen) == {torch.bfloat16}  # the forward ran under bf16 autocast
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert losses[-1] < 0.5 * losses[0]  # and it still learns
    with pytest.raises(RealmError, match="precision"):
        train(Net(), mse, batch_at, LoopConfig(steps=1, lr=1e-3, precision="auto"))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_fp16_on_cuda_uses_a_grad_scaler(tmp_path):
    model = no_dropout_net().cuda()
    cuda_batches = lambda step: tuple(t.cuda() for t in batch_at(step))  # noqa: E731
    result = train(model, mse, cuda_batches, cfg(tmp_path, precision="fp16"))
    assert result.completed and all(p.dtype == torch.float32 for p in model.parameters())
    state = json.loads((tmp_path / "ckpt" / "step_0000012" / "state.json").read_text())["state"]
    assert state["scaler"]["scale"] > 0  # the scaler's state is checkpointed for resume
    assert train(no_dropout_net().cuda(), mse, cuda_batches, cfg(tmp_path, precision="fp16")).resumed_from == 12


def test_eval_hook_keeps_and_exports_the_best_model(tmp_path):
    scores = iter([0.5, 0.9, 0.7])  # best at the second evaluation (step 8)
    saved = []

    def save_model(model, path):
        from safetensors.torch import save_file

        path.mkdir(parents=True, exist_ok=True)  # a temporary name, renamed into place when complete
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path / "model.safetensors"))
        saved.append(path.name)

    config = cfg(tmp_path, eval_every=4, best_metric="acc", best_output_dir=str(tmp_path / "best"))
    model = Net()
    snapshots = {}
    result = train(model, objective, batch_at, config, evaluate=lambda m: {"acc": next(scores)},
                   save_model=save_model, after_step=lambda s, m: snapshots.__setitem__(s, weights(m)))
    assert [e["step"] for e in result.evals] == [4, 8, 12] and result.best["step"] == 8
    assert len(saved) == 2  # at steps 4 and 8
    exported = load_file(str(tmp_path / "best" / "model.safetensors"))
    assert all(torch.equal(exported[k], snapshots[8][k]) for k in exported)
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["best_0000008", "latest", "step_0000008",
                                                                     "step_0000012"]
    # lower is better: the first evaluation stays best
    losses = iter([0.5, 0.9, 0.7])
    low = train(Net(), objective, batch_at, cfg(tmp_path / "min", eval_every=4, best_metric="loss", best_mode="min",
                                                best_output_dir=str(tmp_path / "min_best")),
                evaluate=lambda m: {"loss": next(losses)}, save_model=save_model)
    assert low.best["step"] == 4 and low.best["value"] == 0.5
    # a finished run resumed again reports the same evaluations and best, from its checkpoint
    again = train(Net(), objective, batch_at, config, evaluate=lambda m: {"acc": 0.0}, save_model=save_model)
    assert again.trained_steps == 0 and again.evals == result.evals and again.best == result.best
    with pytest.raises(RealmError, match="best_metric needs"):
        train(Net(), objective, batch_at, cfg(tmp_path / "x", best_metric="acc"))


def test_parameter_groups_get_their_own_learning_rates():
    model = Net()
    config = LoopConfig(steps=10, lr=1e-3, warmup_steps=0, lr_groups=(("out.", 1e-2),))
    optimizer, scheduler = build_optimizer(model, config)
    names = {id(p): n for n, p in model.named_parameters()}
    groups = {g["name"]: (g["lr"], sorted(names[id(p)] for p in g["params"])) for g in optimizer.param_groups}
    assert groups == {"out./decay": (1e-2, ["out.weight"]), "out./no_decay": (1e-2, ["out.bias"]),
                      "default/decay": (1e-3, ["inp.weight"]),
                      "default/no_decay": (1e-3, ["inp.bias", "layer_norm.bias", "layer_norm.weight"])}
    optimizer.step()
    scheduler.step()
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([9e-3, 9e-3, 9e-4, 9e-4])
