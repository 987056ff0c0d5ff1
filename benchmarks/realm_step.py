"""Benchmark: one REALM pre-training step, its breakdown, vs the transformers 4.57.1 REALM classes.

Shapes (the issue's): B=4 masked queries of 96 wordpieces, k=8 candidates (the null document at
index 0 + 7 retrieved blocks of 288), the reader's joint input `[CLS] x [SEP] body [SEP]` of 384,
M=10 masks per query, and a 6-layer BERT (hidden 384, 12 heads, FFN 1536, vocabulary 30,522,
gelu) for both the retriever (query and document towers shared, REALM's default) and the
knowledge-augmented encoder. `--quick` shrinks it to a 2-layer H128 BERT, B=2, k=4 and lengths
32 / 64.

1. Same weights, same inputs. One seeded set of random-init weights: our `RetrieverEmbedder`
   (BERT -> tanh pooler -> dense 128 -> LayerNorm) and `KnowledgeAugEncoder` (BertForMaskedLM,
   logits only at the mask positions). They are copied, renamed, into a safetensors file with
   seeded random input ids; the peer process loads them into `RealmScorer` (embedder.realm.*,
   embedder.cls.dense / LayerNorm) and `RealmKnowledgeAugEncoder` (realm.*, cls.predictions.*,
   decoder tied to the word embeddings in both). Config alignment: HF's `RealmScorerProjection`
   LayerNorm uses `config.layer_norm_eps`, so ours is built with 1e-12 here (the project default
   is Keras' 1e-3); `hidden_act="gelu"` (RealmConfig defaults to gelu_new); `pad_token_id=0`
   (RealmConfig's 1 would put the embedding's padding_idx, whose row gets no gradient, on
   [unused0] instead of [PAD]). Dropout is 0 by default (`--dropout`, in both BERTs and after
   our projection, which HF lacks): with BERT's 0.1 the peer's eager attention also keeps the
   dropout masks and outputs of every [32, 12, 384, 384] probability tensor, and its process
   was killed at 16 GB resident on the shared 24 GB machine (12 GB peak without dropout). The
   loss comparison runs in eval mode either way.
   The peer gets the same tensors in its layout: candidates [B, k, 288] with the null document
   `[CLS] [SEP] [SEP]` at index 0 (ours embeds it once, as the last row of B*(k-1)+1 documents),
   joint inputs [B, k, 384], and labels [B, 384] (-100 except at the masks) with
   `mlm_mask = labels != -100` (REALM_NOTES §5: without it HF's denominator counts every
   position). HF computes logits at all 384 positions of all 32 rows; ours only at the masks.
   Reported: both fp32 losses in eval mode (target: equal to 1e-4), the relevance scores, and
   the loss after one identical AdamW step (checks the gradients and the update as well).
2. Step time. A training step is, for both: MIPS (the query batch embedded by a no-grad snapshot
   of the retriever, then FAISS IndexFlatIP top-k over `--mips-n` random unit 128-d vectors;
   ours through `LiveIndex.search`), forward (retriever scores, reader logits, the per-token
   marginal loss), backward, `clip_grad_norm_(1.0)`, AdamW (wd 0.01 except biases/LayerNorm,
   eps 1e-6) and `zero_grad`. Ours runs `RealmModel.forward` + `marginals` + `realm_loss`; the
   peer `RealmScorer(...).relevance_score` + `RealmKnowledgeAugEncoder(..., relevance_score,
   labels, mlm_mask).loss`. Both processes use torch.set_num_threads(--threads, default every
   core) and as many FAISS threads, and never compute at the same time. `--warmup` untimed
   steps, then `--reps` instrumented steps whose phases are timed separately:
     mips           snapshot query embedding + FAISS search
     retriever fwd  query tower on B queries + document tower on the candidates (candidate
                    re-embedding, forward): B*(k-1)+1 = 29 documents for ours, B*k = 32 for HF
     encoder fwd    reader over B*k = 32 joint rows + MLM head + marginal loss
     encoder bwd    backward of the loss into the reader and into the scores
     retriever bwd  backward from the scores into the retriever (candidate re-embedding, bwd)
     optimizer      clip + AdamW step + zero_grad
   (the backward is split by detaching the scores and calling `scores.backward(grad)`: the same
   gradients, the autograd engine runs these parts one after the other anyway). The step time
   is the median of the instrumented steps' totals (the fastest is printed too: on a shared
   machine other jobs only ever make a step slower); `--plain-reps` unsplit steps (the warm-up
   steps are unsplit too, and their times are printed) can be timed after them as a cross-check.
   Ours runs in fp32 and under bf16 autocast (what `precision: auto` picks on this CPU); the
   peer in fp32 (and bf16 with `--peer-bf16`). The peer process is a step server (one JSON
   command per line on its stdin), so the variants are interleaved: every round runs one step
   of each (ours fp32, peer fp32, ours bf16), in an order rotated from round to round, and all
   of them see the same momentary load; per-round ratios are printed with the medians. Only one
   process computes at a time, and each hands freed memory back between steps (malloc_trim;
   the peer's process peaks at ~12 GB, ours at ~5 GB; both are printed). The matmul peak is
   measured before and after. Target: ours <= 0.2x the peer's step time.
   Analytic forward FLOPs per step (as tag_entities.py counts them: 2*P_mm*T + L*4*d*T^2 per
   sequence, plus the MLM head's 2*(d^2 + d*V) per scored position; backward counted as 2x
   forward) show how much of the gap is less work and how much is speed.
3. Cost of the asynchronous index refresh (ours only): `--refresh-steps` training steps (the
   same step and shapes, in `--refresh-precision`) over a synthetic corpus of
   `--refresh-docs` blocks of 288 ids, candidates retrieved each step from the live index
   (`LiveIndex.search`), with (a) no refresh and (b) `Refresher(mode="async")` with the default
   `ThreadRunner` re-embedding the whole corpus every `--refresh-every` steps (snapshot, embed,
   save the version, load and install it at the next step boundary; REALM_NOTES §2.6).
   Throughput is measured over the steps after the first `--refresh-every` (so the window holds
   whole refresh cycles, each starting at its first step: steps 51-100 by default, one refresh);
   slowdown = 1 - async/never per round (`--refresh-rounds` never/async pairs; the median is
   reported). As the arms run one after the other, load that changes between them moves this
   figure by tens of percent on a shared machine, so a local estimate is printed as well: in each
   async arm, the extra seconds of the steps a refresh overlapped (from the step that took its
   snapshot to the step that installed it) over the median of that arm's other steps, as a share
   of a refresh interval. Target: <= 10 %. The model is `--refresh-model`: by default
   "tiny" (2 layers, hidden 128, 2 heads, FFN 512: REALM's local launcher reader and the
   project's scratch default; fp32, faster than bf16 at this width), so that 2 x 100 steps fit
   in the run; "bench" is the 6-layer model above (bf16), 10-20 s a step here. On a machine
   without spare cores the slowdown is about the refresh's compute share, (corpus embedding time
   alone) / (refresh-every x step time), which is printed too: it depends on corpus size and
   interval much more than on the model, since both sides scale with the model's cost per token.

Caveat for a shared 2-CPU machine: other jobs stretch individual steps; the load average is
printed before and after each part. The peer's environment: a venv at `--peer-venv` (default
.bench/hf457-venv, created on first use, ~20 s) holding transformers 4.57.1, huggingface-hub
<1.0 and tokenizers 0.22 (`pip install --no-deps`), plus a .pth line that appends this venv's
site-packages, so torch 2.13, numpy, safetensors and faiss are the very same installation
(packages of its own shadow ours).

Run:

    .venv/bin/python benchmarks/realm_step.py            # the issue's figures (~13 min on the shared 2 cores)
    .venv/bin/python benchmarks/realm_step.py --quick    # smoke test: small shapes, tiny model (~1-2 min)
    .venv/bin/python benchmarks/realm_step.py --only refresh --refresh-model bench   # the 6-layer model (~1 h)
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))
from tag_entities import cpu_name, loadavg, matmul_peak  # noqa: E402

HF_VERSION = "4.57.1"
PEER_PINS = [f"transformers=={HF_VERSION}", "huggingface-hub>=0.34,<1.0", "tokenizers>=0.22,<=0.23.0"]
PHASES = ("mips", "retriever_fwd", "encoder_fwd", "encoder_bwd", "retriever_bwd", "optimizer")
BENCH_BERT = {"num_hidden_layers": 6, "hidden_size": 384, "num_attention_heads": 12, "intermediate_size": 1536}
TINY_BERT = {"num_hidden_layers": 2, "hidden_size": 128, "num_attention_heads": 2, "intermediate_size": 512}
#: --quick: a tiny model and few steps everywhere (explicit flags still win).
QUICK = {"bert": "tiny", "b": 2, "k": 4, "qlen": 32, "clen": 64, "masks": 4, "mips_n": 20000, "warmup": 1, "reps": 1,
         "refresh_docs": 200, "refresh_every": 5, "refresh_steps": 15}
MODELS = {"bench": BENCH_BERT, "tiny": TINY_BERT}


# ---------------------------------------------------------------------------------------------
# Shared with the peer process (which imports this module): inputs, step, timing. Only stdlib,
# numpy, torch and faiss here; everything of the project is imported inside functions.


def synthetic_inputs(seed: int, b: int, k: int, qlen: int, clen: int, masks: int, vocab: int,
                     ids: dict[str, int], title: int = 8) -> dict[str, torch.Tensor]:
    """Seeded token ids in the peer's layout: queries [b, qlen], candidates [b, k, clen] (the null
    document at index 0), joint rows [b, k, qlen + clen], mask positions/targets [b, masks]."""
    rng = np.random.default_rng(seed)
    cls, sep, pad, mask_id = ids["cls"], ids["sep"], ids["pad"], ids["mask"]
    word = lambda *shape: rng.integers(1000, vocab, size=shape, dtype=np.int64)  # noqa: E731
    q = np.concatenate([np.full((b, 1), cls), word(b, qlen - 2), np.full((b, 1), sep)], axis=1)
    positions = np.stack([np.sort(rng.choice(np.arange(1, qlen - 1), size=masks, replace=False)) for _ in range(b)])
    targets = word(b, masks)
    for i in range(b):
        q[i, positions[i]] = mask_id
    # candidates: [CLS] title [SEP] body [SEP], segment 1 after the first [SEP]; null: [CLS] [SEP] [SEP]
    body_len = clen - title - 3
    cand = np.full((b, k, clen), pad)
    cand_mask = np.zeros((b, k, clen), dtype=np.int64)
    cand_types = np.zeros((b, k, clen), dtype=np.int64)
    cand[:, 0, :3] = [cls, sep, sep]
    cand_mask[:, 0, :3] = 1
    cand_types[:, 0, 2] = 1
    cand[:, 1:, 0], cand[:, 1:, title + 1], cand[:, 1:, clen - 1] = cls, sep, sep
    cand[:, 1:, 1: title + 1] = word(b, k - 1, title)
    cand[:, 1:, title + 2: clen - 1] = word(b, k - 1, body_len)
    cand_mask[:, 1:] = 1
    cand_types[:, 1:, title + 2:] = 1
    # reader: [CLS] x [SEP] body [SEP] (null: [CLS] x [SEP] [SEP]); segment 1 from the body on
    jlen = qlen + clen
    joint = np.full((b, k, jlen), pad)
    joint_mask = np.zeros((b, k, jlen), dtype=np.int64)
    joint_types = np.zeros((b, k, jlen), dtype=np.int64)
    joint[:, :, :qlen] = q[:, None, :]
    joint[:, 0, qlen] = sep
    joint_mask[:, 0, : qlen + 1] = 1
    joint_types[:, 0, qlen] = 1
    joint[:, 1:, qlen: jlen - 1] = word(b, k - 1, clen - 1)
    joint[:, 1:, jlen - 1] = sep
    joint_mask[:, 1:] = 1
    joint_types[:, 1:, qlen:] = 1
    labels = np.full((b, jlen), -100)
    for i in range(b):
        labels[i, positions[i]] = targets[i]
    out = {"query_ids": q, "query_mask": np.ones_like(q), "query_types": np.zeros_like(q),
           "cand_ids": cand, "cand_mask": cand_mask, "cand_types": cand_types,
           "joint_ids": joint, "joint_mask": joint_mask, "joint_types": joint_types,
           "positions": positions, "targets": targets, "labels": labels}
    return {name: torch.from_numpy(np.ascontiguousarray(v, dtype=np.int64)) for name, v in out.items()}


def mips_index(n: int, dim: int, seed: int):
    """FAISS IndexFlatIP over n seeded random unit vectors (the same in both processes)."""
    import faiss

    vectors = np.random.default_rng(seed).standard_normal((n, dim), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    index = faiss.IndexFlatIP(dim)
    index.add(vectors)
    return index, vectors


def max_rss_gb() -> float:
    """This process's peak resident memory so far."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def trim_rss_gb() -> float:
    """Hand freed heap memory back to the system (glibc malloc_trim); this process's RSS now."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 2**20
    return float("nan")


def mem_available_gb() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 2**20
    return float("nan")


def set_threads(n: int) -> None:
    import faiss

    torch.set_num_threads(n)
    faiss.omp_set_num_threads(n)


def no_decay(name: str) -> bool:
    """BERT's rule (realm_core.training.optim): no weight decay on biases and LayerNorm weights."""
    return name.endswith("bias") or "layernorm" in name.lower().replace("_", "")


def adamw(named_params, lr: float = 1e-4, weight_decay: float = 0.01) -> tuple[torch.optim.Optimizer, list]:
    """AdamW as build_optimizer makes it (two groups, eps 1e-6), over unique trainable params."""
    seen, decay, skip = set(), [], []
    for name, p in named_params:
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))
        (skip if no_decay(name) else decay).append(p)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay}, {"params": skip, "weight_decay": 0.0}],
                            lr=lr, eps=1e-6, betas=(0.9, 0.999))
    return opt, decay + skip


def autocast(precision: str):
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")


def train_step(ad, opt, params: list, precision: str, split: bool) -> dict[str, float]:
    """One optimizer step of adapter `ad`; phase seconds (see the module docstring) and the loss."""
    ph: dict[str, float] = {}
    t0 = time.perf_counter()
    ad.mips(precision)
    t1 = time.perf_counter()
    ph["mips"] = t1 - t0
    if split:
        with autocast(precision):
            scores = ad.scores()
        t2 = time.perf_counter()
        detached = scores.detach().requires_grad_(True)
        with autocast(precision):
            loss = ad.loss(detached)
        t3 = time.perf_counter()
        loss.backward()
        t4 = time.perf_counter()
        scores.backward(detached.grad)
        t5 = time.perf_counter()
        ph.update(retriever_fwd=t2 - t1, encoder_fwd=t3 - t2, encoder_bwd=t4 - t3, retriever_bwd=t5 - t4)
    else:
        with autocast(precision):
            loss = ad.full()
        loss.backward()
        t5 = time.perf_counter()
        ph["fwd_bwd"] = t5 - t1
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)
    t6 = time.perf_counter()
    ph["optimizer"] = t6 - t5
    ph["total"] = t6 - t0
    ph["loss"] = float(loss.detach())
    return ph


def check_equal(ad, opt, params: list) -> dict:
    """fp32, eval mode (no dropout): loss and scores, one AdamW step, the loss again."""
    ad.train(False)
    try:
        with torch.no_grad():
            loss0 = float(ad.full())
            scores = ad.scores().float()
        train_step(ad, opt, params, "fp32", split=False)
        with torch.no_grad():
            loss1 = float(ad.full())
    finally:
        ad.train(True)
    return {"loss": loss0, "loss_after_step": loss1, "scores": scores.tolist()}


def step_flops(bert: dict, b: int, k: int, qlen: int, clen: int, masks: int, vocab: int, peer: bool) -> dict:
    """Analytic forward FLOPs per step by part (see the module docstring)."""
    layers, d, ff = bert["num_hidden_layers"], bert["hidden_size"], bert["intermediate_size"]
    p_mm = layers * (4 * d * d + 2 * d * ff)
    seq = lambda n, t: n * (2 * p_mm * t + layers * 4 * d * t * t + 2 * (d * d + d * 128))  # noqa: E731
    docs = b * k if peer else b * (k - 1) + 1
    jlen = qlen + clen
    scored = b * k * (jlen if peer else masks)
    return {"retriever": seq(b, qlen) + seq(docs, clen), "encoder": seq(b * k, jlen),
            "mlm_head": scored * 2 * (d * d + d * vocab)}


# ---------------------------------------------------------------------------------------------
# Ours


class OursAdapter:
    """Our RealmModel on the synthetic inputs, with LiveIndex MIPS."""

    def __init__(self, model, live, x: dict[str, torch.Tensor], k: int) -> None:
        self.model, self.live, self.k = model, live, k
        b = x["query_ids"].size(0)
        self.query = {"input_ids": x["query_ids"], "attention_mask": x["query_mask"], "token_type_ids": x["query_types"]}
        # B*(k-1) retrieved documents, then one null document row (RealmModel.forward's layout)
        docs = lambda t: torch.cat([t[:, 1:].reshape(b * (k - 1), -1), t[0, :1]])  # noqa: E731
        self.documents = {"input_ids": docs(x["cand_ids"]), "attention_mask": docs(x["cand_mask"]),
                          "token_type_ids": docs(x["cand_types"])}
        flat = lambda t: t.reshape(b * k, -1)  # noqa: E731
        self.joint = {"input_ids": flat(x["joint_ids"]), "attention_mask": flat(x["joint_mask"]),
                      "token_type_ids": flat(x["joint_types"])}
        self.positions, self.targets = x["positions"], x["targets"]

    def train(self, mode: bool) -> None:
        self.model.train(mode)

    def mips(self, precision: str):
        return self.live.search(self.query, self.k, precision)

    def scores(self) -> torch.Tensor:  # = the retriever half of RealmModel.forward
        b, k, retriever = self.positions.size(0), self.k, self.model.retriever
        q = retriever.encode_queries(**self.query)
        d = retriever.encode_documents(**self.documents)
        cand, null = d[:-1].view(b, k - 1, -1), d[-1]
        return torch.cat([(q @ null).unsqueeze(1), torch.einsum("bd,bkd->bk", q, cand)], dim=1)

    def loss(self, scores: torch.Tensor) -> torch.Tensor:  # = the reader half + marginals + realm_loss
        from realm_core.training.realm import marginals, realm_loss

        b = self.positions.size(0)
        logits = self.model.encoder(**self.joint, positions=self.positions.repeat_interleave(self.k, dim=0))
        return realm_loss(marginals(scores, logits.view(b, self.k, self.positions.size(1), -1), self.targets))

    def full(self) -> torch.Tensor:
        from realm_core.training.realm import marginals, realm_loss

        scores, logits = self.model(self.query, self.documents, self.joint, self.positions, self.k)
        return realm_loss(marginals(scores, logits, self.targets))


def build_ours(bert: dict, seed: int, qlen: int, clen: int, dropout: float):
    """RealmModel(RetrieverEmbedder (shared towers, projection LayerNorm eps 1e-12), KnowledgeAugEncoder)."""
    from realm_core.config import DEFAULT_TOKENIZER
    from realm_core.modeling.embedder import RetrieverEmbedder
    from realm_core.modeling.encoder import KnowledgeAugEncoder
    from realm_core.training.realm import RealmModel

    cfg = dict(bert, hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout)
    retriever = RetrieverEmbedder.from_init("scratch", scratch_config=cfg, max_query_len=qlen, max_doc_len=clen,
                                            dropout=dropout, layer_norm_eps=1e-12, tokenizer=DEFAULT_TOKENIZER,
                                            seed=seed)
    encoder = KnowledgeAugEncoder.from_init("scratch", tokenizer=DEFAULT_TOKENIZER, scratch_config=cfg,
                                            max_query_len=qlen, max_candidate_len=clen, seed=seed + 1)
    return RealmModel(retriever, encoder)


def snapshot_live(retriever, vectors: np.ndarray, version: int = 0, step: int = 0):
    """A LiveIndex whose snapshot is a frozen copy of `retriever` (what a refresh installs)."""
    from realm_core.training.realm_index import LiveIndex

    snap = copy.deepcopy(retriever)
    snap.eval()
    return LiveIndex(version=version, step=step, snapshot=snap, vectors=vectors)


def hf_state(model) -> dict[str, torch.Tensor]:
    """Our weights under the HF REALM names (scorer.*: RealmScorer, encoder.*: RealmKnowledgeAugEncoder)."""
    out = {}
    for name, t in model.retriever.state_dict().items():
        if name.startswith("query.bert."):
            new = "embedder.realm." + name[len("query.bert."):]
        elif name.startswith("query.dense."):
            new = "embedder.cls.dense." + name[len("query.dense."):]
        elif name.startswith("query.layer_norm."):
            new = "embedder.cls.LayerNorm." + name[len("query.layer_norm."):]
        else:
            raise SystemExit(f"unexpected retriever weight {name}")
        out["scorer." + new] = t
    for name, t in model.encoder.state_dict().items():
        if name.startswith("mlm.bert."):
            new = "realm." + name[len("mlm.bert."):]
        elif name.startswith("mlm.cls."):
            new = "cls." + name[len("mlm.cls."):]
        else:
            raise SystemExit(f"unexpected encoder weight {name}")
        if new in ("cls.predictions.decoder.weight", "cls.predictions.decoder.bias"):
            continue  # tied: the word embeddings and cls.predictions.bias
        out["encoder." + new] = t
    return {k: v.detach().clone().contiguous() for k, v in out.items()}  # no shared storage (safetensors)


# ---------------------------------------------------------------------------------------------
# The peer: transformers 4.57.1 in its own venv, run as a subprocess

def _load_parts() -> None:
    """The peer and refresh code (benchmarks/realm_step_parts.py), imported when main runs."""
    import realm_step_parts as parts

    g = globals()
    for name, value in vars(parts).items():
        if not name.startswith("__") and name not in g:
            g[name] = value



def main() -> None:
    _load_parts()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny model, few steps: a smoke test")
    p.add_argument("--only", choices=["all", "step", "refresh"], default="all", help="which parts to run")
    p.add_argument("--bert", choices=sorted(MODELS), default=None,
                   help="model of the step comparison: bench = 6L H384 (default), tiny = 2L H128")
    p.add_argument("--b", type=int, default=None, help="queries per step (default 4)")
    p.add_argument("--k", type=int, default=None, help="candidates per query, the null document included (default 8)")
    p.add_argument("--qlen", type=int, default=None, help="query length (default 96)")
    p.add_argument("--clen", type=int, default=None, help="candidate length (default 288)")
    p.add_argument("--masks", type=int, default=None, help="masks per query (default 10)")
    p.add_argument("--dropout", type=float, default=0.0,
                   help="BERT (and our projection) dropout while timing (0.1 adds ~3 GB to the peer's ~13 GB)")
    p.add_argument("--mips-n", type=int, default=None, help="vectors in the MIPS index (default 100000)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 1)")
    p.add_argument("--reps", type=int, default=None, help="instrumented timed steps (default 3)")
    p.add_argument("--plain-reps", type=int, default=0, help="plain (unsplit) timed steps after them, a cross-check")
    p.add_argument("--peer-bf16", action="store_true", help="also time the peer under bf16 autocast")
    p.add_argument("--peer-venv", type=Path, default=ROOT / ".bench" / "hf457-venv", help="the peer's venv")
    p.add_argument("--rebuild-venv", action="store_true", help="recreate the peer venv")
    p.add_argument("--refresh-model", choices=sorted(MODELS), default="tiny",
                   help="model of the refresh-cost part (default tiny: 2L H128)")
    p.add_argument("--refresh-docs", type=int, default=None, help="synthetic corpus size (default 2000)")
    p.add_argument("--refresh-every", type=int, default=None, help="refresh interval in steps (default 50)")
    p.add_argument("--refresh-steps", type=int, default=None, help="steps per arm (default 100)")
    p.add_argument("--refresh-rounds", type=int, default=1, help="never/async pairs, interleaved")
    p.add_argument("--refresh-precision", choices=["fp32", "bf16"], default=None,
                   help="training and refresh precision in the refresh part (default: fp32 for tiny, bf16 for bench,"
                        " the faster one here)")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="torch and faiss threads (both processes)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--work", type=Path, default=ROOT / "benchmarks" / "_work" / "realm_step",
                   help="scratch directory: weights for the peer, its script, summary.json")
    args = p.parse_args()
    defaults = {"bert": "bench", "b": 4, "k": 8, "qlen": 96, "clen": 288, "masks": 10, "mips_n": 100_000, "warmup": 1,
                "reps": 3, "refresh_docs": 2000, "refresh_every": 50, "refresh_steps": 100}
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, QUICK.get(key, value) if args.quick else value)
    if args.refresh_steps <= args.refresh_every:
        raise SystemExit("--refresh-steps must exceed --refresh-every (the window starts after the first interval)")
    if args.refresh_precision is None:
        args.refresh_precision = "fp32" if args.refresh_model == "tiny" else "bf16"
    args.bert_cfg = MODELS[args.bert]
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    args.work.mkdir(parents=True, exist_ok=True)
    set_threads(args.threads)
    t_start = time.perf_counter()
    peak32, peak16 = matmul_peak(torch.float32, 2048, 4), matmul_peak(torch.bfloat16, 2048, 4)
    print(f"machine: {cpu_name()}, os.cpu_count()={os.cpu_count()}, torch {torch.__version__} "
          f"({torch.backends.cpu.get_cpu_capability()}), torch threads={torch.get_num_threads()}, faiss threads={args.threads}")
    print(f"load average before: {loadavg()}; matmul peak (2048^3, best of 4): fp32 {peak32:.1f} GFLOP/s, "
          f"bf16 {peak16:.1f} GFLOP/s")
    summary: dict = {"machine": cpu_name(), "cpus": os.cpu_count(), "threads": torch.get_num_threads(),
                     "torch": torch.__version__, "load_before": loadavg(), "peak_gflops": {"fp32": peak32, "bf16": peak16},
                     "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}}

    from realm_core.config import DEFAULT_TOKENIZER
    from realm_core.pretrained import load_tokenizer

    tok = load_tokenizer(DEFAULT_TOKENIZER)
    ids = {"cls": tok.cls_token_id, "sep": tok.sep_token_id, "pad": tok.pad_token_id, "mask": tok.mask_token_id}
    vocab = len(tok)
    b, k = args.b, args.k

    if args.only in ("all", "step"):
        py = ensure_peer_venv(args.peer_venv, args.rebuild_venv)
        print(f"\n== step: B={b}, k={k} (null + {k - 1}), query {args.qlen}, candidate {args.clen}, joint "
              f"{args.qlen + args.clen}, M={args.masks}; BERT {args.bert_cfg}, vocab {vocab}; MIPS over "
              f"{args.mips_n:,} x 128; dropout {args.dropout}")
        torch.manual_seed(args.seed)
        model = build_ours(args.bert_cfg, args.seed, args.qlen, args.clen, args.dropout)
        x = synthetic_inputs(args.seed, b, k, args.qlen, args.clen, args.masks, vocab, ids)
        from safetensors.torch import save_file

        weights = args.work / "weights_and_inputs.safetensors"
        save_file({**hf_state(model), **{f"input.{n}": v for n, v in x.items()}}, str(weights))
        _, vectors = mips_index(args.mips_n, 128, args.seed)
        ad = OursAdapter(model, snapshot_live(model.retriever, vectors), x, k)
        opt, params = adamw(model.named_parameters())
        n_params = sum(p.numel() for p in params)
        print(f"ours: {n_params / 1e6:.2f} M trainable parameters, attention "
              f"{model.encoder.mlm.config._attn_implementation}")
        print(f"peer: transformers {HF_VERSION} in {args.peer_venv} (load {loadavg()}; this process "
              f"{trim_rss_gb():.1f} GB resident, {mem_available_gb():.1f} GB available)")
        t = time.perf_counter()
        peer_proc = PeerProcess(args, py, weights, vocab, ids["pad"])
        peer = dict(peer_proc.info)
        print(f"peer ready in {time.perf_counter() - t:.1f} s: attention {peer['attn_implementation']}, threads "
              f"{peer['threads']}, {peer['params'] / 1e6:.2f} M trainable parameters ({peer['params_unused'] / 1e6:.2f} M "
              f"of them get no gradient), {peer['versions']['transformers_file']}")
        try:
            ours = {"equal": check_equal(ad, opt, params)}
            print(f"  [ours] loss (eval, fp32) {ours['equal']['loss']:.6f}; after one AdamW step "
                  f"{ours['equal']['loss_after_step']:.6f}")
            peer["equal"] = peer_proc.ask(op="check")
            print(f"  [peer] loss (eval, fp32) {peer['equal']['loss']:.6f}; after one AdamW step "
                  f"{peer['equal']['loss_after_step']:.6f}")
            timing = compare_steps(args, ad, opt, params, peer_proc)
        finally:
            peer_proc.close()
        ours["timing"], peer["timing"] = timing["ours"], timing["peer"]
        print(f"peak RSS: ours {ours['timing']['fp32']['max_rss_gb']:.1f} GB, peer "
              f"{peer['timing']['fp32']['max_rss_gb']:.1f} GB")
        eq_o, eq_p = ours["equal"], peer["equal"]
        d_loss = abs(eq_o["loss"] - eq_p["loss"])
        d_loss1 = abs(eq_o["loss_after_step"] - eq_p["loss_after_step"])
        d_scores = float(np.max(np.abs(np.array(eq_o["scores"]) - np.array(eq_p["scores"]))))
        print(f"\n== equality (fp32, eval mode)\nloss: ours {eq_o['loss']:.6f}, peer {eq_p['loss']:.6f}, "
              f"|diff| {d_loss:.2e} ({'met' if d_loss <= 1e-4 else 'NOT met'}, target <= 1e-4); max |score diff| "
              f"{d_scores:.2e}\nafter one identical AdamW step: ours {eq_o['loss_after_step']:.6f}, peer "
              f"{eq_p['loss_after_step']:.6f}, |diff| {d_loss1:.2e}")
        fl_o = step_flops(args.bert_cfg, b, k, args.qlen, args.clen, args.masks, vocab, peer=False)
        fl_p = step_flops(args.bert_cfg, b, k, args.qlen, args.clen, args.masks, vocab, peer=True)
        tot_o, tot_p = 3 * sum(fl_o.values()), 3 * sum(fl_p.values())
        print(f"\n== step time (median of {args.reps} instrumented steps, interleaved; seconds)")
        rows = [("ours fp32", ours["timing"]["fp32"], tot_o, peak32), ("ours bf16", ours["timing"]["bf16"], tot_o, peak16)]
        rows += [(f"peer {pr}", peer["timing"][pr], tot_p, peak32 if pr == "fp32" else peak16) for pr in peer["timing"]]
        print(f"{'':<10} {'step':>7} {'best':>6} " + " ".join(f"{ph:>13}" for ph in PHASES)
              + f" {'GFLOP':>6} {'GFLOP/s':>7} {'% peak':>6}  all steps; plain steps")
        for name, t, flops, peak in rows:
            rate = flops / t["step_s"] / 1e9
            print(f"{name:<10} {t['step_s']:7.2f} {t['best_s']:6.2f} " + " ".join(f"{t[ph]:13.3f}" for ph in PHASES)
                  + f" {flops / 1e9:6.0f} {rate:7.1f} {100 * rate / peak:5.0f}%  {t['steps_s']}; {t['plain_steps_s']}")
        print(f"(GFLOP/s from the median step; % of the matmul peak measured at the start, {peak32:.0f} / "
              f"{peak16:.0f} GFLOP/s fp32 / bf16)")
        print("analytic forward GFLOP per step (x3 with backward): ours "
              + ", ".join(f"{n} {v / 1e9:.1f}" for n, v in fl_o.items()) + "; peer "
              + ", ".join(f"{n} {v / 1e9:.1f}" for n, v in fl_p.items()) + f"; work ratio ours/peer {tot_o / tot_p:.3f}")
        r32 = ours["timing"]["fp32"]["step_s"] / peer["timing"]["fp32"]["step_s"]
        r16 = ours["timing"]["bf16"]["step_s"] / peer["timing"]["fp32"]["step_s"]
        paired = lambda a, b: [round(x / y, 3) for x, y in zip(a["steps_s"], b["steps_s"])]  # noqa: E731
        p32, p16 = paired(ours["timing"]["fp32"], peer["timing"]["fp32"]), paired(ours["timing"]["bf16"], peer["timing"]["fp32"])
        best = lambda a, b: round(ours["timing"][a]["best_s"] / peer["timing"][b]["best_s"], 3)  # noqa: E731
        print(f"ratio ours/peer, fp32/fp32: {fmt_ratio(r32, 0.2)}; per round {p32}; best/best {best('fp32', 'fp32')}")
        print(f"ratio ours/peer, ours bf16 / peer fp32: {fmt_ratio(r16, 0.2)}; per round {p16}; best/best "
              f"{best('bf16', 'fp32')}")
        if "bf16" in peer["timing"]:
            print(f"ratio ours/peer, bf16/bf16: "
                  f"{fmt_ratio(ours['timing']['bf16']['step_s'] / peer['timing']['bf16']['step_s'], 0.2)}")
        summary["step"] = {"ours": ours, "peer": peer, "loss_diff": d_loss, "loss_after_step_diff": d_loss1,
                           "max_score_diff": d_scores, "flops_fwd": {"ours": fl_o, "peer": fl_p},
                           "ratio_fp32": r32, "ratio_ours_bf16_vs_peer_fp32": r16, "ratio_fp32_rounds": p32,
                           "ratio_ours_bf16_vs_peer_fp32_rounds": p16}
        end32, end16 = matmul_peak(torch.float32, 2048, 4), matmul_peak(torch.bfloat16, 2048, 4)
        summary["peak_gflops_after_step"] = {"fp32": end32, "bf16": end16}
        print(f"matmul peak again: fp32 {end32:.1f} GFLOP/s, bf16 {end16:.1f} GFLOP/s (load {loadavg()})")
        del model, ad, opt, params

    if args.only in ("all", "refresh"):
        print(f"\n== async refresh cost (load {loadavg()})")
        res = refresh_cost(args, ids, vocab)
        verdict = lambda x: f"{100 * x:.1f} % ({'met' if x <= 0.10 else 'NOT met'}, target <= 10 %)"  # noqa: E731
        print(f"slowdown with an async refresh every {res['every']} steps vs never:\n"
              f"  throughput, arm vs arm (median of rounds {[round(100 * x, 1) for x in res['slowdown_rounds']]} %): "
              f"{verdict(res['slowdown'])}\n"
              f"  local, within the async arms (median): {verdict(res['local_slowdown'])}\n"
              f"  the corpus embedding alone would be {100 * res['compute_share']:.1f} % of an interval "
              f"({res['embed_alone_s']:.1f} s vs {res['every']} steps)")
        summary["refresh"] = res
    summary["load_after"] = loadavg()
    print(f"\nload average after: {loadavg()}; total {time.perf_counter() - t_start:.0f} s")
    (args.work / "summary.json").write_text(json.dumps(summary, indent=1, default=str) + "\n")
    print(f"summary: {args.work / 'summary.json'}")


if __name__ == "__main__":
    main()
