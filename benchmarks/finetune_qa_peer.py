"""The peer of `benchmarks/finetune_qa.py`: transformers 4.57.1 `RealmForOpenQA` in realm_step.py's
venv, run as a step server in a subprocess (split out to keep each module under 600 lines)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import realm_step_parts as parts
from realm_step_parts import ensure_peer_venv  # noqa: F401  (re-exported for finetune_qa.py)

# ---------------------------------------------------------------------------------------------
# The peer: RealmForOpenQA in the transformers 4.57.1 venv, a step server on stdin / stdout

PEER_SOURCE = r'''
"""Peer side of benchmarks/finetune_qa.py (written by it; runs in the transformers 4.57.1 venv)."""
import json, sys, time
import numpy as np
import torch

spec = json.loads(open(sys.argv[1]).read())
sys.path.insert(0, spec["bench_dir"])
import finetune_qa as fq
import realm_step as rs
import pyarrow.parquet as pq
import transformers
from safetensors.torch import load_file
from transformers import AutoTokenizer
from transformers.models.deprecated.realm import RealmConfig, RealmForOpenQA, RealmRetriever

rs.set_threads(spec["threads"])
torch.manual_seed(spec["seed"])
transformers.logging.set_verbosity_error()
b = spec["bert"]
config = RealmConfig(vocab_size=b["vocab_size"], hidden_size=b["hidden_size"], num_hidden_layers=b["num_hidden_layers"],
                     num_attention_heads=b["num_attention_heads"], intermediate_size=b["intermediate_size"],
                     hidden_act=b["hidden_act"], hidden_dropout_prob=b["hidden_dropout_prob"],
                     attention_probs_dropout_prob=b["attention_probs_dropout_prob"],
                     max_position_embeddings=b["max_position_embeddings"], type_vocab_size=b["type_vocab_size"],
                     layer_norm_eps=b["layer_norm_eps"], retriever_proj_size=spec["proj_size"],
                     span_hidden_size=spec["span_hidden"], max_span_width=spec["max_span_width"],
                     reader_layer_norm_eps=spec["reader_ln_eps"], reader_beam_size=spec["reader_beam"],
                     reader_seq_len=spec["seq_len"], num_block_records=spec["n_blocks"],
                     searcher_beam_size=spec["retriever_beam"], pad_token_id=b["pad_token_id"])
tok = AutoTokenizer.from_pretrained(spec["tokenizer"])
texts = pq.read_table(spec["blocks"], columns=["text"]).column(0).to_pylist()
records = np.array([t.encode("utf-8") for t in texts], dtype=object)


class TimedRetriever:
    """RealmRetriever with its seconds (decode + tokenise the beam + block_has_answer) and last call."""

    def __init__(self, inner):
        self.inner, self.seconds, self.last = inner, 0.0, None

    def __call__(self, block_ids, *a, **kw):
        t = time.perf_counter()
        out = self.inner(block_ids, *a, **kw)
        self.seconds += time.perf_counter() - t
        self.last = (block_ids, out)
        return out


retriever = TimedRetriever(RealmRetriever(records, tok))
model = RealmForOpenQA(config, retriever=retriever)
missing, unexpected = model.load_state_dict(load_file(spec["weights"]), strict=False)
# the embedder's and the reader's MLM heads and the reader's pooler are never used by RealmForOpenQA
missing = [m for m in missing if not m.startswith(("embedder.cls.predictions.", "reader.realm.pooler.", "reader.cls."))]
if missing or unexpected:
    raise SystemExit(f"peer weights: missing {missing[:5]}, unexpected {unexpected[:5]}")
model.embedder.cls.LayerNorm.eps = spec["proj_ln_eps"]  # RealmConfig's single layer_norm_eps is BERT's (1e-12)
timer = fq.ReaderTimer(model.reader)
named = list(model.named_parameters())
opt, params = rs.adamw(named, lr=spec["lr"])
questions = spec["questions"]
captured = {}
model.embedder.register_forward_hook(lambda m, a, o: captured.__setitem__("q", o.projected_score.detach().clone()))
model.reader.register_forward_pre_hook(
    lambda m, a, kw: captured.__setitem__("relevance", kw["relevance_score"].detach().clone()), with_kwargs=True)
model.reader.qa_outputs.register_forward_hook(  # cloned: RealmReader adds the relevance in place afterwards
    lambda m, a, o: captured.__setitem__("spans", [o[0].detach().clone(), o[1].clone(), o[2].clone()]))


def inputs(i):
    ids = torch.tensor([questions[i]["query_ids"]])
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "token_type_ids": torch.zeros_like(ids)}


def reset():
    timer.reset()
    retriever.seconds = 0.0


def train(ids, precision):
    model.train()
    reset()
    times, losses = [], []
    for i in ids:
        t = time.perf_counter()
        with rs.autocast(precision):
            out = model(**inputs(i), answer_ids=questions[i]["answer_ids"], return_dict=True)
        loss = out.reader_output.loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t)
        losses.append(float(loss.detach()))
    return {"times": times, "losses": losses, "retriever_s": retriever.seconds, "reader": timer.state()}


def predict(ids, precision):
    model.eval()
    reset()
    times, answers = [], []
    with torch.no_grad():
        for i in ids:
            t = time.perf_counter()
            with rs.autocast(precision):
                out = model(**inputs(i), return_dict=True)
            text = tok.decode(out.predicted_answer_ids, skip_special_tokens=True)
            times.append(time.perf_counter() - t)
            r = out.reader_output
            block = int(retriever.last[0][int(r.block_idx)])
            answers.append({"text": text, "block": block})
    model.train()
    return {"times": times, "answers": answers, "retriever_s": retriever.seconds, "reader": timer.state()}


def check(i, path):
    """fp32, dropout off (every submodule in eval mode) but the training beam (top-level training flag)."""
    model.eval()
    model.training = True
    with torch.no_grad():
        out = model(**inputs(i), answer_ids=questions[i]["answer_ids"], return_dict=True).reader_output
    model.train()
    block_ids, (has, _, _, concat) = retriever.last
    logits, starts, ends = captured["spans"]
    k = spec["reader_beam"]
    rows = [[int(t) for t, m in zip(concat.input_ids[j].tolist(), concat.attention_mask[j].tolist()) if m]
            for j in range(k)]
    np.savez(path, q=captured["q"][0].numpy(), block_ids=block_ids.numpy(), relevance=captured["relevance"].numpy(),
             has_answer=np.asarray(has, dtype=bool), span_logits=logits.numpy(), span_starts=starts.numpy(),
             span_ends=ends.numpy())
    return {"loss": float(out.loss), "retriever_loss": float(out.retriever_loss), "reader_loss": float(out.reader_loss),
            "reader_inputs": rows, "arrays": str(path)}


def reply(obj):
    print("@@" + json.dumps(obj), flush=True)


reply({"versions": {"transformers": transformers.__version__, "torch": torch.__version__,
                    "transformers_file": transformers.__file__},
       "attn_implementation": model.config._attn_implementation, "threads": torch.get_num_threads(),
       "params": sum(p.numel() for p in params)})
for line in sys.stdin:
    cmd = json.loads(line)
    if cmd["op"] == "quit":
        reply({})
        break
    if cmd["op"] == "check":
        out = check(cmd["question"], cmd["path"])
    elif cmd["op"] == "train":
        out = train(cmd["questions"], cmd["precision"])
    else:
        out = predict(cmd["questions"], cmd["precision"])
    out.update(rss_gb=rs.trim_rss_gb(), max_rss_gb=rs.max_rss_gb())
    reply(out)
'''


class Peer(parts.PeerProcess):
    """The peer step server (PEER_SOURCE) in the 4.57.1 venv; `ask` (inherited) sends one command
    and returns its reply, `close` ends it."""

    def __init__(self, py: Path, work: Path, spec: dict) -> None:
        (work / "peer_spec.json").write_text(json.dumps(spec))
        script = work / "peer_openqa.py"
        script.write_text(PEER_SOURCE)
        env = parts._env()
        # The peer's own defaults, not this project's: its RealmRetriever tokenises the whole beam in
        # one batch call, which the tokenizers library runs on every core unless told otherwise
        # (scripts/env.sh sets TOKENIZERS_PARALLELISM=false); and the same OpenMP wait policy as ours.
        env.pop("TOKENIZERS_PARALLELISM", None)
        if "OMP_WAIT_POLICY" not in os.environ:
            env.pop("OMP_WAIT_POLICY", None)
        self.proc = subprocess.Popen([str(py), "-W", "ignore", str(script), str(work / "peer_spec.json")],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        self.info = self._read()
