"""A small fixed ICT input for the golden-loss and torchrun tests, independent of the corpus
builder (a change in prepare_corpus must not move the golden losses): the first 48 NQ-open gold
passages shipped in data/, cut to 600 characters, sentences split at ". " before a capital."""

from __future__ import annotations

import gzip
import json
import re
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[3]
TINY_BERT = {"layers": 1, "hidden": 32, "heads": 2, "intermediate": 64}
#: train_ict arguments of the golden run (scratch tiny BERT, fixed seed, fp32 on the CPU).
GOLDEN_ARGS = dict(steps=5, batch_size=8, lr=1e-3, warmup_steps=1, init="scratch", scratch_config=TINY_BERT,
                   proj_size=16, max_query_len=16, max_doc_len=48, seed=0, dropout=0.1, log_every=1,
                   device="cpu", precision="fp32")


def write_blocks(path: str | Path, n: int = 48) -> Path:
    rows = []
    with gzip.open(ROOT / "data/passages/nq_open_gold.jsonl.gz", "rt", encoding="utf-8") as fh:
        for i, line in enumerate(fh):
            if i == n:
                break
            rec = json.loads(line)
            text = " ".join(rec["text"].split())[:600]
            starts = [0] + [m.end() for m in re.finditer(r"\. (?=[A-Z])", text)]
            rows.append((i, rec["title"], text, starts))
    table = pa.table({"block_id": pa.array([r[0] for r in rows], pa.int64()), "title": [r[1] for r in rows],
                      "text": [r[2] for r in rows],
                      "sentence_starts": pa.array([r[3] for r in rows], pa.list_(pa.int32()))})
    pq.write_table(table, str(path))
    return Path(path)


def _worker(out: str, blocks: str, checkpoint_dir: str, budget: float, dropout: float) -> None:
    """One torchrun rank: ICT on the fixed input; rank 0 writes the per-step losses to `out`."""
    sys.path.insert(0, str(ROOT))
    from realm_core.training import distributed
    from realm_core.training.ict import train_ict

    import torch

    rank = distributed.init_from_env(torch.device("cpu"))
    losses = []
    result = train_ict(blocks, Path(out).with_suffix(".model"), **{
        **GOLDEN_ARGS, "steps": 4, "dropout": dropout,
        # BERT's own dropout too: each process draws its own masks, so with dropout the runs differ.
        "scratch_config": {**TINY_BERT, "hidden_dropout_prob": dropout, "attention_probs_dropout_prob": dropout},
        "checkpoint_dir": checkpoint_dir or None,
        "checkpoint_every": 1, "time_budget_s": budget or None,
        "on_log": lambda r: losses.append(r["loss"]) if r.get("event") == "train" else None})
    if rank.is_main:
        Path(out).write_text(json.dumps({"losses": losses, "step": result.step, "world": rank.world_size,
                                         "resumed_from": result.resumed_from}))
    distributed.shutdown()


if __name__ == "__main__":
    _worker(sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4]), float(sys.argv[5]))
