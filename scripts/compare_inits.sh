#!/usr/bin/env bash
# The init comparison of docs/results.md, part 2: ICT from a small BERT trained from scratch,
# evaluated exactly like the default retriever (the default package init is part 1: `dvc repro`).
# Outputs go to $OUT (default experiments/scratch, git-ignored); metrics in $OUT/metrics/*.json.
#   bash scripts/compare_inits.sh            # ~15 min on 2 cores
# A scratch BERT's pooled [CLS] is nearly input-independent at init (ICT starts on a plateau):
# no dropout anywhere, a larger init range and a short warmup get it moving (realm_core/training/ict.py).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
OUT=${OUT:-experiments/scratch}
STEPS=${STEPS:-600}
python -m flows.pretrain_ict \
  --set pretrain_ict.init=scratch \
  --set 'pretrain_ict.scratch_config={layers: 2, hidden: 128, heads: 2, intermediate: 512, initializer_range: 0.05, hidden_dropout_prob: 0.0, attention_probs_dropout_prob: 0.0}' \
  --set pretrain_ict.dropout=0.0 --set pretrain_ict.lr=0.001 --set pretrain_ict.steps="$STEPS" \
  --set pretrain_ict.warmup_steps=20 --set pretrain_ict.checkpoint_every=200 \
  --set pretrain_ict.output_dir="$OUT/ict" --set pretrain_ict.init_output_dir="$OUT/ict_init" \
  --set pretrain_ict.checkpoint_dir="$OUT/checkpoints" --set pretrain_ict.metrics_file="$OUT/metrics/pretrain_ict.json" \
  --set pretrain_ict.plots_dir="$OUT/metrics/pretrain_ict"
for m in ict ict_init; do
  python -m flows.build_index --set build_index.retriever="$OUT/$m" --set build_index.output_dir="$OUT/index/$m" \
    --set build_index.metrics_file="$OUT/metrics/build_index_$m.json"
done
for d in nq wq ct; do
  python -m flows.evaluate_retrieval --set evaluate_retrieval.dataset="$d" --set evaluate_retrieval.bm25=false \
    --set "evaluate_retrieval.retrievers={init: {model: $OUT/ict_init, index: $OUT/index/ict_init}, ict: {model: $OUT/ict, index: $OUT/index/ict}}" \
    --set evaluate_retrieval.output_dir="$OUT/retrieval" --set evaluate_retrieval.metrics_dir="$OUT/metrics"
done
