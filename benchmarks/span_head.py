"""The reader's span head: its closed form (the library's) vs the LayerNorm form, and its share.

ORQA scores every span (s, w) as dense(LayerNorm(ReLU(start[s] + end[s + w]))), which
materialises [rows, L, width, 256] three times (the sum, the ReLU, the normalised copy). Because
the last layer is a dot product, the same logit is

    (Σ_h (w∘γ)_h x_h − μ Σ_h (w∘γ)_h) / sqrt(var(x) + eps) + w·β + b,   x = ReLU(start + end),

which needs only Σx, Σ(w∘γ)x and ‖x‖² per span: `SpanReader.span_logits` computes that, in
float32. This script times both on the reader's own shapes (`--init`, default the pipeline's
`pretrain_mlm`) next to the whole reader forward, and prints what the closed form saves and how
far its logits are from the LayerNorm form as the reader computed it before (span_out under the
autocast).

    python benchmarks/span_head.py                      # bf16 autocast, the prediction shapes
    python benchmarks/span_head.py --precision fp32
    python benchmarks/span_head.py --train --shapes 20x180   # forward + backward, dropout on
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from realm_core.errors import RealmError  # noqa: E402
from realm_core.modeling.reader import MASK_VALUE, SpanReader  # noqa: E402


def _spans(reader: SpanReader, hidden: torch.Tensor, block_start, block_end):
    proj = reader.span_proj(hidden).float()
    start, end = proj.split(reader.span_hidden, dim=-1)
    length = hidden.size(1)
    starts = torch.arange(length)
    ends = starts[:, None] + torch.arange(reader.max_span_width)[None, :]
    valid = (starts[None, :, None] >= block_start[:, None, None]) & (ends[None] <= block_end[:, None, None])
    return start, end, ends.clamp(max=length - 1), valid


def head_layernorm(reader: SpanReader, hidden, block_start, block_end) -> torch.Tensor:
    """The tail of SpanReader.forward as it was before the closed form (span_out under the autocast)."""
    start, end, ends, valid = _spans(reader, hidden, block_start, block_end)
    span = torch.relu(start[:, :, None, :] + end[:, ends])
    logits = reader.span_out(reader.span_norm(span)).squeeze(-1).float()
    return logits.masked_fill(~valid, MASK_VALUE)


def head_closed_form(reader: SpanReader, hidden, block_start, block_end) -> torch.Tensor:
    """The tail of SpanReader.forward as it is: `span_logits`, in float32."""
    start, end, ends, valid = _spans(reader, hidden, block_start, block_end)
    with torch.autocast("cpu", enabled=False):
        logits = reader.span_logits(start, end)
    return logits.masked_fill(~valid, MASK_VALUE)


def median_s(fn, reps: int) -> float:
    fn()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--init", default=str(ROOT / "models" / "pretrain_mlm"), help="a BERT checkpoint or reader")
    ap.add_argument("--precision", choices=["bf16", "fp32"], default="bf16")
    ap.add_argument("--shapes", default="8x146,40x146,40x300", help="rows x padded length, comma-separated")
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--train", action="store_true",
                    help="time forward + backward (loss: logsumexp over each row's spans), the reader in train mode")
    args = ap.parse_args()
    try:
        shapes = [tuple(int(v) for v in s.split("x")) for s in args.shapes.split(",")]
        if any(len(s) != 2 or min(s) < 4 for s in shapes):
            raise ValueError
    except ValueError:
        print(f"error: --shapes {args.shapes!r}: expected ROWSxLENGTH,... (each at least 4)", file=sys.stderr)
        return 1
    try:
        reader = SpanReader.from_init(args.init).train(args.train)
    except RealmError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    torch.manual_seed(0)
    mode = "forward + backward, train mode" if args.train else "forward, eval mode"
    print(f"reader from {args.init}; {args.precision}; {mode}; torch threads {torch.get_num_threads()}; "
          f"median of {args.reps}")
    print("| rows x L | LayerNorm head ms | closed form ms | ratio | reader ms | closed-form share "
          "| reader with the LayerNorm head | max abs logit diff | same argmax rows |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.precision == "bf16")
    grad = torch.enable_grad() if args.train else torch.no_grad()

    def run(fn):
        """fn() under the autocast, then (with --train) the backward of its rows' logsumexp."""
        with grad, autocast:
            out = fn()
        if args.train:
            out.flatten(1).logsumexp(1).sum().backward()
        return out.detach()

    for rows, length in shapes:
        ids = torch.randint(1000, reader.bert.config.vocab_size, (rows, length))
        mask = torch.ones(rows, length, dtype=torch.long)
        types = torch.zeros(rows, length, dtype=torch.long)
        types[:, length // 8:] = 1
        bs, be = torch.full((rows,), length // 8), torch.full((rows,), length - 2)
        with torch.no_grad(), autocast:
            hidden = reader.bert(input_ids=ids, attention_mask=mask, token_type_ids=types).last_hidden_state
        hidden = hidden.detach().requires_grad_(args.train)
        now = run(lambda: head_layernorm(reader, hidden, bs, be))
        closed = run(lambda: head_closed_form(reader, hidden, bs, be))
        t_now = median_s(lambda: run(lambda: head_layernorm(reader, hidden, bs, be)), args.reps)
        t_closed = median_s(lambda: run(lambda: head_closed_form(reader, hidden, bs, be)), args.reps)
        t_full = median_s(lambda: run(lambda: reader(ids, mask, types, bs, be)), args.reps)
        same = int((now.flatten(1).argmax(1) == closed.flatten(1).argmax(1)).sum())
        print(f"| {rows} x {length} | {1e3 * t_now:.1f} | {1e3 * t_closed:.1f} | {t_closed / t_now:.2f} | "
              f"{1e3 * t_full:.1f} | {t_closed / t_full:.0%} | {(t_full - t_closed + t_now) / t_full:.2f}x | "
              f"{float((now - closed).abs().max()):.1e} | {same}/{rows} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
