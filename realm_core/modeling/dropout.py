"""Dropout whose random mask is cheap on the CPU, for the BERTs we train.

Why: torch's CPU dropout draws its mask with `bernoulli_`, which on a non-Intel CPU runs one
Mersenne-Twister draw per element on one thread (MKL's vectorised path is taken only when the CPU
vendor is Intel). Attention dropout in a 6-layer H384 reader over 8 rows × 320 wordpieces masks
12 × 320 × 320 × 8 = 9.8 M probabilities per layer, and on this project's 2-core machine
`bernoulli_` was 29-34 % of a reader step's forward + backward (torch.profiler;
benchmarks/dropout.py --profile). Worse, a dropout probability above zero sends
`scaled_dot_product_attention` from the fused CPU kernel to its "math" fallback.

What stays the same: every element is zeroed independently with probability p and the survivors
are scaled by 1 / (1 - p), in training only; nothing changes in eval mode or on CUDA (whose
dropout is fast), where torch's own `F.dropout` and SDPA run as before. The random bits come from
numpy's SFC64 generator (raw 64-bit words, about 2 ns per word, i.e. per two elements), seeded per
call from torch's default generator, so `torch.manual_seed` governs the masks as it governs
torch's dropout, and a resumed run that restores torch's RNG state draws the same masks. An
element is kept when its uniform 32-bit integer is >= round(p * 2^32): the drop probability is p
to within 2^-33.

`use_fast_dropout(model)` swaps the `nn.Dropout` modules of the BERTs inside `model` for
`FastDropout` and their attention for `attention_forward` (registered with transformers under
`ATTENTION_NAME`). The attention choice is not written by `save_pretrained`, so a saved model
loads in plain transformers, with SDPA, as before (tests/realm_core/modeling/test_dropout.py).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

ATTENTION_NAME = "realm_fast_dropout"
_THRESHOLD_SHIFT = 1 << 31


def keep_mask(shape: torch.Size | tuple[int, ...], p: float) -> torch.Tensor:
    """A CPU bool tensor of `shape`, each element True (kept) independently with probability 1 - p."""
    n = int(np.prod(shape)) if len(shape) else 1
    seed = int(torch.randint(0, 2**62, (1,)).item())  # torch's generator governs the stream
    words = np.random.Generator(np.random.SFC64(seed)).integers(
        -(2**63), 2**63 - 1, size=(n + 1) // 2, dtype=np.int64, endpoint=True)  # raw 64-bit words
    # Two uniform int32 per word: an int32 u is >= -2^31 + t with probability 1 - t / 2^32.
    bits = torch.from_numpy(words).view(torch.int32)[:n]
    return torch.ge(bits, round(p * 2**32) - _THRESHOLD_SHIFT).view(shape)


class _MaskScale(torch.autograd.Function):
    """x * keep * scale, saving only the bool mask for backward (as torch's dropout does)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, keep: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.save_for_backward(keep)
        ctx.scale = scale
        return x.mul(keep).mul_(scale)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (keep,) = ctx.saved_tensors
        return grad.mul(keep).mul_(ctx.scale), None, None


def fast_dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """`F.dropout(x, p, training)`, with the mask drawn by `keep_mask` for CPU tensors."""
    if not training or p == 0.0 or x.device.type != "cpu":
        return nn.functional.dropout(x, p, training)
    if p >= 1.0:
        return x * 0.0
    return _MaskScale.apply(x, keep_mask(x.shape, p), 1.0 / (1.0 - p))


class FastDropout(nn.Dropout):
    """`nn.Dropout` (same `p`, same state dict: none) drawing its CPU mask with `keep_mask`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fast_dropout(x, self.p, self.training)


def attention_forward(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                      attention_mask: torch.Tensor | None, scaling: float | None = None,
                      dropout: float = 0.0, **kwargs):
    """transformers' attention-function signature. With dropout on a CPU: softmax(q k^T * scaling,
    padding masked) -> `fast_dropout` -> @ v, as transformers' eager attention computes it; otherwise
    (eval, p = 0, CUDA) transformers' SDPA attention, exactly as an "sdpa" model runs."""
    if dropout == 0.0 or not module.training or query.device.type != "cpu":
        return _sdpa_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs)
    if scaling is None:
        scaling = query.size(-1) ** -0.5
    scores = torch.matmul(query, key.transpose(2, 3)) * scaling
    if attention_mask is not None:  # the SDPA mask: bool, True = attend
        scores = scores.masked_fill(~attention_mask, torch.finfo(scores.dtype).min)
    probs = fast_dropout(torch.softmax(scores, dim=-1), dropout, True)
    out = torch.matmul(probs.to(value.dtype), value)
    return out.transpose(1, 2).contiguous(), None


_sdpa_forward = None  # transformers' SDPA attention, bound by _register (transformers loads lazily)


def _register() -> None:
    """Register `attention_forward` and SDPA's mask builder under ATTENTION_NAME (once)."""
    global _sdpa_forward
    if _sdpa_forward is not None:
        return
    from transformers import AttentionInterface
    from transformers.integrations.sdpa_attention import sdpa_attention_forward
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(ATTENTION_NAME, attention_forward)
    AttentionMaskInterface.register(ATTENTION_NAME, sdpa_mask)
    _sdpa_forward = sdpa_attention_forward


def use_fast_dropout(model: nn.Module) -> nn.Module:
    """Swap, in place, every `nn.Dropout` inside `model` for `FastDropout` and point every
    transformers config in it that runs "sdpa" attention at `attention_forward` (one that asked for
    "eager" or another kernel keeps it, dropout masks aside).
    `model` may be a BERT or any module holding some (a reader, a retriever). Returns `model`."""
    _register()
    for module in model.modules():
        for attr, sub in list(module.named_children()):
            if type(sub) is nn.Dropout:
                setattr(module, attr, FastDropout(sub.p, sub.inplace))
        config = getattr(module, "config", None)
        if getattr(config, "_attn_implementation", None) == "sdpa":
            config._attn_implementation = ATTENTION_NAME
    return model
