"""Stage configs: unknown keys and wrong types name the key; overrides and merging."""

from __future__ import annotations

import pytest

from realm_core.config import PrepareCorpusConfig, apply_overrides, deep_merge, field_docs, load_stage_config, read_params_file
from realm_core.errors import RealmError


def test_unknown_key_and_wrong_type_name_the_key():
    with pytest.raises(RealmError, match=r"prepare_corpus\.sourcez: unknown key"):
        load_stage_config("prepare_corpus", {"prepare_corpus": {"sources": ["a"], "sourcez": 1}})
    with pytest.raises(RealmError, match=r"prepare_corpus\.block_size: Input should be a valid integer"):
        load_stage_config("prepare_corpus", {"prepare_corpus": {"sources": ["a"], "block_size": "big"}})
    with pytest.raises(RealmError, match=r"prepare_corpus\.sources: Field required"):
        load_stage_config("prepare_corpus", {"prepare_corpus": {}})
    with pytest.raises(RealmError, match=r"prepare_corpus\.workers: Input should be greater than or equal to 0"):
        load_stage_config("prepare_corpus", {"prepare_corpus": {"sources": ["a"], "workers": -1}})


def test_overrides_are_yaml_typed_and_checked():
    params = apply_overrides({"prepare_corpus": {"sources": ["a"]}},
                             ["prepare_corpus.workers=2", "prepare_corpus.sources=[x, y]", "prepare_corpus.keep_lists=true"])
    cfg = load_stage_config("prepare_corpus", params)
    assert (cfg.workers, cfg.sources, cfg.keep_lists) == (2, ["x", "y"], True)
    with pytest.raises(RealmError, match="unknown section 'nope'"):
        apply_overrides({}, ["nope.x=1"])
    with pytest.raises(RealmError, match="expected section.key=value"):
        apply_overrides({}, ["prepare_corpus.workers"])


def test_exponent_floats_without_a_dot_are_numbers(tmp_path):
    params = apply_overrides({}, ["pretrain_realm.lr=2e-5", "pretrain_realm.retriever_lr=1E-6",
                                  "pretrain_realm.refresh_schedule=0-600:100", "pretrain_realm.steps=12"])
    cfg = load_stage_config("pretrain_realm", params)
    assert (cfg.lr, cfg.retriever_lr, cfg.refresh_schedule, cfg.steps) == (2e-5, 1e-6, "0-600:100", 12)
    path = tmp_path / "params.yaml"
    path.write_text("pretrain_realm:\n  lr: 3e-4\n  retriever_lr: -1.5e+1\n  refresh_schedule: '1e5'\n")
    assert read_params_file(path)["pretrain_realm"] == {"lr": 3e-4, "retriever_lr": -15.0, "refresh_schedule": "1e5"}


def test_params_file_merge_and_unknown_section(tmp_path):
    assert deep_merge({"a": {"x": 1, "y": 2}}, {"a": {"y": 3}}) == {"a": {"x": 1, "y": 3}}
    bad = tmp_path / "p.yaml"
    bad.write_text("prepare_corpuss:\n  sources: [a]\n")
    with pytest.raises(RealmError, match="unknown section 'prepare_corpuss'"):
        read_params_file(bad)
    with pytest.raises(RealmError, match="params file not found"):
        read_params_file(tmp_path / "missing.yaml")


def test_every_field_has_a_doc():
    for name, doc, _ in field_docs(PrepareCorpusConfig):
        assert len(doc) > 20, name
