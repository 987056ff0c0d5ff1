"""Profiles (configs/*.yaml) stay valid: merged over params.yaml, every stage section validates.

A profile is read the way `python -m flows.<stage> --params FILE` reads it (unknown sections and
keys are errors), so a renamed config field breaks this test instead of a long run.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from realm_core.config import STAGES, deep_merge, load_stage_config, read_params_file
from realm_core.errors import RealmError
from tests.conftest import ROOT

PROFILES = sorted((ROOT / "configs").glob("*.yaml"))


def _merged(profile: Path) -> dict:
    return deep_merge(read_params_file(ROOT / "params.yaml"), read_params_file(profile))


def test_the_profiles_exist():
    assert {"smoke.yaml", "paper.yaml"} <= {p.name for p in PROFILES}


@pytest.mark.parametrize("profile", PROFILES, ids=[p.name for p in PROFILES])
def test_profile_validates_for_every_stage(profile):
    params = _merged(profile)
    source = f"params.yaml + configs/{profile.name}"
    for stage in STAGES:
        load_stage_config(stage, params, source=source)


def test_an_unknown_key_in_a_profile_is_an_error(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text((ROOT / "configs" / "smoke.yaml").read_text() + "\npretrain_ict:\n  stepz: 3\n")
    with pytest.raises(RealmError, match=r"pretrain_ict\.stepz: unknown key"):
        load_stage_config("pretrain_ict", _merged(bad))
    worse = tmp_path / "worse.yaml"
    worse.write_text("pretrain_icct:\n  steps: 3\n")
    with pytest.raises(RealmError, match="unknown section 'pretrain_icct'"):
        _merged(worse)


def test_paper_profile_says_what_the_paper_says():
    """REALM_NOTES §2.1/§2.8: bert-base-uncased, 288-wordpiece blocks, ICT 100k steps at batch 4096."""
    params = _merged(ROOT / "configs" / "paper.yaml")
    corpus = load_stage_config("prepare_corpus", params)
    tagger = load_stage_config("train_tagger", params)
    ict = load_stage_config("pretrain_ict", params)
    assert corpus.tokenizer == tagger.init == ict.init == ict.tokenizer == "bert-base-uncased"
    assert corpus.block_size == 288 and "enwiki-20181220" in corpus.sources[0]
    assert (ict.steps, ict.batch_size, ict.lr, ict.warmup_steps) == (100_000, 4096, 1e-4, 10_000)
    assert (ict.max_query_len, ict.max_doc_len, ict.proj_size, ict.num_layers) == (64, 288, 128, 0)
    assert ict.mask_rate == 0.9 and not ict.untied
    assert load_stage_config("build_index", params).factory != "Flat"  # approximate search at 13M blocks


def test_smoke_profile_is_tiny():
    params = _merged(ROOT / "configs" / "smoke.yaml")
    tiny = {"layers": 2, "hidden": 64, "heads": 2, "intermediate": 256}
    for stage in ("train_tagger", "pretrain_ict"):
        cfg = load_stage_config(stage, params)
        assert cfg.init == "scratch" and dict(cfg.scratch_config) == tiny, stage
    assert load_stage_config("train_tagger", params).max_steps <= 20
    assert load_stage_config("pretrain_ict", params).steps <= 20
    assert len(load_stage_config("prepare_corpus", params).sources) == 1
