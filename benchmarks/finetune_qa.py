"""Benchmark: open-QA fine-tuning and prediction (ORQA's model) vs transformers 4.57.1 `RealmForOpenQA`.

Ours: `realm_core.training.qa.OpenQAModel` (query tower over the frozen FAISS index + `SpanReader`
over the memory-mapped `WordpieceCorpus`, gold spans found once by `GoldFinder`). The peer:
`transformers.models.deprecated.realm.RealmForOpenQA` with a `RealmRetriever` (REALM_NOTES §5):
batch size 1, a brute-force einsum + topk over `block_emb`, the question ids decoded back to text
and re-tokenised with every retrieved block (all `searcher_beam_size` of them: its
`block_has_answer` scans them all for the retriever loss), the reader fed the 5 rows padded to the
longest of the whole beam. Both run in one process each, on the same real data and weights:

- corpus: `--blocks` (artifacts/corpus/blocks.parquet, 7,738 blocks); ours reads its wordpieces
  (`--wordpieces`, built with `realm_core.qa.wordpieces.build` if missing or stale), the peer
  gets the same texts as its block records;
- retriever: `--retriever` (models/ict; BERT -> tanh pooler -> dense 128 -> LayerNorm); the peer's
  `RealmEmbedder` gets its weights (embedder.realm.*, embedder.cls.dense / LayerNorm; the
  projection LayerNorm's eps set to ours, 1e-3, as RealmConfig has a single `layer_norm_eps`);
- document vectors: the published index `--index` (artifacts/index/ict), in corpus row order, is
  the peer's `block_emb`;
- reader: `--reader` (models/pretrain_mlm, 6 layers H384) + a seeded span head; the peer's
  `RealmReader` gets the BERT (reader.realm.*) and the head (span_proj -> qa_outputs.dense_intermediate,
  span_norm -> layer_normalization, span_out -> dense_output: dense to 2x256, chunk into start / end,
  ReLU(start[s] + end[e]), LayerNorm eps 1e-3, dense to 1, in both);
- config: retriever beam 5000 (`searcher_beam_size`), reader beam 5, max span width 10, reader
  sequence 320, question <= 32 wordpieces, query <= 64, the checkpoints' dropout (0.1) while
  training, `pad_token_id=0`, gelu; ours draws its dropout masks as the stage does
  (`realm_core.modeling.dropout`), or with torch's own with `--torch-dropout`;
- questions: NQ train (`load_qa("nq", "train")`) in file order, those whose answer occurs in the
  corpus (what `finetune_qa.skip_unanswerable` trains on): `--warmup` of them untimed, then
  `--questions` timed.

1. Equality (fp32, dropout off, training beam 5000): for `--check` questions, both losses
   (retriever + reader), the question embedding, the top-5000 blocks and their logits, the reader
   inputs of the top 5 and the span logits of every valid span of the rows whose inputs agree. Exact
   parity is not always possible: the peer decodes the question ids to text and re-tokenises them
   (a round trip that can change the wordpieces), and it matches answers inside the truncated
   320-token input without our word-boundary rule; such cases show up as differing inputs or
   positives in the printed line.
2. Prediction questions/s (before any training step, so the weights are still equal and the answers
   are compared): ours `OpenQAModel.predict(k=5, batch_size=--predict-batch (8))` (fp32 and bf16),
   the peer batch 1 in eval mode (searcher beam = reader beam = 5) plus the decode of its answer
   ids, on the same questions, interleaved as below in rounds of `--predict-batch` questions. The
   reader-forward FLOP rate comes from forward hooks on each reader (`SpanReader`, `RealmReader`):
   the seconds inside them and the shapes they got. FLOPs per row of length L (padded: what is
   computed): 2 x (linear weights per token: 6 x (4d^2 + 2d x ffn) + the span projection d x 512) x L
   + 6 x 4 x d x L^2 (attention scores and values) + 2 x 256 x 10 x L (span output); LayerNorms,
   GELU, softmax and the span gather not counted. The peak is a 2048^3 `torch.matmul` in this
   process (best of 4), fp32 and bf16, before and after (the higher counts). Target: >= 50 %.
   The ceiling line: a layer's linears and SDPA attention alone on the same calls (`layer_rates`).
3. Fine-tuning questions/s: one step = forward (query tower, MIPS over the 5000-block beam, the
   retriever loss over it, the reader over the top 5, the reader loss), backward,
   `clip_grad_norm_(1.0)`, AdamW (lr 1e-5, wd 0.01 except biases / LayerNorm, eps 1e-6;
   realm_step.adamw) and `zero_grad`. Ours with 1 question a step (the peer's only option) and
   `--train-batch` (4, the stage's default), in fp32 and under bf16 autocast; the peer with 1, in
   fp32. The timed questions run in rounds of `--round` questions: every round runs every variant
   on the same questions, in an order rotated from round to round (one process computes at a
   time), so all see the same momentary load; per-round ratios are printed with the totals.
   Target: ours >= 10x the peer's questions/s.

The peer process (benchmarks/finetune_qa_peer.py) is a step server in realm_step.py's venv
(`--peer-venv`, .bench/hf457-venv, created on first use: transformers 4.57.1 with this project's
torch, numpy, faiss, safetensors) with its library defaults: TOKENIZERS_PARALLELISM unset (its
retriever tokenises the beam on every core; scripts/env.sh sets it to false for this project).
On a shared 2-CPU machine other jobs stretch steps (a 12-token query through the 6-layer BERT took
0.43 s at load 5): the load average is printed, and figures mean something only when it is idle.

Run:

    .venv/bin/python benchmarks/finetune_qa.py           # ~3 min on the 2 cores when idle (16 min at load 3-4)
    .venv/bin/python benchmarks/finetune_qa.py --quick   # smoke test: 4 timed questions, 1 check
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import unicodedata
from pathlib import Path

import numpy as np
import torch

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))
from tag_entities import cpu_name, loadavg, matmul_peak  # noqa: E402
from realm_step import adamw, autocast, max_rss_gb, set_threads, trim_rss_gb  # noqa: E402


class ReaderTimer:
    """Forward hooks on a reader: seconds inside it, and the [rows, length] and real lengths it got."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.reset()
        module.register_forward_pre_hook(self._pre, with_kwargs=True)
        module.register_forward_hook(self._post)

    def reset(self) -> None:
        self.seconds, self.shapes, self.lengths, self.calls, self._t = 0.0, [], [], [], 0.0

    def _pre(self, module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        mask = kwargs.get("attention_mask")
        self.shapes.append(list(ids.shape))
        self.lengths.extend(mask.sum(-1).tolist() if mask is not None else [ids.shape[1]] * ids.shape[0])
        self._t = time.perf_counter()

    def _post(self, module, args, out):
        self.calls.append(time.perf_counter() - self._t)
        self.seconds += self.calls[-1]

    def state(self) -> dict:
        return {"seconds": self.seconds, "shapes": self.shapes, "lengths": self.lengths, "calls": self.calls}


def rate_by_length(bert: dict, runs: list[dict], edges=(128, 256)) -> list[str]:
    """Reader forward GFLOP/s of the calls grouped by padded length (do short rows run less efficiently?)."""
    groups: dict[str, list[float]] = {}
    for r in runs:
        for shape, dt in zip(r["reader"]["shapes"], r["reader"]["calls"]):
            key = next((f"L<{e}" for e in edges if shape[1] < e), f"L>={edges[-1]}")
            g = groups.setdefault(key, [0.0, 0.0, 0])
            g[0], g[1], g[2] = g[0] + reader_flops(bert, [shape]), g[1] + dt, g[2] + 1
    return [f"{k}: {groups[k][2]} calls, {groups[k][0] / groups[k][1] / 1e9:.0f} GFLOP/s"
            for k in [f"L<{e}" for e in edges] + [f"L>={edges[-1]}"] if k in groups]


def reader_flops(bert: dict, shapes, lengths=None, span_hidden: int = 256, width: int = 10) -> float:
    """Forward FLOPs of the reader (see the module docstring): over the padded [rows, L] `shapes`,
    or, given `lengths`, over each row's real length only."""
    layers, d, ff = bert["num_hidden_layers"], bert["hidden_size"], bert["intermediate_size"]
    p_mm = layers * (4 * d * d + 2 * d * ff) + d * 2 * span_hidden
    row = lambda n: 2 * p_mm * n + layers * 4 * d * n * n + 2 * span_hidden * width * n  # noqa: E731
    if lengths is not None:
        return float(sum(row(n) for n in lengths))
    return float(sum(r * row(n) for r, n in shapes))


def layer_rates(dtype: torch.dtype, shapes, lengths, d: int, ff: int, heads: int, reps: int = 3) -> tuple[float, float]:
    """GFLOP/s of a BERT layer's two parts on the reader's own calls ([rows, L] `shapes`, each row's
    real length in `lengths`), each the best of `reps` passes over all calls: its linear layers
    (Q, K, V, O: d x d; FFN d x ff, ff x d) and its attention (SDPA with the padding mask: the
    kernel the reader runs in eval mode). Random inputs: the time does not depend on the values."""
    lens, calls, fn, rates = iter(lengths), [], torch.nn.functional, []
    for r, n in shapes:
        keep = torch.arange(n)[None, :] < torch.tensor([next(lens) for _ in range(r)])[:, None]
        calls.append((torch.randn(r * n, d).to(dtype), torch.randn(r * n, ff).to(dtype),
                      torch.randn(3, r, heads, n, d // heads).to(dtype), keep[:, None, None, :]))
    wd, wu, wo = torch.randn(d, d).to(dtype), torch.randn(ff, d).to(dtype), torch.randn(d, ff).to(dtype)
    for flops, part in ((sum(2 * r * n * (4 * d * d + 2 * d * ff) for r, n in shapes),
                         lambda x, h, qkv, m: [fn.linear(x, w) for w in (wd, wd, wd, wd, wu)] + [fn.linear(h, wo)]),
                        (sum(4 * d * r * n * n for r, n in shapes),
                         lambda x, h, qkv, m: fn.scaled_dot_product_attention(*qkv, attn_mask=m))):
        times = []
        with torch.no_grad():
            for _ in range(reps + 1):  # the first pass warms up
                t = time.perf_counter()
                for c in calls:
                    part(*c)
                times.append(time.perf_counter() - t)
        rates.append(flops / min(times[1:]) / 1e9)
    return rates[0], rates[1]


# ---------------------------------------------------------------------------------------------
# Ours


def build_ours(args):
    """OpenQAModel as `qa_stage.build_model` makes it, and the GoldFinder over the same corpus."""
    from realm_core.qa import wordpieces as wp
    from realm_core.errors import RealmError
    from realm_core.modeling.embedder import RetrieverEmbedder
    from realm_core.modeling.reader import SpanReader
    from realm_core.qa.gold import GoldFinder
    from realm_core.training.qa import FrozenBlocks, OpenQAModel
    from realm_core.training.qa_stage import read_texts

    reader = SpanReader.from_init(str(args.reader), seed=args.seed, span_hidden=256, max_span_width=10,
                                  seq_len=args.seq_len, max_question_len=32)
    texts = read_texts(args.blocks)
    corpus = None
    for path in (args.wordpieces, args.work / "wordpieces"):
        try:
            corpus = wp.WordpieceCorpus(path)
            corpus.check(args.blocks, reader.tokenizer)
            break
        except RealmError as exc:
            print(f"  wordpieces {path}: {exc}")
            corpus = None
    if corpus is None:
        path = args.work / "wordpieces"
        t = time.perf_counter()
        wp.build(args.blocks, reader.tokenizer, path, tokenizer_name=str(args.reader))
        corpus = wp.WordpieceCorpus(path)
        print(f"  built {path} in {time.perf_counter() - t:.1f} s")
    retriever = RetrieverEmbedder.from_pretrained(args.retriever)
    try:
        blocks = FrozenBlocks(args.index, corpus, retriever=args.retriever)
    except RealmError as exc:  # e.g. the retriever retrained since the index was built
        print(f"  note: {exc}; benchmarking with this pair anyway (the costs do not depend on it)")
        blocks = FrozenBlocks(args.index, corpus)
    model = OpenQAModel(retriever, reader, corpus, texts, blocks, retriever_beam=args.retriever_beam, reader_beam=5)
    if not args.torch_dropout:  # as the stage trains (qa_stage.run); --torch-dropout for the A/B
        from realm_core.modeling.dropout import use_fast_dropout
        use_fast_dropout(model)
    return model, GoldFinder(corpus, texts, reader.tokenizer, max_width=10), corpus


def select_items(args, model, finder, n: int):
    """The first `n` NQ train questions (file order) with a text answer found in the corpus."""
    from realm_core.qa.datasets import load_qa
    from realm_core.training.qa import prepare

    picked, scanned = [], 0
    for ex in load_qa("nq", "train", args.data_dir):
        scanned += 1
        if ex.answer_type == "text" and finder.find(ex).rows:
            picked.append(ex)
            if len(picked) == n:
                break
    if len(picked) < n:
        raise SystemExit(f"only {len(picked)} NQ train questions have an answer in the corpus; need {n}")
    return prepare(picked, model.reader, finder, query_len=64), scanned


def bert_spec(model) -> dict:
    """The one BERT config RealmForOpenQA has (its embedder and reader share it): ours must agree."""
    keys = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
            "hidden_act", "hidden_dropout_prob", "attention_probs_dropout_prob", "max_position_embeddings",
            "type_vocab_size", "layer_norm_eps", "pad_token_id")
    r, q = model.reader.bert.config, model.retriever.query.bert.config
    spec = {k: getattr(r, k) for k in keys}
    differ = [k for k in keys if getattr(q, k) != spec[k]]
    if differ:
        raise SystemExit(f"retriever and reader BERT configs differ in {differ}: RealmForOpenQA has one config")
    return spec


def hf_state(model) -> dict[str, torch.Tensor]:
    """Our weights under RealmForOpenQA's names, and our index vectors as its block_emb."""
    out = {}
    for module, names in ((model.retriever.query, (("bert.", "embedder.realm."), ("dense.", "embedder.cls.dense."),
                                                    ("layer_norm.", "embedder.cls.LayerNorm."))),
                          (model.reader, (("bert.", "reader.realm."), ("span_proj.", "reader.qa_outputs.dense_intermediate."),
                                          ("span_norm.", "reader.qa_outputs.layer_normalization."),
                                          ("span_out.", "reader.qa_outputs.dense_output.")))):
        for name, t in module.state_dict().items():
            ours, theirs = next(((o, th) for o, th in names if name.startswith(o)), (None, None))
            if ours is None:
                raise SystemExit(f"unexpected weight {name}")
            out[theirs + name[len(ours):]] = t
    out["block_emb"] = torch.from_numpy(np.ascontiguousarray(model.blocks.vectors, dtype=np.float32))
    return {k: v.detach().clone().contiguous() for k, v in out.items()}


def ours_check(model, item) -> dict:
    """fp32, eval mode (dropout off): the losses, the beam, and the raw span logits of the top 5."""
    from realm_core.training.qa import QABatch

    model.eval()
    try:
        with torch.no_grad():
            _, metrics = model(QABatch([item]))
            q = model.embed([item])
            rows, logits = model.retrieve([item], q, model.retriever_beam)
            pairs = [model.reader.pair(item.question, model.corpus.body(int(r))) for r in rows[0, : model.reader_beam]]
            spans = model._read_by_length(pairs)
    finally:
        model.train()
    return {"metrics": metrics, "q": q[0].numpy(), "rows": rows[0], "logits": logits[0].numpy(), "pairs": pairs,
            "spans": spans.numpy()}


def compare(o: dict, p: dict, item) -> dict:
    """Differences between our check and the peer's for one question."""
    a = np.load(p["arrays"])
    ob, pb = o["rows"], a["block_ids"]
    ol, pl = dict(zip(ob.tolist(), o["logits"].tolist())), dict(zip(pb.tolist(), a["relevance"].tolist()))
    common = sorted(set(ol) & set(pl))
    ours_pos = set(ob[item.gold.has_answer(ob)].tolist())
    peer_pos = set(pb[a["has_answer"]].tolist())
    st, en, hf = a["span_starts"], a["span_ends"], a["span_logits"]
    same_rows, span_diff, masks_agree = [], 0.0, True
    for j, (ids, first, last) in enumerate(o["pairs"]):
        if ids != p["reader_inputs"][j]:
            continue
        same_rows.append(j)
        valid = (st >= first) & (en <= last)
        masks_agree &= bool(np.all(hf[j, valid] > -1e30) and np.all(hf[j, ~valid] < -1e30))
        span_diff = max(span_diff, float(np.abs(o["spans"][j, st[valid], (en - st)[valid]] - hf[j, valid]).max()))
    q_len = len(item.question) + 2
    q_same = all(o["pairs"][j][0][:q_len] == p["reader_inputs"][j][:q_len] for j in range(len(o["pairs"])))
    m = o["metrics"]
    return {"loss": (m["loss"], p["loss"]), "retriever_loss": (m["retriever_loss"], p["retriever_loss"]),
            "reader_loss": (m["reader_loss"], p["reader_loss"]),
            "q_diff": float(np.abs(o["q"] - a["q"]).max()), "top5_same": ob[:5].tolist() == pb[:5].tolist(),
            "beam_overlap": len(common) / len(ob),
            "logit_diff": max(abs(ol[b] - pl[b]) for b in common),
            "positives": [len(ours_pos), len(peer_pos), len(ours_pos & peer_pos)],
            "reader_rows_same": len(same_rows), "question_same": q_same, "span_diff": span_diff,
            "span_masks_agree": masks_agree}


def ours_train(model, opt, params, items, batch: int, precision: str, timer: ReaderTimer) -> dict:
    from realm_core.training.qa import QABatch

    model.train()
    timer.reset()
    times, losses, phases = [], [], {"forward": 0.0, "backward": 0.0, "clip + AdamW": 0.0}
    for lo in range(0, len(items), batch):
        t = time.perf_counter()
        with autocast(precision):
            loss, _ = model(QABatch(items[lo: lo + batch]))
        t_fwd = time.perf_counter()
        loss.backward()
        t_bwd = time.perf_counter()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        end = time.perf_counter()
        phases["forward"] += t_fwd - t
        phases["backward"] += t_bwd - t_fwd
        phases["clip + AdamW"] += end - t_bwd
        times.append(end - t)
        losses.append(float(loss.detach()))
    return {"times": times, "losses": losses, "reader": timer.state(), "phases": phases}


def ours_predict(model, items, batch: int, precision: str, timer: ReaderTimer) -> dict:
    timer.reset()
    t = time.perf_counter()
    preds = model.predict(items, k=model.reader_beam, batch_size=batch, precision=precision)
    return {"times": [time.perf_counter() - t], "reader": timer.state(),
            "answers": [{"text": p["prediction"], "block": p["rows"][p["block"]]} for p in preds]}


def interleave(variants: list[str], rounds: list[list[int]], run, label: str) -> dict[str, list[dict]]:
    """Every round runs every variant on the same questions, the order rotated each round."""
    out: dict[str, list[dict]] = {v: [] for v in variants}
    for r, qs in enumerate(rounds):
        for v in variants[r % len(variants):] + variants[: r % len(variants)]:
            res = run(v, qs)
            out[v].append(res)
            print(f"  [{v}] {label} {r + 1}: {len(qs)} questions in {sum(res['times']):.2f} s (load {loadavg()})",
                  flush=True)
    return out


def totals(runs: list[dict], bert: dict) -> dict:
    secs = sum(sum(r["times"]) for r in runs)
    shapes = [s for r in runs for s in r["reader"]["shapes"]]
    lengths = [n for r in runs for n in r["reader"]["lengths"]]
    return {"seconds": secs, "reader_s": sum(r["reader"]["seconds"] for r in runs),
            "retriever_s": sum(r.get("retriever_s", 0.0) for r in runs),
            "reader_flops": reader_flops(bert, shapes), "reader_flops_real": reader_flops(bert, shapes, lengths),
            "reader_rows": len(lengths), "reader_tokens": sum(r * n for r, n in shapes), "real_tokens": sum(lengths),
            "losses": [x for r in runs for x in r.get("losses", [])]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smoke test: 4 timed questions, 1 equality check")
    p.add_argument("--questions", type=int, default=None, help="timed questions (default 16)")
    p.add_argument("--warmup", type=int, default=4, help="untimed questions first, one warm-up round per variant")
    p.add_argument("--round", type=int, default=4, help="questions per fine-tuning round (a multiple of --train-batch)")
    p.add_argument("--check", type=int, default=None, help="questions compared in fp32 (default 3)")
    p.add_argument("--train-batch", type=int, default=4, help="our fine-tuning batch (the stage's default 4)")
    p.add_argument("--predict-batch", type=int, default=8, help="our prediction batch (evaluate's default 8)")
    p.add_argument("--retriever-beam", type=int, default=5000, help="both: retriever beam while training")
    p.add_argument("--seq-len", type=int, default=320, help="reader sequence length")
    p.add_argument("--lr", type=float, default=1e-5)
    p.add_argument("--torch-dropout", action="store_true", help="ours with torch's own dropout masks (the A/B)")
    p.add_argument("--blocks", type=Path, default=ROOT / "artifacts" / "corpus" / "blocks.parquet")
    p.add_argument("--wordpieces", type=Path, default=None,
                   help="tokenized corpus (default artifacts/corpus/wordpieces, else /tmp/wp, else built in --work)")
    p.add_argument("--retriever", type=Path, default=ROOT / "models" / "ict")
    p.add_argument("--index", type=Path, default=ROOT / "artifacts" / "index" / "ict")
    p.add_argument("--reader", type=Path, default=ROOT / "models" / "pretrain_mlm")
    p.add_argument("--data-dir", type=Path, default=ROOT / "data")
    p.add_argument("--peer-venv", type=Path, default=ROOT / ".bench" / "hf457-venv", help="the peer's venv")
    p.add_argument("--rebuild-venv", action="store_true", help="recreate the peer venv")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="torch and faiss threads (both processes)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--work", type=Path, default=ROOT / "benchmarks" / "_work" / "finetune_qa",
                   help="scratch directory: weights for the peer, its script, summary.json")
    args = p.parse_args()
    args.questions = args.questions or (4 if args.quick else 16)
    args.check = args.check if args.check is not None else (1 if args.quick else 3)
    if args.round % args.train_batch or args.questions % args.round:
        raise SystemExit("--questions must be a multiple of --round, and --round of --train-batch")
    if args.wordpieces is None:
        default = ROOT / "artifacts" / "corpus" / "wordpieces"
        args.wordpieces = default if default.is_dir() else Path("/tmp/wp")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    args.work.mkdir(parents=True, exist_ok=True)
    set_threads(args.threads)
    t_start = time.perf_counter()
    peak32, peak16 = matmul_peak(torch.float32, 2048, 4), matmul_peak(torch.bfloat16, 2048, 4)
    print(f"machine: {cpu_name()}, os.cpu_count()={os.cpu_count()}, torch {torch.__version__} "
          f"({torch.backends.cpu.get_cpu_capability()}), threads {torch.get_num_threads()}")
    print(f"load average before: {loadavg()}; matmul peak (2048^3, best of 4): fp32 {peak32:.1f} GFLOP/s, "
          f"bf16 {peak16:.1f} GFLOP/s")
    summary: dict = {"machine": cpu_name(), "cpus": os.cpu_count(), "torch": torch.__version__,
                     "load_before": loadavg(), "peak_gflops": {"fp32": peak32, "bf16": peak16},
                     "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}}
    from finetune_qa_peer import Peer, ensure_peer_venv

    py = ensure_peer_venv(args.peer_venv, args.rebuild_venv)

    t = time.perf_counter()
    model, finder, corpus = build_ours(args)
    items, scanned = select_items(args, model, finder, args.warmup + args.questions)
    warm, timed = items[: args.warmup], items[args.warmup:]
    bert = bert_spec(model)
    timer = ReaderTimer(model.reader)
    opt, params = adamw(model.named_parameters(), lr=args.lr)
    print(f"ours ready in {time.perf_counter() - t:.1f} s: corpus {len(corpus):,} blocks ({corpus.path}), "
          f"{sum(x.numel() for x in params) / 1e6:.1f} M trainable parameters, reader attention "
          f"{model.reader.bert.config._attn_implementation}; {len(items)} answerable NQ train questions "
          f"(of the first {scanned}), question wordpieces {min(len(i.question) for i in items)}-"
          f"{max(len(i.question) for i in items)}")
    from safetensors.torch import save_file

    weights = args.work / "realm_openqa.safetensors"
    save_file(hf_state(model), str(weights))
    spec = {"bench_dir": str(BENCH), "weights": str(weights), "threads": args.threads, "seed": args.seed,
            "bert": bert, "proj_size": model.retriever.proj_size, "proj_ln_eps": model.retriever.layer_norm_eps,
            "span_hidden": model.reader.span_hidden, "max_span_width": model.reader.max_span_width,
            "reader_ln_eps": model.reader.layer_norm_eps, "reader_beam": model.reader_beam, "seq_len": args.seq_len,
            "n_blocks": len(corpus), "retriever_beam": model.retriever_beam, "tokenizer": str(args.reader),
            "blocks": str(args.blocks), "lr": args.lr,
            "questions": [{"query_ids": it.query, "answer_ids": [a for a in model.reader.inputs.wordpieces(
                it.example.answers) if a]} for it in items]}
    t = time.perf_counter()
    peer = Peer(py, args.work, spec)
    info = peer.info
    print(f"peer ready in {time.perf_counter() - t:.1f} s: RealmForOpenQA, transformers {info['versions']['transformers']}"
          f", attention {info['attn_implementation']}, threads {info['threads']}, {info['params'] / 1e6:.1f} M "
          f"parameters (MLM heads and reader pooler included; they get no gradient)")
    try:
        # 1. equality
        print(f"\n== equality (fp32, dropout off, beam {model.retriever_beam}; {args.check} questions)")
        checks = []
        for i in range(args.check):
            it = timed[i]
            c = compare(ours_check(model, it), peer.ask(op="check", question=args.warmup + i,
                                                          path=str(args.work / f"check{i}.npz")), it)
            checks.append(c)
            print(f"  q{i} {it.example.question!r}: loss ours {c['loss'][0]:.6f} / peer {c['loss'][1]:.6f} "
                  f"(retriever {c['retriever_loss'][0]:.6f} / {c['retriever_loss'][1]:.6f}, reader "
                  f"{c['reader_loss'][0]:.6f} / {c['reader_loss'][1]:.6f}); max |q diff| {c['q_diff']:.1e}, top-5 "
                  f"{'same' if c['top5_same'] else 'DIFFERENT'}, beam overlap {100 * c['beam_overlap']:.2f} %, max "
                  f"|logit diff| {c['logit_diff']:.1e}; positives ours/peer/both {c['positives']}; reader inputs "
                  f"identical {c['reader_rows_same']}/5 (question part {'same' if c['question_same'] else 'DIFFERENT'}),"
                  f" span masks {'agree' if c['span_masks_agree'] else 'DIFFER'}, max |span logit diff| "
                  f"{c['span_diff']:.1e}")
        summary["checks"] = checks

        # 2. prediction (the weights still equal: the answers are compared)
        pb = args.predict_batch
        pred_variants = [f"ours b{pb} fp32", "peer b1 fp32", f"ours b{pb} bf16"]

        def pred_run(v: str, qs: list[int]) -> dict:
            side, batch, prec = v.split()
            if side == "peer":
                return peer.ask(op="predict", questions=qs, precision=prec)
            return ours_predict(model, [items[i] for i in qs], int(batch[1:]), prec, timer)

        print("\n== prediction")
        interleave(pred_variants, [list(range(args.warmup))], pred_run, "warm-up")
        size = min(pb, args.questions)
        prounds = [list(range(args.warmup + lo, args.warmup + min(lo + size, args.questions)))
                   for lo in range(0, args.questions, size)]
        pred_runs = interleave(pred_variants, prounds, pred_run, "round")

        # 3. fine-tuning (after prediction: its steps change the weights, differently on each side)
        b = args.train_batch
        train_variants = ["ours b1 fp32", "peer b1 fp32", f"ours b{b} fp32", "ours b1 bf16", f"ours b{b} bf16"]

        def train_run(v: str, qs: list[int]) -> dict:
            side, batch, prec = v.split()
            if side == "peer":
                return peer.ask(op="train", questions=qs, precision=prec)
            return ours_train(model, opt, params, [items[i] for i in qs], int(batch[1:]), prec, timer)

        print(f"\n== fine-tuning (warm-up: {args.warmup} questions per variant)")
        interleave(train_variants, [list(range(args.warmup))], train_run, "warm-up")
        rounds = [list(range(args.warmup + lo, args.warmup + lo + args.round)) for lo in range(0, args.questions, args.round)]
        train_runs = interleave(train_variants, rounds, train_run, "round")
        peer_rss = train_runs["peer b1 fp32"][-1]["max_rss_gb"]  # its peak so far
    finally:
        peer.close()
    end32, end16 = matmul_peak(torch.float32, 2048, 4), matmul_peak(torch.bfloat16, 2048, 4)
    summary.update(peak_gflops_after={"fp32": end32, "bf16": end16}, max_rss_gb={"ours": max_rss_gb(), "peer": peer_rss})
    # the peak is the higher one: a low one would flatter the % below
    (start32, start16), peak32, peak16 = (peak32, peak16), max(peak32, end32), max(peak16, end16)

    n = args.questions
    print(f"\n== fine-tuning: {n} NQ train questions in {len(rounds)} rounds of {args.round}; retriever beam "
          f"{model.retriever_beam}, reader beam 5, seq {args.seq_len}")
    print(f"{'variant':<14} {'q/s':>7} {'s/q':>7} {'reader fwd s/q':>15} {'GFLOP/s':>8} {'peer retr. s/q':>15} "
          f"{'reader tokens/q':>16} {'mean loss':>10}  per-round q/s")
    tt = {v: totals(r, bert) for v, r in train_runs.items()}
    for v, x in tt.items():
        per_round = [round(len(rounds[0]) / sum(r["times"]), 3) for r in train_runs[v]]
        print(f"{v:<14} {n / x['seconds']:7.3f} {x['seconds'] / n:7.2f} {x['reader_s'] / n:15.2f} "
              f"{x['reader_flops'] / x['reader_s'] / 1e9:8.1f} {(x['retriever_s'] / n if v.startswith('peer') else float('nan')):15.2f} "
              f"{x['reader_tokens'] / n:16.0f} {statistics.fmean(x['losses']):10.3f}  {per_round}")
    peer_qps = n / tt["peer b1 fp32"]["seconds"]
    summary["train"] = {v: {**{k: x[k] for k in x if k != "losses"}, "q_per_s": n / x["seconds"],
                            "times": [t for r in train_runs[v] for t in r["times"]]} for v, x in tt.items()}
    for v in train_variants:
        if v.startswith("ours"):
            ratio = (n / tt[v]["seconds"]) / peer_qps
            rounds_r = [round(sum(pr["times"]) / sum(orr["times"]), 2)
                        for orr, pr in zip(train_runs[v], train_runs["peer b1 fp32"])]
            print(f"ratio {v} / peer b1 fp32: {ratio:.2f}x ({'met' if ratio >= 10 else 'NOT met'}, target >= 10x); "
                  f"per round {rounds_r}")
            summary["train"][v]["ratio_vs_peer"] = ratio
    peer_s = tt["peer b1 fp32"]["seconds"] / n
    print(f"peer: {peer_s:.2f} s/question, of which {tt['peer b1 fp32']['retriever_s'] / n:.2f} s in its RealmRetriever "
          f"(question decoded, {model.retriever_beam} pairs tokenised, block_has_answer), "
          f"{tt['peer b1 fp32']['reader_s'] / n:.2f} s reader forward")
    for v in train_variants:  # where our step's time goes (the reader's forward is timed by its hooks)
        if v.startswith("ours"):
            ph = {k: sum(r["phases"][k] for r in train_runs[v]) / n for k in train_runs[v][0]["phases"]}
            rest = ph["forward"] - tt[v]["reader_s"] / n
            summary["train"][v]["phases_s_per_q"] = {**ph, "forward outside the reader": rest}
            print(f"{v} per question: forward {ph['forward']:.3f} s (reader {tt[v]['reader_s'] / n:.3f}, query tower + "
                  f"beam + losses {rest:.3f}), backward {ph['backward']:.3f} s, clip + AdamW {ph['clip + AdamW']:.3f} s")
    for v in (f"ours b{b} fp32", f"ours b{b} bf16"):
        work = 3 * tt[v]["reader_flops"] / n  # forward + backward (2x) of the reader alone
        floor = work / (peak16 if v.endswith("bf16") else peak32) / 1e9
        print(f"floor of {v}: its reader's forward + backward is {work / 1e9:.1f} GFLOP/question, {floor:.2f} s at "
              f"100 % of the matmul peak: at most {peer_s / floor:.1f}x the peer even with nothing else in the step")

    print(f"\n== prediction: the same {n} questions, {len(prounds)} rounds; retriever beam = reader beam = 5")
    print(f"{'variant':<14} {'q/s':>7} {'s/q':>7} {'reader fwd s':>13} {'rows':>5} {'tokens':>7} {'padding':>8} "
          f"{'GFLOP':>7} {'GFLOP/s':>8} {'% peak':>7}")
    pt = {v: totals(r, bert) for v, r in pred_runs.items()}
    summary["predict"] = {}
    for v, x in pt.items():
        peak = peak16 if v.endswith("bf16") else peak32
        rate = x["reader_flops"] / x["reader_s"] / 1e9
        pad = 1 - x["real_tokens"] / x["reader_tokens"]
        print(f"{v:<14} {n / x['seconds']:7.3f} {x['seconds'] / n:7.3f} {x['reader_s']:13.2f} {x['reader_rows']:5d} "
              f"{x['reader_tokens']:7d} {100 * pad:7.1f}% {x['reader_flops'] / 1e9:7.1f} {rate:8.1f} "
              f"{100 * rate / peak:6.0f}%")
        summary["predict"][v] = {**{k: x[k] for k in x if k != "losses"}, "q_per_s": n / x["seconds"],
                                 "reader_gflops_per_s": rate, "pct_peak": 100 * rate / peak}
    for v in pred_variants:
        print(f"  {v} reader calls by padded length: " + "; ".join(rate_by_length(bert, pred_runs[v])))
    print(f"(reader forward FLOPs over the padded rows it computed; % of the matmul peak, the higher of the two "
          f"measurements: {peak32:.0f} / {peak16:.0f} GFLOP/s fp32 / bf16; at the start {start32:.0f} / {start16:.0f}, "
          f"at the end {end32:.0f} / {end16:.0f})")
    shapes, lens = ([x for r in pred_runs[f"ours b{pb} fp32"] for x in r["reader"][k]] for k in ("shapes", "lengths"))
    d, heads = bert["hidden_size"], model.reader.bert.config.num_attention_heads
    share = bert["num_hidden_layers"] * 4 * d * sum(r * n * n for r, n in shapes) / reader_flops(bert, shapes)
    summary["layer_ceiling"] = {"attention_share": share}  # of the counted FLOPs
    for dt, name, peak in ((torch.float32, "fp32", peak32), (torch.bfloat16, "bf16", peak16)):
        lin, att = layer_rates(dt, shapes, lens, d, bert["intermediate_size"], heads)
        both = 1 / ((1 - share) / lin + share / att)  # the two parts at their own rates, nothing else
        summary["layer_ceiling"][name] = {"linear": lin, "attention": att, "both": both}
        print(f"ceiling at the reader's own calls, {name}: its linear layers alone run at {lin:.0f} GFLOP/s "
              f"({100 * lin / peak:.0f} % of the peak), its attention (SDPA, {100 * share:.1f} % of the FLOPs) at "
              f"{att:.0f} ({100 * att / peak:.0f} %); the two at those rates and nothing else: {100 * both / peak:.0f} %")
    pq_ = n / pt["peer b1 fp32"]["seconds"]
    for v in pred_variants:
        if v.startswith("ours"):
            pct = summary["predict"][v]["pct_peak"]
            print(f"{v}: {(n / pt[v]['seconds']) / pq_:.2f}x the peer's questions/s; reader forward at {pct:.0f} % of "
                  f"the {'bf16' if v.endswith('bf16') else 'fp32'} matmul peak ({'met' if pct >= 50 else 'NOT met'}, "
                  f"target >= 50 %)")
    from realm_core.qa.metrics import normalize_answer

    def loose(text: str) -> str:  # the peer's decode drops accents and puts spaces around punctuation
        text = "".join(ch for ch in unicodedata.normalize("NFD", text) if not unicodedata.combining(ch))
        return normalize_answer(text).replace(" ", "")

    ours_ans = [a for r in pred_runs[f"ours b{pb} fp32"] for a in r["answers"]]
    peer_ans = [a for r in pred_runs["peer b1 fp32"] for a in r["answers"]]
    same_block = sum(o["block"] == q["block"] for o, q in zip(ours_ans, peer_ans))
    same_text = sum(loose(o["text"]) == loose(q["text"]) for o, q in zip(ours_ans, peer_ans))
    print(f"predictions ours fp32 vs peer: same block {same_block}/{n}, same answer {same_text}/{n} (normalised, accents and "
          f"spaces dropped: the peer decodes wordpieces, ours maps the span back to the block's text); e.g. "
          + "; ".join(f"{o['text']!r} / {q['text']!r}" for o, q in list(zip(ours_ans, peer_ans))[:3]))
    summary["predictions_agree"] = {"block": same_block, "text": same_text, "n": n}
    summary["load_after"] = loadavg()
    print(f"peak RSS: ours {max_rss_gb():.1f} GB, peer {peer_rss:.1f} GB; this process {trim_rss_gb():.1f} GB now"
          f"\n\nload average after: {loadavg()}; total {time.perf_counter() - t_start:.0f} s")
    (args.work / "summary.json").write_text(json.dumps(summary, indent=1, default=str) + "\n")
    print(f"summary: {args.work / 'summary.json'}")


if __name__ == "__main__":
    main()
