"""Gold answer spans on the tokenized corpus: text answers by wordpiece ids, regex answers by text."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from realm_core.qa.datasets import QAExample
from realm_core.qa.gold import GoldFinder
from realm_core.qa.wordpieces import WordpieceCorpus, build
from tests.realm_core.training.ict_fixture import write_blocks

HAND = [
    "Dublin is where Bram Stoker was born; Bram later left Dublin for London.",  # 0
    "Bramantyo is an Indonesian name.",  # 1
    "",  # 2: an empty block
    "In 1889 he moved to New",  # 3: "New York" crosses into the next block
    "York the next year.",  # 4
    "the quick brown fox jumps over the lazy dog",  # 5
    "Paris, 1889: the tower opened.\nIn 1889 Paris hosted a fair; a new york-style deli opened.",  # 6
    "Its capital is DUBLIN",  # 7: the last block ends with an answer
]
FLAGS = re.IGNORECASE | re.UNICODE | re.MULTILINE  # ORQA's CuratedTREC matching is case-insensitive


def write(path: Path, texts: list[str]) -> Path:
    pq.write_table(pa.table({"block_id": pa.array(range(len(texts)), pa.int64()),
                             "title": [f"t{i}" for i in range(len(texts))], "text": texts}), str(path))
    return path


@pytest.fixture(scope="module")
def hand(tmp_path_factory, tokenizer):
    tmp = tmp_path_factory.mktemp("gold_hand")
    build(write(tmp / "blocks.parquet", HAND), tokenizer, tmp / "wp")
    corpus = WordpieceCorpus(tmp / "wp")
    return corpus, GoldFinder(corpus, HAND, tokenizer, max_width=3)


@pytest.fixture(scope="module")
def real(tmp_path_factory, tokenizer):
    tmp = tmp_path_factory.mktemp("gold_real")
    texts = pq.read_table(write_blocks(tmp / "nq.parquet", 48)).column("text").to_pylist() + HAND
    build(write(tmp / "blocks.parquet", texts), tokenizer, tmp / "wp")
    corpus = WordpieceCorpus(tmp / "wp")
    return corpus, texts, GoldFinder(corpus, texts, tokenizer, max_width=4)


def text_q(*answers: str) -> QAExample:
    return QAExample("q", "a question?", list(answers), "text")


def regex_q(*patterns: str) -> QAExample:
    return QAExample("q", "a question?", list(patterns), "regex")


def surface(corpus: WordpieceCorpus, texts, row: int, span: tuple[int, int]) -> str:
    offsets = corpus.body_offsets(row)
    return texts[row][offsets[span[0], 0]: offsets[span[1], 1]]


def all_rows(corpus) -> np.ndarray:
    return np.arange(len(corpus))


def test_an_alias_twice_in_a_block_gives_two_spans(hand):
    corpus, finder = hand
    gold = finder.find(text_q("dublin"))
    assert gold.has_answer(all_rows(corpus)).tolist() == [i in (0, 7) for i in range(len(HAND))]
    spans = gold.spans(0)
    assert len(spans) == 2 and spans[0][0] < spans[1][0]
    assert [surface(corpus, HAND, 0, s) for s in spans] == ["Dublin", "Dublin"]
    assert [surface(corpus, HAND, 7, s) for s in gold.spans(7)] == ["DUBLIN"]  # ends the corpus
    assert gold.spans(1) == [] and gold.spans(2) == []
    two = finder.find(text_q("Bram"))
    assert [surface(corpus, HAND, 0, s) for s in two.spans(0)] == ["Bram", "Bram"]


def test_uncased_match_ignores_the_case_of_answers_and_text(hand):
    corpus, finder = hand
    rows = all_rows(corpus)
    spans = {a: finder.find(text_q(a)).spans(0) for a in ("dublin", "DUBLIN", "Dublin", "dUbLiN")}
    assert len({tuple(v) for v in spans.values()}) == 1 and len(spans["dublin"]) == 2
    assert finder.find(text_q("NEW YORK")).has_answer(rows).tolist() == [i == 6 for i in range(len(HAND))]


def test_no_match_inside_a_longer_word(hand, tokenizer):
    corpus, finder = hand
    assert tokenizer.tokenize("Bramantyo")[:2] == ["bram", "##ant"]  # what makes this case
    gold = finder.find(text_q("bram"))
    assert not gold.has_answer([1])[0] and gold.spans(1) == []
    assert gold.has_answer([0])[0]
    assert finder.find(text_q("bramantyo")).spans(1) == [(0, 2)]  # the whole word is found


def test_a_span_crossing_two_blocks_is_not_found(hand):
    corpus, finder = hand
    gold = finder.find(text_q("new york"))
    assert not gold.has_answer([3, 4]).any() and gold.spans(3) == [] and gold.spans(4) == []
    assert gold.rows == {6}  # only the block that holds both words ("new york-style")
    assert [surface(corpus, HAND, 6, s) for s in gold.spans(6)] == ["new york"]


def test_wider_than_max_width_has_the_answer_but_no_span(hand):
    corpus, finder = hand
    gold = finder.find(text_q("quick brown fox jumps"))  # 4 wordpieces, max_width 3
    assert gold.has_answer(all_rows(corpus)).tolist() == [i == 5 for i in range(len(HAND))]
    assert gold.spans(5) == []
    fits = finder.find(text_q("quick brown fox"))
    assert fits.spans(5) == [(1, 3)]


def test_several_aliases_and_empty_ones(hand):
    corpus, finder = hand
    gold = finder.find(text_q("", "London", "dublin", "Dublin"))  # a repeated alias adds no span
    assert sorted(gold.rows) == [0, 7]
    assert [surface(corpus, HAND, 0, s) for s in gold.spans(0)] == ["Dublin", "Dublin", "London"]
    assert finder.find(text_q("")).rows == frozenset()
    assert finder.find(text_q("zanzibar")).has_answer([0, 1, 2]).tolist() == [False] * 3


def test_text_spans_match_a_brute_force_scan(real, tokenizer):
    corpus, texts, finder = real
    continues = {i for t, i in tokenizer.get_vocab().items() if t.startswith("##")}
    rng = np.random.default_rng(0)
    aliases = ["the", "of the", "new york", "bram", "dublin", "united states"]
    for _ in range(12):  # word n-grams taken from the corpus, some ending inside a longer word
        words = texts[int(rng.integers(48))].split()
        i, n = int(rng.integers(len(words) - 3)), int(rng.integers(1, 4))
        aliases.append(" ".join(words[i: i + n]))
    builder = finder.inputs
    checked = 0
    for alias in aliases:
        needle = builder.wordpieces([alias])[0]
        gold = finder.find(text_q(alias))
        want_rows, want_spans = set(), {}
        for row in range(len(corpus)):
            body = corpus.body(row).tolist()
            for s in range(len(body) - len(needle) + 1):
                if body[s: s + len(needle)] == needle and (s + len(needle) == len(body)
                                                           or body[s + len(needle)] not in continues):
                    want_rows.add(row)
                    if len(needle) <= finder.max_width:
                        want_spans.setdefault(row, []).append((s, s + len(needle) - 1))
        assert gold.rows == want_rows, alias
        assert gold.has_answer(all_rows(corpus)).tolist() == [r in want_rows for r in range(len(corpus))]
        for row in range(len(corpus)):
            assert gold.spans(row) == want_spans.get(row, []), (alias, row)
        checked += len(want_rows)
    assert checked > 60


def test_regex_spans_map_to_the_matched_text(hand):
    corpus, finder = hand
    gold = finder.find(regex_q(r"18\d\d"))
    assert gold.regex and gold.has_answer(all_rows(corpus)).tolist() == [i in (3, 6) for i in range(len(HAND))]
    assert [surface(corpus, HAND, 6, s) for s in gold.spans(6)] == ["1889", "1889"]
    words = finder.find(regex_q(r"new\s+york", r"Paris"))
    assert sorted(surface(corpus, HAND, 6, s) for s in words.spans(6)) == ["Paris", "Paris", "new york"]
    padded = finder.find(regex_q(r"\s+Stoker\s+"))  # whitespace around the wordpieces is allowed
    assert [surface(corpus, HAND, 0, s) for s in padded.spans(0)] == ["Stoker"]


def test_regex_matches_cutting_a_wordpiece_have_the_answer_but_no_span(hand):
    corpus, finder = hand
    cut = finder.find(regex_q(r"Brama"))  # "bram" + part of "##ant"
    assert cut.has_answer([1])[0] and cut.spans(1) == []
    empty = finder.find(regex_q(r"x*"))  # matches the empty string everywhere
    assert empty.has_answer(all_rows(corpus)).all()
    assert all(empty.spans(r) == [] for r in range(len(corpus)))


def test_regex_is_case_insensitive_and_bad_patterns_match_nothing(hand):
    corpus, finder = hand
    rows = all_rows(corpus)
    assert finder.find(regex_q(r"dublin")).has_answer(rows).tolist() == [i in (0, 7) for i in range(len(HAND))]
    assert [surface(corpus, HAND, 7, s) for s in finder.find(regex_q(r"dublin")).spans(7)] == ["DUBLIN"]
    bad = finder.find(regex_q(r"(unclosed"))
    assert not bad.has_answer(rows).any() and all(bad.spans(r) == [] for r in rows)
    mixed = finder.find(regex_q(r"(unclosed", r"Stoker"))  # a broken alternative does not hide a good one
    assert mixed.has_answer(rows).tolist() == [i == 0 for i in range(len(HAND))]


def test_regex_rows_are_searched_lazily(hand):
    corpus, finder = hand
    gold = finder.find(regex_q(r"dublin"))
    assert gold._hit == {}
    gold.has_answer([6, 7])
    assert set(gold._hit) == {6, 7}
    gold.spans(0)
    assert set(gold._hit) == {0, 6, 7}


PATTERNS = [r"Dub\w+", r"\d{4}", r"new york|london", r"the\s+\w+ower", r"Bram\b", r"(?:Presiden|Senat)e?\w*",
            r"^In\b", r"lazy dog$", r"ç", r"(unclosed", r"united states of america|usa", r"[0-9]+(?:st|nd|rd|th)"]


@pytest.mark.parametrize("pattern", PATTERNS)
def test_regex_has_answer_agrees_with_brute_force_search(real, pattern):
    corpus, texts, finder = real
    gold = finder.find(regex_q(pattern))
    try:
        compiled = re.compile(pattern, FLAGS)
    except re.error:
        expected = [False] * len(texts)
    else:
        expected = [compiled.search(t) is not None for t in texts]
    assert gold.has_answer(all_rows(corpus)).tolist() == expected
    if any(expected):
        for row in np.flatnonzero(expected):
            offsets = corpus.body_offsets(int(row))
            text = texts[row]
            for s, e in gold.spans(int(row)):
                assert 0 <= s <= e < len(offsets) and e - s + 1 <= finder.max_width
                a, b = int(offsets[s, 0]), int(offsets[e, 1])
                # Some match covers exactly these wordpieces, up to whitespace at its edges.
                assert any(m.start() <= a and b <= m.end() and not text[m.start(): a].strip()
                           and not text[b: m.end()].strip() for m in compiled.finditer(text)), (pattern, row)


def test_gold_finder_refuses_texts_of_another_length(hand, tokenizer):
    corpus, _ = hand
    with pytest.raises(ValueError, match="texts"):
        GoldFinder(corpus, HAND[:-1], tokenizer)
