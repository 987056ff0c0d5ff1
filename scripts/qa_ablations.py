"""REALM's Table 2 mixed pairs and the BM25 + reader reference, fine-tuned and scored on NQ.

The pairs are `finetune_qa.methods` entries (params.yaml); each runs through the real flows with
the pipeline's fine-tuning budget, outputs under `artifacts/qa_ablations/` (models) and
`docs/qa_ablations_<dataset>.json` (metrics), so the pipeline's own models stay untouched:

    python scripts/qa_ablations.py                        # the three pairs below, on nq
    python scripts/qa_ablations.py --dataset wq --only bm25_bert_reader

`dvc repro` must have run first (the pre-trained retrievers, readers and indexes, the tokenized
corpus). A method whose fine-tuned model exists is not fine-tuned again (delete its folder).
The NQ full test is left out (`evaluate.full_test=false`): the table compares the test split.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "artifacts" / "qa_ablations"
METHODS = ("realm_retriever_bert_reader", "ict_retriever_realm_reader", "bm25_bert_reader")


def run(cmd: list[str]) -> None:
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, cwd=ROOT, check=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="nq", choices=["nq", "wq", "ct"])
    parser.add_argument("--only", default=",".join(METHODS), help="comma-separated methods")
    args = parser.parse_args()
    methods = [m for m in args.only.split(",") if m]
    models = OUT / "models"
    for method in methods:
        out = models / args.dataset / method
        if (out / "qa.json").is_file():
            print(f"{method}: fine-tuned model exists in {out}, not rerun")
            continue
        tag = f"{args.dataset}-{method}"
        run([sys.executable, "-m", "flows.finetune_qa", "--set", f"finetune_qa.dataset={args.dataset}",
             "--set", f"finetune_qa.method={method}", "--set", f"finetune_qa.output_dir={out}",
             "--set", f"finetune_qa.checkpoint_dir={OUT / 'checkpoints' / tag}",
             "--set", f"finetune_qa.metrics_file={OUT / 'metrics' / (tag + '.json')}",
             "--set", f"finetune_qa.plots_dir={OUT / 'plots' / tag}"])
    scratch = OUT / "eval"
    run([sys.executable, "-m", "flows.evaluate", "--set", f"evaluate.dataset={args.dataset}",
         "--set", f"evaluate.methods=[{','.join(methods)}]", "--set", f"evaluate.models_dir={models}",
         "--set", "evaluate.full_test=false", "--set", f"evaluate.output_dir={OUT / 'predictions'}",
         "--set", f"evaluate.metrics_dir={scratch}"])
    result = json.loads((scratch / f"{args.dataset}.json").read_text())
    target = ROOT / "docs" / f"qa_ablations_{args.dataset}.json"
    previous = json.loads(target.read_text()) if target.is_file() else {}
    previous.update({k: v for k, v in result.items() if k not in previous or k in methods})
    previous["methods"] = sorted(set(previous.get("methods", [])) | set(methods))
    target.write_text(json.dumps(previous, indent=2) + "\n")
    shutil.rmtree(scratch, ignore_errors=True)
    print(f"| method | EM | R@5 | reader oracle |\n|---|---:|---:|---:|")
    for m in previous["methods"]:
        r = previous[m]
        print(f"| {m} | {r['em']:.3f} | {r['recall@5']:.3f} | {r['reader_oracle']:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
