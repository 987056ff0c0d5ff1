"""Print the salient spans of a seeded sample of blocks, to eyeball what tag_entities produces.

Spans come either from an existing salient_spans.parquet (the stage's output, the default) or
from tagging the sampled blocks on the fly with a saved tagger (`--tagger DIR`), through the
stage's own code path (`salient.tag_table`: sentence by sentence, plus regex dates).

    .venv/bin/python scripts/sample_spans.py                          # artifacts/corpus/*.parquet
    .venv/bin/python scripts/sample_spans.py --tagger models/tagger   # tag 50 blocks now
    .venv/bin/python scripts/sample_spans.py -n 10 --seed 3 --blocks other/blocks.parquet

Each block prints as a header (row, block_id, title, number of spans) and one line per span:
label, score (1.000 for regex dates), char offsets, and the span text.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
from collections import Counter
from pathlib import Path

DEFAULT_BLOCKS = "artifacts/corpus/blocks.parquet"
DEFAULT_SPANS = "artifacts/corpus/salient_spans.parquet"


class UsageError(Exception):
    """A problem with the inputs, printed as one line."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Sample blocks (seeded) from a blocks.parquet and print their salient spans "
                    "(label, score, text), read from salient_spans.parquet or tagged on the fly.")
    p.add_argument("--blocks", default=DEFAULT_BLOCKS,
                   help=f"blocks.parquet written by prepare_corpus (default: {DEFAULT_BLOCKS})")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--spans", default=None,
                     help=f"salient_spans.parquet written by tag_entities (default: {DEFAULT_SPANS})")
    src.add_argument("--tagger", default=None, metavar="DIR",
                     help="tag the sampled blocks now with this saved tagger directory (or a "
                          "package:<module> name, or a hub model id already in the local Hugging Face "
                          "cache) instead of reading a spans file")
    p.add_argument("-n", "--num-blocks", type=int, default=50, help="blocks to sample (default: 50)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default: 0)")
    p.add_argument("--no-dates", action="store_true", help="with --tagger: skip the date regex")
    p.add_argument("--min-score", type=float, default=0.0,
                   help="drop entities whose score is below this (default: 0.0)")
    p.add_argument("--batch-size", type=int, default=64, help="with --tagger: sentences per forward pass")
    p.add_argument("--max-len", type=int, default=128, help="with --tagger: wordpieces per window")
    p.add_argument("--threads", type=int, default=0, help="with --tagger: torch threads (0: torch default)")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16"], default=None,
                   help="with --tagger: compute precision (default: the stage's default, auto)")
    args = p.parse_args(argv)
    if args.num_blocks < 1:
        p.error("--num-blocks must be at least 1")
    return args


def read_blocks(path: Path):
    import pyarrow.parquet as pq

    if not path.is_file():
        raise UsageError(f"{path}: no such file (run `python -m flows.prepare_corpus` first, or pass --blocks)")
    try:
        table = pq.read_table(path, columns=["block_id", "title", "text", "sentence_starts"])
    except Exception as exc:  # not Parquet, or missing columns: pyarrow raises several types
        raise UsageError(f"{path}: not a blocks file ({str(exc).splitlines()[0]})") from None
    if table.num_rows == 0:
        raise UsageError(f"{path}: empty corpus (0 blocks)")
    return table


def spans_from_file(path: Path, ids: list[int]) -> dict[int, list[tuple[int, int, str, float]]]:
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    if not path.is_file():
        raise UsageError(f"{path}: no such file (run the tag_entities stage, or pass --tagger DIR to tag on the fly)")
    try:
        table = pq.read_table(path, columns=["block_id", "start", "end", "label", "score"])
    except Exception as exc:
        raise UsageError(f"{path}: not a salient_spans file ({str(exc).splitlines()[0]})") from None
    table = table.filter(pc.is_in(table.column("block_id"), value_set=pa.array(ids, pa.int64())))
    return _group(table.to_pylist())


def spans_from_tagger(name: str, blocks_path: Path, sample, args) -> dict[int, list[tuple[int, int, str, float]]]:
    local = Path(name).expanduser()
    if not local.exists() and not name.startswith("package:") and not _in_hf_cache(name):
        raise UsageError(f"{name}: no such tagger directory (nor a Hugging Face model in the local cache)")
    import torch

    from realm_core.config import TagEntitiesConfig
    from realm_core.entities.salient import load_tagger, tag_table
    from realm_core.errors import RealmError

    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # keep the listing free of load-time progress bars
    hf_logging.disable_progress_bar()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        extra = {} if args.precision is None else {"precision": args.precision}
        cfg = TagEntitiesConfig(blocks=str(blocks_path), tagger=name, include_dates=not args.no_dates,
                                min_score=args.min_score, batch_size=args.batch_size, max_len=args.max_len, **extra)
    except ValueError as exc:  # pydantic validation of the settings
        raise UsageError(f"bad setting: {str(exc).splitlines()[1].strip()} ({str(exc).splitlines()[2].strip()})") from None
    try:
        tagger = load_tagger(str(local) if local.exists() else name, cfg.device, cfg.precision)
    except RealmError as exc:
        raise UsageError(str(exc)) from None
    return _group(tag_table(tagger, sample.select(["block_id", "text", "sentence_starts"]), cfg).to_pylist())


def _in_hf_cache(name: str) -> bool:
    """True when `name` is a hub model id whose config is already in the local HF cache (so that
    loading it never waits on the network)."""
    if name.count("/") != 1 or name.startswith((".", "/", "~")):
        return False
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(name, "config.json"), str)
    except Exception:  # an invalid repo id, or no huggingface_hub
        return False


def _group(rows: list[dict]) -> dict[int, list[tuple[int, int, str, float]]]:
    out: dict[int, list[tuple[int, int, str, float]]] = {}
    for r in rows:
        out.setdefault(r["block_id"], []).append((r["start"], r["end"], r["label"], r["score"]))
    return {k: sorted(v) for k, v in out.items()}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    blocks_path = Path(args.blocks)
    table = read_blocks(blocks_path)
    n = table.num_rows
    rows = sorted(random.Random(args.seed).sample(range(n), min(args.num_blocks, n)))
    sample = table.take(rows)
    ids = sample.column("block_id").to_pylist()
    if args.tagger:
        source = f"tagged now with {args.tagger}" + ("" if args.precision is None else f" ({args.precision})")
        spans = spans_from_tagger(args.tagger, blocks_path, sample, args)
    else:
        spans_path = Path(args.spans or DEFAULT_SPANS)
        source = str(spans_path)
        spans = spans_from_file(spans_path, ids)
    print(f"{len(rows)} of {n} blocks from {blocks_path} (seed {args.seed}); spans: {source}")
    labels: Counter = Counter()
    bad = 0
    for row, block_id, title, text in zip(rows, ids, sample.column("title").to_pylist(),
                                          sample.column("text").to_pylist()):
        block_spans = [s for s in spans.get(block_id, []) if s[3] >= args.min_score]
        print(f"\n[row {row}] block {block_id}  {title!r}  ({len(block_spans)} spans)")
        for start, end, label, score in block_spans:
            if not 0 <= start < end <= len(text):
                bad += 1
                print(f"  {label:<5} {score:5.3f} {start:>5}-{end:<5} <offsets outside the block text>")
                continue
            labels[label] += 1
            print(f"  {label:<5} {score:5.3f} {start:>5}-{end:<5} {text[start:end]!r}")
    total = sum(labels.values())
    with_span = sum(1 for b in ids if spans.get(b))
    print(f"\n{total} spans in {len(rows)} blocks ({with_span} with at least one): "
          + ", ".join(f"{k} {v}" for k, v in sorted(labels.items())))
    if not args.tagger and spans and bad:
        print(f"warning: {bad} spans fall outside their block's text: is {source} from another blocks file?",
              file=sys.stderr)
    if not args.tagger and not spans:
        print(f"warning: none of the sampled blocks has a span in {source}: is it from another blocks file?",
              file=sys.stderr)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except BrokenPipeError:  # output piped into `head`: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)
