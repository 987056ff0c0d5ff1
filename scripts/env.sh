# Source me: creates/updates .venv when needed and sets the offline-safe environment.
# Used by both README commands (scripts/repro.sh, scripts/test.sh) and by CI.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="${PYTHON:-python3}"
VENV="$ROOT/.venv"
# Reinstall only when the dependency spec changes.
STAMP="$VENV/.installed-$(cat pyproject.toml constraints.txt scripts/env.sh | sha256sum | cut -c1-16)"
if [ ! -f "$STAMP" ]; then
  echo "== setting up $VENV (first run takes ~2 minutes)"
  [ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
  # torch first and pinned: 2.13.0 is the CPU wheel; any other version pulls GBs of CUDA wheels.
  # The bench extra (WikiExtractor, psutil: small, pure Python or wheels) comes with the setup so
  # benchmarks/parse_wiki.py runs on a fresh clone with no manual install.
  # pip's output goes to a log (shown only on failure) to keep the commands' output readable.
  LOG="$VENV/install.log"
  { "$VENV/bin/pip" install --disable-pip-version-check torch==2.13.0 &&
    "$VENV/bin/pip" install --disable-pip-version-check -c constraints.txt -e ".[test,bench]"; } > "$LOG" 2>&1 ||
    { tail -n 40 "$LOG"; echo "== install failed; full log: $LOG" >&2; exit 1; }
  rm -f "$VENV"/.installed-*
  touch "$STAMP"
fi
export PATH="$VENV/bin:$PATH"
export VIRTUAL_ENV="$VENV"
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}"
export HF_HUB_DISABLE_TELEMETRY=1
export DO_NOT_TRACK=1
export DVC_NO_ANALYTICS=1
export PREFECT_HOME="${PREFECT_HOME:-$ROOT/.prefect}"
export PREFECT_SERVER_ANALYTICS_ENABLED=false
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS=90
export TOKENIZERS_PARALLELISM=false
