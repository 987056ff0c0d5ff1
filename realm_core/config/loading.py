"""Loading stage configs: params files, `--set` overrides, the stage registry, field docs.

Unknown sections and keys and wrong types are RealmErrors that name the file and `section.key`.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from realm_core.config.base import StageConfig
from realm_core.config.prepare_corpus import PrepareCorpusConfig
from realm_core.config.train_tagger import TrainTaggerConfig
from realm_core.config.tag_entities import TagEntitiesConfig
from realm_core.config.pretrain_ict import PretrainICTConfig
from realm_core.config.pretrain_mlm import PretrainMLMConfig
from realm_core.config.pretrain_realm import PretrainRealmConfig
from realm_core.config.build_index import BuildIndexConfig
from realm_core.config.evaluate_retrieval import EvaluateRetrievalConfig
from realm_core.config.reindex import ReindexConfig
from realm_core.config.report import ReportConfig
from realm_core.config.tokenize_corpus import TokenizeCorpusConfig
from realm_core.config.finetune_qa import FinetuneQAConfig
from realm_core.config.evaluate import EvaluateConfig
from realm_core.errors import RealmError

#: stage name -> config class. The name is the params.yaml section, dvc stage and flow module.
STAGES: dict[str, type[StageConfig]] = {
    "prepare_corpus": PrepareCorpusConfig,
    "train_tagger": TrainTaggerConfig,
    "tag_entities": TagEntitiesConfig,
    "pretrain_ict": PretrainICTConfig,
    "pretrain_mlm": PretrainMLMConfig,
    "pretrain_realm": PretrainRealmConfig,
    "build_index": BuildIndexConfig,
    "evaluate_retrieval": EvaluateRetrievalConfig,
    "reindex": ReindexConfig,
    "tokenize_corpus": TokenizeCorpusConfig,
    "finetune_qa": FinetuneQAConfig,
    "evaluate": EvaluateConfig,
    "report": ReportConfig,
}


class _ParamsLoader(yaml.SafeLoader):
    """SafeLoader that also reads `1e-5` / `2E+3` as floats. PyYAML follows YAML 1.1, where an
    exponent without a dot is a string, so `--set pretrain_realm.lr=1e-5` (or `lr: 1e-5` in a params
    file) would fail validation, although YAML 1.2, DVC's `-S` and Python all read it as a number."""


_ParamsLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."))


def _load_yaml(text: str) -> Any:
    return yaml.load(text, Loader=_ParamsLoader)  # noqa: S506 (a SafeLoader subclass)


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Merge `override` into a copy of `base`; nested dicts merge, everything else replaces."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def read_params_file(path: str | Path) -> dict[str, Any]:
    """Read a params YAML file; a missing file, bad YAML or a non-mapping is a RealmError."""
    path = Path(path)
    if not path.is_file():
        raise RealmError(f"{path}: params file not found")
    try:
        data = _load_yaml(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise RealmError(f"{path}: invalid YAML ({_one_line(str(exc))})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise RealmError(f"{path}: expected a mapping of stage sections at top level")
    unknown = sorted(set(data) - set(STAGES))
    if unknown:
        raise RealmError(f"{path}: unknown section '{unknown[0]}' (known: {', '.join(STAGES)})")
    return data


def apply_overrides(params: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `section.key=value` overrides; values are parsed as YAML (`2`, `true`, `[a, b]`)."""
    out = copy.deepcopy(params)
    for item in overrides:
        key, sep, raw = item.partition("=")
        parts = key.strip().split(".")
        if not sep or len(parts) != 2 or not all(parts):
            raise RealmError(f"--set {item!r}: expected section.key=value")
        section, field = parts
        if section not in STAGES:
            raise RealmError(f"--set {item!r}: unknown section '{section}'")
        try:
            value = _load_yaml(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        out.setdefault(section, {})[field] = value
    return out


def load_stage_config(stage: str, params: dict[str, Any], source: str = "params.yaml") -> StageConfig:
    """Validate the `stage` section of `params` into its config; errors name `section.key`."""
    cls = STAGES[stage]
    section = params.get(stage)
    if section is None:
        section = {}
    if not isinstance(section, dict):
        raise RealmError(f"{source}: section '{stage}' must be a mapping")
    try:
        return cls.model_validate(section)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in (stage, *err["loc"]))
        msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
        raise RealmError(f"{source}: {loc}: {msg}") from None


def field_docs(cls: type[StageConfig]) -> list[tuple[str, str, Any]]:
    """(name, doc, default) for every field, in declaration order, for --help."""
    out = []
    for name, info in cls.model_fields.items():
        default = None if info.is_required() else info.get_default(call_default_factory=True)
        out.append((name, " ".join((info.description or "").split()), default))
    return out


def _one_line(text: str) -> str:
    return " ".join(text.split())
