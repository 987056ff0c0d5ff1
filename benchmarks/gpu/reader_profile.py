"""Where the span reader's bf16 prediction forward spends its GPU time (docs/benchmarks.md, H100).

`bench.py`'s reader section puts a BERT-base-shaped `SpanReader` at 37 % of the bf16 matmul peak
under autocast. This script times the same forward (320 rows x 320 wordpieces, random weights,
the closed-form span head) three ways, as a share of the measured peak:
  autocast      : float32 weights, bf16 autocast (what `evaluate` runs with precision bf16);
  bf16 weights  : the model cast to bf16, no autocast (the span head still computes in float32);
  encoder only  : bf16 weights, BERT without the span head;
then profiles one autocast forward and prints the CUDA kernels by total time.

    python benchmarks/gpu/reader_profile.py [--rows 320 --tokens 320 --top 15]
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench import BERT_BASE, MINILM, linear_weights, peaks, reader_flops, timed  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=320)
    ap.add_argument("--tokens", type=int, default=320)
    ap.add_argument("--top", type=int, default=15)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("reader_profile.py: no CUDA device: skipped")
        return 0
    from transformers import BertModel

    from realm_core.modeling.reader import SpanReader
    from realm_core.pretrained import load_tokenizer, scratch_bert_config

    dev = torch.device("cuda")
    peak = peaks(dev, 8192)["bf16"]
    tokenizer = load_tokenizer(MINILM)
    torch.manual_seed(0)
    bert = BertModel(scratch_bert_config(tokenizer, BERT_BASE, max_positions=512), add_pooling_layer=False)
    reader = SpanReader(bert, tokenizer, init="scratch").to(dev).eval()
    half = copy.deepcopy(reader).to(torch.bfloat16)
    B, T = args.rows, args.tokens
    cfg = bert.config
    flops = reader_flops(B, T, linear_weights(bert.encoder), cfg.num_hidden_layers, cfg.hidden_size)
    ids = torch.randint(1000, 30000, (B, T), device=dev)
    mask = torch.ones(B, T, dtype=torch.long, device=dev)
    types = torch.zeros(B, T, dtype=torch.long, device=dev)
    types[:, 16:] = 1
    bs, be = torch.full((B,), 16, device=dev), torch.full((B,), T - 2, device=dev)

    def autocast_fwd():
        with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
            return reader(ids, mask, types, bs, be)

    def half_fwd():
        with torch.no_grad():
            return half(ids, mask, types, bs, be)

    def encoder_fwd():
        with torch.no_grad():
            return half.bert(input_ids=ids, attention_mask=mask, token_type_ids=types).last_hidden_state

    print(f"BERT-base-shaped SpanReader, {B} rows x {T} wordpieces, {flops / 1e12:.2f} TFLOP per forward; "
          f"bf16 peak {peak} TFLOP/s")
    for name, fn in (("autocast", autocast_fwd), ("bf16 weights", half_fwd), ("encoder only", encoder_fwd)):
        sec = timed(fn, dev, 2.0)
        print(f"{name:14s} {1e3 * sec:8.2f} ms  {flops / sec / 1e12:7.1f} TFLOP/s  {100 * flops / sec / 1e12 / peak:5.1f} % of peak")
    diff = (autocast_fwd() - half_fwd()).abs()
    inside = autocast_fwd() > -9999
    print(f"autocast vs bf16 weights: max |logit diff| inside the block {float(diff[inside].max()):.3f}")
    from torch.profiler import ProfilerActivity, profile

    autocast_fwd()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        autocast_fwd()
        torch.cuda.synchronize()
    print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=args.top, max_name_column_width=60))
    return 0


if __name__ == "__main__":
    sys.exit(main())
