"""Open-QA answer metrics, matching the scripts the published numbers come from.

- `normalize_answer` / `exact_match`: ORQA's `eval_utils.normalize_answer` (REALM_NOTES §3): Unicode
  NFD, lowercase, drop every `string.punctuation` character, replace the whole words a/an/the with a
  space, collapse whitespace; EM is the max over the reference answers. The NFD step is ORQA's and
  is absent from the SQuAD/DPR/Atlas copies, so scores can differ slightly from those.
- `regex_match`: ORQA's CuratedTREC rule: the pattern compiled with IGNORECASE|UNICODE|MULTILINE
  and `re.match`ed against the *un-normalised* prediction, i.e. anchored at the start but not at
  the end; a pattern that does not compile scores as wrong.
- `has_answer`: the retrieval check, DPR's `has_answer`: NFD, then DrQA's SimpleTokenizer
  (runs of letters/digits/marks, or any single other non-space character), uncased, and a search
  for the answer's token sequence inside the passage's. It is tokenisation-aware ("art" does not
  match inside "party"), and it is the rule most later recall@k numbers use. ORQA's TF op is a
  raw case-sensitive substring test instead, and HF REALM matches wordpiece ids.
  Regex answers are `search`ed anywhere in the passage, with pattern and passage NFC-normalised.
  DPR applies NFD to both, which breaks real CuratedTREC patterns: `\\é` becomes the invalid
  escape `\\e` plus an accent (6 patterns), and `[eé]` no longer matches a decomposed "é".
"""

from __future__ import annotations

import re
import string
import unicodedata
from collections import Counter
from functools import lru_cache
from typing import Any, Callable, Iterable, Literal, Sequence

import regex  # the `regex` module: \p{..} Unicode classes, needed to copy DrQA's tokenizer exactly

AnswerType = Literal["text", "regex"]
ANSWER_TYPES: tuple[str, ...] = ("text", "regex")

_PUNCT = frozenset(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_REGEX_FLAGS = re.IGNORECASE | re.UNICODE | re.MULTILINE

# DrQA/DPR SimpleTokenizer: a token is a run of letters, digits and combining marks, or any single
# character that is neither a separator nor a control/format character.
_SIMPLE_TOKEN = regex.compile(
    r"[\p{L}\p{N}\p{M}]+|[^\p{Z}\p{C}]", flags=regex.IGNORECASE | regex.UNICODE | regex.MULTILINE
)

#: str -> tokens, or any object with such a `.tokenize` method (a HF tokenizer)
Tokenizer = Callable[[str], Sequence[str]] | Any


def normalize_answer(s: str) -> str:
    """ORQA's answer normalisation: NFD, lowercase, strip punctuation, drop a/an/the, collapse spaces.

    The order matters and is ORQA's: punctuation goes before articles, so "the-end" becomes
    "theend" (no article left), and `\\b` in the article rule sees the punctuation-free text.
    A quirk of NFD + `\\b`, kept for fidelity: a combining accent is not a word character, so a
    leading "Å"/"Á" ("a" + accent) is removed as the article "a" ("Ångström" -> "̊ngström").
    """
    s = unicodedata.normalize("NFD", s).lower()
    s = "".join(ch for ch in s if ch not in _PUNCT)
    s = _ARTICLES.sub(" ", s)
    return " ".join(s.split())


def exact_match(prediction: str, answers: Iterable[str]) -> bool:
    """True if the normalised prediction equals any normalised reference answer (ORQA/SQuAD EM).

    Like ORQA, an answer that normalises to "" (e.g. the band "The The") is matched by an empty
    prediction; that is the published metric, so it is kept.
    """
    pred = normalize_answer(prediction)
    return any(pred == normalize_answer(a) for a in answers)


def token_f1(prediction: str, answers: Sequence[str], answer_type: AnswerType = "text") -> float:
    """SQuAD's token F1 of the normalised prediction, max over the references; a regex answer
    (CuratedTREC) has no tokens to overlap, so it scores 1.0 when `regex_match` holds, else 0.0."""
    if answer_type == "regex":
        return float(any(regex_match(prediction, p) for p in answers))
    pred = normalize_answer(prediction).split()
    best = 0.0
    for answer in answers:
        ref = normalize_answer(answer).split()
        common = sum((Counter(pred) & Counter(ref)).values())
        if common:
            precision, recall = common / len(pred), common / len(ref)
            best = max(best, 2 * precision * recall / (precision + recall))
    return best


@lru_cache(maxsize=4096)
def _compile(pattern: str) -> re.Pattern[str] | None:
    # A None result is cached too, so a broken CuratedTREC pattern is compiled (and fails) once.
    try:
        return re.compile(pattern, _REGEX_FLAGS)
    except (re.error, RecursionError, OverflowError):
        return None


def regex_match(prediction: str, pattern: str) -> bool:
    """ORQA/DrQA CuratedTREC correctness: `re.match` (start-anchored), case-insensitive; never raises.

    An invalid pattern counts as wrong, exactly as in ORQA's `regex_match_score`.
    """
    compiled = _compile(pattern)
    return compiled is not None and compiled.match(prediction) is not None


def answer_correct(prediction: str, answers: Sequence[str], answer_type: AnswerType) -> bool:
    """The reader metric for one question: EM for text answers, any `regex_match` for regex ones."""
    _check_type(answer_type)
    if answer_type == "regex":
        return any(regex_match(prediction, p) for p in answers)
    return exact_match(prediction, answers)


def simple_tokenize(text: str) -> list[str]:
    """DrQA/DPR SimpleTokenizer words, lower-cased (no normalisation: callers NFD first)."""
    return [m.group().lower() for m in _SIMPLE_TOKEN.finditer(text)]


def answer_tokens(answer: str, tokenizer: Tokenizer | None = None) -> tuple[str, ...]:
    """The token sequence `has_answer` looks for: NFD, then the tokenizer, lower-cased."""
    return tuple(_tokens(answer, tokenizer))


def _tokens(text: str, tokenizer: Tokenizer | None) -> list[str]:
    text = unicodedata.normalize("NFD", text)
    if tokenizer is None:
        return simple_tokenize(text)
    # A HF tokenizer is itself callable but returns encodings, not tokens: use its .tokenize.
    tokenize = getattr(tokenizer, "tokenize", tokenizer)
    return [t.lower() for t in tokenize(text)]


def has_answer(
    text: str,
    answers: Sequence[str],
    answer_type: AnswerType,
    tokenizer: Tokenizer | None = None,
) -> bool:
    """Does the passage `text` contain one of the answers? (DPR's retrieval `has_answer`.)

    Text answers: the answer's token sequence occurs contiguously in the passage's token sequence,
    both NFD-normalised and lower-cased. `tokenizer` (a callable str -> tokens, or an object
    with `.tokenize` such as a HF tokenizer) replaces DrQA's SimpleTokenizer when given. An
    answer with no tokens never matches (in DPR it would match every passage).
    Regex answers: `search` anywhere in the passage (pattern and passage NFC-normalised, see the
    module docstring), IGNORECASE|UNICODE|MULTILINE; a pattern that does not compile never matches.
    """
    _check_type(answer_type)
    if answer_type == "regex":
        passage = unicodedata.normalize("NFC", text)
        for pattern in answers:
            compiled = compile_regex(pattern)
            if compiled is not None and compiled.search(passage) is not None:
                return True
        return False
    passage_tokens = _tokens(text, tokenizer)
    for answer in answers:
        needle = _tokens(answer, tokenizer)
        if needle and contains_tokens(passage_tokens, needle):
            return True
    return False


def contains_tokens(haystack: list[str], needle: list[str]) -> bool:
    n = len(needle)
    first = needle[0]
    # Only positions starting with the answer's first token can match: avoids slicing everywhere.
    for i, tok in enumerate(haystack[: len(haystack) - n + 1]):
        if tok == first and haystack[i:i + n] == needle:
            return True
    return False


def compile_regex(pattern: str) -> re.Pattern[str] | None:
    """The pattern as `has_answer` uses it (NFC, IGNORECASE|UNICODE|MULTILINE); None if invalid."""
    return _compile(unicodedata.normalize("NFC", pattern))


def passage_tokens(text: str, tokenizer: Tokenizer | None = None) -> list[str]:
    """The passage tokens `has_answer` compares against (NFD, tokenised, lower-cased)."""
    return _tokens(text, tokenizer)


def _check_type(answer_type: str) -> None:
    if answer_type not in ANSWER_TYPES:
        raise ValueError(f"answer_type must be one of {ANSWER_TYPES}, got {answer_type!r}")
