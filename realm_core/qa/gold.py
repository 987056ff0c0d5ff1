"""Gold answer spans in the pre-tokenised corpus, found on cached ids (never by re-tokenising).

ORQA's reader is trained on every occurrence, inside a retrieved block, of the wordpiece sequence
of every answer alias (REALM_NOTES §1.5), and its retriever on the blocks that `has_answer`. Here
both come from one search per question over the whole `WordpieceCorpus`, done once before
training or prediction:

- **text answers** (NQ, WQ): each alias is tokenised once (uncased wordpieces) and looked up in a
  sorted index of the corpus ids, so only positions holding the alias' first wordpiece are
  checked. One refinement over HF's id matching: a match whose next wordpiece continues the same
  word (`##...`) is not a span ("bram" is not an answer inside "bram ##ant ##yo").
- **regex answers** (CuratedTREC): the pattern is searched in each block's original text (behind
  the substring prefilter of `retrieval_metrics.required_literals`), and each match is mapped to
  the wordpieces it covers through their character offsets; a match that no whole wordpiece fits
  in (e.g. an empty one) is not a span, but its block still `has_answer`, as in ORQA's substring
  test.

Spans are (start, end) wordpiece indexes into the block body, `end` inclusive; spans longer than
`max_width` wordpieces are dropped, since the reader cannot score them.
"""

from __future__ import annotations

import re
from typing import Sequence

import numpy as np

from realm_core.qa.wordpieces import WordpieceCorpus
from realm_core.qa.datasets import QAExample
from realm_core.qa.metrics import _compile
from realm_core.qa.retrieval_metrics import fold_for_literals, regex_hit, required_literals


class Gold:
    """Where one question's answer is in the corpus: `has_answer` per block row, and the spans.

    Text answers are searched over the whole corpus at once (fast on the sorted id index); regex
    answers block by block, only for the rows asked about, and cached, since a CuratedTREC pattern
    over every block costs tens of milliseconds and a question only ever looks at its beam.
    """

    def __init__(self, finder: "GoldFinder", example: QAExample) -> None:
        self.finder, self.example = finder, example
        self.regex = example.answer_type == "regex"
        self._spans: dict[int, list[tuple[int, int]]] = {}
        self._hit: dict[int, bool] = {}
        if self.regex:
            compiled = [_compile(p) for p in example.answers]
            self._patterns = [(c, required_literals(c.pattern)) for c in compiled if c is not None]
        else:
            self._spans, rows = finder._find_text(example.answers)
            self.rows = frozenset(rows)

    def has_answer(self, rows: Sequence[int] | np.ndarray) -> np.ndarray:
        """Bool per row: the block holds an answer (wordpiece match; regex: a `search` hit)."""
        if not self.regex:
            return np.fromiter((int(r) in self.rows for r in rows), dtype=bool, count=len(rows))
        return np.fromiter((self._regex_row(int(r)) for r in rows), dtype=bool, count=len(rows))

    def spans(self, row: int) -> list[tuple[int, int]]:
        """Gold (start, end) wordpiece spans in block `row`'s body, end inclusive, width <= max_width."""
        if self.regex:
            self._regex_row(row)
        return self._spans.get(row, [])

    def _regex_row(self, row: int) -> bool:
        hit = self._hit.get(row)
        if hit is None:
            text, folded = self.finder.texts[row], self.finder.folded(row)
            spans: set[tuple[int, int]] = set()
            hit = False
            for pattern, literals in self._patterns:
                if regex_hit(pattern, literals, text, folded):
                    hit = True
                    spans.update(self.finder._regex_spans(pattern, text, row))
            self._hit[row] = hit
            if spans:
                self._spans[row] = sorted(spans)
        return hit


class GoldFinder:
    """Finds `Gold` for questions over one `WordpieceCorpus` and the texts it was built from."""

    def __init__(self, corpus: WordpieceCorpus, texts: Sequence[str], tokenizer, *, max_width: int = 10) -> None:
        from realm_core.modeling.inputs import InputBuilder

        if len(texts) != len(corpus):
            raise ValueError(f"GoldFinder: {len(texts)} texts for a corpus of {len(corpus)} blocks")
        self.corpus, self.texts, self.max_width = corpus, texts, max_width
        self.inputs = InputBuilder(tokenizer)
        ids = np.asarray(corpus.ids)
        self._order = np.argsort(ids, kind="stable")
        self._sorted = ids[self._order]
        self._ids = ids
        vocab = tokenizer.get_vocab()
        self._continues = np.zeros(max(vocab.values()) + 1, dtype=bool)
        self._continues[[i for t, i in vocab.items() if t.startswith("##")]] = True
        self._folded: dict[int, str] = {}

    def find(self, example: QAExample) -> Gold:
        """The `Gold` of one question (text answers searched now, regex ones on demand)."""
        return Gold(self, example)

    def find_all(self, examples: Sequence[QAExample]) -> list[Gold]:
        """`find` for each example, in order."""
        return [self.find(ex) for ex in examples]

    def folded(self, row: int) -> str:
        """Block `row`'s text as `required_literals` compares it (computed once per row)."""
        out = self._folded.get(row)
        if out is None:
            out = self._folded[row] = fold_for_literals(self.texts[row])
        return out

    # ------------------------------------------------------------------ text answers

    def _find_text(self, answers: Sequence[str]) -> tuple[dict[int, list[tuple[int, int]]], set[int]]:
        spans: dict[int, list[tuple[int, int]]] = {}
        rows_hit: set[int] = set()
        starts = self.corpus.starts
        for needle in self.inputs.wordpieces(list(answers)):
            if not needle:
                continue
            n = len(needle)
            lo, hi = np.searchsorted(self._sorted, [needle[0], needle[0] + 1])
            pos = np.sort(self._order[lo:hi])
            for j in range(1, n):
                pos = pos[pos + j < len(self._ids)]
                pos = pos[self._ids[pos + j] == needle[j]]
            if not len(pos):
                continue
            rows = np.searchsorted(starts, pos, side="right") - 1
            ends = pos + n  # exclusive, in flat coordinates
            inside = ends <= starts[rows + 1]
            # The match must end a word: the next wordpiece (if in the block) is not a ## piece.
            nxt = np.minimum(ends, len(self._ids) - 1)
            whole = ~(self._continues[self._ids[nxt]] & (ends < starts[rows + 1]))
            for p, r in zip(pos[inside & whole], rows[inside & whole]):
                r = int(r)
                rows_hit.add(r)
                if n <= self.max_width:
                    s = int(p - starts[r])
                    spans.setdefault(r, []).append((s, s + n - 1))
        return {r: sorted(set(v)) for r, v in spans.items()}, rows_hit

    # ------------------------------------------------------------------ regex answers

    def _regex_spans(self, pattern: re.Pattern[str], text: str, row: int) -> list[tuple[int, int]]:
        offsets = self.corpus.body_offsets(row)
        if not len(offsets):
            return []
        out = []
        for m in pattern.finditer(text):
            ms, me = m.span()
            if me <= ms:
                continue
            s = int(np.searchsorted(offsets[:, 0], ms, side="left"))
            e = int(np.searchsorted(offsets[:, 1], me, side="right")) - 1
            # Only whitespace may be left over at either side of the wordpieces the match covers.
            if s > e or e >= len(offsets) or text[ms:offsets[s, 0]].strip() or text[offsets[e, 1]:me].strip():
                continue
            if e - s + 1 <= self.max_width:
                out.append((s, e))
        return out
