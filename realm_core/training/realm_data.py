"""REALM pre-training examples: a sentence with one salient span masked, and its source block.

Built as REALM's `example_generator.py` does (REALM_NOTES §2.2): for a block, keep the salient
spans inside one sentence, choose one uniformly, mask every wordpiece of it in that sentence
(`realm_core.entities.masking`); `max_masks` (10) of them are scored. The source block is kept
so the candidate set can exclude it (trivial retrieval, §2.3).

Masking is a parameter, for the paper's Table 2 ablations; the two random schemes mask the same
number of wordpieces in the same sentence as the salient span they replace, so only *what* is
masked changes:
- `salient` (default): the salient span;
- `random_tokens`: that many wordpieces drawn uniformly from the sentence (BERT-style);
- `random_spans`: one contiguous run of that many wordpieces at a uniform start (SpanBERT-style).

The corpus is pre-tokenised once (`RealmCorpus`): every block's retriever input `[CLS] title
[SEP] body [SEP]` and its body wordpieces for the reader, as flat int32 arrays with offsets.
Refreshes embed from these ids and batches are cut from them, so nothing is re-tokenised in the
loop except the one sentence an example masks.
"""

from __future__ import annotations

import hashlib
import random
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from realm_core.entities.masking import IGNORE_INDEX, MaskedQuery, choose_salient_span, mask_query
from realm_core.errors import RealmError
from realm_core.modeling.inputs import InputBuilder
from realm_core.training.heldout import held_out_mask

MASKINGS = ("salient", "random_tokens", "random_spans")


class Ragged:
    """Integer sequences stored flat (int32) with row offsets: compact, and sliced without copies."""

    def __init__(self, seqs: list[list[int]]) -> None:
        lengths = np.fromiter((len(s) for s in seqs), dtype=np.int64, count=len(seqs))
        self.offsets = np.zeros(len(seqs) + 1, dtype=np.int64)
        np.cumsum(lengths, out=self.offsets[1:])
        self.flat = np.fromiter((i for s in seqs for i in s), dtype=np.int32, count=int(self.offsets[-1]))

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, row: int) -> np.ndarray:
        return self.flat[self.offsets[row]: self.offsets[row + 1]]

    def lengths(self) -> np.ndarray:
        """Length of every row."""
        return np.diff(self.offsets)


class RealmCorpus:
    """Blocks, their salient spans and pre-tokenised ids, with the held-out split of every stage."""

    def __init__(self, blocks_path: str | Path, spans_path: str | Path, tokenizer, *, max_doc_len: int = 288,
                 max_candidate_len: int = 288, heldout_fraction: float = 0.05) -> None:
        blocks_path, spans_path = Path(blocks_path), Path(spans_path)
        cols = ["block_id", "title", "text", "sentence_starts"]
        table = _read(blocks_path, cols, "blocks")
        spans = _read(spans_path, ["block_id", "start", "end"], "salient spans")
        self.block_ids = table.column("block_id").to_numpy()
        self.titles = table.column("title").to_pylist()
        self.texts = table.column("text").to_pylist()
        self.sentence_starts = table.column("sentence_starts").to_pylist()
        self.row_of = {int(b): i for i, b in enumerate(self.block_ids)}
        self.spans: dict[int, list[tuple[int, int]]] = defaultdict(list)
        for b, s, e in zip(spans.column("block_id").to_numpy(), spans.column("start").to_numpy(),
                           spans.column("end").to_numpy()):
            row = self.row_of.get(int(b))
            if row is not None and 0 <= s < e <= len(self.texts[row]):
                self.spans[row].append((int(s), int(e)))
        if not self.spans:
            raise RealmError(f"{spans_path}: no salient span falls inside a block of {blocks_path}")
        self.tokenizer = tokenizer
        self.inputs = InputBuilder(tokenizer)
        titles = self.inputs.wordpieces(self.titles)
        bodies = self.inputs.wordpieces(self.texts)
        cls_id, sep_id = self.inputs.cls_id, self.inputs.sep_id
        docs, body_starts = [], []
        budget = max_doc_len - 3  # ORQA's pad_or_truncate_pair: title first, body gets the rest
        for t, b in zip(titles, bodies):
            t = t[:budget]
            docs.append([cls_id, *t, sep_id, *b[: budget - len(t)], sep_id])
            body_starts.append(len(t) + 2)
        self.doc_ids = Ragged(docs)
        self.doc_body_starts = np.asarray(body_starts, dtype=np.int32)
        self.body_ids = Ragged([b[: max_candidate_len - 2] for b in bodies])
        # REALM recognises the source among the candidates by a hash of title + body (its uid);
        # the same hash finds duplicate blocks in the index.
        self.uids = np.asarray([int.from_bytes(hashlib.sha1(f"{t}\x00{x}".encode()).digest()[:8], "little",
                                               signed=True) for t, x in zip(self.titles, self.texts)], dtype=np.int64)
        self.heldout = held_out_mask(self.block_ids, heldout_fraction)
        self.max_doc_len, self.max_candidate_len = max_doc_len, max_candidate_len
        self.path = blocks_path

    def __len__(self) -> int:
        return len(self.block_ids)

    def rows_with_spans(self, part: str) -> np.ndarray:
        """Rows that have a salient span, in the "train" or "heldout" part (or "all")."""
        rows = np.asarray(sorted(self.spans), dtype=np.int64)
        if part == "train":
            rows = rows[~self.heldout[rows]]
        elif part == "heldout":
            rows = rows[self.heldout[rows]]
        return rows


def _read(path: Path, columns: list[str], what: str):
    if not path.is_file():
        raise RealmError(f"{path}: {what} file not found")
    try:
        table = pq.read_table(path, columns=columns)
    except Exception as exc:  # pyarrow raises several types for bad files and missing columns
        raise RealmError(f"{path}: cannot read {what} columns {columns} ({exc})") from None
    if table.num_rows == 0:
        raise RealmError(f"{path}: no rows")
    return table


@dataclass(frozen=True)
class Example:
    """One masked query and where it came from."""

    row: int  # corpus row of the source block
    query: MaskedQuery
    targets: list[int]  # original ids of the scored masks (<= max_masks)
    positions: list[int]  # their positions in query.input_ids


def make_example(corpus: RealmCorpus, row: int, rng: random.Random, *, masking: str = "salient",
                 max_query_len: int = 96, max_masks: int = 10) -> Example | None:
    """Mask one span of block `row` (None when REALM would skip it: no usable span or masks
    that would fall past the query length)."""
    if masking not in MASKINGS:
        raise RealmError(f"masking must be one of {MASKINGS}, got {masking!r}")
    choice = choose_salient_span(corpus.texts[row], corpus.sentence_starts[row], corpus.spans.get(row, []), rng)
    if choice is None:
        return None
    q = mask_query(corpus.tokenizer, choice.sentence, choice.span, max_len=max_query_len, max_masks=max_masks)
    if q is None:
        return None
    if masking != "salient":
        q = _random_mask(corpus, choice.sentence, q, rng, contiguous=masking == "random_spans", max_masks=max_masks)
    positions = [p for p in q.mask_positions if q.target_ids[p] != IGNORE_INDEX]
    return Example(row=row, query=q, targets=[q.target_ids[p] for p in positions], positions=positions)


def _random_mask(corpus: RealmCorpus, sentence: str, q: MaskedQuery, rng: random.Random, *, contiguous: bool,
                 max_masks: int) -> MaskedQuery:
    """As many masks as the salient span had, placed at random in the same sentence."""
    inner = corpus.inputs.wordpieces([sentence])[0][: len(q.input_ids) - 2]  # the query's wordpieces
    original = [corpus.inputs.cls_id, *inner, corpus.inputs.sep_id]
    n = min(len(q.mask_positions), len(inner))
    if contiguous:
        start = 1 + rng.randrange(len(inner) - n + 1)
        positions = list(range(start, start + n))
    else:
        positions = sorted(1 + i for i in rng.sample(range(len(inner)), n))
    input_ids, target_ids = list(original), [IGNORE_INDEX] * len(original)
    for k, p in enumerate(positions):
        if k < max_masks:
            target_ids[p] = original[p]
        input_ids[p] = corpus.tokenizer.mask_token_id
    return MaskedQuery(input_ids=input_ids, target_ids=target_ids, mask_positions=positions)


class ExampleSource:
    """A seeded, resumable walk over one part's blocks: epoch e visits them in an order drawn
    from (seed, e), and an example's masking draw depends only on (seed, e, row), so the stream is
    a pure function of its position (epoch, offset)."""

    def __init__(self, corpus: RealmCorpus, part: str, *, seed: int, masking: str = "salient",
                 max_query_len: int = 96, max_masks: int = 10) -> None:
        self.corpus, self.seed, self.masking = corpus, seed, masking
        self.max_query_len, self.max_masks = max_query_len, max_masks
        self.rows = corpus.rows_with_spans(part)
        if len(self.rows) == 0:
            raise RealmError(f"{corpus.path}: no {part} block has a salient span")
        self.epoch, self.offset = 0, 0
        self._order: tuple[int, np.ndarray] | None = None

    def _rows(self) -> np.ndarray:
        if self._order is None or self._order[0] != self.epoch:
            self._order = (self.epoch, np.random.default_rng([self.seed, self.epoch]).permutation(self.rows))
        return self._order[1]

    def next(self) -> Example:
        """The next usable example (skipping blocks REALM would skip)."""
        for _ in range(2 * len(self.rows) + 1):
            rows = self._rows()
            if self.offset >= len(rows):
                self.epoch, self.offset = self.epoch + 1, 0
                continue
            row = int(rows[self.offset])
            self.offset += 1
            rng = random.Random(f"{self.seed}/{self.epoch}/{row}")
            ex = make_example(self.corpus, row, rng, masking=self.masking, max_query_len=self.max_query_len,
                              max_masks=self.max_masks)
            if ex is not None:
                return ex
        raise RealmError(f"{self.corpus.path}: no block yields a masked example (spans past max_query_len?)")

    def state_dict(self) -> dict[str, int]:
        """Position of the next example."""
        return {"epoch": self.epoch, "offset": self.offset}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Continue from `state_dict`'s position."""
        self.epoch, self.offset = int(state["epoch"]), int(state["offset"])


def fixed_examples(corpus: RealmCorpus, part: str, n: int, *, seed: int, masking: str = "salient",
                   max_query_len: int = 96, max_masks: int = 10) -> list[Example]:
    """`n` examples drawn once with `seed` (the held-out evaluation set: the same every time)."""
    source = ExampleSource(corpus, part, seed=seed, masking=masking, max_query_len=max_query_len,
                           max_masks=max_masks)
    out: list[Example] = []
    for _ in range(min(n, len(source.rows))):
        ex = source.next()
        if source.epoch > 0:
            break
        out.append(ex)
    return out


def contains(haystack: np.ndarray, needle: list[int]) -> bool:
    """True when `needle` occurs as a contiguous run in `haystack` (the answer-in-candidate test)."""
    n = len(needle)
    if n == 0 or len(haystack) < n:
        return False
    first = np.flatnonzero(haystack[: len(haystack) - n + 1] == needle[0])
    return any(np.array_equal(haystack[i: i + n], needle) for i in first)
