"""Write the golden block digests of the shipped Wikipedia dumps (tests/assets/corpus/).

The golden test (tests/realm_core/test_golden_blocks.py) re-runs `prepare_corpus` on the dumps in
`data/wikipedia_xml/` and compares every block with this file, so speed work on the parser cannot
change the corpus unnoticed. Regenerate it only when a cleaning change is *meant* to change
blocks, and say which blocks and why in the commit:

    python scripts/golden_blocks.py artifacts/corpus/blocks.parquet
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import sys
from pathlib import Path

import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = ROOT / "tests/assets/corpus/golden_blocks.jsonl.gz"
WIKI_SOURCES = sorted(p.name for p in (ROOT / "data/wikipedia_xml").glob("*/*") if p.is_file())


def digest(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def rows(parquet: Path, sources: list[str]) -> list[dict]:
    """One small record per block of `sources`, in file order: everything but the text itself,
    which is kept as a digest (the file stays small; a mismatch still names the block)."""
    table = pq.read_table(parquet)
    out = []
    for r in table.to_pylist():
        if r["source"] not in sources:
            continue
        out.append({
            "source": r["source"], "doc_id": r["doc_id"], "block_index": r["block_index"],
            "title": r["title"], "text_sha1": digest(r["text"]), "chars": len(r["text"]),
            "n_wordpieces": r["n_wordpieces"], "sentence_starts": list(r["sentence_starts"]),
            "block_id": r["block_id"],
        })
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("blocks", type=Path, help="a blocks.parquet made from the shipped dumps")
    args = ap.parse_args()
    if not args.blocks.is_file():
        sys.exit(f"{args.blocks}: no such file (run `dvc repro prepare_corpus` first)")
    out = rows(args.blocks, WIKI_SOURCES)
    if not out:
        sys.exit(f"{args.blocks}: no blocks from {', '.join(WIKI_SOURCES)}")
    GOLDEN.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(GOLDEN, "wt", compresslevel=9) as fh:
        for r in out:
            fh.write(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n")
    print(f"{GOLDEN.relative_to(ROOT)}: {len(out)} blocks from {len(WIKI_SOURCES)} dumps")


if __name__ == "__main__":
    main()
