"""REALM pre-training examples: the pre-tokenised corpus, the held-out split, the three maskings,
the resumable example source, and the answer-in-candidate test."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from realm_core.entities.masking import IGNORE_INDEX, choose_salient_span
from realm_core.errors import RealmError
from realm_core.modeling.inputs import InputBuilder
from realm_core.training.heldout import held_out_mask
from realm_core.training.realm_data import ExampleSource, RealmCorpus, contains, fixed_examples, make_example
from tests.realm_core.training.realm_fixture import (HELDOUT, MAX_CANDIDATE_LEN, MAX_DOC_LEN, MAX_QUERY_LEN,
                                                     write_corpus)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> tuple[Path, Path]:
    """The 48 fixture blocks plus a copy of block 5 (id 1000), and their salient spans."""
    return write_corpus(tmp_path_factory.mktemp("realm_corpus"), duplicate_of=5)


@pytest.fixture(scope="module")
def corpus(files, tokenizer) -> RealmCorpus:
    return RealmCorpus(*files, tokenizer, max_doc_len=MAX_DOC_LEN, max_candidate_len=MAX_CANDIDATE_LEN,
                       heldout_fraction=HELDOUT)


def source(corpus, part="train", seed=0, **kw) -> ExampleSource:
    return ExampleSource(corpus, part, seed=seed, max_query_len=MAX_QUERY_LEN, **kw)


def same(a, b) -> bool:
    return (a.row, a.query.input_ids, a.query.target_ids, a.query.mask_positions, a.targets, a.positions) == \
        (b.row, b.query.input_ids, b.query.target_ids, b.query.mask_positions, b.targets, b.positions)


def test_pretokenised_ids_match_the_input_builder(corpus, files, tokenizer):
    table = pq.read_table(files[0])
    titles, texts = table.column("title").to_pylist(), table.column("text").to_pylist()
    assert len(corpus) == 49 and corpus.block_ids.tolist() == table.column("block_id").to_pylist()
    inputs = InputBuilder(tokenizer)
    docs, starts = inputs.document_ids(titles, texts, MAX_DOC_LEN)
    bodies = inputs.wordpieces(texts)
    for row in range(len(corpus)):
        assert corpus.doc_ids[row].tolist() == docs[row]
        assert int(corpus.doc_body_starts[row]) == starts[row]
        assert corpus.body_ids[row].tolist() == bodies[row][: MAX_CANDIDATE_LEN - 2]
    assert corpus.doc_ids.lengths().max() == MAX_DOC_LEN  # the fixture's blocks are longer than 64 wordpieces
    # The uid is a hash of title + text: the copy of block 5 shares it, no other block does.
    assert corpus.uids[corpus.row_of[1000]] == corpus.uids[corpus.row_of[5]]
    assert len(set(corpus.uids.tolist())) == len(corpus) - 1


def test_heldout_split_is_the_shared_one_and_never_trained_on(corpus):
    assert np.array_equal(corpus.heldout, held_out_mask(corpus.block_ids, HELDOUT))
    assert 0 < corpus.heldout.sum() < len(corpus)
    train, held = set(corpus.rows_with_spans("train")), set(corpus.rows_with_spans("heldout"))
    assert train and held and train.isdisjoint(held)
    assert train | held == set(corpus.rows_with_spans("all")) == set(corpus.spans)
    assert not corpus.heldout[sorted(train)].any() and corpus.heldout[sorted(held)].all()
    s = source(corpus)
    rows = [s.next().row for _ in range(3 * len(s.rows))]
    assert s.epoch >= 2 and not corpus.heldout[rows].any()
    assert len(set(rows)) > 0.8 * len(s.rows)  # most training blocks yield examples
    evals = fixed_examples(corpus, "heldout", 50, seed=12345, max_query_len=MAX_QUERY_LEN)
    assert evals and corpus.heldout[[e.row for e in evals]].all()
    assert len({e.row for e in evals}) == len(evals)  # one pass: no block twice
    again = fixed_examples(corpus, "heldout", 50, seed=12345, max_query_len=MAX_QUERY_LEN)
    assert len(again) == len(evals) and all(same(a, b) for a, b in zip(evals, again))


def test_salient_masking_masks_the_span_and_caps_the_scored_masks(corpus, tokenizer):
    inputs = InputBuilder(tokenizer)
    checked = capped = 0
    for row in corpus.rows_with_spans("all").tolist():
        key = f"salient/{row}"
        choice = choose_salient_span(corpus.texts[row], corpus.sentence_starts[row], corpus.spans[row],
                                     random.Random(key))
        ex = make_example(corpus, row, random.Random(key), max_query_len=MAX_QUERY_LEN)
        if ex is None:
            continue
        original = [inputs.cls_id, *inputs.wordpieces([choice.sentence])[0][: MAX_QUERY_LEN - 2], inputs.sep_id]
        q = ex.query
        assert len(q.input_ids) == len(q.target_ids) == len(original) <= MAX_QUERY_LEN
        assert q.mask_positions == list(range(q.mask_positions[0], q.mask_positions[-1] + 1))  # one span
        assert ex.positions == q.mask_positions[:10] and ex.targets == [original[p] for p in ex.positions]
        # the masked wordpieces spell the span (the uncased tokenizer lowercases it)
        span_text = choice.sentence[choice.span[0]: choice.span[1]]
        assert tokenizer.decode([original[p] for p in q.mask_positions]).replace(" ", "") == \
            span_text.lower().replace(" ", "")
        checked += 1
        one = make_example(corpus, row, random.Random(key), max_query_len=MAX_QUERY_LEN, max_masks=1)
        if len(one.query.mask_positions) > 1:  # a longer span stays fully masked; only its first mask is scored
            assert one.query.input_ids == q.input_ids and one.positions == q.mask_positions[:1]
            assert sum(t != IGNORE_INDEX for t in one.query.target_ids) == 1
            capped += 1
    assert checked > 20 and capped > 3
    with pytest.raises(RealmError, match="masking must be one of"):
        make_example(corpus, 0, random.Random(0), masking="whole_words")


def test_random_maskings_mask_as_many_wordpieces_in_the_same_sentence(corpus, tokenizer):
    mask_id = tokenizer.mask_token_id
    n = moved = scattered = 0
    for row in corpus.rows_with_spans("all").tolist():
        key = f"ablation/{row}"
        ex = {m: make_example(corpus, row, random.Random(key), masking=m, max_query_len=MAX_QUERY_LEN)
              for m in ("salient", "random_tokens", "random_spans")}
        if ex["salient"] is None:
            assert ex["random_tokens"] is None and ex["random_spans"] is None  # skipped alike
            continue
        sal = ex["salient"].query
        original = list(sal.input_ids)
        for p in sal.mask_positions:
            original[p] = sal.target_ids[p] if sal.target_ids[p] != IGNORE_INDEX else None
        for mode in ("random_tokens", "random_spans"):
            q = ex[mode].query
            assert len(q.input_ids) == len(sal.input_ids) and len(q.mask_positions) == len(sal.mask_positions)
            assert all(1 <= p <= len(q.input_ids) - 2 for p in q.mask_positions)  # never [CLS] or [SEP]
            assert len(set(q.mask_positions)) == len(q.mask_positions)
            assert [i for i, t in enumerate(q.input_ids) if t == mask_id] == q.mask_positions
            for i, t in enumerate(q.input_ids):  # the same sentence, masked elsewhere
                if i not in q.mask_positions and i not in sal.mask_positions:
                    assert t == original[i]
            assert ex[mode].positions == q.mask_positions[:10]
            assert all(original[p] in (None, t) for p, t in zip(ex[mode].positions, ex[mode].targets))
            assert all(t == q.input_ids[p] or q.input_ids[p] == mask_id for p, t in enumerate(q.target_ids)
                       if t != IGNORE_INDEX)
            moved += q.mask_positions != sal.mask_positions
        spans = ex["random_spans"].query.mask_positions
        assert spans == list(range(spans[0], spans[0] + len(spans)))  # contiguous
        tokens = ex["random_tokens"].query.mask_positions
        scattered += tokens != list(range(tokens[0], tokens[0] + len(tokens)))
        n += 1
    assert n > 20 and moved > n and scattered > 3


def test_example_source_resumes_to_the_identical_next_examples(corpus):
    a = source(corpus, seed=7)
    for _ in range(len(a.rows) - 3):  # stop just before the epoch ends, so the resumed part crosses it
        a.next()
    states, ahead = [], []
    for _ in range(10):
        states.append(a.state_dict())
        ahead.append(a.next())
    assert states[0]["epoch"] == 0 and a.epoch == 1
    b = source(corpus, seed=7)
    b.load_state_dict(dict(states[0]))
    assert all(same(x, b.next()) for x in ahead) and b.state_dict() == a.state_dict()
    # Every position restores on a fresh source (no cached epoch order), mid-epoch-1 ones too.
    for state, example in zip(states, ahead):
        c = source(corpus, seed=7)
        c.load_state_dict(state)
        assert same(c.next(), example)
    # A source's stream is a function of (seed, position): another seed gives another order.
    seven, eight = source(corpus, seed=7), source(corpus, seed=8)
    assert [seven.next().row for _ in range(8)] != [eight.next().row for _ in range(8)]


def test_bad_inputs_are_realm_errors(files, tokenizer, tmp_path):
    blocks, spans = files
    with pytest.raises(RealmError, match="salient spans file not found"):
        RealmCorpus(blocks, tmp_path / "none.parquet", tokenizer)
    pq.write_table(pa.table({"block_id": pa.array([99999], pa.int64()), "start": pa.array([0], pa.int32()),
                             "end": pa.array([3], pa.int32())}), str(tmp_path / "elsewhere.parquet"))
    with pytest.raises(RealmError, match="no salient span falls inside a block"):
        RealmCorpus(blocks, tmp_path / "elsewhere.parquet", tokenizer)
    pq.write_table(pa.table({"x": [1]}), str(tmp_path / "other.parquet"))
    with pytest.raises(RealmError, match="cannot read salient spans columns"):
        RealmCorpus(blocks, tmp_path / "other.parquet", tokenizer)
    corpus = RealmCorpus(blocks, spans, tokenizer, heldout_fraction=0.0)
    with pytest.raises(RealmError, match="no heldout block has a salient span"):
        ExampleSource(corpus, "heldout", seed=0)


def test_contains_finds_contiguous_runs_only():
    hay = np.asarray([5, 1, 1, 2, 3, 9], dtype=np.int32)
    assert contains(hay, [1, 2, 3]) and contains(hay, [1, 1, 2]) and contains(hay, [3, 9]) and contains(hay, [5])
    assert contains(hay, [5, 1, 1, 2, 3, 9])
    assert not contains(hay, [1, 3]) and not contains(hay, [2, 1]) and not contains(hay, [9, 5])
    assert not contains(hay, []) and not contains(hay, [5, 1, 1, 2, 3, 9, 9]) and not contains(hay[:0], [1])
