"""ORQA's span reader: shapes, the block mask, input layout, save/load and inits."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from realm_core.errors import RealmError
from realm_core.modeling.reader import HEAD_FILE, MASK_VALUE, META_FILE, SpanReader
from realm_core.pretrained import scratch_bert_config
from tests.conftest import ROOT
from tests.realm_core.training.ict_fixture import TINY_BERT

KW = dict(span_hidden=8, max_span_width=4, seq_len=40, max_question_len=6)


def tiny_reader(tokenizer, seed: int = 0, **kw) -> SpanReader:
    from transformers import BertModel

    torch.manual_seed(seed)
    bert = BertModel(scratch_bert_config(tokenizer, TINY_BERT, max_positions=64), add_pooling_layer=False)
    return SpanReader(bert, tokenizer, init="scratch", **{**KW, **kw})


@pytest.fixture(scope="module")
def reader(tokenizer):
    return tiny_reader(tokenizer).eval()


@pytest.fixture(scope="module")
def encoder_dir(tmp_path_factory):
    from tests.realm_core.training.realm_fixture import tiny_encoder

    path = tmp_path_factory.mktemp("encoder") / "encoder"
    tiny_encoder(seed=3).save_pretrained(path)
    return path


def example_pairs(reader: SpanReader):
    q = reader.question_ids(["who wrote dracula and when was it published?", "where?"])
    bodies = reader.inputs.wordpieces(["Bram Stoker wrote Dracula in 1897 in London.",
                                       "Stoker " * 60,  # longer than the room left: truncated
                                       ""])  # an empty block
    return [reader.pair(q[0], bodies[0]), reader.pair(q[1], bodies[1]), reader.pair(q[0], bodies[2])]


def test_logits_shape_and_block_mask(reader):
    pairs = example_pairs(reader)
    batch = reader.batch(pairs)
    with torch.no_grad():
        logits = reader(**batch)
    rows, length = len(pairs), batch["input_ids"].shape[1]
    assert logits.shape == (rows, length, reader.max_span_width) and logits.dtype == torch.float32
    for r, (_, first, last) in enumerate(pairs):
        starts = torch.arange(length)[:, None]
        ends = starts + torch.arange(reader.max_span_width)[None, :]
        valid = (starts >= first) & (ends <= last)
        assert torch.all(logits[r][~valid] == MASK_VALUE), r
        assert torch.all(logits[r][valid] != MASK_VALUE) and torch.isfinite(logits[r][valid]).all(), r
        assert int(valid.sum()) == sum(max(0, last - first + 1 - w) for w in range(reader.max_span_width))
    assert pairs[2][2] < pairs[2][1] and torch.all(logits[2] == MASK_VALUE)  # empty block: nothing to pick
    # The span scores differ across positions (they depend on the tokens, not only on the mask).
    inside = logits[0][logits[0] != MASK_VALUE]
    assert inside.std() > 0


def test_span_logits_closed_form_equals_layernorm_then_dense(tokenizer):
    """The head's closed form is dense(LayerNorm(ReLU(start + end))), values and gradients, with a
    LayerNorm that is not the identity and span sums of every sign."""
    torch.manual_seed(5)
    head = tiny_reader(tokenizer, span_hidden=16)
    with torch.no_grad():
        head.span_norm.weight.normal_(1.0, 0.5)
        head.span_norm.bias.normal_(0.0, 0.5)
        head.span_out.weight.normal_(0.0, 1.0)
        head.span_out.bias.fill_(0.3)
    start = torch.randn(3, 7, 16, dtype=torch.float64).float().requires_grad_()
    end = torch.randn(3, 7, 16).requires_grad_()
    ends = torch.arange(7)[:, None] + torch.arange(4)[None, :]
    inside = ends <= 6  # spans past the last position are the caller's to mask
    got = head.span_logits(start, end)[:, inside]
    want = head.span_out(head.span_norm(torch.relu(start[:, :, None, :] + end[:, ends.clamp(max=6)])))
    want = want.squeeze(-1)[:, inside]
    assert got.shape == (3, int(inside.sum()))
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    params = [start, end, head.span_norm.weight, head.span_norm.bias, head.span_out.weight, head.span_out.bias]
    g_got = torch.autograd.grad(got.square().sum(), params)
    g_want = torch.autograd.grad(want.square().sum(), params)
    for a, b in zip(g_got, g_want):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_pair_truncation_keeps_the_final_sep(reader):
    cls, sep = reader.cls_id, reader.sep_id
    question = list(range(1000, 1020))  # longer than max_question_len (6)
    body = list(range(2000, 2100))
    ids, first, last = reader.pair(question, body)
    assert len(ids) == reader.seq_len
    assert ids[0] == cls and ids[1:7] == question[:6] and ids[7] == sep and ids[-1] == sep
    assert first == 8 and last == reader.seq_len - 2 and ids[first: last + 1] == body[: last - first + 1]
    short, f2, l2 = reader.pair([1000, 1001], [2000, 2001, 2002])
    assert short == [cls, 1000, 1001, sep, 2000, 2001, 2002, sep] and (f2, l2) == (4, 6)
    empty, f3, l3 = reader.pair([1000], [])
    assert empty == [cls, 1000, sep, sep] and l3 < f3
    for q_len in range(0, 10):
        for b_len in (0, 1, 30, 31, 32, 33, 100):
            ids, first, last = reader.pair(list(range(5, 5 + q_len)), list(range(7, 7 + b_len)))
            assert len(ids) <= reader.seq_len and ids[-1] == sep and ids[first - 1] == sep
            assert last - first + 1 == min(b_len, reader.seq_len - min(q_len, 6) - 3)


def test_batch_segments_and_padding(reader):
    pairs = [reader.pair([1000, 1001], [2000, 2001, 2002]), reader.pair([1000], [2000])]
    batch = reader.batch(pairs)
    assert batch["input_ids"].tolist()[1] == pairs[1][0] + [reader.inputs.pad_id] * 3
    assert batch["attention_mask"].tolist() == [[1] * 8, [1] * 5 + [0] * 3]
    assert batch["token_type_ids"].tolist() == [[0] * 4 + [1] * 4, [0] * 3 + [1] * 2 + [0] * 3]
    assert batch["block_start"].tolist() == [4, 3] and batch["block_end"].tolist() == [6, 3]


def need_cxx() -> None:
    """Inductor compiles C++ (CXX, else g++); without a compiler the compile tests cannot run."""
    import shutil

    if shutil.which(os.environ.get("CXX", "g++")) is None:
        pytest.skip("no C++ compiler (CXX or g++) on this machine: torch.compile cannot build kernels")


def test_compiled_reader_gives_the_eager_logits_and_keeps_its_weights(tokenizer):
    """`compile_for_inference` (evaluate's `compile`): Inductor-compiled, the encoder gives the
    eager logits (fp32) on rows of other lengths than its warm-up, with the same state dict."""
    need_cxx()
    eager, compiled = tiny_reader(tokenizer).eval(), tiny_reader(tokenizer).eval()
    assert compiled.compile_for_inference("fp32") == ""
    assert "forward" in vars(compiled.bert)  # the compiled forward sits on the instance
    assert compiled.state_dict().keys() == eager.state_dict().keys()
    pairs = example_pairs(eager)
    for rows in (pairs, pairs[:2]):
        with torch.no_grad():
            want, got = eager(**eager.batch(rows)), compiled(**compiled.batch(rows))
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_a_failed_compile_keeps_the_eager_reader(tmp_path):
    """Without a usable C++ compiler (CXX points nowhere; a fresh Inductor cache, so nothing
    compiled before can be reused) `compile_for_inference` returns the reason and the reader runs
    eagerly, with the logits it had."""
    script = f"""
import json, torch
from realm_core.pretrained import load_tokenizer
from realm_core.config import DEFAULT_TOKENIZER
from tests.realm_core.modeling.test_reader import example_pairs, tiny_reader
reader = tiny_reader(load_tokenizer(DEFAULT_TOKENIZER)).eval()
pairs = example_pairs(reader)
with torch.no_grad():
    before = reader(**reader.batch(pairs))
    error = reader.compile_for_inference("fp32")
    after = reader(**reader.batch(pairs))
print(json.dumps({{"error": error, "eager": "forward" not in vars(reader.bert), "same": bool(torch.equal(before, after))}}))
"""
    env = {**os.environ, "CXX": str(tmp_path / "no-such-compiler"), "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "cache")}
    run = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    got = json.loads(run.stdout.strip().splitlines()[-1])
    assert got["error"] and got["eager"] and got["same"], got


def test_save_and_load_give_identical_logits(reader, tmp_path):
    path = reader.save_pretrained(tmp_path / "reader")
    meta = json.loads((path / META_FILE).read_text())
    assert meta["max_span_width"] == 4 and meta["seq_len"] == 40 and (path / HEAD_FILE).is_file()
    loaded = SpanReader.from_pretrained(path).eval()
    assert (loaded.span_hidden, loaded.max_span_width, loaded.seq_len, loaded.max_question_len) == (8, 4, 40, 6)
    batch = reader.batch(example_pairs(reader))
    with torch.no_grad():
        assert torch.equal(loaded(**batch), reader(**batch))
    again = SpanReader.from_init(str(path), seed=123)  # a saved reader is loaded as is, whatever the seed
    assert torch.equal(again.span_proj.weight, reader.span_proj.weight)
    (path / "stray.txt").write_text("x")
    reader.save_pretrained(path)  # replaced whole
    assert not (path / "stray.txt").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_from_init_from_a_knowledge_augmented_encoder_drops_the_mlm_head(encoder_dir):
    from realm_core.modeling.encoder import KnowledgeAugEncoder

    encoder = KnowledgeAugEncoder.from_pretrained(encoder_dir)
    reader = SpanReader.from_init(str(encoder_dir), seed=1, **KW)
    mlm = encoder.mlm.bert.state_dict()
    ours = reader.bert.state_dict()
    assert set(ours) == {k for k in mlm if not k.startswith("pooler.")}
    for key in ("embeddings.word_embeddings.weight", "encoder.layer.0.attention.self.query.weight",
                "encoder.layer.0.output.dense.weight"):
        assert torch.equal(ours[key], mlm[key]), key
    assert not [k for k in reader.state_dict() if k.startswith("cls.") or ".cls." in k or "predictions" in k]
    assert reader.init_name == str(encoder_dir)
    # The span head is new, drawn from the seed.
    same = SpanReader.from_init(str(encoder_dir), seed=1, **KW)
    other = SpanReader.from_init(str(encoder_dir), seed=2, **KW)
    assert torch.equal(same.span_proj.weight, reader.span_proj.weight)
    assert not torch.equal(other.span_proj.weight, reader.span_proj.weight)
    assert torch.equal(other.bert.embeddings.word_embeddings.weight, reader.bert.embeddings.word_embeddings.weight)
    assert reader.span_proj.weight.abs().max() <= 0.04 and torch.all(reader.span_proj.bias == 0)  # ORQA's init


def test_bad_inits_are_realm_errors(tmp_path, tokenizer):
    from transformers import GPT2Config, GPT2Model

    with pytest.raises(RealmError, match="does not exist"):
        SpanReader.from_init(str(tmp_path / "missing"), **KW)
    with pytest.raises(RealmError):
        SpanReader.from_init("no-such-model-anywhere", **KW)
    gpt2 = tmp_path / "gpt2"
    GPT2Model(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=100, n_positions=64)).save_pretrained(gpt2)
    tokenizer.save_pretrained(gpt2)
    with pytest.raises(RealmError, match="expected a BERT checkpoint"):
        SpanReader.from_init(str(gpt2), **KW)
    no_meta = tmp_path / "no_meta"
    no_meta.mkdir()
    with pytest.raises(RealmError, match="not a saved reader"):
        SpanReader.from_pretrained(no_meta)
    with pytest.raises(RealmError, match="seq_len"):
        tiny_reader(tokenizer, seq_len=513)  # scratch BERTs have 512 positions
    with pytest.raises(RealmError, match="max_question_len"):
        tiny_reader(tokenizer, seq_len=16, max_question_len=14)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_bf16_span_logits_match_cpu_fp32_and_train(reader):
    """On a GPU under bf16 autocast the head still runs in float32: logits close to the CPU's
    fp32 ones, the same best span per row, and a backward step reaches the head's weights."""
    import copy

    pairs = example_pairs(reader)
    with torch.no_grad():
        cpu = reader(**reader.batch(pairs))
    cuda = copy.deepcopy(reader).to("cuda")
    batch = cuda.batch(pairs)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        got = cuda(**batch)
    assert got.dtype == torch.float32
    inside = cpu != MASK_VALUE
    torch.testing.assert_close(got.detach().cpu()[inside], cpu[inside], rtol=0.05, atol=0.05)
    for r in range(2):  # the span the GPU picks scores within bf16 noise of the CPU's best
        best = got[r].flatten().argmax().item()
        assert cpu[r].flatten()[best] >= cpu[r].max() - 0.05, r
    cuda.train()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = -torch.log_softmax(cuda(**batch)[0].flatten(), 0).max()
    loss.backward()
    for name in ("span_proj", "span_norm", "span_out"):
        assert getattr(cuda, name).weight.grad is not None and getattr(cuda, name).weight.grad.abs().sum() > 0, name
