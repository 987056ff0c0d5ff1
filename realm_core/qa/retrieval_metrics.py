"""Retrieval metrics for open QA: recall@k over ranked has_answer hits, and corpus answer coverage.

`recall_at_k` is DPR's "top-k accuracy" and ORQA's `top_k_match`: the share of questions with at
least one answer-bearing block among the first k retrieved. `answer_coverage` is its ceiling for a
given corpus: the share of questions whose answer occurs in *some* block, which is what a small
corpus (a few thousand blocks, not 13M) has to be checked for before recall numbers mean anything.
"""

from __future__ import annotations

import re
import unicodedata
from collections import defaultdict
from typing import Iterable, Sequence

from realm_core.qa.datasets import QAExample
from realm_core.qa.metrics import Tokenizer, answer_tokens, compile_regex, passage_tokens

DEFAULT_KS: tuple[int, ...] = (1, 5, 20, 100)


def recall_at_k(hits: Sequence[Sequence[bool]], ks: Iterable[int] = DEFAULT_KS) -> dict[str, float]:
    """{"recall@k": share of questions with a True among their first k hits} for each k.

    `hits[q]` is question q's ranked list of has_answer flags. A question with fewer than k
    retrieved blocks counts with what it has (so recall@k never exceeds the ceiling of the list).
    """
    ks = list(ks)
    if not hits:
        raise ValueError("recall_at_k: no questions")
    if any(k < 1 for k in ks):
        raise ValueError(f"recall_at_k: every k must be >= 1, got {ks}")
    # The rank of the first hit decides every k at once; None = no hit at all.
    first = [next((i for i, h in enumerate(row) if h), None) for row in hits]
    n = len(first)
    return {f"recall@{k}": sum(1 for r in first if r is not None and r < k) / n for k in ks}


def answer_coverage(
    examples: Sequence[QAExample],
    corpus_texts_iter: Iterable[str],
    tokenizer: Tokenizer | None = None,
) -> float:
    """Share of `examples` whose answer (any alias) occurs in at least one corpus text."""
    if not examples:
        raise ValueError("answer_coverage: no questions")
    covered = covered_questions(examples, corpus_texts_iter, tokenizer)
    return sum(covered) / len(covered)


def covered_questions(
    examples: Sequence[QAExample],
    corpus_texts_iter: Iterable[str],
    tokenizer: Tokenizer | None = None,
) -> list[bool]:
    """Per example: does its answer occur in some text? One streaming pass over the corpus.

    Text answers use the same rule as `has_answer` (NFD, tokenised, lower-cased token sequence).
    Instead of testing every question against every block (Q x N), the needed answer token tuples
    go in one set, indexed by first token: each block is tokenised once and only positions whose
    token starts some answer are looked up. Found answers leave the set, so the work shrinks as
    coverage grows and the pass stops early once everything is found. Regex answers (CuratedTREC)
    are `search`ed per block until found, behind a substring prefilter (`required_literals`):
    patterns such as `.*anxi.*` or `U.*S.*president` backtrack quadratically on long lines, and
    the prefilter skips them on the many blocks that cannot match (the full CuratedTREC test set
    over this repo's 7.7k blocks: 48 s without it, 13 s with it).
    """
    covered = [False] * len(examples)
    needles = _Needles()
    # example index -> [(compiled pattern, literals one of which the text must contain, or None)]
    regex_waiting: dict[int, list[tuple[re.Pattern[str], list[str] | None]]] = {}
    for i, ex in enumerate(examples):
        if ex.answer_type == "regex":
            compiled = [(c, required_literals(c.pattern)) for c in map(compile_regex, ex.answers) if c is not None]
            if compiled:
                regex_waiting[i] = compiled
            continue
        for answer in ex.answers:
            toks = answer_tokens(answer, tokenizer)
            if toks:  # an answer with no tokens can never match (see has_answer)
                needles.add(toks, i)

    for text in corpus_texts_iter if (needles or regex_waiting) else ():
        if needles:
            for i in needles.find_in(passage_tokens(text, tokenizer)):
                covered[i] = True
        if regex_waiting:
            nfc = unicodedata.normalize("NFC", text)
            folded = fold_for_literals(nfc)
            hits = [i for i, pats in regex_waiting.items() if any(regex_hit(p, lit, nfc, folded) for p, lit in pats)]
            for i in hits:
                covered[i] = True
                del regex_waiting[i]
        if not needles and not regex_waiting:
            break  # everything found: the rest of the corpus is never read
    return covered


def regex_hit(pattern: re.Pattern[str], literals: list[str] | None, text: str, folded: str) -> bool:
    """`pattern.search(text)`, skipped when `folded` (fold_for_literals of text) holds none of the
    pattern's `required_literals`."""
    if literals is not None and not any(lit in folded for lit in literals):
        return False
    return pattern.search(text) is not None


_MIN_LITERAL = 3  # shorter required substrings filter out too little to be worth checking


def required_literals(pattern: str) -> list[str] | None:
    """Casefolded substrings of which any match of `pattern` must contain at least one; None if
    no such set of useful (>= 3 characters) literals can be read off the pattern.

    One literal per top-level alternative: its longest run of plain ASCII characters outside
    groups, classes and repeats. Texts are compared through `fold_for_literals`; for ASCII
    literals that makes the test exact under IGNORECASE (checked over all of Unicode: a character
    `re` matches case-insensitively with an ASCII one casefolds to the same, except Turkish
    İ/ı ~ i, which the fold maps explicitly). A pattern it cannot analyse is searched everywhere.
    """
    try:
        from re import _parser  # the stdlib's own regex parser (CPython 3.11+)

        parsed = list(_parser.parse(pattern, re.IGNORECASE | re.UNICODE | re.MULTILINE))
    except Exception:  # a private API: any surprise means "no prefilter", never a wrong answer
        return None
    if len(parsed) == 1 and parsed[0][0] == _parser.BRANCH:
        alternatives = parsed[0][1][1]
    else:
        alternatives = [parsed]
    out = []
    for alt in alternatives:
        lit = _longest_literal_run(alt, _parser.LITERAL)
        if len(lit) < _MIN_LITERAL:
            return None
        out.append(lit.casefold())
    return out


_TURKISH_I = {0x130: "i", 0x131: "i"}


def fold_for_literals(text: str) -> str:
    """The text form `required_literals` output is searched in (casefold, with İ/ı -> i)."""
    return text.translate(_TURKISH_I).casefold()


def _longest_literal_run(items, literal_op) -> str:
    best, run = "", []
    for op, arg in list(items) + [(None, None)]:
        if op == literal_op and arg < 128:
            run.append(chr(arg))
            continue
        if len(run) > len(best):
            best = "".join(run)
        run = []
    return best


class _Needles:
    """Answer token tuples still being looked for, indexed by first token and length."""

    def __init__(self) -> None:
        self._owners: dict[tuple[str, ...], list[int]] = defaultdict(list)
        # first token -> {length: number of waiting tuples with that first token and length}
        self._lengths: dict[str, dict[int, int]] = defaultdict(dict)

    def __bool__(self) -> bool:
        return bool(self._owners)

    def add(self, toks: tuple[str, ...], owner: int) -> None:
        if toks not in self._owners:
            counts = self._lengths[toks[0]]
            counts[len(toks)] = counts.get(len(toks), 0) + 1
        self._owners[toks].append(owner)

    def find_in(self, tokens: list[str]) -> list[int]:
        """Owners of every waiting tuple that occurs in `tokens`; found tuples stop waiting."""
        found: list[int] = []
        n = len(tokens)
        for pos, tok in enumerate(tokens):
            counts = self._lengths.get(tok)
            if not counts:
                continue
            for length in sorted(counts):
                if pos + length > n:
                    break
                owners = self._owners.pop(tuple(tokens[pos:pos + length]), None)
                if owners is None:
                    continue
                found.extend(owners)
                counts[length] -= 1
                if not counts[length]:
                    del counts[length]
            if not counts:
                del self._lengths[tok]
        return found
