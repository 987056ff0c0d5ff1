"""Open-QA fine-tuning (ORQA's model): the marginal losses, retrieval over the frozen index, the
reader over (block, span) pairs, prediction back to text, BM25, and the finetune_qa stage."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from realm_core.config import FinetuneQAConfig, QAMethod
from realm_core.errors import RealmError
from realm_core.modeling.embedder import RetrieverEmbedder
from realm_core.modeling.reader import MASK_VALUE, SpanReader
from realm_core.qa.datasets import QAExample
from realm_core.qa.gold import GoldFinder
from realm_core.qa.wordpieces import WordpieceCorpus
from realm_core.training.qa import (BM25Blocks, FrozenBlocks, OpenQAModel, QABatch, QAStream, _marginal_nll,
                                    prepare)
from realm_core.training.qa_stage import run_finetune_qa
from tests.realm_core.training.qa_fixture import CITIES, SUBJECTS, build_setup, question, texts, write_nq

READER = dict(span_hidden=16, max_span_width=4, seq_len=64, max_question_len=16)
NEW_YORK = len(SUBJECTS) - 1  # the block whose answer is two wordpieces


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tokenizer):
    return build_setup(tmp_path_factory.mktemp("qa"), tokenizer)


@pytest.fixture(scope="module")
def corpus(setup):
    return WordpieceCorpus(setup["wordpieces"])


def make_model(setup, corpus, *, reader_beam: int = 5, bm25: bool = False, seed: int = 0) -> OpenQAModel:
    reader = SpanReader.from_init(str(setup["encoder"]), seed=seed, **READER)
    if bm25:
        return OpenQAModel(None, reader, corpus, texts(), BM25Blocks(setup["blocks"], corpus), reader_beam=reader_beam)
    retriever = RetrieverEmbedder.from_pretrained(setup["retriever"])
    blocks = FrozenBlocks(setup["index"], corpus, retriever=setup["retriever"])
    return OpenQAModel(retriever, reader, corpus, texts(), blocks, retriever_beam=len(SUBJECTS),
                       reader_beam=reader_beam)


def items_for(model: OpenQAModel, corpus, rows: list[int]):
    finder = GoldFinder(corpus, texts(), model.reader.tokenizer, max_width=READER["max_span_width"])
    examples = [QAExample(f"q{i}", question(i), [CITIES[i]]) for i in rows]
    return prepare(examples, model.reader, finder, query_len=32)


# ---------------------------------------------------------------------------------------------- losses


def test_marginal_nll_by_hand():
    logits = torch.tensor([[1.0, 2.0, 3.0, -1.0], [0.5, 0.0, 0.0, 0.0], [2.0, -3.0, 0.0, 1.0]])
    positive = torch.tensor([[True, False, True, False], [False] * 4, [False, True, False, False]])
    expected = [math.log(math.e ** 1 + math.e ** 2 + math.e ** 3 + math.e ** -1) - math.log(math.e ** 1 + math.e ** 3),
                0.0,
                math.log(math.e ** 2 + math.e ** -3 + 1 + math.e) - (-3.0)]
    nll = _marginal_nll(logits, positive)
    assert nll.tolist() == pytest.approx(expected, abs=1e-6)
    assert _marginal_nll(logits, torch.ones_like(positive)).tolist() == pytest.approx([0, 0, 0], abs=1e-6)
    # The gradient is softmax(all) - softmax(positives): no NaN from the -inf of a row without any.
    leaf = logits.clone().requires_grad_(True)
    _marginal_nll(leaf, positive).sum().backward()
    want = torch.softmax(logits, -1) - torch.softmax(logits.masked_fill(~positive, -math.inf), -1).nan_to_num(0.0)
    want[1] = 0.0
    torch.testing.assert_close(leaf.grad, want)


# ---------------------------------------------------------------------------------------------- retrieval


def test_frozen_blocks_align_vectors_with_corpus_rows(setup, corpus):
    retriever = RetrieverEmbedder.from_pretrained(setup["retriever"])
    blocks = FrozenBlocks(setup["index"], corpus, retriever=setup["retriever"])
    titles = [f"Kingdom of {s}" for s in SUBJECTS]
    np.testing.assert_allclose(blocks.vectors, retriever.embed_documents(titles, texts()), atol=1e-5)
    queries = retriever.embed_queries([question(0), question(7)], max_len=32)
    rows, scores = blocks.search(queries, 6)
    assert rows.shape == (2, 6) and np.all(rows >= 0)
    np.testing.assert_allclose(scores, np.einsum("bd,bkd->bk", queries, blocks.vectors[rows]), rtol=1e-4, atol=1e-5)
    assert np.all(np.diff(scores, axis=1) <= 1e-6)
    full = queries @ blocks.vectors.T
    assert rows[:, 0].tolist() == full.argmax(1).tolist()
    rows, _ = blocks.search(queries, 40)  # more than the corpus holds: the tail is -1
    assert np.all(rows[:, :30] >= 0) and np.all(rows[:, 30:] == -1)


def test_frozen_blocks_refuse_another_retriever_or_corpus(setup, corpus, tmp_path, tokenizer):
    from realm_core.qa.wordpieces import build
    from tests.realm_core.training.realm_fixture import tiny_retriever
    import pyarrow.parquet as pq

    other = tiny_retriever(seed=5).save_pretrained(tmp_path / "other")
    with pytest.raises(RealmError, match="index/retriever mismatch"):
        FrozenBlocks(setup["index"], corpus, retriever=other)
    table = pq.read_table(setup["blocks"])
    pq.write_table(table.slice(0, 10), str(tmp_path / "fewer.parquet"))
    build(tmp_path / "fewer.parquet", tokenizer, tmp_path / "wp")
    with pytest.raises(RealmError, match="another corpus"):
        FrozenBlocks(setup["index"], WordpieceCorpus(tmp_path / "wp"))


def test_query_embeddings_are_the_retrievers(setup, corpus):
    model = make_model(setup, corpus).eval()
    items = items_for(model, corpus, [0, 3, NEW_YORK])
    with torch.no_grad():
        q = model.embed(items)
    want = model.retriever.embed_queries([question(i) for i in (0, 3, NEW_YORK)], max_len=32)
    np.testing.assert_allclose(q.numpy(), want, atol=1e-5)


# ---------------------------------------------------------------------------------------------- the loss


def test_forward_loss_reaches_the_query_tower_and_the_reader(setup, corpus):
    torch.manual_seed(0)
    model = make_model(setup, corpus)
    model.train()
    items = items_for(model, corpus, [0, 5, NEW_YORK])
    loss, metrics = model(QABatch(items))
    assert loss.ndim == 0 and torch.isfinite(loss) and loss.item() > 0
    assert set(metrics) >= {"loss", "retriever_loss", "reader_loss", "answer_in_beam", "reader_oracle", "span_accuracy"}
    assert metrics["answer_in_beam"] == 1.0  # the retriever beam is the whole corpus
    loss.backward()
    grads = {name: p.grad for name, p in model.named_parameters()}
    query = [g for n, g in grads.items() if n.startswith("retriever.") and g is not None and g.abs().sum() > 0]
    assert query, "no gradient reached the query tower"
    for prefix in ("reader.bert.encoder.", "reader.span_proj.", "reader.span_out."):
        assert any(g is not None and g.abs().sum() > 0 for n, g in grads.items() if n.startswith(prefix)), prefix


def test_retriever_loss_is_the_marginal_over_answer_blocks(setup, corpus):
    model = make_model(setup, corpus).eval()
    items = items_for(model, corpus, [0, 5])
    with torch.no_grad():
        _, metrics = model(QABatch(items))
        rows, logits = model.retrieve(items, model.embed(items), len(SUBJECTS))
    positive = torch.from_numpy(np.stack([rows[b] == i for b, i in enumerate([0, 5])]))  # answer only in its block
    assert metrics["retriever_loss"] == pytest.approx(float(_marginal_nll(logits, positive).mean()), rel=1e-5)


def test_gold_mask_marks_the_answer_wordpieces(setup, corpus):
    model = make_model(setup, corpus)
    items = items_for(model, corpus, [0, NEW_YORK])
    rows = np.array([[3, 0, 7], [NEW_YORK, 1, -1]])
    with torch.no_grad():
        spans, pairs = model.read(items, rows, torch.zeros(2, 3))
    mask = model.gold_mask(items, rows, pairs, spans.shape)
    assert mask.shape == spans.shape == (2, 3, spans.shape[2], READER["max_span_width"])
    hits = mask.nonzero().tolist()
    assert [(b, j) for b, j, _, _ in hits] == [(0, 1), (1, 0)]
    for b, j, pos, w in hits:
        ids = pairs[b * 3 + j][0][pos: pos + w + 1]
        want = model.reader.inputs.wordpieces([CITIES[[0, NEW_YORK][b]]])[0]
        assert ids == want
    assert torch.all(spans[1, 2] == MASK_VALUE)  # the missing block (-1) is never a span


def test_gold_block_score_gradient_has_the_right_sign(setup, corpus):
    """d(reader loss)/d(block logit) = P(block) - P(block | gold): negative for the only block
    with the answer, positive for the others; raising the gold block's score lowers the loss."""
    model = make_model(setup, corpus).eval()
    items = items_for(model, corpus, [4])
    rows = np.array([[9, 4, 12, 20]])

    def reader_loss(block_logits):
        spans, pairs = model.read(items, rows, block_logits)
        gold = model.gold_mask(items, rows, pairs, spans.shape)
        return _marginal_nll(spans.flatten(1), gold.flatten(1)).sum()

    base = torch.tensor([[0.3, -0.2, 0.1, 0.0]], requires_grad=True)
    loss = reader_loss(base)
    loss.backward()
    grad = base.grad[0]
    assert grad[1] < 0 and torch.all(grad[[0, 2, 3]] > 0)
    assert float(grad.sum()) == pytest.approx(0.0, abs=1e-5)
    with torch.no_grad():
        raised = reader_loss(base.detach() + torch.tensor([[0.0, 0.5, 0.0, 0.0]]))
        lowered_other = reader_loss(base.detach() + torch.tensor([[0.5, 0.0, 0.0, 0.0]]))
    assert raised < loss.detach() < lowered_other


def test_overfitting_two_questions_makes_predict_return_their_answers(setup, corpus):
    torch.manual_seed(0)
    model = make_model(setup, corpus, reader_beam=5)
    items = items_for(model, corpus, [0, NEW_YORK])
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    history = []
    for _ in range(30):
        loss, metrics = model(QABatch(items))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append(metrics)
    assert max(m["reader_loss"] for m in history) > 2.0
    assert history[-1]["reader_loss"] < 0.2 and history[-1]["span_accuracy"] == 1.0
    model.eval()
    with torch.no_grad():
        _, final = model(QABatch(items))
    assert final["reader_oracle"] == 1.0 and math.exp(-final["reader_loss"]) > 0.8  # P(answer spans | q)
    preds = model.predict(items, k=8)
    assert [p["prediction"] for p in preds] == ["Lisbon", "New York"]  # the text's case, not the wordpieces'
    assert model.training is False
    for p, i in zip(preds, [0, NEW_YORK]):
        assert p["rows"][p["block"]] == i and p["reader_oracle"]


def test_predict_outputs(setup, corpus):
    model = make_model(setup, corpus, reader_beam=4)
    model.train()
    items = items_for(model, corpus, [0, 2, 5, 11, NEW_YORK])
    preds = model.predict(items, k=10, batch_size=2)
    assert model.training  # restored
    again = model.predict(items, k=10, batch_size=8)
    assert [p["prediction"] for p in preds] == [p["prediction"] for p in again]
    all_texts = texts()
    for p in preds:
        assert len(p["rows"]) == len(p["scores"]) == 10 and len(p["p_z"]) == 4
        assert sum(p["p_z"]) == pytest.approx(1.0, abs=1e-5)
        assert p["scores"] == sorted(p["scores"], reverse=True)
        assert 0 <= p["block"] < 4 and p["prediction"] and p["prediction"] in all_texts[p["rows"][p["block"]]]
        assert p["score"] > MASK_VALUE / 2


def test_answer_maps_the_best_span_back_to_the_text(setup, corpus):
    model = make_model(setup, corpus, reader_beam=3)
    items = items_for(model, corpus, [0, NEW_YORK])
    rows = np.array([[5, 0, 9], [2, 7, NEW_YORK]])
    pairs = [model.reader.pair(it.question, corpus.body(int(r))) for it, row in zip(items, rows) for r in row]
    length = max(len(p[0]) for p in pairs)
    spans = torch.full((2, 3, length, READER["max_span_width"]), MASK_VALUE)
    (s0, e0), = items[0].gold.spans(0)
    (s1, e1), = items[1].gold.spans(NEW_YORK)
    assert e1 == s1 + 1  # "new york": two wordpieces
    spans[0, 1, pairs[1][1] + s0, e0 - s0] = 3.0
    spans[1, 2, pairs[5][1] + s1, e1 - s1] = 2.0
    spans[1, 0, pairs[3][1], 0] = 1.0  # a worse span in another block
    logits = torch.tensor([[0.5, 0.2, 0.1], [1.0, 1.0, -2.0]])
    first = model._answer(items[0], rows[0], logits[0], spans[0], pairs, 0)
    second = model._answer(items[1], rows[1], logits[1], spans[1], pairs, 1)
    assert (first["prediction"], first["block"], first["score"]) == ("Lisbon", 1, 3.0)
    assert (second["prediction"], second["block"]) == ("New York", 2)
    assert sum(second["p_z"]) == pytest.approx(1.0) and second["p_z"][0] == pytest.approx(second["p_z"][1])
    assert first["reader_oracle"] and second["reader_oracle"]
    nothing = model._answer(items[0], rows[0], logits[0], torch.full_like(spans[0], MASK_VALUE), pairs, 0)
    assert nothing["prediction"] == ""
    wrong = model._answer(items[0], np.array([5, 9, 12]), logits[0], spans[0], pairs, 0)
    assert not wrong["reader_oracle"]


# ---------------------------------------------------------------------------------------------- BM25


def test_bm25_path_runs_without_a_retriever(setup, corpus):
    torch.manual_seed(0)
    model = make_model(setup, corpus, bm25=True, reader_beam=3)
    assert model.retriever is None
    items = items_for(model, corpus, [0, 8, NEW_YORK])
    model.train()
    loss, metrics = model(QABatch(items))
    assert torch.isfinite(loss) and "retriever_loss" not in metrics
    assert metrics["reader_oracle"] == 1.0  # the subject's name is in its block only: BM25 ranks it first
    loss.backward()
    assert model.reader.span_proj.weight.grad.abs().sum() > 0
    rows, scores = model.retrieve(items, None, 3)
    assert rows[:, 0].tolist() == [0, 8, NEW_YORK] and not scores.requires_grad
    preds = model.predict(items, k=5)
    assert all(p["rows"][0] == i for p, i in zip(preds, [0, 8, NEW_YORK]))
    assert all(sum(p["p_z"]) == pytest.approx(1.0, abs=1e-5) for p in preds)
    with pytest.raises(RealmError, match="needs a retriever"):
        OpenQAModel(None, model.reader, corpus, texts(), FrozenBlocks(setup["index"], corpus))


def test_qa_stream_is_seeded_and_resumable(setup, corpus):
    items = list(range(7))
    stream = QAStream(items, batch_size=3, seed=1)
    first = [next(stream).items for _ in range(5)]
    assert all(len(b) == 3 for b in first)
    assert sorted(first[0] + first[1]) == sorted(set(first[0] + first[1]))  # no repeats inside an epoch
    state = QAStream(items, batch_size=3, seed=1)
    [next(state) for _ in range(2)]
    resumed = QAStream(items, batch_size=3, seed=1)
    resumed.load_state_dict(json.loads(json.dumps(state.state_dict())))
    assert [next(resumed).items for _ in range(3)] == first[2:]
    with pytest.raises(RealmError, match="fewer than batch_size"):
        QAStream(items[:2], batch_size=3, seed=0)


# ---------------------------------------------------------------------------------------------- the stage


def stage_config(setup, tmp, **kw) -> FinetuneQAConfig:
    method = QAMethod(retriever=str(setup["retriever"]), index=str(setup["index"]), reader=str(setup["encoder"]))
    base = dict(dataset="nq", method="tiny", methods={"tiny": method}, data_dir=str(tmp / "data"),
                blocks=str(setup["blocks"]), wordpieces=str(setup["wordpieces"]), output_dir=str(tmp / "out"),
                steps=3, batch_size=2, lr=1e-3, retriever_lr=1e-4, warmup_steps=1, retriever_beam=30, reader_beam=3,
                max_span_width=4, span_hidden=16, seq_len=64, max_question_len=16, query_len=32, eval_every=0,
                eval_batch_size=4, device="cpu", precision="fp32", seed=0, checkpoint_dir=str(tmp / "ckpt"),
                checkpoint_every=1, keep_checkpoints=2, log_every=1, metrics_file=str(tmp / "metrics.json"),
                plots_dir=str(tmp / "plots"))
    return FinetuneQAConfig(**{**base, **kw})


TIMING = {"train_seconds", "resumed_at"}


def test_finetune_qa_stage_end_to_end_and_rerun(setup, tmp_path):
    train_rows, dev_rows = write_nq(tmp_path / "data", n_train=4, n_dev=2)
    cfg = stage_config(setup, tmp_path)
    lines = []
    metrics = run_finetune_qa(cfg, info=lines.append)
    out = tmp_path / "out"
    assert {p.name for p in out.iterdir()} >= {"retriever", "reader", "qa.json"}
    assert json.loads((tmp_path / "metrics.json").read_text()) == metrics
    assert metrics["completed"] and metrics["steps"] == 3 and metrics["train_questions"] == 4
    assert metrics["dev_questions"] == 2 and [e["step"] for e in metrics["dev"]] == [0, 3]
    assert 0.0 <= metrics["best"]["dev_em"] <= 1.0
    qa = json.loads((out / "qa.json").read_text())
    assert qa["method"] == "tiny" and qa["best_step"] == metrics["best"]["step"] and qa["dev_em"] == metrics["best"]["dev_em"]
    assert qa["index"] == str(setup["index"]) and qa["reader_init"] == str(setup["encoder"])
    reader = SpanReader.from_pretrained(out / "reader")
    assert (reader.max_span_width, reader.seq_len) == (4, 64)
    RetrieverEmbedder.from_pretrained(out / "retriever")
    assert any("4 training questions" in line for line in lines)
    saved = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}

    again = run_finetune_qa(cfg, info=lambda line: None)  # finds the run complete
    assert again["completed"] and again["steps"] == 3
    assert {k: v for k, v in again.items() if k not in TIMING} == {k: v for k, v in metrics.items() if k not in TIMING}
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == saved


def test_finetune_qa_unknown_method_names_the_key(setup, tmp_path):
    from realm_core.training.qa_stage import check_inputs

    cfg = stage_config(setup, tmp_path, method="nope")
    with pytest.raises(RealmError, match="finetune_qa.method") as err:
        run_finetune_qa(cfg, info=lambda line: None)
    assert "nope" in str(err.value) and "tiny" in str(err.value)
    with pytest.raises(RealmError, match="finetune_qa.method"):
        check_inputs(cfg)
    assert not (tmp_path / "out").exists() and not (tmp_path / "metrics.json").exists()


def test_finetune_qa_batch_size_is_global_under_torchrun(setup, tmp_path, monkeypatch):
    """batch_size counts questions per step over every process: with 2 processes and grad_accum
    1, each rank reads batch_size / 2 questions per micro-step (a disjoint share of the same
    seeded order). Simulated as rank 0 of 2 (the loop itself runs undistributed)."""
    from realm_core.training import qa_stage
    from realm_core.training.distributed import DistInfo

    write_nq(tmp_path / "data", n_train=4, n_dev=2)
    drawn = []

    class Recording(QAStream):
        def __next__(self):
            batch = super().__next__()
            drawn.append([it.example.qid for it in batch.items])
            return batch

    monkeypatch.setattr(qa_stage.distributed, "init_from_env", lambda device: DistInfo(0, 2, 0))
    monkeypatch.setattr(qa_stage, "QAStream", Recording)
    metrics = run_finetune_qa(stage_config(setup, tmp_path, steps=2, batch_size=4), info=lambda line: None)
    assert metrics["processes"] == 2 and metrics["completed"]
    assert [len(b) for b in drawn] == [2, 2]
    rank1 = QAStream(list(range(4)), batch_size=4, seed=0, rank=1, world_size=2)
    rank0 = QAStream(list(range(4)), batch_size=4, seed=0, rank=0, world_size=2)
    assert sorted(next(rank0).items + next(rank1).items) == [0, 1, 2, 3]  # the two shares make the batch
