"""One typed config per stage, loaded from the `params.yaml` section of the same name.

`base.py` holds the shared base model, `loading.py` the params-file/`--set` loading and the stage
registry, and `<stage>.py` each stage's fields. Everything is re-exported here, so callers import
from `realm_core.config`.
"""

from realm_core.config.base import DEFAULT_TOKENIZER, StageConfig
from realm_core.config.prepare_corpus import PrepareCorpusConfig
from realm_core.config.train_tagger import TrainTaggerConfig
from realm_core.config.tag_entities import TagEntitiesConfig
from realm_core.config.pretrain_ict import PretrainICTConfig
from realm_core.config.pretrain_mlm import PretrainMLMConfig
from realm_core.config.pretrain_realm import PretrainRealmConfig
from realm_core.config.build_index import BuildIndexConfig
from realm_core.config.reindex import ReindexConfig
from realm_core.config.evaluate_retrieval import EvaluateRetrievalConfig, RetrieverSpec
from realm_core.config.report import ReportConfig
from realm_core.config.tokenize_corpus import TokenizeCorpusConfig
from realm_core.config.finetune_qa import FinetuneQAConfig, QAMethod
from realm_core.config.evaluate import EvaluateConfig
from realm_core.config.loading import STAGES, apply_overrides, deep_merge, field_docs, load_stage_config, read_params_file

__all__ = [
    "DEFAULT_TOKENIZER",
    "StageConfig",
    "RetrieverSpec",
    "PrepareCorpusConfig",
    "TrainTaggerConfig",
    "TagEntitiesConfig",
    "PretrainICTConfig",
    "PretrainMLMConfig",
    "PretrainRealmConfig",
    "BuildIndexConfig",
    "EvaluateRetrievalConfig",
    "ReindexConfig",
    "TokenizeCorpusConfig",
    "FinetuneQAConfig",
    "QAMethod",
    "EvaluateConfig",
    "ReportConfig",
    "STAGES",
    "deep_merge",
    "read_params_file",
    "apply_overrides",
    "load_stage_config",
    "field_docs",
]
