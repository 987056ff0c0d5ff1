"""The peer (transformers 4.57.1 REALM in its own venv) and the async-refresh arm of
`benchmarks/realm_step.py`, split out to keep each module under 600 lines. Run realm_step.py."""

from __future__ import annotations

from realm_step import *  # noqa: F401,F403  (the shared constants, models and timing code)
from realm_step import BENCH, HF_VERSION, PEER_PINS, PHASES, ROOT  # noqa: F401
import copy, json, os, shutil, statistics, subprocess, sys, sysconfig, tempfile, time  # noqa: E401,F401
from pathlib import Path  # noqa: F401

import numpy as np  # noqa: F401
import torch  # noqa: F401

PEER_SOURCE = r'''
"""Peer side of benchmarks/realm_step.py (written by it; runs in the transformers 4.57.1 venv)."""
import copy, json, sys
import torch

spec = json.loads(open(sys.argv[1]).read())
sys.path.insert(0, spec["bench_dir"])
import realm_step as rs  # the shared step / timing code
import transformers
from safetensors.torch import load_file
from transformers.models.deprecated.realm import RealmConfig, RealmKnowledgeAugEncoder, RealmScorer

rs.set_threads(spec["threads"])
torch.manual_seed(spec["seed"])
transformers.logging.set_verbosity_error()
b = spec["bert"]
config = RealmConfig(vocab_size=spec["vocab"], hidden_size=b["hidden_size"], num_hidden_layers=b["num_hidden_layers"],
                     num_attention_heads=b["num_attention_heads"], intermediate_size=b["intermediate_size"],
                     hidden_act="gelu", hidden_dropout_prob=spec["dropout"], attention_probs_dropout_prob=spec["dropout"],
                     max_position_embeddings=spec["max_positions"], layer_norm_eps=1e-12, retriever_proj_size=128,
                     num_candidates=spec["k"], pad_token_id=spec["pad"])
scorer, encoder = RealmScorer(config), RealmKnowledgeAugEncoder(config)
tensors = load_file(spec["weights"])
report = {}
for prefix, module in (("scorer.", scorer), ("encoder.", encoder)):
    state = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
    missing, unexpected = module.load_state_dict(state, strict=False)
    # query_embedder.* is the same module as embedder.*; the pooler of the encoder, the scorer's
    # (unused) MLM head and tied decoders have no counterpart in ours
    missing = [m for m in missing if not m.startswith(("query_embedder.", "embedder.cls.predictions.", "realm.pooler.",
                                                       "cls.predictions.decoder."))]
    if missing or unexpected:
        raise SystemExit(f"peer weights: missing {missing[:5]}, unexpected {unexpected[:5]}")
assert scorer.query_embedder is scorer.embedder
assert encoder.cls.predictions.decoder.weight is encoder.realm.embeddings.word_embeddings.weight
x = {k[len("input."):]: v for k, v in tensors.items() if k.startswith("input.")}
index, _ = rs.mips_index(spec["mips_n"], 128, spec["seed"])


class PeerAdapter:
    def __init__(self):
        self.snapshot = copy.deepcopy(scorer.embedder).eval().requires_grad_(False)

    def train(self, mode):
        scorer.train(mode)
        encoder.train(mode)

    def mips(self, precision):
        with torch.inference_mode(), rs.autocast(precision):
            q = self.snapshot(input_ids=x["query_ids"], attention_mask=x["query_mask"],
                              token_type_ids=x["query_types"]).projected_score
        return index.search(q.float().numpy(), spec["k"])

    def scores(self):
        return scorer(input_ids=x["query_ids"], attention_mask=x["query_mask"], token_type_ids=x["query_types"],
                      candidate_input_ids=x["cand_ids"], candidate_attention_mask=x["cand_mask"],
                      candidate_token_type_ids=x["cand_types"]).relevance_score

    def loss(self, scores):
        labels = x["labels"]
        return encoder(input_ids=x["joint_ids"], attention_mask=x["joint_mask"], token_type_ids=x["joint_types"],
                       relevance_score=scores, labels=labels, mlm_mask=labels != -100).loss

    def full(self):
        return self.loss(self.scores())


ad = PeerAdapter()
named = list(scorer.named_parameters(prefix="scorer")) + list(encoder.named_parameters(prefix="encoder"))
opt, params = rs.adamw(named)


def reply(obj):
    print("@@" + json.dumps(obj), flush=True)


# A step server: the driver sends one JSON command a line and reads one "@@" JSON line back, so
# it can interleave the peer's steps with its own (both see the same momentary load).
reply({"versions": {"transformers": transformers.__version__, "torch": torch.__version__,
                    "transformers_file": transformers.__file__},
       "attn_implementation": scorer.config._attn_implementation, "threads": torch.get_num_threads(),
       "params": sum(p.numel() for p in params),
       # no gradient ever reaches these: the scorer's MLM head (its decoder is not tied) and the
       # reader's pooler; AdamW and the clipping skip them
       "params_unused": sum(p.numel() for n, p in named
                            if n.startswith(("scorer.embedder.cls.predictions.", "encoder.realm.pooler.")))})
for line in sys.stdin:
    cmd = json.loads(line)
    if cmd["op"] == "quit":
        reply({})
        break
    if cmd["op"] == "check":
        out = rs.check_equal(ad, opt, params)
    else:
        ad.train(True)
        out = rs.train_step(ad, opt, params, cmd["precision"], cmd["split"])
    out.update(rss_gb=rs.trim_rss_gb(), max_rss_gb=rs.max_rss_gb())
    reply(out)
'''


def ensure_peer_venv(path: Path, rebuild: bool = False) -> Path:
    """The transformers 4.57.1 venv (created once); returns its python."""
    py = path / "bin" / "python"
    ours = sysconfig.get_paths()["purelib"]
    marker = path / "realm_step.json"
    want = {"pins": PEER_PINS, "shared_site_packages": ours, "torch": torch.__version__}
    if not rebuild and py.exists() and marker.exists() and json.loads(marker.read_text()) == want:
        return py
    print(f"creating the peer venv {path} ({', '.join(PEER_PINS)}; torch and the rest shared from {ours})")
    shutil.rmtree(path, ignore_errors=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True)
    subprocess.run([str(py), "-m", "pip", "install", "--disable-pip-version-check", "-q", "--no-deps", *PEER_PINS],
                   check=True)
    site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    # Appended after the venv's own site-packages: its transformers/tokenizers/hub shadow ours.
    (Path(site) / "zz_realm_step_shared.pth").write_text(ours + "\n")
    probe = ("import json, torch, transformers, tokenizers, huggingface_hub\n"
             "from transformers.models.deprecated.realm import RealmScorer, RealmKnowledgeAugEncoder\n"
             "print(json.dumps([transformers.__version__, torch.__version__, tokenizers.__version__,"
             " huggingface_hub.__version__, transformers.__file__]))")
    got = json.loads(subprocess.run([str(py), "-W", "ignore", "-c", probe], check=True, capture_output=True,
                                    text=True, env=_env()).stdout.strip().splitlines()[-1])
    if got[0] != HF_VERSION or got[1] != torch.__version__ or not got[4].startswith(str(path)):
        raise SystemExit(f"peer venv {path}: unexpected versions {got}")
    print(f"peer venv ready: transformers {got[0]}, torch {got[1]}, tokenizers {got[2]}, huggingface-hub {got[3]}")
    marker.write_text(json.dumps(want))
    return py


def _env() -> dict[str, str]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONWARNINGS="ignore")
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return env


class PeerProcess:
    """The peer as a step server in its venv (PEER_SOURCE); `ask` sends one command, returns the reply."""

    def __init__(self, args, py: Path, weights: Path, vocab: int, pad: int) -> None:
        spec = {"bench_dir": str(BENCH), "weights": str(weights), "threads": args.threads, "seed": args.seed,
                "bert": args.bert_cfg, "vocab": vocab, "pad": pad, "dropout": args.dropout, "max_positions": 512,
                "k": args.k, "mips_n": args.mips_n}
        (args.work / "peer_spec.json").write_text(json.dumps(spec))
        script = args.work / "peer_realm.py"
        script.write_text(PEER_SOURCE)
        self.proc = subprocess.Popen([str(py), "-W", "ignore", str(script), str(args.work / "peer_spec.json")],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=_env())
        self.info = self._read()

    def _read(self) -> dict:
        for line in self.proc.stdout:
            if line.startswith("@@"):
                return json.loads(line[2:])
            print(f"  [peer] {line.rstrip()}")
        rc = self.proc.wait()
        hint = " (SIGKILL: out of memory? its step needs ~12 GB at the default shapes)" if rc == -9 else ""
        raise SystemExit(f"the peer process ended with status {rc}{hint}")

    def ask(self, **cmd) -> dict:
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.ask(op="quit")
            self.proc.stdin.close()
            self.proc.wait()


def compare_steps(args, ours_ad, opt, params, peer: PeerProcess) -> dict:
    """Warm-up, instrumented and plain steps of every variant, interleaved round by round."""
    variants = [("ours", "fp32"), ("peer", "fp32"), ("ours", "bf16")] + ([("peer", "bf16")] if args.peer_bf16 else [])

    def step(variant, split: bool) -> dict:
        side, precision = variant
        if side == "peer":
            return peer.ask(op="step", precision=precision, split=split)
        ours_ad.train(True)
        r = train_step(ours_ad, opt, params, precision, split)
        r.update(rss_gb=trim_rss_gb(), max_rss_gb=max_rss_gb())  # as the peer does after each step
        return r

    def log(variant, what: str, r: dict) -> None:
        parts = " = " + ", ".join(f"{p} {r[p]:.2f}" for p in PHASES) if "retriever_fwd" in r else ""
        print(f"  [{variant[0]} {variant[1]}] {what}: {r['total']:.2f} s{parts} (load {loadavg()}, RSS "
              f"{r['rss_gb']:.1f} GB, peak {r['max_rss_gb']:.1f} GB)", flush=True)

    out = {v: {"warmup_s": [], "runs": [], "plain_s": []} for v in variants}
    for i in range(args.warmup):
        for v in variants:
            r = step(v, split=False)
            out[v]["warmup_s"].append(r["total"])
            log(v, f"warm-up {i + 1}", r)
    for i in range(args.reps):
        for v in variants[i % len(variants):] + variants[: i % len(variants)]:  # rotate the order each round
            r = step(v, split=True)
            out[v]["runs"].append(r)
            log(v, f"step {i + 1}", r)
    for i in range(args.plain_reps):
        for v in variants:
            r = step(v, split=False)
            out[v]["plain_s"].append(r["total"])
            log(v, f"plain step {i + 1}", r)
    timing = {}
    for (side, precision), t in out.items():
        runs = t["runs"]
        row = {"step_s": statistics.median(r["total"] for r in runs), "best_s": min(r["total"] for r in runs),
               "steps_s": [round(r["total"], 3) for r in runs],
               "warmup_s": [round(x, 3) for x in t["warmup_s"]], "plain_steps_s": [round(x, 3) for x in t["plain_s"]],
               "max_rss_gb": max(r["max_rss_gb"] for r in runs)}
        row.update({p: statistics.median(r[p] for r in runs) for p in PHASES})
        timing.setdefault(side, {})[precision] = row
    return timing


# ---------------------------------------------------------------------------------------------
# Async refresh cost


class _Holder:
    """What Refresher needs of the batch stream: the live index, its version numbers, install()."""

    def __init__(self, live) -> None:
        self.live, self.records = live, []

    def next_version(self) -> int:
        return self.live.version + 1

    def install(self, live, record=None) -> None:
        self.live = live
        if record is not None:
            self.records.append(record)


def refresh_cost(args, ids: dict[str, int], vocab: int) -> dict:
    """Steps/s with an async refresh every `refresh_every` steps vs never (see the docstring)."""
    from realm_core.training.realm_data import Ragged
    from realm_core.training.realm_index import IndexVersions, Refresher, RefreshSchedule, embed_corpus

    bert = MODELS[args.refresh_model]
    b, k, qlen, clen, prec = args.b, args.k, args.qlen, args.clen, args.refresh_precision
    every, total = args.refresh_every, args.refresh_steps
    rng = np.random.default_rng(args.seed + 7)
    title = 8
    n = args.refresh_docs
    docs = np.full((n, clen), ids["sep"], dtype=np.int64)
    docs[:, 0] = ids["cls"]
    docs[:, 1: title + 1] = rng.integers(1000, vocab, (n, title))
    docs[:, title + 2: clen - 1] = rng.integers(1000, vocab, (n, clen - title - 3))
    doc_ids = Ragged(docs.tolist())
    types = np.zeros_like(docs)
    types[:, title + 2:] = 1
    bodies = docs[:, title + 2: clen - 1]  # body wordpieces (the reader's candidate text)
    pools = [synthetic_inputs(args.seed + 100 + i, b, 2, qlen, clen, args.masks, vocab, ids) for i in range(8)]

    def batch(live, step: int) -> OursAdapter:
        x = dict(pools[step % len(pools)])
        query = {"input_ids": x["query_ids"], "attention_mask": x["query_mask"], "token_type_ids": x["query_types"]}
        rows, _ = live.search(query, k - 1, prec)  # MIPS with the live (stale) index, as CandidateBuilder does
        rows = torch.from_numpy(np.clip(rows, 0, n - 1))
        cand = torch.from_numpy(docs)[rows]
        null_ids, null_mask, null_types = x["cand_ids"][:, :1], x["cand_mask"][:, :1], x["cand_types"][:, :1]
        x["cand_ids"] = torch.cat([null_ids, cand], 1)
        x["cand_mask"] = torch.cat([null_mask, torch.ones_like(cand)], 1)
        x["cand_types"] = torch.cat([null_types, torch.from_numpy(types)[rows]], 1)
        body = torch.from_numpy(bodies)[rows]  # [b, k-1, clen-3]: the joint rows take body + [SEP] (+ pad)
        jl = qlen + clen
        joint = torch.full((b, k, jl), ids["pad"], dtype=torch.long)
        jmask, jtypes = torch.zeros_like(joint), torch.zeros_like(joint)
        joint[:, :, :qlen] = x["query_ids"][:, None]
        joint[:, 0, qlen] = ids["sep"]
        jmask[:, 0, : qlen + 1] = 1
        jtypes[:, 0, qlen] = 1
        joint[:, 1:, qlen: qlen + body.size(-1)] = body
        joint[:, 1:, qlen + body.size(-1)] = ids["sep"]
        jmask[:, 1:, : qlen + body.size(-1) + 1] = 1
        jtypes[:, 1:, qlen: qlen + body.size(-1) + 1] = 1
        x.update(joint_ids=joint, joint_mask=jmask, joint_types=jtypes)
        return OursAdapter(model, live, x, k)

    torch.manual_seed(args.seed)
    base = build_ours(bert, args.seed + 50, qlen, clen, args.dropout)
    t = time.perf_counter()
    vectors0 = embed_corpus(base.retriever, doc_ids, precision=prec, batch_size=64)
    embed_alone = time.perf_counter() - t
    print(f"  model {args.refresh_model} {bert}; corpus {n} blocks of {clen}: embedded alone in {embed_alone:.1f} s "
          f"({n / embed_alone:.0f} blocks/s, {prec}); refresh every {every} steps, {total} steps per arm")
    result = {"model": args.refresh_model, "bert": bert, "docs": n, "every": every, "steps": total,
              "precision": prec, "embed_alone_s": round(embed_alone, 2), "arms": {}}
    arms = ["never", "async"] * args.refresh_rounds
    for r, arm in enumerate(arms):
        model = copy.deepcopy(base)
        opt, params = adamw(model.named_parameters())
        holder = _Holder(snapshot_live(model.retriever, vectors0))
        root = Path(tempfile.mkdtemp(prefix=f"refresh_{arm}_", dir=args.work))
        refresher = Refresher(holder, model.retriever, doc_ids, IndexVersions(root),
                              schedule=RefreshSchedule(str(every) if arm == "async" else "never"), mode="async",
                              precision=prec, batch_size=64,
                              info=lambda m: print(f"    {m}"))
        times = []
        load0 = loadavg()
        for step in range(1, total + 1):
            t = time.perf_counter()
            ad = batch(holder.live, step)
            train_step(ad, opt, params, prec, split=False)
            if step < total:  # a refresh due after the last step would only run after timing stops
                refresher.after_step(step)
            times.append(time.perf_counter() - t)
        t = time.perf_counter()
        refresher.finish()
        waited = time.perf_counter() - t
        shutil.rmtree(root, ignore_errors=True)
        window = times[every:]
        rate = len(window) / sum(window)
        rec = [{"version": x.version, "snapshot_step": x.snapshot_step, "installed_step": x.installed_step,
                "seconds": round(x.seconds, 2)} for x in holder.records]
        print(f"  {arm:>5} (round {r // 2 + 1}): {rate:.3f} steps/s over steps {every + 1}-{total} "
              f"(median step {statistics.median(window):.3f} s; first {every} steps {sum(times[:every]):.1f} s); "
              f"{len(rec)} refreshes installed, {refresher.skipped} skipped; load {load0} -> {loadavg()}"
              + (f"; waited {waited:.1f} s for a pending one at the end" if waited > 0.05 else ""))
        entry = {"steps_per_s": rate, "median_step_s": statistics.median(window), "refreshes": rec,
                 "skipped": refresher.skipped, "step_times": [round(v, 4) for v in times]}
        if arm == "async":
            entry.update(local_cost(times, every, rec))
            print(f"        local: the steps a refresh overlapped (snapshot step to install step) took "
                  f"{entry['extra_s_per_refresh']:.1f} s more per refresh than this arm's other steps (median "
                  f"{entry['base_step_s']:.3f} s): {100 * entry['local_slowdown']:.1f} % of a {every}-step interval")
        result["arms"].setdefault(arm, []).append(entry)
    rounds = [1 - a["steps_per_s"] / n["steps_per_s"] for n, a in zip(result["arms"]["never"], result["arms"]["async"])]
    result["slowdown_rounds"] = rounds
    result["slowdown"] = statistics.median(rounds)
    result["local_slowdown"] = statistics.median(a["local_slowdown"] for a in result["arms"]["async"])
    base = statistics.median(a["base_step_s"] for a in result["arms"]["async"])
    result["compute_share"] = embed_alone / (every * base + embed_alone)
    return result


def local_cost(times: list[float], every: int, records: list[dict]) -> dict:
    """The extra seconds of the steps overlapping a refresh (its snapshot step to its install
    step, both included) over the median of the arm's other steps (the first 5 left out): robust
    to load that drifts between the two arms, which the throughput ratio is not."""
    active = {j for rec in records for j in range(rec["snapshot_step"], rec["installed_step"] + 1)}
    quiet = [t for j, t in enumerate(times, 1) if j > 5 and j not in active]
    base = statistics.median(quiet)
    extra = sum(times[j - 1] - base for j in active) / max(1, len(records))
    return {"base_step_s": base, "extra_s_per_refresh": extra, "local_slowdown": extra / (every * base + extra)}


# ---------------------------------------------------------------------------------------------


def fmt_ratio(x: float, target: float) -> str:
    return f"{x:.3f}x ({'met' if x <= target else 'NOT met'}, target <= {target}x)"
