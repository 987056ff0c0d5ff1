"""BERT's optimiser recipe, as REALM and ORQA use it, with per-group learning rates.

AdamW with weight decay 0.01 except on LayerNorm weights and biases, linear warmup then linear
decay to 0 (BERT's `optimization.py`). BERT's AdamWeightDecay skips Adam's bias correction;
torch's AdamW applies it, which only changes the first few hundred steps' effective step size.

Parameter groups: `lr_groups` maps a parameter-name prefix to its own peak learning rate (REALM
fine-tuning trains the reader and the query tower at different rates, a new classification head
often wants a larger one). The first matching prefix wins; everything else uses the base `lr`.
Each group keeps the decay / no-decay split, and the schedule scales every group's peak alike.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch


def bert_warmup(steps: int) -> int:
    """REALM/ORQA's warmup rule: min(10000, max(100, steps / 10)), capped at `steps`."""
    return min(steps, min(10_000, max(100, steps // 10)))


def _no_decay(name: str) -> bool:
    flat = name.lower().replace("_", "")
    return name.endswith("bias") or "layernorm" in flat


def param_groups(model: torch.nn.Module, lr: float, weight_decay: float,
                 lr_groups: Sequence[tuple[str, float]] = ()) -> list[dict[str, Any]]:
    """AdamW groups: per (lr group, decay or not), in a fixed order, empty groups left out.

    Each group carries a `name` ("<prefix or 'default'>/decay|no_decay") so logs and checkpoint
    checks can tell them apart. Frozen parameters (requires_grad False) are left out.
    """
    buckets: dict[tuple[int, bool], list[torch.nn.Parameter]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue  # frozen parts (e.g. the document tower during QA fine-tuning)
        group = next((i for i, (prefix, _) in enumerate(lr_groups) if name.startswith(prefix)), len(lr_groups))
        buckets.setdefault((group, _no_decay(name)), []).append(param)
    out = []
    for group in range(len(lr_groups) + 1):
        prefix, group_lr = lr_groups[group] if group < len(lr_groups) else ("default", lr)
        for no_decay in (False, True):
            params = buckets.get((group, no_decay))
            if params:
                out.append({"params": params, "lr": group_lr, "weight_decay": 0.0 if no_decay else weight_decay,
                            "name": f"{prefix}/{'no_decay' if no_decay else 'decay'}"})
    return out


def build_optimizer(model: torch.nn.Module, *, steps: int, lr: float, warmup_steps: int | None = None,
                    weight_decay: float = 0.01, adam_eps: float = 1e-6,
                    adam_betas: tuple[float, float] = (0.9, 0.999),
                    lr_groups: Sequence[tuple[str, float]] = ()) -> tuple[torch.optim.Optimizer, Any]:
    """AdamW over `param_groups` and the linear warmup/decay schedule (LambdaLR)."""
    optimizer = torch.optim.AdamW(param_groups(model, lr, weight_decay, lr_groups), lr=lr, betas=adam_betas,
                                  eps=adam_eps)
    warmup = bert_warmup(steps) if warmup_steps is None else warmup_steps

    def schedule(step: int) -> float:
        if step < warmup:
            return step / max(1, warmup)
        return max(0.0, (steps - step) / max(1, steps - warmup))

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
