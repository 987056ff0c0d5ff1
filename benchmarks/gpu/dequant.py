"""On the device: rebuild model.safetensors (float32) from the int8 copy, for the stand-in package."""
import shutil, sys
from pathlib import Path
from safetensors.torch import load_file, save_file

src, dst = Path(sys.argv[1]), Path(sys.argv[2])
dst.mkdir(parents=True, exist_ok=True)
q = load_file(str(src / "q8.safetensors"))
out = {}
for k, v in q.items():
    if k.endswith(".scale"):
        continue
    if k.endswith(".q8"):
        name = k[:-3]
        out[name] = (v.float() * q[name + ".scale"].float()).contiguous()
    else:
        out[k] = v.float()
save_file(out, str(dst / "model.safetensors"), metadata={"format": "pt"})
for f in src.iterdir():
    if f.name != "q8.safetensors":
        shutil.copy(f, dst / f.name)
print(f"dequantized {len(out)} tensors into {dst}")
