"""Benchmark: the reader's prediction forward eager (`evaluate`'s default) against compiled
(`evaluate.compile: true`, `SpanReader.compile_for_inference`).

`benchmarks/finetune_qa.py` puts bf16 prediction at 41-56 % of the bf16 matmul peak, against a
target of 50 %; its ceiling line shows the linear layers and SDPA alone cap it near 59 %. The rest
of the gap is work outside the GEMMs: autocast's casts, the float32 residual adds, GELU,
LayerNorm. Compiling the encoder with Inductor (`torch.compile(dynamic=True)` with "freezing":
weights cast and packed once, the elementwise work fused) removes most of it without changing
the model.

Same model and questions as finetune_qa.py's prediction (`build_ours`, `select_items`: the
`models/pretrain_mlm` reader with a seeded span head, the first answerable NQ train questions),
`OpenQAModel.predict(k=5, batch_size=8)` under the `--precision` autocast. The two variants are
two copies of that reader, one compiled; retrieval and the span head are the same code. Each
round runs both on the same questions, in an order rotated per round; the reader-forward GFLOP/s
comes from finetune_qa's forward hooks and FLOP count. Printed: the compile time, the per-round and
median GFLOP/s, the median as a share of the matmul peak (the higher of the start and end
measurements, as in finetune_qa.py), how many answers equal the eager ones, and the largest
difference of the answers' scores.

    python benchmarks/reader_compile.py                 # ~2 min on the 2 cores
    python benchmarks/reader_compile.py --rounds 4 --precision fp32
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import finetune_qa as fq  # noqa: E402
from tag_entities import loadavg, matmul_peak  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--questions", type=int, default=16, help="timed questions per round")
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--precision", default="bf16", choices=["bf16", "fp32"])
    p.add_argument("--threads", type=int, default=os.cpu_count())
    args = p.parse_args()
    if min(args.questions, args.rounds) < 1:
        print("error: --questions and --rounds must be >= 1", file=sys.stderr)
        return 1
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    fq.set_threads(args.threads)
    root = fq.ROOT
    ns = argparse.Namespace(reader=root / "models" / "pretrain_mlm", seed=0, seq_len=320,
                            blocks=root / "artifacts" / "corpus" / "blocks.parquet",
                            wordpieces=root / "artifacts" / "corpus" / "wordpieces",
                            work=root / "benchmarks" / "_work" / "finetune_qa", retriever=root / "models" / "ict",
                            index=root / "artifacts" / "index" / "ict", retriever_beam=5000, torch_dropout=False,
                            data_dir=root / "data")
    dtype = torch.bfloat16 if args.precision == "bf16" else torch.float32
    peak = matmul_peak(dtype, 2048, 4)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; load average {loadavg()}; "
          f"{args.precision} matmul peak {peak:.0f} GFLOP/s")
    model, finder, _ = fq.build_ours(ns)
    items, _ = fq.select_items(ns, model, finder, 4 + args.questions)
    warm, timed = items[:4], items[4:]
    spec, eager = fq.bert_spec(model), model.reader
    compiled = copy.deepcopy(eager)
    readers = {"eager": eager, "compiled": compiled}
    timers = {name: fq.ReaderTimer(r) for name, r in readers.items()}
    t = time.perf_counter()
    failed = compiled.compile_for_inference(args.precision)
    if failed:
        print(f"error: compiling the reader failed: {failed}", file=sys.stderr)
        return 1
    print(f"compile_for_inference: {time.perf_counter() - t:.1f} s")

    def run(name: str, qs) -> tuple[float, list[dict]]:
        model.reader = readers[name]
        timers[name].reset()
        out = model.predict(qs, k=5, batch_size=8, precision=args.precision)
        return fq.reader_flops(spec, timers[name].shapes) / timers[name].seconds / 1e9, out

    for name in readers:  # warm-up: first calls at these shapes
        run(name, warm)
    rates: dict[str, list[float]] = {n: [] for n in readers}
    answers: dict[str, list[dict]] = {}
    names = list(readers)
    for r in range(args.rounds):
        for name in names[r % len(names):] + names[: r % len(names)]:
            rate, answers[name] = run(name, timed)
            rates[name].append(rate)
    model.reader = eager
    peak = max(peak, matmul_peak(dtype, 2048, 4))
    print(f"load average after {loadavg()}; peak (higher of start and end) {peak:.0f} GFLOP/s")
    print("| variant | median GFLOP/s | % of peak | vs eager | per round | answers = eager | max score diff |")
    print("|---|---:|---:|---:|---|---:|---:|")
    base = statistics.median(rates["eager"])
    for name, rs in rates.items():
        med = statistics.median(rs)
        pairs = list(zip(answers[name], answers["eager"]))
        same = sum(a["prediction"] == b["prediction"] for a, b in pairs)
        diff = max(abs(a["score"] - b["score"]) for a, b in pairs)
        print(f"| {name} | {med:.0f} | {100 * med / peak:.1f} % | {med / base:.2f}x | "
              f"{', '.join(f'{x:.0f}' for x in rs)} | {same}/{len(timed)} | {diff:.4f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
