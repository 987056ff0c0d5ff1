"""The REALM index: refresh schedules, versions on disk, sync/async refreshes, and the candidate
set built from what the index returns (trivial block out, null document first, duplicates skip)."""

from __future__ import annotations

import json
import random
import threading
import time

import numpy as np
import pytest
import torch

from realm_core.errors import RealmError
from realm_core.modeling.inputs import InputBuilder
from realm_core.training.realm import CandidateBuilder, RealmModel, RealmStream, realm_objective
from realm_core.training.realm_data import ExampleSource, RealmCorpus, contains, make_example
from realm_core.training.realm_index import (IndexVersions, LiveIndex, Refresher, RefreshRecord, RefreshSchedule,
                                             ThreadRunner, embed_corpus)
from tests.realm_core.training.realm_fixture import (HELDOUT, MAX_CANDIDATE_LEN, MAX_DOC_LEN, MAX_QUERY_LEN,
                                                     tiny_encoder, tiny_retriever, write_corpus)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, tokenizer) -> RealmCorpus:
    """The 48 fixture blocks and a copy of block 5 (block id 1000: the same uid)."""
    files = write_corpus(tmp_path_factory.mktemp("realm_corpus"), duplicate_of=5)
    return RealmCorpus(*files, tokenizer, max_doc_len=MAX_DOC_LEN, max_candidate_len=MAX_CANDIDATE_LEN,
                       heldout_fraction=HELDOUT)


@pytest.fixture(scope="module")
def encoder():
    return tiny_encoder()


@pytest.fixture
def retriever():
    return tiny_retriever()


# ---------------------------------------------------------------------------------- schedules

def due_steps(spec: str, last: int = 400) -> list[int]:
    schedule = RefreshSchedule(spec)
    return [s for s in range(1, last + 1) if schedule.due(s)]


def test_refresh_schedules():
    assert due_steps("0-200:50,200-:100") == [50, 100, 150, 200, 300, 400]
    assert due_steps("50", 200) == [50, 100, 150, 200]
    assert due_steps("10-30:10,100-120:5", 200) == [20, 30, 105, 110, 115, 120]  # nothing between the parts
    assert due_steps(" 1 ", 3) == [1, 2, 3]
    for never in ("never", "-1", ""):
        assert RefreshSchedule(never).never and due_steps(never) == []
    assert not RefreshSchedule("50").never


@pytest.mark.parametrize("spec", ["abc", "0-100", "0-100:0", "100-50:10", "10-:x", "0-100:10,foo", "0", "-5", "5:10"])
def test_bad_schedules_are_errors_naming_the_schedule(spec):
    with pytest.raises(RealmError, match=f"refresh schedule '{spec}'"):
        RefreshSchedule(spec)


# ---------------------------------------------------------------------------------- the index

def test_embed_corpus_matches_the_document_tower(corpus, retriever):
    vectors = embed_corpus(retriever, corpus.doc_ids, batch_size=7)
    inputs = InputBuilder(retriever.tokenizer)
    docs = inputs.documents(corpus.titles, corpus.texts, MAX_DOC_LEN)
    retriever.eval()
    with torch.no_grad():
        expected = retriever.encode_documents(**docs).numpy()
    assert vectors.shape == (len(corpus), 16) and vectors.dtype == np.float32
    np.testing.assert_allclose(vectors, expected, atol=1e-5)
    assert retriever.training is False  # the tower's mode is restored (it was in eval mode here)
    retriever.train()
    embed_corpus(retriever, corpus.doc_ids)
    assert retriever.doc_tower.training
    with pytest.raises(RealmError, match="refresh aborted"):
        embed_corpus(retriever, corpus.doc_ids, should_abort=lambda: True)


def test_live_index_search_is_exact_inner_product(corpus, retriever):
    vectors = embed_corpus(retriever, corpus.doc_ids)
    live = LiveIndex(0, 0, tiny_retriever(), vectors)
    assert not any(p.requires_grad for p in live.snapshot.parameters()) and not live.snapshot.training
    queries = InputBuilder(retriever.tokenizer).queries(["who was the president", "a river in europe"], MAX_QUERY_LEN)
    rows, scores = live.search(queries, 5)
    with torch.no_grad():
        q = live.snapshot.encode_queries(**queries).numpy()
    full = q @ vectors.T
    assert rows.shape == (2, 5) and rows.dtype == np.int64
    np.testing.assert_allclose(scores, np.take_along_axis(full, rows, 1), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(scores, -np.sort(-full, axis=1)[:, :5], rtol=1e-5, atol=1e-5)


def test_index_versions_round_trip_and_prune(tmp_path, corpus):
    versions = IndexVersions(tmp_path / "index")
    snap = tiny_retriever(seed=1)
    vectors = np.random.default_rng(0).standard_normal((len(corpus), 16)).astype(np.float32)
    path = versions.save(LiveIndex(3, 7, snap, vectors, seconds=1.5))
    assert path == tmp_path / "index" / "v0003"
    assert sorted(p.name for p in path.iterdir()) == ["meta.json", "snapshot.safetensors", "vectors.npy"]
    assert json.loads((path / "meta.json").read_text())["step"] == 7
    template = tiny_retriever(seed=0)
    before = {k: v.clone() for k, v in template.state_dict().items()}
    loaded = versions.load(3, template)
    assert (loaded.version, loaded.step, loaded.seconds) == (3, 7, 1.5)
    assert np.array_equal(loaded.vectors, vectors) and loaded.index.ntotal == len(corpus)
    snap_state, template_state = snap.state_dict(), template.state_dict()
    assert all(torch.equal(v, snap_state[k]) for k, v in loaded.snapshot.state_dict().items())
    assert all(torch.equal(v, before[k]) for k, v in template_state.items())  # the template is untouched
    assert loaded.snapshot is not template

    for v in (0, 1, 2):
        versions.save(LiveIndex(v, v, snap, vectors[:4]))
    versions.save(LiveIndex(1, 9, snap, vectors[:5]))  # a same-numbered leftover is replaced
    assert versions.load(1, template).step == 9
    (tmp_path / "index" / ".v0004.tmp-999").mkdir()  # a writer killed mid-save
    (tmp_path / "index" / ".v0004.tmp-999" / "vectors.npy").write_bytes(b"half")
    (tmp_path / "index" / "notes.txt").write_text("not ours")
    versions.prune({1, 3})
    assert sorted(p.name for p in (tmp_path / "index").iterdir()) == ["notes.txt", "v0001", "v0003"]
    with pytest.raises(RealmError, match="cannot load index version 2 named by the checkpoint"):
        versions.load(2, template)
    IndexVersions(tmp_path / "nowhere").prune(set())  # no directory yet: nothing to do


# ---------------------------------------------------------------------------------- refreshes

class Holder:
    """The part of RealmStream a Refresher uses."""

    def __init__(self, live: LiveIndex) -> None:
        self.live, self.refreshes = live, []

    def next_version(self) -> int:
        return self.live.version + 1

    def install(self, live: LiveIndex, record: RefreshRecord) -> None:
        self.live = live
        self.refreshes.append(record)


class RecordingRunner(ThreadRunner):
    def __init__(self) -> None:
        super().__init__()
        self.calls = []

    def run(self, job, version, step):
        self.calls.append(("run", version, step))
        return super().run(job, version, step)

    def submit(self, job, version, step):
        self.calls.append(("submit", version, step))
        return super().submit(job, version, step)


def train_a_step(model: torch.nn.Module, step: int) -> dict[str, torch.Tensor]:
    """Stand-in for an optimizer step: move every weight; the weights after `step`."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * step)
    return {k: v.clone() for k, v in model.state_dict().items()}


def start(tmp_path, corpus, retriever, **kw):
    versions = IndexVersions(tmp_path / "index")
    live = LiveIndex(0, 0, tiny_retriever(), embed_corpus(retriever, corpus.doc_ids))
    versions.save(live)
    holder = Holder(live)
    runner = RecordingRunner()
    refresher = Refresher(holder, retriever, corpus.doc_ids, versions, runner=runner, **kw)
    return holder, versions, runner, refresher


def assert_version_holds(versions, version, weights, corpus, template):
    live = versions.load(version, template)
    assert all(torch.equal(v, weights[k]) for k, v in live.snapshot.state_dict().items())
    np.testing.assert_allclose(live.vectors, embed_corpus(live.snapshot, corpus.doc_ids), atol=1e-6)


def test_sync_refresh_installs_at_due_steps(tmp_path, corpus, retriever):
    info = []
    holder, versions, runner, refresher = start(tmp_path, corpus, retriever, schedule=RefreshSchedule("2"),
                                                info=info.append, last_step=6)
    weights = {}
    for step in range(1, 7):
        weights[step] = train_a_step(retriever, step)
        refresher.after_step(step)
        installed = [r.installed_step for r in holder.refreshes]
        assert installed == [s for s in (2, 4) if s <= step]  # at once: training waited
    assert [(r.version, r.snapshot_step, r.installed_step) for r in holder.refreshes] == [(1, 2, 2), (2, 4, 4)]
    assert runner.calls == [("run", 1, 2), ("run", 2, 4)]  # none after the last step: it would go unused
    assert holder.live.version == 2 and holder.live.step == 4
    for version, step in ((1, 2), (2, 4)):
        assert_version_holds(versions, version, weights[step], corpus, retriever)
    assert info[0].startswith("index v1 (snapshot of step 2) live from step 2: 49 blocks")
    refresher.finish()


def test_async_refresh_installs_later_and_skips_while_busy(tmp_path, corpus, retriever):
    holder, versions, runner, refresher = start(tmp_path, corpus, retriever, schedule=RefreshSchedule("1"),
                                                mode="async")
    gate, started = threading.Event(), threading.Event()
    build = refresher.build

    def slow_build(version, step, snapshot):
        started.set()
        assert gate.wait(60), "the test never opened the gate"
        return build(version, step, snapshot)

    refresher.build = slow_build
    weights = {1: train_a_step(retriever, 1)}
    refresher.after_step(1)  # submits v1 and returns while it is being built
    assert started.wait(30) and holder.refreshes == [] and holder.live.version == 0
    for step in (2, 3):
        weights[step] = train_a_step(retriever, step)
        refresher.after_step(step)  # due, but the builder is busy: skipped
    assert refresher.skipped == 2 and holder.refreshes == [] and runner.calls == [("submit", 1, 1)]
    gate.set()
    deadline = time.monotonic() + 30
    while not refresher._pending[0].done():
        assert time.monotonic() < deadline
        time.sleep(0.01)
    weights[4] = train_a_step(retriever, 4)
    refresher.after_step(4)  # installs v1 (made from step 1's weights), then starts v2
    assert [(r.version, r.snapshot_step, r.installed_step) for r in holder.refreshes] == [(1, 1, 4)]
    assert holder.live.version == 1 and holder.live.step == 1
    assert runner.calls == [("submit", 1, 1), ("submit", 2, 4)]
    assert_version_holds(versions, 1, weights[1], corpus, retriever)
    refresher.finish()  # waits for v2; training is over, so it is not installed
    assert holder.live.version == 1 and (tmp_path / "index" / "v0002").is_dir()


def test_a_failed_async_refresh_raises_in_the_training_thread(tmp_path, corpus, retriever):
    holder, _, _, refresher = start(tmp_path, corpus, retriever, schedule=RefreshSchedule("1"), mode="async")

    def broken(version, step, snapshot):
        raise RealmError("disk full")

    refresher.build = broken
    refresher.after_step(1)
    deadline = time.monotonic() + 30
    while not refresher._pending[0].done():
        assert time.monotonic() < deadline
        time.sleep(0.01)
    with pytest.raises(RealmError, match="disk full"):
        refresher.after_step(2)
    refresher.finish()
    with pytest.raises(RealmError, match="refresh mode must be"):
        Refresher(holder, retriever, corpus.doc_ids, None, schedule=RefreshSchedule("1"), mode="sometimes")


# ---------------------------------------------------------------------------------- candidates

class FixedIndex:
    """A live index whose search returns given rows (what MIPS found is not the point here)."""

    def __init__(self, rows: list[list[int]]) -> None:
        self.rows, self.asked = rows, []

    def search(self, queries, k, precision="fp32"):
        self.asked.append(k)
        assert queries["input_ids"].shape[0] == len(self.rows)
        rows = np.asarray([r[:k] for r in self.rows], dtype=np.int64)
        return rows, np.zeros(rows.shape, dtype=np.float32)


def examples_from(corpus, rows: list[int]):
    out = []
    for row in rows:
        for seed in range(20):
            ex = make_example(corpus, row, random.Random(seed), max_query_len=MAX_QUERY_LEN)
            if ex is not None:
                out.append(ex)
                break
    assert len(out) == len(rows)
    return out


def test_candidates_drop_the_source_block_unless_allowed(corpus, encoder):
    rows = [int(r) for r in corpus.rows_with_spans("all")[:3]]
    a, b = examples_from(corpus, rows[:2])
    builder = CandidateBuilder(corpus, encoder, k=4)
    index = FixedIndex([[a.row, 40, 41, 42], [43, 44, 45, 46]])
    assert builder.retrieve(index, [a, b]) == [[40, 41, 42], [43, 44, 45]]
    assert index.asked == [4]  # one more than k-1, for the block that is removed
    trivial = CandidateBuilder(corpus, encoder, k=4, allow_trivial=True)
    index = FixedIndex([[a.row, 40, 41, 42], [43, 44, 45, 46]])
    assert trivial.retrieve(index, [a, b]) == [[a.row, 40, 41], [43, 44, 45]] and index.asked == [3]
    # The copy of block 5 is the source block too (same uid), so it goes as well.
    c = examples_from(corpus, [corpus.row_of[5]])[0]
    assert builder.retrieve(FixedIndex([[corpus.row_of[1000], 40, 41, 42]]), [c]) == [[40, 41, 42]]


def test_examples_retrieving_duplicate_blocks_are_skipped(corpus, encoder):
    a, b = examples_from(corpus, [int(r) for r in corpus.rows_with_spans("all")[5:7]])
    dup = [corpus.row_of[5], corpus.row_of[1000]]
    builder = CandidateBuilder(corpus, encoder, k=4)
    assert builder.retrieve(FixedIndex([[40, *dup, 41], [42, 43, 44, 45]]), [a, b]) == [None, [42, 43, 44]]
    assert builder.skipped_duplicates == 1
    batch, kept = builder.batch(FixedIndex([[40, *dup, 41], [42, 43, 44, 45]]), [a, b])
    assert kept == [b] and batch.positions.shape[0] == 1 and builder.skipped_duplicates == 2
    with pytest.raises(RealmError, match="every example of a batch retrieved duplicate blocks"):
        builder.batch(FixedIndex([[*dup, 40, 41]]), [a])


def test_null_document_comes_first(corpus, encoder):
    a, b = examples_from(corpus, [int(r) for r in corpus.rows_with_spans("all")[8:10]])
    builder = CandidateBuilder(corpus, encoder, k=3, allow_trivial=True)
    cands = [[a.row, 20], [21, 22]]
    batch = builder.tensors([a, b], cands, staleness=5)
    cls, sep = encoder.cls_id, encoder.sep_id
    ids, mask, types = (batch.joint[k] for k in ("input_ids", "attention_mask", "token_type_ids"))
    assert ids.shape[0] == 2 * 3 and batch.k == 3 and batch.staleness == 5
    for i, ex in enumerate((a, b)):
        q = ex.query.input_ids
        assert q[0] == cls and q[-1] == sep
        for j, body in enumerate([None, *cands[i]]):
            row = i * 3 + j
            n = int(mask[row].sum())
            expected = q + [sep] if body is None else q + corpus.body_ids[body].tolist() + [sep]
            assert ids[row, :n].tolist() == expected  # j == 0: `[CLS] x [SEP] [SEP]`
            assert types[row, :len(q)].sum() == 0 and bool(types[row, len(q):n].all())
    docs = batch.documents["input_ids"]
    assert docs.shape[0] == 2 * 2 + 1  # the retrieved candidates, then one null document row
    for n, r in enumerate([a.row, 20, 21, 22]):
        assert docs[n, : len(corpus.doc_ids[r])].tolist() == corpus.doc_ids[r].tolist()
    assert docs[-1, : int(batch.documents["attention_mask"][-1].sum())].tolist() == [cls, sep, sep]
    assert batch.targets[0, : len(a.targets)].tolist() == a.targets
    assert batch.positions[1, : len(b.positions)].tolist() == b.positions
    # a's own block is a candidate; it holds a's answer when the span is within the reader's window
    assert batch.answer_in_candidates == (contains(corpus.body_ids[a.row], a.targets) +
                                          any(contains(corpus.body_ids[r], b.targets) for r in cands[1])) / 2
    with pytest.raises(RealmError, match="fewer than 2 candidates"):
        builder.tensors([a], [[20]])


def test_the_source_answer_counts_as_in_candidates(corpus, encoder):
    rows = [int(r) for r in corpus.rows_with_spans("all")]
    found = [e for e in examples_from(corpus, rows[:20]) if contains(corpus.body_ids[e.row], e.targets)][:2]
    assert found
    builder = CandidateBuilder(corpus, encoder, k=2, allow_trivial=True)
    batch = builder.tensors(found, [[e.row] for e in found])
    assert batch.answer_in_candidates == 1.0
    other = [r for r in rows if r not in {e.row for e in found}]
    no_answer = [[next(r for r in other if not contains(corpus.body_ids[r], e.targets))] for e in found]
    assert builder.tensors(found, no_answer).answer_in_candidates == 0.0


def test_one_candidate_means_no_retrieval(corpus, encoder):
    examples = examples_from(corpus, [int(r) for r in corpus.rows_with_spans("train")[:3]])
    builder = CandidateBuilder(corpus, encoder, k=1)
    assert builder.retrieve(None, examples) == [[], [], []]  # the index is not even asked
    retriever = tiny_retriever()
    stream = RealmStream(ExampleSource(corpus, "train", seed=0, max_query_len=MAX_QUERY_LEN), builder, batch_size=3)
    batch = next(stream)
    assert batch.k == 1 and batch.joint["input_ids"].shape[0] == 3 and batch.answer_in_candidates == 0.0
    for row in range(3):
        n = int(batch.joint["attention_mask"][row].sum())
        assert batch.joint["input_ids"][row, n - 2: n].tolist() == [encoder.sep_id, encoder.sep_id]
    model = RealmModel(retriever, tiny_encoder())
    loss, metrics = realm_objective()(model, batch)
    loss.backward()
    assert metrics["p_null"] == pytest.approx(1.0) and metrics["retrieval_utility"] == pytest.approx(0.0)
    assert all(p.grad is None for p in model.retriever.parameters())  # the retriever takes no part
    assert any(p.grad is not None for p in model.encoder.parameters())
    with pytest.raises(RealmError, match="num_candidates must be >= 1"):
        CandidateBuilder(corpus, encoder, k=0)


def test_real_index_candidates_are_distinct_and_never_the_source(corpus, encoder, retriever):
    live = LiveIndex(0, 0, tiny_retriever(), embed_corpus(retriever, corpus.doc_ids))
    source = ExampleSource(corpus, "train", seed=3, max_query_len=MAX_QUERY_LEN)
    examples = [source.next() for _ in range(24)]
    builder = CandidateBuilder(corpus, encoder, k=8)
    cands = builder.retrieve(live, examples)
    for ex, c in zip(examples, cands):
        if c is None:  # retrieved both copies of block 5
            continue
        assert len(c) == 7 and len(set(c)) == 7
        assert all(corpus.uids[r] != corpus.uids[ex.row] for r in c)
    assert sum(c is not None for c in cands) >= 12
