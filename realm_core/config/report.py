"""Config of the `report` stage (params.yaml section `report`, `python -m flows.report`)."""

from __future__ import annotations

from pydantic import Field, field_validator

from realm_core.config.base import StageConfig


class ReportConfig(StageConfig):
    """results.md + PNGs: QA EM and recall beside the REALM paper, ablations, zero-shot recall, curves."""

    datasets: list[str] = ["nq", "wq", "ct"]
    """QA datasets to report, in column order (nq, wq, ct); each needs `<eval_dir>/<dataset>.json`."""

    eval_dir: str = "metrics/eval"
    """The evaluate stage's metrics: <dataset>.json with EM and Recall@k per fine-tuned method."""

    retrieval_dir: str = "metrics/retrieval"
    """The evaluate_retrieval stage's metrics: <dataset>.json with zero-shot Recall@k per retriever
    (a missing file is noted in the report)."""

    ablations: list[str] = ["docs/ablations_gpu.json", "docs/ablations_gpu_h100.json",
                            "docs/ablations_gpu_h100_scaled.json", "docs/ablations.json"]
    """Pre-training ablation tables (scripts/realm_ablations.py or the GPU script's format); each
    that exists is reported as its own table, in this order; none existing is noted."""

    pretrain_dir: str = "metrics/pretrain_realm"
    """dvclive directory of pretrain_realm (curves in plots/metrics/train/<metric>.tsv)."""

    pretrain_curves: list[str] = ["loss", "retrieval_utility"]
    """pretrain_realm curves to plot over steps, one panel each (dvclive metric names)."""

    finetune_dir: str = "metrics/finetune_qa"
    """Holds one dvclive directory per fine-tuning run, <dataset>-<method>; their loss curves are
    plotted when present."""

    output_dir: str = "reports"
    """Receives results.md and the PNGs it embeds."""

    dpi: int = Field(default=120, ge=50, le=600)
    """Resolution of the PNGs."""

    @field_validator("datasets")
    @classmethod
    def _known_datasets(cls, value: list[str]) -> list[str]:
        if not value or len(set(value)) != len(value) or not set(value) <= {"nq", "wq", "ct"}:
            raise ValueError("must be a non-empty list of distinct datasets among nq, wq, ct")
        return value

    @field_validator("ablations", "pretrain_curves")
    @classmethod
    def _non_empty_names(cls, value: list[str]) -> list[str]:
        if any(not v for v in value):
            raise ValueError("entries must be non-empty")
        return value
