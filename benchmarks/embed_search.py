"""Benchmark: retriever embedding throughput and FAISS search speed vs this machine's bounds (CPU).

Everything runs in ONE process, `torch.set_num_threads(--threads)` and
`faiss.omp_set_num_threads(--threads)` (default 2), so all numbers share the same momentary load.

0. Bounds, measured here and now (best-of-N: other jobs only ever make a call slower):
   - matmul peak: 2048^3 matmul (2*2048^3 FLOPs) in fp32 and bf16 (`tag_entities.matmul_peak`),
     at `--threads` threads and, for the 1-thread search rows, at 1 thread;
   - memory read bandwidth (`read_bandwidth`): streaming reads of a `--bw-mb` MB float32 array
     (default 1024, 32x the 32 MB L3) by four kernels, `torch.sum`, `torch.dot(x, x)` (t intra-op
     threads split the array), `np.add.reduce` of t slices on t Python threads, and t threads each
     summing the whole array at once (faiss's seq path: every thread scans the whole database), at
     t = 1, 2, 4, ... and every core; `--bw-rounds` rounds, each running every (kernel, t) once,
     best per pair. A search row's bound is the fastest figure over kernels and thread counts,
     whatever the row's own thread count: of the split reads, or, for seq rows whose threads all
     scan the same database, of all kernels including the shared scan. Every kernel really reads
     every byte, so each figure is a lower bound on what the machine can read: a row above 100 %
     is never clamped but printed with a loud warning that the probe is too weak. The matmul peaks
     are measured again at the end; the summary re-reads the embedding rows against the higher of
     the two (the conservative reading).
1. Embedding (document tower) on real blocks: a seeded sample of `--enc-blocks` rows of
   blocks.parquet, inputs built beforehand by the embedder's own `inputs.document_ids`
   ([CLS] title [SEP] body [SEP], `--max-len` 288), sorted by length, batched by `--batch-size` and
   right-padded by `inputs.pad` (as `embed_documents` does, modulo sort direction). Forward only
   (`tower(**batch)` under `torch.inference_mode`) in fp32 and under
   `torch.autocast("cpu", dtype=torch.bfloat16)`; one untimed warm-up call on the widest batch,
   then every batch `--reps` times, its fastest call kept. FLOPs are counted analytically on the
   padded shapes, as tag_entities.py does:
       FLOPs(B x T) = B * (2 * P_enc * T + L * 4 * d * T^2 + 2 * P_head)
   P_enc = weights of every nn.Linear in the encoder (Q, K, V, attention output, FFN in/out),
   applied to every token; P_head = pooler dense (d x d) + the 128-d projection (d x 128), applied
   once per sequence (only [CLS] is pooled); L*4*d*T^2 is QK^T plus softmax*V. Embeddings, biases,
   LayerNorm, GELU and softmax are not counted (a slight undercount). GFLOP/s is reported against
   the fp32 (resp. bf16) peak of step 0 and against a best-of-3 "local" peak taken right before the
   row. Target: >= 50% of peak.
2. Exact search, faiss IndexFlatIP (`build_index(factory="Flat")`, timed through
   `DenseIndex.search`, k=8), over `--sizes` random N x 128 float32 vectors, for query batches
   of 1 (at 1 thread and at `--threads`), `--small-batches` (16, 256) and `--queries` (1024).
   Which code path faiss takes (faiss >= 1.15 `knn_inner_product`, reproduced in `flat_path`;
   `--blas-threshold` moves the seq/blas switch) decides the bytes:
   - "seq" (Q*d < distance_compute_blas_threshold, 128000 in 1.15, i.e. Q < 1000 at d=128): each
     query scans the whole database with SIMD dot products on min(Q, threads) threads, so Q
     passes over N*d*4 bytes. At 2*d FLOPs per 4*d bytes (0.5 FLOP/byte) this is BANDWIDTH-bound.
   - "db-parallel" (1 < threads, Q < threads, N >= max(10000, threads*1024)): each thread runs sgemm
     on its slice of the database: ONE pass over N*d*4 bytes in total, also bandwidth-bound.
   - "blas" (otherwise): sgemm of query blocks of distance_compute_blas_query_bs (4096) against
     database blocks of 1024 rows: ceil(Q/4096) passes. 2*N*d*Q FLOPs at Q/2 FLOP/byte, so for Q=1024
     it is COMPUTE-bound (the 1024 x 1024 float score tile, 4 MB, stays in L3 and is not counted;
     the top-k heap update, ~N*Q compares, is extra work the bound ignores).
   Bandwidth bound QPS = Q / (passes * N*d*4 / BW); compute bound QPS =
   fp32 peak / (2*N*d); "1-pass" = the bandwidth bound if the batch read the database only once
   (what an ideal kernel could do). The binding bound is the smaller; ratio = achieved / binding.
   Target: >= 70% of the bandwidth bound in the bandwidth-bound rows. At N=100k the database
   (51 MB) is not much larger than the L3 (32 MB), so part of it may be served from cache.
3. ANN: recall@8 against exact IndexFlatIP and QPS (batch of all queries, best of
   `--search-reps`) for "IVF{nlist},Flat" (`--nprobes`), "HNSW32" (`--ef-searches`) and
   "IVF{nlist},PQ16" (`--nprobes`), nlist = 4*sqrt(N) capped at min(N, --train-size)/39 (faiss
   wants >= 39 training points per centroid; PQ needs >= 256 for its 256 codes), built by
   `build_index` (train on a seeded sample of `--train-size`). The factory's "PQ16" also runs
   polysemous training (~30 s here, independent of N: it permutes the PQ centroids), which a
   search with polysemous_ht=0 (the default) never uses: `--pq PQ16np` skips it with identical
   search results (the --quick preset does). On
   (i) the real embeddings in `--embeddings` (`iter_embeddings`); if that directory is missing,
       the fp32 embeddings of step 1's `--enc-blocks` blocks (said so in the output); and
   (ii) `--synthetic` vectors near them: a random real embedding + Gaussian noise of
       `--synth-noise` (0.3) x the per-dimension std, seeded.
   Queries: `--queries-from` (a .npy [n, 128] of query embeddings, or a text file with one
   question per line, embedded by the query tower); by default `--ann-queries` (1000) random rows
   of the real embeddings + `--query-noise` (0.1) x per-dimension std of Gaussian noise (said so).
   Note: with the default `package:` init the 128-d projection is freshly initialised (not
   trained), so "real" embeddings are those of an untrained retriever head.

Caveat for a shared 2-CPU machine: a 2-thread OpenMP region (faiss) or parallel op (torch) waits
until both threads are scheduled, so with another job running, short 2-thread calls are stretched
to a scheduler slice (~4-8 ms): the 1-thread rows and the repeated short calls (`best_time`) show
how much. torch and faiss each bring their own OpenMP runtime; they run one after the other here.

Run (the full benchmark, 30+ min on 2 busy cores, HNSW32 on 1M being the longest part):

    .venv/bin/python benchmarks/embed_search.py
    .venv/bin/python benchmarks/embed_search.py --retriever models/ict --embeddings artifacts/index/ict/embeddings
    .venv/bin/python benchmarks/embed_search.py --quick            # smoke test, well under a minute
    .venv/bin/python benchmarks/embed_search.py --only search --sizes 1000000 --small-batches 16,256 --queries 256
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import random
import shlex
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from tag_entities import PACKAGE_ENCODER, batch_flops, cpu_name, linear_weights, loadavg, matmul_peak  # noqa: E402

K = 8
#: --quick: every size small, so the whole run is a smoke test (explicit flags still win).
QUICK = {"enc_blocks": 64, "small_batches": "16", "peak_reps": 3, "sizes": "20000", "bw_mb": 256, "bw_rounds": 3, "reps": 1,
         "search_reps": 2, "pq": "PQ16np",
         "synthetic": 20000, "train_size": 20000, "ann_queries": 200, "nprobes": "1,8", "ef_searches": "16,64"}


def ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def best_time(fn, reps: int, warmup: int = 1, min_total: float = 0.3, max_calls: int = 200) -> float:
    """Fastest of >= `reps` calls, more for short calls (until `min_total` s): a call of a few ms on a
    shared machine is often stretched by one scheduler slice, and more tries find an undisturbed one."""
    for _ in range(warmup):
        fn()
    best, spent, calls = float("inf"), 0.0, 0
    while calls < max(1, reps) or (spent < min_total and calls < max_calls):
        t = time.perf_counter()
        fn()
        sec = time.perf_counter() - t
        best, spent, calls = min(best, sec), spent + sec, calls + 1
    return best


def probe_threads() -> list[int]:
    """Thread counts the bandwidth probe tries: 1, 2, 4, ... and every core this process may use."""
    cores = len(os.sched_getaffinity(0))
    return sorted({1, cores, *(2 ** i for i in range(cores.bit_length()) if 2 ** i <= cores)})


def read_bandwidth(mb: int, rounds: int) -> dict[str, dict[int, float]]:
    """GB/s of streaming reads of an `mb` MB float32 buffer: {kernel: {threads: best of `rounds`}}.

    Kernels, each at every count t of `probe_threads()`:
    - `torch.sum`, `torch.dot(x, x)`: t intra-op threads split the buffer (MKL/ATen vector code);
    - `np.add.reduce`: t slices on t Python threads (numpy releases the GIL);
    - `shared torch.sum`: t Python threads each sum the WHOLE buffer at once (1 intra-op thread
      each), t x the bytes: the access pattern of faiss's "seq" path on t threads, where every
      thread scans the whole database for its own queries; what one thread brings into the shared
      L3 the other may still find there, so this can exceed what split reads get from DRAM.
    Every round runs every (kernel, t) once, so a burst of load spoils one try of each rather than
    all tries of one. Each figure is bytes really delivered to the cores from a buffer far larger
    than the L3, so each is a lower bound on what the machine can read: `bandwidth_bounds` takes
    the highest.
    """
    a = np.ones(mb * 2 ** 20 // 4, dtype=np.float32)  # written once here, so no page faults in the timing
    t = torch.from_numpy(a)
    counts = probe_threads()
    slices = {n: np.array_split(a, n) for n in counts}
    pool = ThreadPoolExecutor(max(counts))
    # name: (torch intra-op threads, call, buffers read) for t threads
    kernels = {
        "torch.sum": (lambda n: n, lambda n: t.sum(), lambda n: 1),
        "torch.dot": (lambda n: n, lambda n: torch.dot(t, t), lambda n: 1),
        "np.add.reduce": (lambda n: 1, lambda n: list(pool.map(np.add.reduce, slices[n])), lambda n: 1),
        "shared torch.sum": (lambda n: 1, lambda n: list(pool.map(torch.sum, [t] * n)), lambda n: n),
    }
    old = torch.get_num_threads()
    best = {k: {n: float("inf") for n in counts} for k in kernels}
    try:
        for r in range(rounds + 1):  # round 0 warms up (thread pools, page tables) and is not kept
            for n in counts:
                for name, (intra, fn, _) in kernels.items():
                    torch.set_num_threads(intra(n))
                    sec = time.perf_counter()
                    fn(n)
                    sec = time.perf_counter() - sec
                    if r:
                        best[name][n] = min(best[name][n], sec)
    finally:
        torch.set_num_threads(old)
        pool.shutdown()
    return {k: {n: kernels[k][2](n) * a.nbytes / sec / 1e9 for n, sec in v.items()} for k, v in best.items()}


def bandwidth_bounds(by_kernel: dict[str, dict[int, float]]) -> dict[str, tuple[float, str]]:
    """The search rows' bounds, each the best over kernels AND thread counts (a row on fewer threads
    is still bounded by what the whole machine reads): {"split": every byte read by one thread
    (seq with one query, db-par, blas), "shared": several threads scanning the same buffer (seq
    with several queries on several threads)} -> (GB/s, "kernel at t threads")."""
    def best(rows):
        gbs, kernel, n = max(rows)
        return gbs, f"{kernel} at {n} thread{'s' * (n > 1)}"

    rows = [(v, k, n) for k, by_n in by_kernel.items() for n, v in by_n.items()]
    return {"split": best([r for r in rows if not (r[1].startswith("shared") and r[2] > 1)]), "shared": best(rows)}


def monotone(by_threads: dict[int, float]) -> dict[int, float]:
    """Bound at t threads = best measured at <= t threads: t threads can always run as fewer, so a
    lower value at more threads (another job holding a core) is load, not the machine's bound."""
    return {t: max(v for u, v in by_threads.items() if u <= t) for t in by_threads}


def l3_bytes() -> int:
    try:
        size = Path("/sys/devices/system/cpu/cpu0/cache/index3/size").read_text().strip()
        return int(size[:-1]) * {"K": 2 ** 10, "M": 2 ** 20}[size[-1]] if size[-1] in "KM" else int(size)
    except (OSError, ValueError):
        return 32 * 2 ** 20


def peak_at(dtype: torch.dtype, threads: int, size: int, reps: int) -> float:
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return matmul_peak(dtype, size, reps)
    finally:
        torch.set_num_threads(old)


# ---------------------------------------------------------------------- 1. embedding

def load_embedder(args):
    from realm_core.modeling.embedder import RetrieverEmbedder

    name = args.retriever or PACKAGE_ENCODER
    if args.retriever and args.num_layers is not None:
        print(f"note: --num-layers is ignored for a saved retriever ({args.retriever} loads as is)")
    # from_init loads a saved retriever directory as is and builds a fresh projection otherwise
    return name, RetrieverEmbedder.from_init(name, num_layers=args.num_layers, seed=args.seed).eval()


def document_batches(embedder, titles: list[str], texts: list[str], batch_size: int, max_len: int):
    """(sample rows, padded batch) pairs, shortest first, built with the embedder's own InputBuilder."""
    seqs, starts = embedder.inputs.document_ids(titles, texts, max_len)
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
    return [(rows, embedder.inputs.pad([seqs[i] for i in rows], [starts[i] for i in rows]))
            for rows in (order[b:b + batch_size] for b in range(0, len(order), batch_size))]


@torch.inference_mode()
def time_tower(tower, batches, bf16: bool, reps: int, out: np.ndarray | None = None) -> float:
    """Sum over batches of each batch's fastest forward; fills `out` (sample order) if given."""
    def run(batch):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            return tower(**batch)

    run(batches[-1][1])  # warm-up on the widest batch: thread pool, allocator, oneDNN weight packing
    total = 0.0
    for rows, batch in batches:
        best = float("inf")
        for _ in range(max(1, reps)):
            t = time.perf_counter()
            emb = run(batch)
            best = min(best, time.perf_counter() - t)
        total += best
        if out is not None:
            out[rows] = emb.float().numpy()
    return total


def bench_embedding(args, peak: dict[str, float]) -> tuple[np.ndarray, object, list[tuple[str, str, float]]]:
    import pyarrow.parquet as pq

    name, embedder = load_embedder(args)
    tower = embedder.doc_tower
    cfg = tower.bert.config
    layers, hidden = cfg.num_hidden_layers, cfg.hidden_size
    p_enc = linear_weights(tower.bert.encoder)
    p_head = linear_weights(tower.bert.pooler) + linear_weights(tower.dense)
    max_len = args.max_len or embedder.max_doc_len
    print(f"\n== 1. embedding: document tower of {name}: L={layers} d={hidden} d_ff={cfg.intermediate_size} "
          f"heads={cfg.num_attention_heads} proj={embedder.proj_size}, P_enc={p_enc / 1e6:.2f}M, "
          f"P_head={p_head / 1e6:.3f}M weights in nn.Linear")
    table = pq.read_table(args.blocks, columns=["title", "text"])
    rows = sorted(random.Random(args.seed).sample(range(table.num_rows), min(args.enc_blocks, table.num_rows)))
    sample = table.take(rows)
    batches = document_batches(embedder, sample.column("title").to_pylist(), sample.column("text").to_pylist(),
                               args.batch_size, max_len)
    real = sum(int(b["attention_mask"].sum()) for _, b in batches)
    padded = sum(b["attention_mask"].numel() for _, b in batches)
    flops = sum(batch_flops(b["input_ids"].shape[0], b["input_ids"].shape[1], p_enc, layers, hidden)
                + 2 * b["input_ids"].shape[0] * p_head for _, b in batches)
    widths = [b["input_ids"].shape[1] for _, b in batches]
    print(f"input: {len(rows)} of {table.num_rows} blocks of {args.blocks} (seed {args.seed}), "
          f"{real / len(rows):.0f} wordpieces/block, {len(batches)} batches of <= {args.batch_size} x {max_len} "
          f"(widths {min(widths)}..{max(widths)}), padding {100 * (1 - real / padded):.1f}%, "
          f"{flops / 1e9:.1f} GFLOP per pass; best of {args.reps} per batch")
    print(f"{'variant':<9} {'s':>7} {'blocks/s':>9} {'tokens/s':>9} {'GFLOP/s':>8} {'peak':>6} {'% peak':>7} "
          f"{'local':>6} {'% local':>8}  target >= 50%")
    vectors = np.zeros((len(rows), embedder.proj_size), dtype=np.float32)
    achieved = []
    for variant, bf16, kind in (("fp32", False, "fp32"), ("bf16-ac", True, "bf16")):
        local = peak_at(torch.float32 if kind == "fp32" else torch.bfloat16, args.threads, args.peak_size, 3)
        sec = time_tower(tower, batches, bf16, args.reps, vectors if not bf16 else None)
        gfs = flops / sec / 1e9
        achieved.append((variant, kind, gfs))
        ok = "MET" if gfs >= 0.5 * peak[kind] else "NOT MET"
        print(f"{variant:<9} {sec:7.2f} {len(rows) / sec:9.1f} {real / sec:9.0f} {gfs:8.1f} {peak[kind]:6.1f} "
              f"{100 * gfs / peak[kind]:6.1f}% {local:6.1f} {100 * gfs / local:7.1f}%  {ok}")
    print("bf16-ac = fp32 weights under torch.autocast(cpu, bfloat16); % peak vs step 0, % local vs a best-of-3 "
          "matmul of the same dtype just before the row")
    return vectors, embedder, achieved


# ---------------------------------------------------------------------- 2. exact search

def flat_path(q: int, n: int, d: int, threads: int) -> tuple[str, int, int]:
    """(path, passes over the database, threads streaming it) as faiss >= 1.15 knn_inner_product picks."""
    import faiss

    bs_x = int(getattr(faiss.cvar, "distance_compute_blas_query_bs", 4096))
    bs_y = int(getattr(faiss.cvar, "distance_compute_blas_database_bs", 1024))
    if threads > 1 and q < threads and n >= max(10000, threads * bs_y):
        return "db-par", 1, threads
    if q * d < int(faiss.cvar.distance_compute_blas_threshold):
        return "seq", q, min(q, threads)
    return "blas", -(-q // bs_x), threads


def bench_exact(args, peak1: dict[int, float], bw: dict[str, float]) -> list[tuple[str, float, bool]]:
    import faiss

    from realm_core.retrieval.index import build_index

    d = 128
    rng = np.random.default_rng(args.seed)
    cases = [(1, 1)] if args.threads > 1 else []
    cases += [(q, args.threads) for q in sorted({1, *ints(args.small_batches), args.queries})]
    print(f"\n== 2. exact search: IndexFlatIP (build_index 'Flat'), k={K}, random N x {d} float32; "
          f"blas_threshold={faiss.cvar.distance_compute_blas_threshold} (Q*d), "
          f"query_bs={faiss.cvar.distance_compute_blas_query_bs}; best of >= {args.search_reps} calls "
          "(more, up to 0.3 s, when short)")
    print(f"{'N':>8} {'Q':>5} {'thr':>3} {'path':<6} {'passes':>6} {'GB read':>8} {'QPS':>9} {'GB/s':>6} "
          f"{'GFLOP/s':>8} {'bw QPS':>9} {'1-pass':>9} {'flop QPS':>9} {'bound':<7} {'% bound':>8}  target")
    results = []
    l3 = l3_bytes()
    for n in ints(args.sizes):
        vectors = rng.standard_normal((n, d), dtype=np.float32)
        dense = build_index(vectors=vectors, ids=np.arange(n, dtype=np.int64), factory="Flat")
        del vectors  # faiss holds its own copy
        db_bytes = n * d * 4
        for q, threads in cases:
            queries = rng.standard_normal((q, d), dtype=np.float32)
            faiss.omp_set_num_threads(threads)
            sec = best_time(lambda: dense.search(queries, K), args.search_reps)
            path, passes, streaming = flat_path(q, n, d, threads)
            qps = q / sec
            # several threads scanning the same database (seq, Q > 1) share what reaches the L3
            row_bw = bw["shared"] if path == "seq" and streaming > 1 else bw["split"]
            bw_qps = q / (passes * db_bytes / (row_bw * 1e9))
            one_pass = q / (db_bytes / (bw["split"] * 1e9))
            flop_qps = peak1[threads] * 1e9 / (2 * n * d)
            bound = "bandw" if bw_qps < flop_qps else "compute"
            ratio = qps / min(bw_qps, flop_qps)
            target = ("MET" if ratio >= 0.7 else "NOT MET") if bound == "bandw" else "-"
            if db_bytes <= 2 * l3:  # largely cache-resident: DRAM bandwidth is not the bound there
                target += " (db ~ L3)"
            if bound == "bandw":
                results.append((f"exact N={n} Q={q} thr={threads}", ratio, ratio >= 0.7))
            print(f"{n:8d} {q:5d} {threads:3d} {path:<6} {passes:6d} {passes * db_bytes / 1e9:8.2f} {qps:9.1f} "
                  f"{passes * db_bytes / sec / 1e9:6.1f} {2 * n * d * q / sec / 1e9:8.1f} {bw_qps:9.1f} "
                  f"{one_pass:9.1f} {flop_qps:9.1f} {bound:<7} {100 * ratio:7.1f}%  {target}")
            if bound == "bandw" and ratio > 1:  # never clamped: a bound that is beaten is no bound
                print(f"!!! WARNING: {100 * ratio:.0f}% of the bandwidth bound: faiss read "
                      f"{passes * db_bytes / sec / 1e9:.1f} GB/s, the probe only {row_bw:.1f} GB/s: "
                      "THE BANDWIDTH PROBE IS TOO WEAK"
                      + (f" (or this {db_bytes >> 20} MB database is partly served from the {l3 >> 20} MB L3)"
                         if db_bytes <= 2 * l3 else ""))
        del dense
    faiss.omp_set_num_threads(args.threads)
    print("passes = database passes faiss's path makes (seq: one per query; db-par: one split over threads; "
          "blas: one per 4096-query block); bw QPS = Q / (passes*N*d*4 / BW), BW = the shared-scan bound for seq "
          "rows on > 1 thread, the split-read bound otherwise; 1-pass = the same if the batch "
          "read the database once; flop QPS = fp32 peak / (2*N*d); % bound = QPS / min(bw QPS, flop QPS); "
          f"'db ~ L3' = database <= 2 x the {l3 >> 20} MB L3, partly served from cache")
    return results


# ---------------------------------------------------------------------- 3. ANN

def real_embeddings(args, fallback: np.ndarray) -> tuple[np.ndarray, str]:
    from realm_core.retrieval.embed import iter_embeddings, read_manifest

    path = Path(args.embeddings)
    if (path / "manifest.json").is_file():
        manifest = read_manifest(path)
        vectors = np.concatenate([np.asarray(s, dtype=np.float32) for _, s in iter_embeddings(path)])
        return vectors, f"{path} ({manifest['total_rows']} rows, encoder {manifest.get('encoder')})"
    return fallback, (f"{path} MISSING: using the fp32 embeddings of the {len(fallback)} blocks embedded in step 1 "
                      "(document tower, embedded on the fly)")


def ann_queries(args, real: np.ndarray, embedder) -> tuple[np.ndarray, str]:
    rng = np.random.default_rng(args.seed + 1)
    if args.queries_from:
        src = Path(args.queries_from)
        if src.suffix == ".npy":
            q = np.load(src, allow_pickle=False).astype(np.float32)
            return q, f"{len(q)} query embeddings from {src}"
        questions = [ln.strip() for ln in src.read_text(encoding="utf-8").splitlines() if ln.strip()]
        questions = questions[: args.ann_queries]
        return np.asarray(embedder.embed_queries(questions), dtype=np.float32), \
            f"{len(questions)} questions from {src}, embedded by the query tower"
    rows = rng.choice(len(real), size=args.ann_queries, replace=len(real) < args.ann_queries)
    noise = rng.standard_normal((len(rows), real.shape[1])).astype(np.float32) * (args.query_noise * real.std(axis=0))
    return (real[rows] + noise).astype(np.float32), (
        f"DEFAULT: {len(rows)} random rows of these embeddings + Gaussian noise of {args.query_noise} x per-dim std "
        "(not real questions)")


def synthetic(real: np.ndarray, n: int, scale: float, seed: int) -> np.ndarray:
    """n vectors, each a random real embedding + N(0, (scale * per-dim std)^2), built in chunks."""
    rng = np.random.default_rng(seed)
    std = (scale * real.std(axis=0)).astype(np.float32)
    out = np.empty((n, real.shape[1]), dtype=np.float32)
    for lo in range(0, n, 100_000):
        hi = min(n, lo + 100_000)
        out[lo:hi] = real[rng.integers(len(real), size=hi - lo)]
        out[lo:hi] += rng.standard_normal((hi - lo, real.shape[1]), dtype=np.float32) * std
    return out


def recall(found: np.ndarray, exact: np.ndarray) -> float:
    return float(np.mean([len(np.intersect1d(f[f >= 0], e)) / exact.shape[1] for f, e in zip(found, exact)]))


def bench_ann(label: str, vectors: np.ndarray, queries: np.ndarray, args) -> list[tuple[str, float, bool]]:
    from realm_core.retrieval.index import build_index

    n = len(vectors)
    ids = np.arange(n, dtype=np.int64)
    train = min(n, args.train_size)
    nlist = max(1, min(int(4 * math.sqrt(n)), train // 39))
    print(f"\n-- {label}: N={n}, {len(queries)} queries, nlist={nlist} (4*sqrt(N)={int(4 * math.sqrt(n))}, "
          f"train {train} // 39 = {train // 39}); QPS best of >= {args.search_reps} calls, batch = all queries")
    print(f"{'index':<16} {'param':<12} {'build s':>8} {'QPS':>9} {'x flat':>7} {'recall@8':>9}")
    t = time.perf_counter()
    flat = build_index(vectors=vectors, ids=ids, factory="Flat")
    build = time.perf_counter() - t
    exact, _ = flat.search(queries, K)
    flat_qps = len(queries) / best_time(lambda: flat.search(queries, K), args.search_reps)
    print(f"{'Flat':<16} {'exact':<12} {build:8.1f} {flat_qps:9.1f} {1.0:7.2f} {1.0:9.3f}")
    del flat
    specs = []
    if "ivf" in args.ann:
        specs.append((f"IVF{nlist},Flat", "nprobe", [p for p in ints(args.nprobes) if p <= nlist] or [nlist]))
    if "hnsw" in args.ann:
        specs.append(("HNSW32", "efSearch", ints(args.ef_searches)))
    if "ivfpq" in args.ann:
        if train < 256:  # PQ16 trains 256 codes per sub-quantizer: faiss refuses fewer points
            print(f"{f'IVF{nlist},{args.pq}':<16} skipped: {train} training points < 256 PQ centroids")
        else:
            specs.append((f"IVF{nlist},{args.pq}", "nprobe", [p for p in ints(args.nprobes) if p <= nlist] or [nlist]))
    out = []
    for factory, knob, values in specs:
        t = time.perf_counter()
        dense = build_index(vectors=vectors, ids=ids, factory=factory, train_size=train, seed=args.seed)
        build = time.perf_counter() - t
        for v in values:
            dense.set_search_params(**({"nprobe": v} if knob == "nprobe" else {"ef_search": v}))
            found, _ = dense.search(queries, K)
            qps = len(queries) / best_time(lambda: dense.search(queries, K), args.search_reps)
            r = recall(found, exact)
            out.append((f"{label} {factory} {knob}={v}", r, qps / flat_qps))
            print(f"{factory:<16} {f'{knob}={v}':<12} {build:8.1f} {qps:9.1f} {qps / flat_qps:7.2f} {r:9.3f}")
            build = 0.0  # build time is printed on the first row of each index only
        del dense
    return out


# ---------------------------------------------------------------------- main

def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help=f"smoke-test sizes: {QUICK}")
    p.add_argument("--blocks", default=str(ROOT / "artifacts/corpus/blocks.parquet"))
    p.add_argument("--retriever", default=None, help=f"saved retriever directory (default: {PACKAGE_ENCODER} init)")
    p.add_argument("--num-layers", type=int, default=None, help="keep only the first N BERT layers (package init)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--peak-size", type=int, default=2048)
    p.add_argument("--peak-reps", type=int, default=6)
    p.add_argument("--bw-mb", type=int, default=1024, help="MB of float32 streamed for the bandwidth bound")
    p.add_argument("--bw-rounds", type=int, default=10, help="bandwidth probe rounds (each kernel x threads once)")
    p.add_argument("--only", choices=["all", "search"], default="all",
                   help="search: only the bounds (step 0) and exact search (step 2)")
    p.add_argument("--enc-blocks", type=int, default=512)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-len", type=int, default=None, help="document wordpieces (default: the retriever's, 288)")
    p.add_argument("--reps", type=int, default=2, help="forward calls per batch, fastest kept")
    p.add_argument("--sizes", default="100000,1000000", help="exact-search database sizes")
    p.add_argument("--queries", type=int, default=1024, help="the large exact-search query batch")
    p.add_argument("--small-batches", default="16,256", help="small exact-search batches (Q=1 is always run)")
    p.add_argument("--blas-threshold", type=int, default=None,
                   help="set faiss.cvar.distance_compute_blas_threshold (Q*d) to try the BLAS path on smaller batches")
    p.add_argument("--search-reps", type=int, default=3)
    p.add_argument("--embeddings", default=str(ROOT / "artifacts/index/ict/embeddings"))
    p.add_argument("--queries-from", default=None, help=".npy of query embeddings or a text file of questions")
    p.add_argument("--ann-queries", type=int, default=1000)
    p.add_argument("--query-noise", type=float, default=0.1, help="x per-dim std, default queries")
    p.add_argument("--synthetic", type=int, default=1_000_000, help="synthetic vectors near the real ones (0: skip)")
    p.add_argument("--synth-noise", type=float, default=0.3, help="x per-dim std")
    p.add_argument("--train-size", type=int, default=160_000, help="IVF/PQ training sample (>= 39*nlist)")
    p.add_argument("--ann", default="ivf,hnsw,ivfpq", help="which ANN indexes: ivf, hnsw, ivfpq")
    p.add_argument("--pq", default="PQ16", help="PQ part of the IVF-PQ factory (PQ16np: no polysemous training)")
    p.add_argument("--nprobes", default="1,4,16,64")
    p.add_argument("--ef-searches", default="16,32,64,128")
    p.add_argument("--seed", type=int, default=0)
    if "--quick" in sys.argv[1:]:
        p.set_defaults(**QUICK)
    args = p.parse_args()
    args.ann = {a.strip() for a in args.ann.split(",")}

    import faiss
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    torch.set_num_threads(args.threads)
    faiss.omp_set_num_threads(args.threads)
    if args.blas_threshold is not None:
        faiss.cvar.distance_compute_blas_threshold = args.blas_threshold
    t_start = time.perf_counter()
    print("command: " + shlex.join([os.path.relpath(sys.executable, ROOT), os.path.relpath(__file__, ROOT),
                                    *sys.argv[1:]]))
    print(f"machine: {cpu_name()}, os.cpu_count()={os.cpu_count()}, affinity={len(os.sched_getaffinity(0))}, "
          f"{platform.python_implementation()} {platform.python_version()}, torch {torch.__version__} "
          f"({torch.backends.cpu.get_cpu_capability()}), faiss {faiss.__version__}, numpy {np.__version__}; "
          f"threads={args.threads}")
    print(f"load average before: {loadavg()}")

    # 0. bounds
    peak = {"fp32": matmul_peak(torch.float32, args.peak_size, args.peak_reps),
            "bf16": matmul_peak(torch.bfloat16, args.peak_size, args.peak_reps)}
    peak1 = {args.threads: peak["fp32"]}
    if args.threads > 1:
        peak1[1] = peak_at(torch.float32, 1, args.peak_size, args.peak_reps)
    bw_measured = read_bandwidth(args.bw_mb, args.bw_rounds)
    bounds = bandwidth_bounds(bw_measured)
    bw = {kind: gbs for kind, (gbs, _) in bounds.items()}
    peak1 = monotone(peak1)
    print(f"\n== 0. bounds: matmul {args.peak_size}^3 best of {args.peak_reps}: fp32 {peak['fp32']:.1f} GFLOP/s, "
          f"bf16 {peak['bf16']:.1f} GFLOP/s at {args.threads} threads"
          + (f", fp32 {peak1[1]:.1f} at 1 thread" if args.threads > 1 else "")
          + f"\nread bandwidth: streaming reads of {args.bw_mb} MB float32 ({args.bw_mb * 2 ** 20 // l3_bytes()}x the L3), "
          f"best of {args.bw_rounds} rounds, GB/s by threads:")
    for kernel, by_n in bw_measured.items():
        print(f"  {kernel:<16} " + "  ".join(f"{n} thr {v:5.1f}" for n, v in sorted(by_n.items())))
    print(f"  bounds, whatever a row's thread count: split reads {bounds['split'][0]:.1f} GB/s ({bounds['split'][1]}); "
          f"threads scanning the same data {bounds['shared'][0]:.1f} GB/s ({bounds['shared'][1]})")

    achieved, ann = [], []  # --only search: steps 1 and 3 are skipped
    if args.only == "all":
        vectors, embedder, achieved = bench_embedding(args, peak)
    exact_results = bench_exact(args, peak1, bw)

    if args.only == "all":
        print("\n== 3. ANN vs exact")
        real, source = real_embeddings(args, vectors)
        queries, qsource = ann_queries(args, real, embedder)
        print(f"real embeddings: {source}\nqueries: {qsource}")
        ann = bench_ann("real", real, queries, args)
        if args.synthetic > 0:
            synth = synthetic(real, args.synthetic, args.synth_noise, args.seed + 2)
            print(f"synthetic: {args.synthetic} vectors = random real embedding + N(0, ({args.synth_noise} x per-dim std)^2), "
                  f"seed {args.seed + 2} (clustered around {len(real)} real points)")
            ann += bench_ann("synthetic", synth, queries, args)
            del synth

    again = {"fp32": matmul_peak(torch.float32, args.peak_size, args.peak_reps),
             "bf16": matmul_peak(torch.bfloat16, args.peak_size, args.peak_reps)}
    print(f"\n== summary\nmatmul peak at the end: fp32 {again['fp32']:.1f}, bf16 {again['bf16']:.1f} GFLOP/s "
          f"(start {peak['fp32']:.1f}, {peak['bf16']:.1f}; the difference is load)")
    for variant, kind, gfs in achieved:
        best = max(peak[kind], again[kind])  # the conservative reading: the higher of the two peaks
        print(f"embedding {variant}: {gfs:.1f} GFLOP/s = {100 * gfs / best:.1f}% of the higher {kind} peak "
              f"{best:.1f}: {'MET' if gfs >= 0.5 * best else 'NOT MET'} (target >= 50%)")
    met = sum(ok for _, _, ok in exact_results)
    print(f"exact search >= 70% of the bandwidth bound: {met}/{len(exact_results)} bandwidth-bound rows met"
          + "".join(f"\n  {name}: {100 * r:.0f}% {'MET' if ok else 'NOT MET'}" for name, r, ok in exact_results))
    over = [f"{name} ({100 * r:.0f}%)" for name, r, _ in exact_results if r > 1]
    if over:
        print(f"!!! WARNING: {len(over)} row(s) above 100% of the bandwidth bound, {', '.join(over)}: the bandwidth "
              "probe is too weak (or those databases are cache-resident); their ratios are not meaningful")
    for name in sorted({n.rsplit(" ", 1)[0] for n, _, _ in ann}):
        rows = [(n, r, s) for n, r, s in ann if n.rsplit(" ", 1)[0] == name]
        good = [(s, n) for n, r, s in rows if r >= 0.9]
        print(f"{name}: best recall {max(r for _, r, _ in rows):.3f}"
              + (f"; fastest at recall >= 0.9: {max(good)[1].rsplit(' ', 1)[1]} ({max(good)[0]:.1f}x flat)" if good else ""))
    print(f"load average after: {loadavg()}; total {time.perf_counter() - t_start:.0f} s")


if __name__ == "__main__":
    main()
