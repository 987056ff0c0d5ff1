"""Benchmark: does bf16 embedding move Recall@k on NQ / WQ / CT beyond noise, and how much faster is it?

For one retriever directory and one blocks.parquet, in a scratch directory:

1. Two indexes through the build_index stage's own code (`build_stage.run_build_index`): the
   corpus embedded with `precision: fp32` and with `precision: bf16` (autocast; the vectors are
   float32 either way), same shards, batch size and FAISS factory (Flat: exact search, so any
   difference comes from the vectors, not from approximate search). Throughput, two ways: the
   stage's own figure (rows / summed shard embedding time from the shard records, model loading
   excluded; the two builds run one after the other, so a change in machine load between them
   shows up here), and a probe that embeds the same seeded `--probe-blocks` sample in fp32, bf16,
   fp32, bf16 (`embed_documents`, the stage's batch size) and keeps each precision's best round,
   which a shared machine's load drift affects far less.
2. Recall@{1,5,20,100} on each dataset's test split, per precision: questions embedded by the
   query tower in the same precision as the corpus (the whole retriever in fp32 vs in bf16),
   searched in that index, scored with the evaluate_retrieval stage's machinery (`Blocks`,
   `AnswerMatcher`: DPR's has_answer, CuratedTREC's regex; `recall_at_k`).
3. The noise yardstick, per dataset and k: the binomial standard error sqrt(p(1-p)/n) of one
   cell, and, since both precisions answer the same questions, the paired view: how many
   questions flip (hit in fp32 only / in bf16 only) and the standard error of the difference
   from the per-question differences, sqrt(((b + c)/n - d^2) / n). A difference within 2 paired
   SE (and far inside the binomial SE) is noise.

Run (the MiniLM retriever before any ICT step, with params.yaml's pretrain_ict settings):

    .venv/bin/python benchmarks/precision_recall.py --blocks artifacts/corpus/blocks.parquet \\
        --retriever /tmp/prec/minilm_init --make-retriever --out /tmp/prec/run
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PRECISIONS = ("fp32", "bf16")


from tag_entities import cpu_name, loadavg  # noqa: E402  (the sibling benchmark's machine helpers)


def make_retriever(path: Path) -> None:
    """The retriever `pretrain_ict` saves before its first step (`models/ict_init`), from params.yaml."""
    from realm_core.config import load_stage_config, read_params_file
    from realm_core.training.ict_stage import save_init

    params = read_params_file(ROOT / "params.yaml")
    params["pretrain_ict"] = {**params["pretrain_ict"], "init_output_dir": str(path)}
    save_init(load_stage_config("pretrain_ict", params))


def build(args, precision: str) -> dict:
    """The build_index stage in `precision` into <out>/<precision>; returns its metrics."""
    from realm_core.config import BuildIndexConfig
    from realm_core.retrieval import build_stage

    root = args.out / precision
    cfg = BuildIndexConfig(blocks=str(args.blocks), retriever=str(args.retriever), output_dir=str(root),
                           rows_per_shard=args.rows_per_shard, batch_size=args.batch_size, factory="Flat",
                           device=args.device, precision=precision, metrics_file=str(args.out / f"build_{precision}.json"))
    t = time.perf_counter()
    metrics = build_stage.run_build_index(cfg, info=lambda m: print(f"  {m}"))
    metrics["wall_s"] = round(time.perf_counter() - t, 1)
    return metrics


def stage_rate(root: Path) -> tuple[float, list[float]]:
    """blocks/s of a build from its shard records (embedded rows / embedding seconds), and the
    seconds of each shard (shards reused from an earlier run count with their recorded time)."""
    records = sorted((json.loads(p.read_text()) for p in (root / "embeddings").glob("shard_*.json")),
                     key=lambda r: r["shard"])
    rows = sum(r.get("embedded_rows", r["rows"]) for r in records)
    return round(rows / sum(r["seconds"] for r in records), 1), [r["seconds"] for r in records]


def probe(args, embedder, rounds: int = 2) -> dict[str, float]:
    """Best-of-`rounds` blocks/s per precision on the same sample, rounds interleaved."""
    import random

    import pyarrow.parquet as pq

    table = pq.read_table(args.blocks, columns=["title", "text"])
    rows = sorted(random.Random(0).sample(range(table.num_rows), min(args.probe_blocks, table.num_rows)))
    sample = table.take(rows)
    titles, texts = sample.column("title").to_pylist(), sample.column("text").to_pylist()
    best = {p: 0.0 for p in PRECISIONS}
    for r in range(rounds):
        for precision in PRECISIONS:
            t = time.perf_counter()
            embedder.embed_documents(titles, texts, batch_size=args.batch_size, precision=precision)
            rate = len(rows) / (time.perf_counter() - t)
            print(f"  probe round {r + 1}: {precision} {rate:.1f} blocks/s (load {loadavg()})")
            best[precision] = max(best[precision], round(rate, 1))
    return best


def hits_of(args, embedder, precision: str, dataset: str, blocks) -> tuple[list[list[bool]], list[str]]:
    """Per question, the ranked has_answer flags of its top max(ks) blocks in this precision's index."""
    from realm_core.config import RetrieverSpec
    from realm_core.qa.datasets import load_qa
    from realm_core.retrieval.evaluate import AnswerMatcher, check_index

    examples = load_qa(dataset, "test", args.data_dir)
    spec = RetrieverSpec(model=str(args.retriever), index=str(args.out / precision))
    dense = check_index(spec, args.blocks, args.corpus_hash)  # the index of this retriever over these blocks
    assert dense.meta["embeddings"]["precision"] == precision, dense.meta["embeddings"]
    queries = embedder.embed_queries([ex.question for ex in examples], batch_size=64, precision=precision)
    ids, _ = dense.search(np.ascontiguousarray(queries, dtype=np.float32), max(args.ks))
    hits = []
    for ex, row_ids in zip(examples, ids):
        match = AnswerMatcher(ex)
        rows = [blocks.row.get(int(b), -1) for b in row_ids]
        hits.append([r >= 0 and match(blocks, r) for r in rows])
    return hits, [ex.question for ex in examples]


def first_hit(row: list[bool]) -> int | None:
    return next((i for i, h in enumerate(row) if h), None)


def compare(ks, a: list[list[bool]], b: list[list[bool]]) -> list[dict]:
    """Per k: recalls, difference, binomial SE, flips and the paired SE of the difference."""
    from realm_core.qa.retrieval_metrics import recall_at_k

    n = len(a)
    stage = {"fp32": recall_at_k(a, ks), "bf16": recall_at_k(b, ks)}  # what evaluate_retrieval reports
    fa, fb = [first_hit(r) for r in a], [first_hit(r) for r in b]
    out = []
    for k in ks:
        ha = np.array([f is not None and f < k for f in fa])
        hb = np.array([f is not None and f < k for f in fb])
        pa, pb = ha.mean(), hb.mean()
        only_a, only_b = int((ha & ~hb).sum()), int((hb & ~ha).sum())
        d = pb - pa
        paired_se = math.sqrt(max(0.0, ((only_a + only_b) / n - d * d) / n))
        binom_se = math.sqrt(pa * (1 - pa) / n)
        assert abs(stage["fp32"][f"recall@{k}"] - pa) < 1e-9 and abs(stage["bf16"][f"recall@{k}"] - pb) < 1e-9
        out.append({"k": k, "fp32": round(float(pa), 4), "bf16": round(float(pb), 4), "diff": round(float(d), 4),
                    "binomial_se": round(binom_se, 4), "fp32_only": only_a, "bf16_only": only_b,
                    "paired_se": round(paired_se, 4), "within_2_paired_se": abs(d) <= 2 * paired_se + 1e-12})
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--retriever", type=Path, required=True, help="retriever directory (save_pretrained)")
    p.add_argument("--make-retriever", action="store_true",
                   help="create --retriever first if missing: the MiniLM init with params.yaml's pretrain_ict settings")
    p.add_argument("--blocks", type=Path, default=ROOT / "artifacts/corpus/blocks.parquet", help="blocks.parquet")
    p.add_argument("--data-dir", default=str(ROOT / "data"), help="QA data directory (evaluate_retrieval.data_dir)")
    p.add_argument("--datasets", default="nq,wq,ct", help="comma-separated: nq, wq, ct (test splits)")
    p.add_argument("--ks", default="1,5,20,100", help="Recall@k cut-offs")
    p.add_argument("--out", type=Path, default=Path("/tmp/precision_recall"), help="scratch directory (indexes, JSON)")
    p.add_argument("--reuse", action="store_true", help="keep finished shards/indexes in --out (default: start clean)")
    p.add_argument("--rows-per-shard", type=int, default=1024, help="build_index.rows_per_shard")
    p.add_argument("--batch-size", type=int, default=32, help="build_index.batch_size")
    p.add_argument("--device", default="cpu", help="build_index.device for both builds (cpu, cuda)")
    p.add_argument("--threads", type=int, default=2, help="torch threads")
    p.add_argument("--probe-blocks", type=int, default=512, help="blocks in the interleaved throughput probe (0: none)")
    args = p.parse_args()
    args.ks = sorted({int(k) for k in args.ks.split(",")})

    import torch

    from realm_core.modeling.embedder import RetrieverEmbedder
    from realm_core.retrieval import embed
    from realm_core.retrieval.evaluate import Blocks

    torch.set_num_threads(args.threads)
    if not args.reuse:
        shutil.rmtree(args.out, ignore_errors=True)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.make_retriever and not (args.retriever / "config.json").is_file():
        make_retriever(args.retriever)
    t_start = time.perf_counter()
    print(f"machine: {cpu_name()}, nproc {os.cpu_count()}, torch {torch.__version__} "
          f"({torch.backends.cpu.get_cpu_capability()}), {torch.get_num_threads()} threads; load {loadavg()}")
    print(f"retriever {args.retriever}, blocks {args.blocks}, device {args.device}")

    builds = {}
    for precision in PRECISIONS:
        print(f"\n== embedding + Flat index in {precision} (load {loadavg()})")
        builds[precision] = build(args, precision)
        m = builds[precision]
        m["stage_blocks_per_s"], m["shard_seconds"] = stage_rate(args.out / precision)
        print(f"{precision}: {m['rows']} blocks, {m['stage_blocks_per_s']} blocks/s embedding, {m['wall_s']} s wall; "
              f"shard seconds {m['shard_seconds']} (load {loadavg()})")

    args.corpus_hash = embed.corpus_hash(args.blocks)
    blocks = Blocks(args.blocks)
    embedder = RetrieverEmbedder.from_pretrained(args.retriever, device=args.device)
    speed = {p: builds[p]["stage_blocks_per_s"] for p in PRECISIONS}
    probed = {}
    if args.probe_blocks:
        print(f"\n== throughput probe: {args.probe_blocks} seeded blocks, fp32/bf16 interleaved")
        probed = probe(args, embedder)
    results = {}
    for dataset in args.datasets.split(","):
        hits = {}
        for precision in PRECISIONS:
            hits[precision], questions = hits_of(args, embedder, precision, dataset, blocks)
        results[dataset] = {"n": len(questions), "rows": compare(args.ks, hits["fp32"], hits["bf16"])}

    print(f"\n== Recall@k, fp32 vs bf16 (corpus and queries in the same precision; Flat index)")
    print(f"{'data':<5} {'n':>5} {'k':>4} {'fp32':>7} {'bf16':>7} {'diff':>7} {'binom SE':>9} "
          f"{'flips -/+':>10} {'paired SE':>10}  within 2 paired SE")
    for dataset, res in results.items():
        for row in res["rows"]:
            print(f"{dataset:<5} {res['n']:5d} {row['k']:4d} {row['fp32']:7.4f} {row['bf16']:7.4f} {row['diff']:+7.4f} "
                  f"{row['binomial_se']:9.4f} {row['fp32_only']:4d}/{row['bf16_only']:<5d} {row['paired_se']:10.4f}  "
                  f"{'yes' if row['within_2_paired_se'] else 'NO'}")
    print(f"\nembedding, whole corpus (stage): fp32 {speed['fp32']} blocks/s, bf16 {speed['bf16']} blocks/s "
          f"(x{speed['bf16'] / speed['fp32']:.2f})")
    if probed:
        print(f"embedding, interleaved probe (best of 2): fp32 {probed['fp32']} blocks/s, bf16 {probed['bf16']} blocks/s "
              f"(x{probed['bf16'] / probed['fp32']:.2f})")
    print(f"load at the end {loadavg()}; total {time.perf_counter() - t_start:.0f} s")
    summary = {"retriever": str(args.retriever), "blocks": str(args.blocks), "machine": cpu_name(),
               "threads": torch.get_num_threads(), "builds": builds, "probe_blocks_per_s": probed, "recall": results}
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1, default=str) + "\n")
    print(f"summary: {args.out / 'summary.json'}")


if __name__ == "__main__":
    main()
