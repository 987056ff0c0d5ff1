#!/bin/bash
# Device: install wheels, rebuild the int8 MiniLM stand-in, run scripts/realm_ablations_gpu.py. Logs/JSON to $OUT.
# ONLY=a,b,... runs just those variants (in that order); BUDGET_S / DRIVER_TIMEOUT bound the wall time;
# further arguments go to the script (e.g. --set pretrain_realm.batch_size=32).
# Staged beside it first, on this machine (git-ignored via .git/info/exclude, sent with the device tool's
# `carry`): .whl/ (python 3.12 wheels: pydantic, faiss-cpu, ...), .gpu/minilm_q8/ (benchmarks/gpu/quant.py:
# the MiniLM package int8-rounded to fit the 64 MiB transfer) and, for run_abl.sh, .gpu/data/ (blocks + spans).
set -u
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
OUT=${OUT:-/tmp/gpu_out}; mkdir -p "$OUT"
cd "$(dirname "$0")/../.."
{
date -u; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | head -3
PY=python3; $PY -V
WHL=$(ls .whl/*.whl | grep -v typing_extensions)
$PY - <<'PY' || WHL="$WHL $(ls .whl/typing_extensions-*.whl)"
import importlib.metadata as m, sys
v = tuple(int(x) for x in m.version("typing_extensions").split(".")[:2]); print("image typing_extensions", v)
sys.exit(0 if v >= (4, 16) else 1)
PY
t0=$(date +%s)
$PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site $WHL || { echo "pip install failed"; exit 3; }
export PYTHONPATH=/tmp/site:$PWD/benchmarks/gpu/standin:$PWD
export MINILM_STANDIN_DIR=/tmp/minilm
$PY benchmarks/gpu/dequant.py .gpu/minilm_q8 /tmp/minilm
echo "setup took $(( $(date +%s) - t0 )) s"
timeout ${DRIVER_TIMEOUT:-430} $PY scripts/realm_ablations_gpu.py --device cuda \
  --blocks .gpu/data/blocks.parquet --salient-spans .gpu/data/salient_spans.parquet --data-dir data \
  --workdir /tmp/abl --out "$OUT/ablations_gpu.json" --budget-s ${BUDGET_S:-375} ${ONLY:+--only "$ONLY"} "$@" \
  --init-note "int8-rounded all-MiniLM-L6-v2 (per-row int8 copy dequantised to float32 on the device, .gpu/dequant.py): runs are self-consistent among themselves but are not the CPU pipeline's models"
echo "driver rc=$?"
nvidia-smi --query-gpu=name,clocks.sm,power.draw,temperature.gpu --format=csv 2>&1 | head -3
date -u
} 2>&1 | tee "$OUT/abl.log"
