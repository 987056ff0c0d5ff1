"""The cheap CPU dropout: the same Bernoulli keep mask and scaling as torch's, the same BERT maths
with it, seeded by torch's generator, and saved models that plain transformers loads as before."""

from __future__ import annotations

import json
import math

import pytest
import torch

from realm_core.modeling.dropout import ATTENTION_NAME, FastDropout, fast_dropout, keep_mask, use_fast_dropout
from realm_core.pretrained import scratch_bert_config
from tests.realm_core.training.ict_fixture import TINY_BERT


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_keep_mask_is_bernoulli_with_the_asked_probability(p):
    torch.manual_seed(0)
    n = 4_000_001  # odd: the last 64-bit word is used by half
    keep = keep_mask((n,), p).float()
    sigma = math.sqrt(p * (1 - p) / n)
    assert abs(keep.mean().item() - (1 - p)) < 5 * sigma
    # The two int32 halves of one random word, and neighbouring words, are independent.
    pairs = keep[: n - 1].view(-1, 2)
    both = (pairs[:, 0] * pairs[:, 1]).mean().item()
    assert abs(both - (1 - p) ** 2) < 5 * math.sqrt((1 - p) ** 2 * (1 - (1 - p) ** 2) / pairs.shape[0])
    shifted = (keep[1:-1:2] * keep[2::2]).mean().item()
    assert abs(shifted - (1 - p) ** 2) < 5 * math.sqrt((1 - p) ** 2 * (1 - (1 - p) ** 2) / pairs.shape[0])


def test_keep_mask_follows_torch_manual_seed():
    torch.manual_seed(7)
    a = keep_mask((3, 50, 40), 0.1)
    b = keep_mask((3, 50, 40), 0.1)
    torch.manual_seed(7)
    assert torch.equal(a, keep_mask((3, 50, 40), 0.1))
    assert not torch.equal(a, b)
    assert a.shape == (3, 50, 40) and a.dtype == torch.bool


def test_fast_dropout_scales_survivors_and_passes_gradients_through_the_mask():
    torch.manual_seed(1)
    x = torch.randn(64, 33, dtype=torch.float64, requires_grad=True)
    y = fast_dropout(x, 0.25, True)
    kept = y != 0
    assert 0.6 < kept.double().mean().item() < 0.9
    torch.testing.assert_close(y[kept], x[kept] / 0.75)
    g = torch.randn_like(y)
    y.backward(g)
    torch.testing.assert_close(x.grad, torch.where(kept, g / 0.75, torch.zeros_like(g)))
    assert torch.equal(fast_dropout(x, 0.25, False), x)  # eval: identity
    assert torch.equal(fast_dropout(x, 0.0, True), x)
    module = FastDropout(0.25).eval()
    assert torch.equal(module(x), x) and module.state_dict() == {}


def _tiny_bert(tokenizer, p: float, seed: int = 0):
    from transformers import BertModel

    torch.manual_seed(seed)
    config = scratch_bert_config(tokenizer, {**TINY_BERT, "hidden_dropout_prob": p, "attention_probs_dropout_prob": p},
                                 max_positions=64)
    config._attn_implementation = "sdpa"
    return BertModel(config, add_pooling_layer=False)


def _batch():
    gen = torch.Generator().manual_seed(3)
    ids = torch.randint(1000, 2000, (3, 24), generator=gen)
    mask = torch.ones_like(ids)
    mask[1, 15:] = 0  # padding, so the attention mask path is exercised
    return ids, mask


def test_bert_with_fast_dropout_computes_what_transformers_computes(tokenizer):
    """Eval: bitwise the SDPA model. Training with p so small that nothing is dropped (torch's and
    ours): the attention path (scores, padding mask, softmax, values) equals transformers' own in
    outputs and gradients."""
    ids, mask = _batch()
    for p in (0.1, 1e-12):
        ref, fast = _tiny_bert(tokenizer, p), use_fast_dropout(_tiny_bert(tokenizer, p))
        assert fast.config._attn_implementation == ATTENTION_NAME
        assert not any(type(m) is torch.nn.Dropout for m in fast.modules())
        if p == 0.1:
            ref.eval(), fast.eval()
            with torch.no_grad():
                assert torch.equal(ref(input_ids=ids, attention_mask=mask).last_hidden_state,
                                   fast(input_ids=ids, attention_mask=mask).last_hidden_state)
            continue
        ref.train(), fast.train()
        outs = []
        for model in (ref, fast):
            h = model(input_ids=ids, attention_mask=mask).last_hidden_state
            (h * mask[..., None]).square().sum().backward()
            outs.append((h.detach(), [q.grad.clone() for q in model.parameters()]))
        torch.testing.assert_close(outs[0][0] * mask[..., None], outs[1][0] * mask[..., None], atol=1e-5, rtol=1e-5)
        for a, b in zip(outs[0][1], outs[1][1]):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_bert_training_with_fast_dropout_is_random_seeded_and_saves_as_plain_sdpa(tokenizer, tmp_path):
    from transformers import BertModel

    ids, mask = _batch()
    model = use_fast_dropout(_tiny_bert(tokenizer, 0.1)).train()
    outs = []
    for seed in (5, 5, 6):
        torch.manual_seed(seed)
        outs.append(model(input_ids=ids, attention_mask=mask).last_hidden_state.detach())
    assert torch.equal(outs[0], outs[1]) and not torch.equal(outs[0], outs[2])
    with torch.no_grad():
        model.eval()
        assert not torch.equal(outs[0], model(input_ids=ids, attention_mask=mask).last_hidden_state)
        model.save_pretrained(tmp_path)
        assert ATTENTION_NAME not in (tmp_path / "config.json").read_text()
        assert json.loads((tmp_path / "config.json").read_text())["attention_probs_dropout_prob"] == 0.1
        loaded = BertModel.from_pretrained(tmp_path).eval()
        assert loaded.config._attn_implementation == "sdpa"
        assert torch.equal(loaded(input_ids=ids, attention_mask=mask).last_hidden_state,
                           model(input_ids=ids, attention_mask=mask).last_hidden_state)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_training_keeps_torchs_own_dropout_and_sdpa(tokenizer):
    """On CUDA nothing changes: under the same seed the swapped model draws torch's own CUDA masks
    and runs SDPA, so its training forward and gradients equal the plain model's, in bf16 too."""
    ids, mask = (t.cuda() for t in _batch())
    ref = _tiny_bert(tokenizer, 0.1).cuda().train()
    fast = use_fast_dropout(_tiny_bert(tokenizer, 0.1)).cuda().train()
    for dtype in (torch.float32, torch.bfloat16):
        outs = []
        for model in (ref, fast):
            model.zero_grad()
            torch.manual_seed(11)
            with torch.autocast("cuda", dtype=dtype, enabled=dtype is torch.bfloat16):
                h = model(input_ids=ids, attention_mask=mask).last_hidden_state
            h.float().square().sum().backward()
            outs.append((h.detach(), [q.grad.clone() for q in model.parameters()]))
        assert torch.equal(outs[0][0], outs[1][0]), dtype
        assert all(torch.equal(a, b) for a, b in zip(outs[0][1], outs[1][1])), dtype
        assert (outs[0][0] != 0).all()  # dropout inside, not on the output
