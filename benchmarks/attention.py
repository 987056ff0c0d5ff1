"""Benchmark: the reader's eval-mode attention on the CPU, torch's SDPA kernel against two
hand-written bf16 forms, at the reader's shapes (8 rows x 12 heads x L x 32 by default).

`benchmarks/finetune_qa.py`'s ceiling line shows that in bf16 the attention runs far below the
matmul peak and caps prediction near 59 % of it. This script asks whether writing it by hand would
help: per length L (a padding mask keeps the first 85 % of the keys) it times

- `sdpa bf16` / `sdpa fp32`: `scaled_dot_product_attention` with a bool mask (what the reader runs);
- `baddbmm bf16`: one `baddbmm` (scores + additive mask) -> softmax -> `bmm` over all rows and heads;
- `per-row bf16`: the same, one row (12 heads) at a time;

and prints the median time after a warm-up (span_head.median_s), GFLOP/s (4 x rows x heads x L^2 x
dim), the speed against `sdpa bf16`, and each form's largest error against `sdpa` in fp32 on the
same inputs. Random inputs: the time does not depend on the values.

    python benchmarks/attention.py
    python benchmarks/attention.py --lengths 128,320 --reps 9
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from span_head import median_s  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--lengths", default="100,146,200,256,320", help="comma-separated sequence lengths")
    p.add_argument("--rows", type=int, default=8)
    p.add_argument("--heads", type=int, default=12)
    p.add_argument("--dim", type=int, default=32, help="head width (the reader's 384 / 12)")
    p.add_argument("--reps", type=int, default=7)
    args = p.parse_args()
    try:
        lengths = [int(x) for x in args.lengths.split(",") if x]
    except ValueError:
        print(f"error: --lengths {args.lengths!r}: expected comma-separated integers", file=sys.stderr)
        return 1
    if not lengths or min(lengths) < 2 or min(args.rows, args.heads, args.dim, args.reps) < 1:
        print("error: --lengths must be >= 2 and --rows, --heads, --dim, --reps >= 1", file=sys.stderr)
        return 1
    fn, r, h, d = torch.nn.functional, args.rows, args.heads, args.dim
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {r} rows x {h} heads x L x {d}, "
          f"median of {args.reps}")
    print("| L | form | ms | GFLOP/s | vs sdpa bf16 | max abs error vs sdpa fp32 |")
    print("|---:|---|---:|---:|---:|---:|")
    torch.manual_seed(0)
    for n in lengths:
        q, k, v = (torch.randn(r, h, n, d).to(torch.bfloat16) for _ in range(3))
        q32, k32, v32 = q.float(), k.float(), v.float()  # the same values in fp32
        keep = torch.zeros(r, 1, 1, n, dtype=torch.bool)
        keep[..., : max(1, int(0.85 * n))] = True
        bias = torch.zeros(r, 1, 1, n, dtype=torch.bfloat16).masked_fill(~keep, float("-inf"))
        flat = (q.reshape(r * h, n, d), k.reshape(r * h, n, d).transpose(1, 2), v.reshape(r * h, n, d))
        full_bias = bias.expand(r, h, n, n).reshape(r * h, n, n)

        def by_heads(lo: int, hi: int) -> torch.Tensor:
            scores = torch.baddbmm(full_bias[lo:hi], flat[0][lo:hi], flat[1][lo:hi], alpha=d ** -0.5)
            return torch.bmm(scores.softmax(-1), flat[2][lo:hi])

        forms = {
            "sdpa bf16": lambda: fn.scaled_dot_product_attention(q, k, v, attn_mask=keep),
            "sdpa fp32": lambda: fn.scaled_dot_product_attention(q32, k32, v32, attn_mask=keep),
            "baddbmm bf16": lambda: by_heads(0, r * h),
            "per-row bf16": lambda: torch.cat([by_heads(i * h, (i + 1) * h) for i in range(r)]),
        }
        flops = 4 * r * h * n * n * d
        with torch.no_grad():
            ref = forms["sdpa fp32"]().reshape(r * h, n, d)
            times = {name: median_s(f, args.reps) for name, f in forms.items()}
            for name, f in forms.items():
                err = (f().float().reshape(r * h, n, d) - ref).abs().max().item()
                print(f"| {n} | {name} | {1e3 * times[name]:.2f} | {flops / times[name] / 1e9:.0f} | "
                      f"{times['sdpa bf16'] / times[name]:.2f}x | {err:.4f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
