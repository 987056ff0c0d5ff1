"""REALM's held-out figures at the start and the end of pre-training, on more examples than the
stage scores, with the same examples for both.

`pretrain_realm` scores 128 held-out masked sentences (`eval_examples`) at steps 0, 40, 80 and
120; at that size one or two masks decide "marginal > ∅-only". This script scores the models the
stage started from (ICT retriever + `pretrain_mlm` encoder over the ICT index) and the ones it
exported (`models/realm` + `models/realm_encoder` over `build_index@realm`'s index) on the first
`--examples` held-out examples of the same seeded draw, plus the no-retrieval BERT, and prints
and writes the table (`docs/realm_heldout.json`). Nothing of the pipeline is written.

    python scripts/realm_heldout.py                  # up to 1,024 (the default data has 366)
    python scripts/realm_heldout.py --examples 256
    python scripts/realm_heldout.py --by-evidence    # also split by "answer in a retrieved block"
    python scripts/realm_heldout.py --states end --end-models artifacts/seeds/seed1/retriever \
        artifacts/seeds/seed1/encoder artifacts/seeds/seed1/index/embeddings --out seed1.json
                                                     # another run's exported models (e.g. another seed)
    python scripts/realm_heldout.py --corpus-evidence  # only: how many have the answer in another block

`--by-evidence` scores each state again on two subsets: the examples whose masked wordpieces
occur in one of the k−1 retrieved blocks, and the rest. It shows where retrieval helps the
marginal (a block holds the answer) and where it costs (the reader reads a block without it).
`--corpus-evidence` counts, without any model run, the examples whose masked wordpieces occur in
some other block of the corpus at all: the ceiling of "answer in a retrieved block".

Standard errors are binomial over masks (masks of one sentence are not independent, so they are
a lower bound).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from realm_core import devices  # noqa: E402
from realm_core.config import PretrainRealmConfig  # noqa: E402
from realm_core.config.loading import load_stage_config, read_params_file  # noqa: E402
from realm_core.errors import RealmError  # noqa: E402
from realm_core.io import write_text_atomic  # noqa: E402
from realm_core.modeling.encoder import KnowledgeAugEncoder  # noqa: E402
from realm_core.training.realm import CandidateBuilder, baseline_accuracy, evaluate_realm  # noqa: E402
from realm_core.training.realm_data import RealmCorpus, contains, fixed_examples  # noqa: E402
from realm_core.training.realm_index import LiveIndex  # noqa: E402
from realm_core.training.realm_stage import EVAL_SEED, _initial_vectors, _snapshot, load_models  # noqa: E402

STATES = {
    "start": ("models/ict", "models/pretrain_mlm", "artifacts/index/ict/embeddings"),
    "end": ("models/realm", "models/realm_encoder", "artifacts/index/realm/embeddings"),
}


def main() -> int:
    try:
        return _main()
    except RealmError as exc:  # a missing model, index or corpus: one line, nothing written
        print(f"error: {exc}", file=sys.stderr)
        return 1


def _main() -> int:
    os.chdir(ROOT)  # params.yaml's paths are relative to the project root
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--examples", type=int, default=1024)
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "realm_heldout.json")
    ap.add_argument("--by-evidence", action="store_true",
                    help="also score the examples with / without the answer in a retrieved block")
    ap.add_argument("--corpus-evidence", action="store_true",
                    help="only count the examples whose masked wordpieces occur in another block (no model run)")
    ap.add_argument("--states", default="start,end", help="which of start,end to score (default both)")
    ap.add_argument("--end-models", nargs=3, metavar=("RETRIEVER", "ENCODER", "INDEX"),
                    help="score these as the end state instead of the pipeline's models/realm, "
                         "models/realm_encoder and the build_index@realm index (INDEX: its embeddings folder, "
                         "built from RETRIEVER)")
    args = ap.parse_args()
    states = [s for s in args.states.split(",") if s]
    if not states or any(s not in STATES for s in states):
        print(f"error: --states takes a comma-separated subset of {list(STATES)}, got {args.states!r}", file=sys.stderr)
        return 1
    chosen = {s: STATES[s] for s in states}
    if args.end_models:
        if "end" not in chosen:
            print("error: --end-models replaces the end state, but --states leaves it out", file=sys.stderr)
            return 1
        chosen["end"] = tuple(args.end_models)
    base: PretrainRealmConfig = load_stage_config("pretrain_realm", read_params_file(ROOT / "params.yaml"))
    if args.corpus_evidence:
        return corpus_evidence(base, args.examples)
    resolved = devices.resolve_stage(base, "pretrain_realm")
    device, precision = torch.device(resolved.device), resolved.precision
    rows: dict[str, dict] = {}
    heldout = None
    for state, (retriever, encoder, index) in chosen.items():
        t0 = time.monotonic()
        cfg = base.model_copy(update={"retriever": str(ROOT / retriever), "encoder": str(ROOT / encoder),
                                      "initial_index": str(ROOT / index)})
        torch.manual_seed(cfg.seed)
        model = load_models(cfg, device)
        corpus = RealmCorpus(cfg.blocks, cfg.salient_spans, model.retriever.tokenizer,
                             max_doc_len=model.retriever.max_doc_len, max_candidate_len=cfg.max_candidate_len,
                             heldout_fraction=cfg.heldout_fraction)
        if heldout is None:
            heldout = fixed_examples(corpus, "heldout", args.examples, seed=EVAL_SEED, masking="salient",
                                     max_query_len=cfg.max_query_len, max_masks=cfg.max_masks)
        vectors = _initial_vectors(cfg, corpus, print)
        if vectors is None:
            print(f"error: {index} does not hold {retriever}'s embeddings of this corpus; run dvc repro", file=sys.stderr)
            return 1
        live = LiveIndex(0, 0, _snapshot(model.retriever), vectors)
        builder = CandidateBuilder(corpus, model.encoder, k=cfg.num_candidates, allow_trivial=cfg.allow_trivial,
                                   precision=precision)
        rows[state] = {"retriever": retriever, "encoder": encoder, "index": index,
                       **evaluate_realm(model, builder, live, heldout, batch_size=cfg.eval_batch_size,
                                        precision=precision),
                       "seconds": round(time.monotonic() - t0, 1)}
        if args.by_evidence:
            # The same retrieval evaluate_realm does (deterministic), split by whether a retrieved
            # body holds the masked wordpieces; skipped examples (duplicate blocks) stay out.
            found = builder.retrieve(live, heldout)
            groups = {"answer_in_candidates": [], "answer_not_in_candidates": []}
            for ex, cands in zip(heldout, found):
                if cands is not None:
                    hit = any(contains(corpus.body_ids[r], ex.targets) for r in cands)
                    groups["answer_in_candidates" if hit else "answer_not_in_candidates"].append(ex)
            rows[state]["by_evidence"] = {
                name: evaluate_realm(model, builder, live, group, batch_size=cfg.eval_batch_size, precision=precision)
                for name, group in groups.items() if group}
        print(state, rows[state], flush=True)
        del model
    baseline = baseline_accuracy(KnowledgeAugEncoder.from_pretrained(str(ROOT / base.baseline), device=device),
                                 heldout, precision=precision)
    last = rows[states[-1]]
    masks = last["masks"]
    se = lambda p: round(math.sqrt(max(p, 1e-9) * (1 - p) / max(1, masks)), 4)  # noqa: E731
    out = {"examples_asked": args.examples, "device": device.type, "precision": precision,
           "states": rows, "baseline": baseline,
           f"binomial_se_at_{states[-1]}": {k: se(last[k]) for k in ("accuracy", "null_accuracy")}}
    write_text_atomic(args.out, json.dumps(out, indent=2) + "\n")
    print("| models | examples | masks | marginal acc | ∅-only acc | RU | p(∅) | answer in cands |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for state, r in rows.items():
        print(f"| {state}: {r['retriever']} + {r['encoder']} | {r['examples']} | {r['masks']} | {r['accuracy']} | "
              f"{r['null_accuracy']} | {r['retrieval_utility']} | {r['p_null']} | {r['answer_in_candidates']} |")
    print(f"| no-retrieval BERT ({base.baseline}) | {len(heldout)} | {baseline['masks']} | {baseline['accuracy']} | | | | |")
    if args.by_evidence:
        print("\n| models | subset | examples | masks | marginal acc | ∅-only acc | RU |")
        print("|---|---|---:|---:|---:|---:|---:|")
        for state, r in rows.items():
            for name, g in r.get("by_evidence", {}).items():
                print(f"| {state} | {name.replace('_', ' ')} | {g['examples']} | {g['masks']} | {g['accuracy']} | "
                      f"{g['null_accuracy']} | {g['retrieval_utility']} |")
    print(f"binomial SE ({states[-1]}): {out[f'binomial_se_at_{states[-1]}']}; written to {args.out}")
    return 0


def corpus_evidence(cfg: PretrainRealmConfig, n: int) -> int:
    """Print how many of the first `n` held-out examples have their masked wordpieces, in order,
    in some block other than their own: the most that any retriever could put among the
    candidates. A loose bound: a common word or a year occurs in many blocks that say nothing
    about the sentence."""
    from realm_core.modeling.embedder import RetrieverEmbedder

    retriever = RetrieverEmbedder.from_pretrained(ROOT / cfg.retriever)
    corpus = RealmCorpus(cfg.blocks, cfg.salient_spans, retriever.tokenizer, max_doc_len=retriever.max_doc_len,
                         max_candidate_len=cfg.max_candidate_len, heldout_fraction=cfg.heldout_fraction)
    heldout = fixed_examples(corpus, "heldout", n, seed=EVAL_SEED, masking="salient",
                             max_query_len=cfg.max_query_len, max_masks=cfg.max_masks)
    counts = [sum(1 for r in range(len(corpus.body_ids)) if r != ex.row and contains(corpus.body_ids[r], ex.targets))
              for ex in heldout]
    found = sum(c > 0 for c in counts)
    print(f"{found} of {len(heldout)} held-out examples ({found / max(1, len(heldout)):.3f}) have their masked "
          f"wordpieces in another block; blocks per example: median {sorted(counts)[len(counts) // 2]}, "
          f"max {max(counts, default=0)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
