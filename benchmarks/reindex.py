"""Benchmark: incremental vs full re-index time, and search latency seen by a concurrent reader (CPU).

1. Full vs incremental re-index (`build_stage.run_build_index`, the stage's own code path, in this
   process, `torch.set_num_threads(--threads)`, default 2). The corpus is `--blocks` (default the
   real artifacts/corpus/blocks.parquet, 7,738 blocks; `--limit N` keeps its first N rows). First a
   base index root is built on that original corpus (timed and printed; it also loads the retriever
   into the stage's per-process model cache, so no later timing pays the model load). Then for each
   fraction f of `--fractions` (default 0.01,0.1,0.5):
   - a changed corpus: a seeded random f of the rows get one distinct sentence appended to `text`
     (block_id and every other column kept as they are, same Arrow schema, written by pyarrow to the
     work dir). Every edited row therefore gets a new content key and no other row does, so the
     incremental build must re-embed exactly those rows (checked: rows_embedded == changed rows,
     also recounted from the content keys as tests/realm_core/retrieval/test_incremental.py does);
   - (a) full: `run_build_index` of the changed corpus into a fresh, empty root;
   - (b) incremental: the base root is copied (shutil.copytree, not timed) so that every fraction
     starts from the same state, then `run_build_index` of the changed corpus into the copy.
   Wall seconds of each call are timed (best of `--reps`); ratio = incremental / full; target:
   ratio <= 1.5 x f. Breakdown: "embed" = the sum of the shard records' `seconds` (encoder passes
   plus, incrementally, copying reused vectors; excludes reading the rows), "index" = the metrics'
   `index_seconds` (`finish`: sha256 of every shard, FAISS build, publish), "plan+other" = the rest
   (hashing the corpus and the checkpoint, content keys, manifest, reading rows). The hashing passes
   are also timed standalone on the base corpus, to show the fixed cost a re-index pays however few
   blocks changed (build_stage.plan currently hashes the checkpoint twice, the corpus once for a
   full build and twice for an incremental one, and computes the content keys once).
2. Concurrent reader. A separate process (multiprocessing "spawn"; numpy + faiss only, no torch,
   `faiss.omp_set_num_threads(1)`) loops: read CURRENT; if it names a new version, `load_version`
   it (counted as a reload and timed on its own, not as a search); one `search(q, k=10)` with a
   fresh random query of the index's dimension; record the search's latency; sleep
   `--reader-interval` (default 5 ms). A shared phase flag tags every sample:
   - idle: `--idle-seconds` (default 20) with nothing else running in this process;
   - during: a full re-index with a NEW encoder into a fresh copy of the base root, i.e. the most
     work a re-index does (every block re-embedded, as after REALM's periodic retriever refresh).
     The new encoder is the retriever with every weight + N(0, 1e-3^2) (seeded): same architecture,
     hence the same cost, but a different encoder hash, so nothing is reused.
   This runs twice, each with its own idle phase just before it (the machine's load drifts): with
   the re-indexer at `--threads` torch threads, and at `--reindex-threads` (default 1), which leaves
   one core to the reader. Reported: count, p50/p90/p99/max latency per phase, p99 during / p99 idle
   (target <= 2x), reloads and their times, and errors (target 0): any exception while reading
   CURRENT, loading or searching, a result with a missing id, or a version other than the live one
   before or the one published by the re-index, i.e. any sign of a half-written version.
   The deployment recommendation: the setting that meets the latency target; if both do, the
   faster build; if neither, the lower p99 ratio.

Retriever: `--retriever DIR` (a saved retriever, e.g. models/ict), by default a fresh scratch one
(`--scratch-config`, default layers=2,hidden=128,heads=2,intermediate=512, `--proj-size` 128,
`--max-doc-len` 288, `--seed`) saved into the work dir. The output names which one was used.
Work files live in a temporary directory under benchmarks/_work/ (gitignored), deleted at the end
unless `--keep-work`. Nothing is pickled to disk (the stage writes .npy/.json/.faiss; the reader's
results come back over multiprocessing's own queue).

Caveat for a shared 2-CPU machine: the reader, the re-indexer and any other job compete for two
cores, so the "during" latencies measure exactly that contention; the load average is printed.

Run:

    .venv/bin/python benchmarks/reindex.py                                  # the full benchmark
    .venv/bin/python benchmarks/reindex.py --retriever models/ict          # with a trained retriever
    .venv/bin/python benchmarks/reindex.py --quick                         # smoke test, about a minute
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

# torch is imported lazily (main process only): the spawned reader re-imports this module and
# must stay numpy + faiss, like a search server that never embeds.
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

K = 10
#: --quick: a smoke test (explicit flags still win).
QUICK = {"limit": 1000, "fractions": "0.1", "idle_seconds": 5.0, "rows_per_shard": 256,
         "scratch_config": "layers=1,hidden=64,heads=2,intermediate=256"}
WARMUP, IDLE, DURING, AFTER, STOP = 0, 1, 2, 3, -1
PHASE_NAMES = {WARMUP: "warmup", IDLE: "idle", DURING: "during", AFTER: "after"}


def floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


def scratch_config(text: str) -> dict[str, int]:
    return {k.strip(): int(v) for k, v in (item.split("=", 1) for item in text.split(",") if item.strip())}


def pct(values: list[float]) -> dict[str, float]:
    if not values:
        return {"n": 0, "p50": float("nan"), "p90": float("nan"), "p99": float("nan"), "max": float("nan")}
    ms = np.asarray(values) * 1e3
    p50, p90, p99 = np.percentile(ms, [50, 90, 99])
    return {"n": len(ms), "p50": p50, "p90": p90, "p99": p99, "max": float(ms.max())}


# ---------------------------------------------------------------------- the reader (child process)

def reader_main(root: str, phase, ready, results, interval: float, seed: int) -> None:
    """Search loop of a concurrent reader; puts one dict of samples on `results` when told to stop."""
    import faiss

    from realm_core.retrieval import index

    faiss.omp_set_num_threads(1)  # a serving process searches single queries on one thread
    rng = np.random.default_rng(seed)
    latencies: dict[int, list[float]] = {}
    reloads, errors, seen = [], [], []
    loaded, version, first_load = None, None, None
    while True:
        ph = phase.value
        if ph == STOP:
            break
        try:
            now = index.current_version(root)
            if now != version:
                t = time.perf_counter()
                loaded = index.load_version(root, now)
                sec = time.perf_counter() - t
                if version is None:
                    first_load = sec
                else:
                    reloads.append((ph, sec, now))
                version = now
                seen.append(now)
                ready.set()
            q = rng.standard_normal((1, loaded.dim), dtype=np.float32)
            t = time.perf_counter()
            ids, scores = loaded.search(q, K)
            sec = time.perf_counter() - t
            if (ids < 0).any() or not np.isfinite(scores).all():
                errors.append((ph, f"incomplete result from {version}: ids {ids.tolist()}"))
            else:
                latencies.setdefault(ph, []).append(sec)
        except Exception as exc:  # noqa: BLE001 - every failure a reader could see is what we count
            if len(errors) < 1000:
                errors.append((ph, f"{type(exc).__name__}: {str(exc)[:300]}"))
        time.sleep(interval)
    results.put({"latencies": latencies, "reloads": reloads, "errors": errors, "seen": seen,
                 "first_load": first_load, "torch_imported": "torch" in sys.modules,
                 "faiss_threads": faiss.omp_get_max_threads()})


def reader_session(args, root: Path, build, label: str) -> dict:
    """Start a reader on `root`, let it run idle, then call `build()` while it searches."""
    import multiprocessing as mp

    from realm_core.retrieval import index

    ctx = mp.get_context("spawn")
    phase, ready, results = ctx.Value("i", WARMUP, lock=False), ctx.Event(), ctx.Queue()
    proc = ctx.Process(target=reader_main, args=(str(root), phase, ready, results, args.reader_interval, args.seed),
                       daemon=True)
    before = index.current_version(root)
    proc.start()
    try:
        if not ready.wait(120):
            raise RuntimeError(f"{label}: the reader did not load {root} within 120 s")
        time.sleep(1.0)  # warm-up, not counted: the first searches page the index in
        print(f"  [{label}] idle {args.idle_seconds:.0f} s ...", flush=True)
        phase.value = IDLE
        time.sleep(args.idle_seconds)
        print(f"  [{label}] re-indexing with a new encoder while the reader searches ...", flush=True)
        load_before = loadavg()
        phase.value = DURING
        t = time.perf_counter()
        metrics = build()
        wall = time.perf_counter() - t
        phase.value = AFTER
        time.sleep(0.5)  # let the reader pick up the new CURRENT (tagged "after" if it has not yet)
        phase.value = STOP
        out = results.get(timeout=120)  # before join: a full queue would block the child's exit
        proc.join(30)
    finally:
        if proc.is_alive():
            proc.terminate()
            proc.join()
    out.update(label=label, build_wall=wall, metrics=metrics, before=before, load_during=load_before,
               after=index.current_version(root))
    bad = [v for v in out["seen"] if v not in (before, out["after"])]
    out["errors"] += [(-1, f"saw version {v}, neither the live one before nor the published one") for v in bad]
    return out


def loadavg() -> str:
    from tag_entities import loadavg as la  # imports torch: main process only

    return la()


# ---------------------------------------------------------------------- re-index timing

def config(args, blocks: Path, retriever: Path, root: Path):
    from realm_core.config import BuildIndexConfig

    return BuildIndexConfig(blocks=str(blocks), retriever=str(retriever), output_dir=str(root),
                            rows_per_shard=args.rows_per_shard, batch_size=args.batch_size, factory=args.factory,
                            metrics_file=str(root.parent / f"{root.name}.metrics.json"))


def timed_build(args, blocks: Path, retriever: Path, root: Path) -> dict:
    """run_build_index, wall-timed; adds embed seconds from the shard records and the stage messages."""
    from realm_core.retrieval import build_stage

    messages: list[str] = []
    t = time.perf_counter()
    metrics = build_stage.run_build_index(config(args, blocks, retriever, root), messages.append)
    metrics["wall"] = time.perf_counter() - t
    emb = build_stage.embeddings_dir(config(args, blocks, retriever, root))
    metrics["embed_s"] = sum(json.loads(p.read_text())["seconds"] for p in emb.glob("shard_*.json"))
    metrics["messages"] = messages
    return metrics


def write_changed(table, fraction: float, seed: int, path: Path) -> np.ndarray:
    """blocks.parquet with a seeded `fraction` of the rows' text edited; returns the edited rows."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    n = table.num_rows
    rows = np.sort(np.random.default_rng(seed).choice(n, size=max(1, round(fraction * n)), replace=False))
    texts = table.column("text").to_pylist()
    block_ids = table.column("block_id").to_pylist()
    for r in rows:  # distinct per row, so no edited text can equal any other block's
        texts[r] = f"{texts[r]} This block was revised in benchmark edit {seed}-{r} of block {block_ids[r]}."
    col = table.schema.get_field_index("text")
    changed = table.set_column(col, table.schema.field(col), pa.array(texts, type=table.schema.field(col).type))
    assert changed.schema == table.schema
    pq.write_table(changed, path)
    return rows


def new_keys_count(base: Path, changed: Path) -> int:
    from realm_core.retrieval import incremental

    old = set(incremental.content_keys(base).tolist())
    return sum(k not in old for k in incremental.content_keys(changed).tolist())


def retrained(src: Path, dst: Path, seed: int) -> Path:
    """A copy of the retriever with every weight nudged (seeded): same cost, new encoder hash."""
    import torch

    from realm_core.modeling.embedder import RetrieverEmbedder

    model = RetrieverEmbedder.from_pretrained(src)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 1e-3)
    return model.save_pretrained(dst)


def bench_reindex(args, base_blocks: Path, retriever: Path, base_root: Path, work: Path) -> list[dict]:
    import pyarrow.parquet as pq

    from realm_core.retrieval import embed, incremental

    table = pq.read_table(base_blocks)
    n = table.num_rows
    t = time.perf_counter(); embed.corpus_hash(base_blocks); c_hash = time.perf_counter() - t
    t = time.perf_counter(); incremental.content_keys(base_blocks); c_keys = time.perf_counter() - t
    t = time.perf_counter(); embed.encoder_hash(retriever); e_hash = time.perf_counter() - t
    print(f"fixed hashing cost, standalone: corpus sha256 {c_hash:.2f} s, content keys {c_keys:.2f} s, "
          f"checkpoint sha256 {e_hash:.3f} s -> ~{2 * e_hash + c_hash + c_keys:.2f} s per full build, "
          f"~{2 * e_hash + 2 * c_hash + c_keys:.2f} s per incremental one (plan's passes)")
    print(f"{'f':>5} {'changed':>7} {'kind':<5} {'wall s':>7} {'embed s':>7} {'index s':>7} {'plan+o s':>8} "
          f"{'embedded':>8} {'copied':>7} {'ratio':>6} {'<=1.5f':>6}  target")
    results = []
    for i, f in enumerate(args.fractions):
        changed = work / f"changed_{f:g}.parquet"
        rows = write_changed(table, f, args.seed + 100 + i, changed)
        expected = new_keys_count(base_blocks, changed)
        best: dict[str, dict] = {}
        for _ in range(max(1, args.reps)):
            for kind in ("full", "inc"):
                root = work / f"{kind}_{f:g}"
                if kind == "inc":
                    shutil.copytree(base_root, root)  # same starting state for every fraction, not timed
                m = timed_build(args, changed, retriever, root)
                shutil.rmtree(root)
                if kind not in best or m["wall"] < best[kind]["wall"]:
                    best[kind] = m
        full, inc = best["full"], best["inc"]
        ratio = inc["wall"] / full["wall"]
        ok_rows = inc["rows_embedded"] == len(rows) == expected and inc["rows_copied"] == n - len(rows)
        ok_ratio = ratio <= 1.5 * f
        for kind, m in (("full", full), ("inc", inc)):
            other = m["wall"] - m["embed_s"] - m["index_seconds"]
            tail = (f"{ratio:6.3f} {1.5 * f:6.3f}  time {'MET' if ok_ratio else 'NOT MET'}; rows "
                    f"{'MET' if ok_rows else 'NOT MET'}") if kind == "inc" else ""
            print(f"{f:5g} {len(rows):7d} {kind:<5} {m['wall']:7.2f} {m['embed_s']:7.2f} {m['index_seconds']:7.2f} "
                  f"{other:8.2f} {m['rows_embedded']:8d} {m['rows_copied']:7d} {tail}")
        embed_ratio = inc["embed_s"] / full["embed_s"] if full["embed_s"] else float("nan")
        print(f"      embed-only ratio {embed_ratio:.3f}; changed rows by content keys {expected}; "
              f"full {full['embed_blocks_per_s']} blocks/s; "
              + "; ".join(m.split(": ", 1)[-1] for m in inc["messages"] if "reusing" in m))
        results.append({"f": f, "changed": len(rows), "expected": expected, "full": full, "inc": inc, "ratio": ratio,
                        "ok_rows": ok_rows, "ok_ratio": ok_ratio})
        changed.unlink()
    print("embed = encoder (+ copying reused vectors) from the shard records; index = finish (shard sha256, FAISS "
          "build, publish); plan+o = wall - embed - index (hashing, keys, manifest, reading rows); "
          f"best of {args.reps} per cell")
    return results


# ---------------------------------------------------------------------- reader under load

def bench_reader(args, base_blocks: Path, retriever: Path, base_root: Path, work: Path) -> list[dict]:
    import torch

    runs = []
    for j, threads in enumerate((args.threads, args.reindex_threads)):
        root = work / f"reader_{j}"
        shutil.copytree(base_root, root)
        encoder = retrained(retriever, work / f"retrained_{j}", args.seed + 1 + j)

        def build(threads=threads, root=root, encoder=encoder):
            torch.set_num_threads(threads)
            try:
                return timed_build(args, base_blocks, encoder, root)
            finally:
                torch.set_num_threads(args.threads)

        out = reader_session(args, root, build, f"re-indexer {threads} torch thread{'s' * (threads > 1)}")
        out["threads"] = threads
        runs.append(out)
        shutil.rmtree(root)
        shutil.rmtree(encoder)
    print(f"\n{'re-indexer':<12} {'phase':<7} {'count':>6} {'p50 ms':>7} {'p90 ms':>7} {'p99 ms':>7} {'max ms':>7}  "
          "p99 during/idle (target <= 2)")
    for r in runs:
        stats = {ph: pct(r["latencies"].get(ph, [])) for ph in (IDLE, DURING, AFTER)}
        r["ratio"] = stats[DURING]["p99"] / stats[IDLE]["p99"]
        r["ok"] = r["ratio"] <= 2.0
        r["stats"] = stats
        for ph in (IDLE, DURING, AFTER):
            s = stats[ph]
            tail = f"{r['ratio']:.2f}x {'MET' if r['ok'] else 'NOT MET'}" if ph == DURING else ""
            print(f"{r['threads']:>3} thread{'s' * (r['threads'] > 1):<4} {PHASE_NAMES[ph]:<7} {s['n']:6d} "
                  f"{s['p50']:7.2f} {s['p90']:7.2f} {s['p99']:7.2f} {s['max']:7.2f}  {tail}")
        m = r["metrics"]
        reloads = ", ".join(f"{t * 1e3:.1f} ms ({PHASE_NAMES.get(ph, ph)})" for ph, t, _ in r["reloads"]) or "none"
        print(f"    re-index: {r['build_wall']:.1f} s wall, {m['rows_embedded']} rows re-embedded, "
              f"{m['rows_copied']} copied; load avg at its start {r['load_during']}; reader: first load "
              f"{r['first_load'] * 1e3:.1f} ms, reloads {len(r['reloads'])}: {reloads}; versions seen "
              f"{sorted(set(r['seen']))} (before {r['before']}, published {r['after']}); errors {len(r['errors'])}"
              + "".join(f"\n      {PHASE_NAMES.get(ph, ph)}: {e}" for ph, e in r["errors"][:5])
              + f"; torch in reader: {r['torch_imported']}, faiss threads {r['faiss_threads']}")
    print("'after' = searches between the end of the re-index and the stop signal (0.5 s)")
    return runs


def recommend(runs: list[dict]) -> dict:
    ok = [r for r in runs if r["ok"] and not r["errors"]]
    if ok:
        return min(ok, key=lambda r: r["build_wall"])
    return min(runs, key=lambda r: r["ratio"])


# ---------------------------------------------------------------------- main

def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help=f"smoke-test sizes: {QUICK}")
    p.add_argument("--blocks", default=str(ROOT / "artifacts/corpus/blocks.parquet"))
    p.add_argument("--limit", type=int, default=0, help="use only the first N blocks (0: all)")
    p.add_argument("--fractions", default="0.01,0.1,0.5", help="fractions of blocks changed")
    p.add_argument("--reps", type=int, default=1, help="timed builds per cell, fastest kept")
    p.add_argument("--retriever", default=None, help="saved retriever directory (default: a fresh scratch one)")
    p.add_argument("--scratch-config", default="layers=2,hidden=128,heads=2,intermediate=512")
    p.add_argument("--proj-size", type=int, default=128)
    p.add_argument("--max-doc-len", type=int, default=288)
    p.add_argument("--rows-per-shard", type=int, default=1024)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--factory", default="Flat", help="FAISS factory string of the index")
    p.add_argument("--threads", type=int, default=2, help="torch threads of the re-indexer (and faiss in this process)")
    p.add_argument("--reindex-threads", type=int, default=1, help="torch threads of the second reader run's re-indexer")
    p.add_argument("--idle-seconds", type=float, default=20.0)
    p.add_argument("--reader-interval", type=float, default=0.005, help="reader's sleep between searches, s")
    p.add_argument("--no-reader", action="store_true", help="skip part 2")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--keep-work", action="store_true", help="keep the temporary work directory")
    if "--quick" in sys.argv[1:]:
        p.set_defaults(**QUICK)
    args = p.parse_args()
    args.fractions = floats(args.fractions)

    import faiss
    import pyarrow as pa
    import pyarrow.parquet as pq
    import torch
    from tag_entities import cpu_name
    from transformers.utils import logging as hf_logging

    from realm_core.modeling.embedder import RetrieverEmbedder

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    torch.set_num_threads(args.threads)
    faiss.omp_set_num_threads(args.threads)
    t_start = time.perf_counter()
    print("command: " + shlex.join([os.path.relpath(sys.executable, ROOT), os.path.relpath(__file__, ROOT),
                                    *sys.argv[1:]]))
    print(f"machine: {cpu_name()}, os.cpu_count()={os.cpu_count()}, affinity={len(os.sched_getaffinity(0))}, "
          f"{platform.python_implementation()} {platform.python_version()}, torch {torch.__version__}, "
          f"faiss {faiss.__version__}, numpy {np.__version__}, pyarrow {pa.__version__}; threads={args.threads}")
    print(f"load average before: {loadavg()}")

    (ROOT / "benchmarks/_work").mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="reindex-", dir=ROOT / "benchmarks/_work"))
    try:
        blocks = Path(args.blocks)
        if args.limit:
            table = pq.read_table(blocks)
            base_blocks = work / "base.parquet"
            pq.write_table(table.slice(0, min(args.limit, table.num_rows)), base_blocks)
        else:
            base_blocks = blocks  # read only: every changed copy goes to the work dir
        n = pq.ParquetFile(base_blocks).metadata.num_rows
        if args.retriever:
            retriever, what = Path(args.retriever), f"{args.retriever} (saved retriever)"
        else:
            sc = scratch_config(args.scratch_config)
            model = RetrieverEmbedder.from_init("scratch", scratch_config=sc, proj_size=args.proj_size,
                                                max_doc_len=args.max_doc_len, seed=args.seed)
            retriever = model.save_pretrained(work / "retriever")
            what = (f"fresh scratch retriever {sc}, proj {args.proj_size}, max_doc_len {args.max_doc_len}, "
                    f"seed {args.seed} (untrained: the cost, not the quality, is what is measured)")
            del model
        cfg = json.loads((retriever / "config.json").read_text())
        print(f"retriever: {what}; BERT L={cfg['bert']['num_hidden_layers']} d={cfg['bert']['hidden_size']}, "
              f"proj {cfg['proj_size']}, max_doc_len {cfg['max_doc_len']}")
        print(f"corpus: {n} blocks of {blocks}" + (f" (first {args.limit})" if args.limit else "")
              + f"; rows_per_shard {args.rows_per_shard}, batch {args.batch_size}, index {args.factory}")

        print("\n== 1. full vs incremental re-index")
        base_root = work / "base_root"
        base = timed_build(args, base_blocks, retriever, base_root)
        print(f"base index on the original corpus: {base['wall']:.2f} s wall (includes loading the retriever), "
              f"{base['rows_embedded']} rows, {base['embed_blocks_per_s']} blocks/s, version {base['version']}")
        reindex = bench_reindex(args, base_blocks, retriever, base_root, work)

        runs = []
        if not args.no_reader:
            print(f"\n== 2. concurrent reader: a spawned process, 1 faiss thread, no torch, search(k={K}) of one "
                  f"random {cfg['proj_size']}-d query every {args.reader_interval * 1e3:.0f} ms over {n} vectors; "
                  f"idle {args.idle_seconds:.0f} s, then a full re-index with a new encoder (all {n} blocks)")
            runs = bench_reader(args, base_blocks, retriever, base_root, work)

        print(f"\n== summary (load average after: {loadavg()}; total {time.perf_counter() - t_start:.0f} s)")
        for r in reindex:
            print(f"f={r['f']:g}: incremental {r['inc']['wall']:.2f} s vs full {r['full']['wall']:.2f} s = "
                  f"{r['ratio']:.3f} (target <= {1.5 * r['f']:.3f}): {'MET' if r['ok_ratio'] else 'NOT MET'}; "
                  f"re-embedded {r['inc']['rows_embedded']} of {r['changed']} changed rows: "
                  f"{'MET' if r['ok_rows'] else 'NOT MET'}")
        for r in runs:
            print(f"reader p99 during/idle with a {r['threads']}-thread re-indexer: {r['ratio']:.2f}x (target <= 2): "
                  f"{'MET' if r['ok'] else 'NOT MET'}; errors {len(r['errors'])}: "
                  f"{'MET' if not r['errors'] else 'NOT MET'}; reloads {len(r['reloads'])}; "
                  f"re-index {r['build_wall']:.1f} s")
        if runs:
            rec = recommend(runs)
            print(f"deployment recommendation: re-indexer at {rec['threads']} torch thread"
                  f"{'s' * (rec['threads'] > 1)} ({rec['ratio']:.2f}x p99, {rec['build_wall']:.1f} s re-index; "
                  "rule: meets the latency target, then the faster build)")
    finally:
        if args.keep_work:
            print(f"work dir kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
