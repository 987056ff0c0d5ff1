"""Device and compute-precision choice (realm_core/devices.py) and the stage configs' fields."""

from __future__ import annotations

import pytest
import torch

from realm_core import devices
from realm_core.config import (
    BuildIndexConfig,
    EvaluateRetrievalConfig,
    ReindexConfig,
    TagEntitiesConfig,
    load_stage_config,
)
from realm_core.errors import RealmError

INFERENCE_STAGES = {"tag_entities": TagEntitiesConfig, "build_index": BuildIndexConfig,
                    "evaluate_retrieval": EvaluateRetrievalConfig, "reindex": ReindexConfig}


def test_auto_picks_cuda_when_present_else_cpu():
    assert devices.resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert devices.resolve_device(None) == devices.resolve_device("auto")
    assert devices.resolve_device("cpu") == torch.device("cpu")


def test_auto_precision_on_this_cpu_follows_its_bf16_support():
    # This machine (AMD EPYC, avx512_bf16) gives bf16; a CPU without native bf16 gives fp32,
    # where autocast would emulate bf16 and run slower than fp32.
    expected = "bf16" if devices.cpu_has_native_bf16() else "fp32"
    assert devices.resolve_precision("auto", "cpu") == expected
    assert devices.resolve_precision(None, torch.device("cpu")) == expected
    for name in ("fp32", "bf16"):
        assert devices.resolve_precision(name, "cpu") == name  # resolved names pass through


@pytest.mark.parametrize("call, key, message", [
    (lambda: devices.resolve_device("gpu", key="build_index.device"), "build_index.device", "expected auto, cpu"),
    (lambda: devices.resolve_precision("fp8", "cpu", key="tag_entities.precision"), "tag_entities.precision",
     "expected one of"),
    (lambda: devices.resolve_precision("fp16", "cpu", key="evaluate_retrieval.precision"),
     "evaluate_retrieval.precision", "fp16 needs a CUDA device"),
])
def test_bad_values_are_one_line_errors_naming_the_key(call, key, message):
    with pytest.raises(RealmError) as err:
        call()
    text = str(err.value)
    assert text.startswith(f"{key}: ") and message in text and "\n" not in text


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_cuda_without_a_gpu_is_an_error_naming_the_key():
    with pytest.raises(RealmError, match=r"^build_index\.device: 'cuda:1' requested but torch sees no CUDA device$"):
        devices.resolve_stage(BuildIndexConfig(device="cuda:1"), "build_index")


@pytest.mark.parametrize("stage", sorted(INFERENCE_STAGES))
def test_every_inference_stage_has_device_and_precision_resolved_once(stage):
    cfg = INFERENCE_STAGES[stage]()
    assert (cfg.device, cfg.precision) == ("auto", "auto")
    resolved = devices.resolve_stage(cfg, stage)
    assert resolved.device == str(devices.resolve_device("auto"))
    assert resolved.precision == devices.resolve_precision("auto", resolved.device)
    assert devices.resolve_stage(resolved, stage) == resolved  # idempotent: a task may resolve again
    assert cfg.precision == "auto"  # the original is untouched (configs are frozen)
    explicit = devices.resolve_stage(INFERENCE_STAGES[stage](device="cpu", precision="fp32"), stage)
    assert (explicit.device, explicit.precision) == ("cpu", "fp32")


@pytest.mark.parametrize("stage", sorted(INFERENCE_STAGES))
def test_config_rejects_bad_values_naming_the_key(stage):
    for key, value in (("device", "gpu0"), ("precision", "half")):
        with pytest.raises(RealmError) as err:
            load_stage_config(stage, {stage: {key: value}})
        assert f"{stage}.{key}" in str(err.value) and "\n" not in str(err.value)


def test_tag_entities_bf16_flag_is_gone():
    with pytest.raises(RealmError, match="tag_entities.bf16"):
        load_stage_config("tag_entities", {"tag_entities": {"bf16": True}})


def test_autocast_runs_matmuls_in_the_resolved_precision_only():
    a, b = torch.randn(8, 8), torch.randn(8, 8)
    with devices.autocast("cpu", "fp32"):
        assert (a @ b).dtype == torch.float32
    with devices.autocast("cpu", "bf16"):
        assert (a @ b).dtype == torch.bfloat16
    assert devices.autocast_dtype("fp16") == torch.float16 and devices.autocast_dtype("fp32") is None
