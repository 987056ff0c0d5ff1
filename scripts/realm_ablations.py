"""REALM's Table 2 ablations on the default data, from params alone.

Each variant is `pretrain_realm` with a few `--set` overrides (the same ones `dvc exp run -S`
takes), followed by build_index over its retriever and zero-shot NQ Recall@k
(evaluate_retrieval), all through the real flows, with outputs under `artifacts/ablations/<name>/`
so the pipeline's own models are untouched. The table (held-out masked accuracy of the marginal,
of ∅ alone, of the no-retrieval BERT, RU first/last, NQ Recall@5) goes to
`docs/ablations.json` and is printed as markdown.

    python scripts/realm_ablations.py                     # every variant, the shared budget below
    python scripts/realm_ablations.py --only realm,null   # some of them
    python scripts/realm_ablations.py --set pretrain_realm.steps=120   # a different shared budget

A variant whose outputs exist is not rerun (delete its folder to redo it). As a DVC experiment,
one variant is e.g. `dvc exp run -S pretrain_realm.masking=random_tokens` (README "Ablations").
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "artifacts" / "ablations"

# name -> (what it is, pretrain_realm overrides); "realm" is the reference run of the same budget.
VARIANTS: dict[str, tuple[str, dict[str, str]]] = {
    "realm": ("REALM (salient spans, sync refresh)", {}),
    "null_only": ("no retrieval: reader with ∅ only (k = 1)", {"num_candidates": "1"}),
    "random_tokens": ("random uniform masks (BERT-style)", {"masking": "random_tokens"}),
    "random_spans": ("random span masks (SpanBERT-style)", {"masking": "random_spans"}),
    "stale_never": ("stale index: never refreshed (30× stale is the same at this length)",
                    {"refresh_schedule": "never"}),
    "trivial": ("trivial retrieval allowed (source block kept)", {"allow_trivial": "true"}),
    "per_example": ("per-example marginal (paper) instead of per-token (code)", {"loss": "per_example"}),
    "async": ("async refresh (a task run beside training)", {"refresh_mode": "async"}),
}

# The shared budget of every variant: smaller than the pipeline's run so eight fit in the time of
# two on 2 cores; the "realm" row is the reference at the same budget.
BUDGET = {"steps": "60", "eval_examples": "96", "eval_every": "30", "refresh_schedule": "0-60:20",
          "checkpoint_every": "20", "warmup_steps": "6"}


def run(cmd: list[str]) -> None:
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, cwd=ROOT, check=True)


def variant(name: str, overrides: dict[str, str], extra: list[str]) -> dict:
    out = OUT / name
    sets = {**BUDGET, **overrides,
            "retriever_output_dir": str(out / "retriever"), "encoder_output_dir": str(out / "encoder"),
            "checkpoint_dir": str(out / "checkpoints"), "metrics_file": str(out / "pretrain_realm.json"),
            "plots_dir": str(out / "plots")}
    metrics_file = out / "pretrain_realm.json"
    t0 = time.monotonic()
    if not (metrics_file.is_file() and json.loads(metrics_file.read_text()).get("completed")):
        run([sys.executable, "-m", "flows.pretrain_realm", *sum((["--set", f"pretrain_realm.{k}={v}"]
                                                                 for k, v in sets.items()), []), *extra])
    m = json.loads(metrics_file.read_text())
    recall_file = out / "retrieval" / "nq.json"
    if name != "null_only" and not recall_file.is_file():  # ∅ only never trains the retriever: ICT's recall
        run([sys.executable, "-m", "flows.build_index", "--set", f"build_index.retriever={out / 'retriever'}",
             "--set", f"build_index.output_dir={out / 'index'}",
             "--set", f"build_index.metrics_file={out / 'build_index.json'}"])
        run([sys.executable, "-m", "flows.evaluate_retrieval", "--set", "evaluate_retrieval.dataset=nq",
             "--set", "evaluate_retrieval.bm25=false",
             "--set", f"evaluate_retrieval.retrievers={{{name}: {{model: {out / 'retriever'}, index: {out / 'index'}}}}}",
             "--set", f"evaluate_retrieval.output_dir={out / 'retrieval_ctxs'}",
             "--set", f"evaluate_retrieval.metrics_dir={out / 'retrieval'}"])
    recall = None
    if recall_file.is_file():
        r = json.loads(recall_file.read_text())
        recall = r.get(name, {}).get("recall@5")
    h = m.get("heldout", {})
    return {"name": name, "overrides": overrides, "marginal_accuracy": h.get("marginal_accuracy"),
            "null_accuracy": h.get("null_accuracy"), "baseline_accuracy": h.get("baseline_accuracy"),
            "retrieval_utility": h.get("retrieval_utility"), "ru_first": m.get("ru_first"), "ru_last": m.get("ru_last"),
            "answer_in_candidates": h.get("answer_in_candidates"), "nq_recall@5": recall,
            "refreshes": m.get("refreshes"), "train_seconds": m.get("train_seconds"),
            "wall_seconds": round(time.monotonic() - t0, 1)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", default="", help="comma-separated variant names (default: all)")
    ap.add_argument("--set", action="append", default=[], help="extra --set passed to every pretrain_realm run")
    args = ap.parse_args()
    names = [n for n in (args.only.split(",") if args.only else VARIANTS) if n]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        print(f"error: unknown variant(s) {unknown}; choose from {list(VARIANTS)}", file=sys.stderr)
        return 1
    extra = sum((["--set", s] for s in args.set), [])
    rows = []
    table = ROOT / "docs" / "ablations.json"
    done = json.loads(table.read_text()) if table.is_file() else {}
    for name in names:
        row = variant(name, VARIANTS[name][1], extra)
        row["what"] = VARIANTS[name][0]
        done[name] = row
        table.write_text(json.dumps(done, indent=2) + "\n")
        rows.append(row)
    print("| variant | marginal acc | ∅-only acc | BERT acc | RU first → last | answer in cands | NQ R@5 |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in (done[n] for n in VARIANTS if n in done):
        print(f"| {r['what']} | {r['marginal_accuracy']} | {r['null_accuracy']} | {r['baseline_accuracy']} | "
              f"{r['ru_first']} → {r['ru_last']} | {r['answer_in_candidates']} | {r['nq_recall@5']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
