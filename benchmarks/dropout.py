"""Dropout on the CPU: torch's own masks vs `realm_core.modeling.dropout` (what `finetune_qa` trains with).

Two parts, one process, the same machine moment:

1. The mask alone: `torch.empty(n).bernoulli_(0.9)` (what `F.dropout` draws on a CPU) against
   `keep_mask(n, 0.1)`, for the tensors one reader layer drops at the fine-tuning shape (hidden
   states [rows, L, H] and attention probabilities [rows, heads, L, L]). Also the kept fraction,
   which must be 0.9.
2. A BERT training forward + backward in train mode (dropout 0.1, the checkpoint's), under
   bf16 autocast and in fp32: the plain transformers model (SDPA, which dropout sends to its
   math fallback) against the same model after `use_fast_dropout`. Also the eval-mode forward
   (no dropout at all) as the bound the training forward could approach.

    python benchmarks/dropout.py                       # the pipeline's pretrain_mlm BERT, 8 x 320
    python benchmarks/dropout.py --rows 20 --length 180
    python benchmarks/dropout.py --rows 20 --profile   # + torch.profiler's top ops of one bf16 step each
"""

from __future__ import annotations

import argparse
import copy
import math
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from realm_core.modeling.dropout import keep_mask, use_fast_dropout  # noqa: E402
from span_head import median_s as timed  # noqa: E402  (median of reps after one warm-up call)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--init", default=str(ROOT / "models" / "pretrain_mlm"), help="a BERT checkpoint")
    p.add_argument("--rows", type=int, default=8, help="rows per reader call (finetune_qa: 8)")
    p.add_argument("--length", type=int, default=320, help="wordpieces per row (the reader's 320)")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--profile", action="store_true", help="also print torch.profiler's top ops of one bf16 step")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from transformers import BertModel

    from realm_core.modeling.hf_bert import quiet_transformers

    try:
        with quiet_transformers():
            plain = BertModel.from_pretrained(args.init, add_pooling_layer=False)
    except (OSError, ValueError) as exc:
        print(f"error: --init {args.init}: cannot load a BERT ({str(exc).strip().splitlines()[0]})", file=sys.stderr)
        return 1
    cfg = plain.config
    heads, hidden, rows, length = cfg.num_attention_heads, cfg.hidden_size, args.rows, args.length
    print(f"{args.init}: {cfg.num_hidden_layers} layers, H{hidden}, {heads} heads, dropout "
          f"{cfg.hidden_dropout_prob} / {cfg.attention_probs_dropout_prob}; {torch.get_num_threads()} threads; "
          f"rows x length {rows} x {length}")

    print("\n== the mask alone, median of", args.reps)
    print("| tensor | elements | torch bernoulli_ ms | keep_mask ms | ratio | kept fraction |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, shape in (("hidden [rows, L, H]", (rows, length, hidden)),
                        ("attention [rows, heads, L, L]", (rows, heads, length, length))):
        n = math.prod(shape)
        buf = torch.empty(shape)
        t_torch = timed(lambda: buf.bernoulli_(0.9), args.reps)
        t_ours = timed(lambda: keep_mask(shape, 0.1), args.reps)
        kept = keep_mask(shape, 0.1).float().mean().item()
        print(f"| {name} | {n:,} | {t_torch * 1e3:.1f} | {t_ours * 1e3:.1f} | {t_ours / t_torch:.2f} | {kept:.4f} |")

    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, cfg.vocab_size - 1, (rows, length), generator=gen)
    mask = torch.ones_like(ids)
    mask[rows // 2:, length * 3 // 4:] = 0  # some padding, as length-sorted reader chunks have
    fast = use_fast_dropout(copy.deepcopy(plain))
    print(f"\n== one forward + backward in train mode, median of {args.reps} (eval forward: no dropout)")
    print("| precision | model | train fwd + bwd s | train fwd s | eval fwd s |")
    print("|---|---|---:|---:|---:|")
    results = {}
    for precision in ("bf16", "fp32"):
        for label, model in (("transformers (torch dropout, SDPA math path)", plain),
                             ("use_fast_dropout", fast)):
            def fwd(train: bool):
                model.train(train)
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
                    return model(input_ids=ids, attention_mask=mask).last_hidden_state

            def step():
                model.zero_grad(set_to_none=True)
                fwd(True).float().square().mean().backward()

            def eval_fwd():
                with torch.no_grad():
                    fwd(False)

            t_step = timed(step, args.reps)
            t_fwd = timed(lambda: fwd(True), args.reps)
            t_eval = timed(eval_fwd, args.reps)
            results[(precision, label)] = t_step
            print(f"| {precision} | {label} | {t_step:.3f} | {t_fwd:.3f} | {t_eval:.3f} |")
        a, b = (results[(precision, k)] for k in ("transformers (torch dropout, SDPA math path)", "use_fast_dropout"))
        print(f"| {precision} | speed-up | {a / b:.2f}x | | |")
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        for label, model in (("transformers (torch dropout)", plain), ("use_fast_dropout", fast)):
            model.train()

            def step():
                model.zero_grad(set_to_none=True)
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    h = model(input_ids=ids, attention_mask=mask).last_hidden_state
                h.float().square().mean().backward()

            step()
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                step()
            print(f"\n== torch.profiler, one bf16 train step: {label}")
            print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=8))
    return 0


if __name__ == "__main__":
    sys.exit(main())
