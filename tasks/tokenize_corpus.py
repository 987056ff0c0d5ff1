"""Tasks of the tokenize_corpus stage."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.states import Failed

from realm_core.config import TokenizeCorpusConfig
from realm_core.errors import RealmError
from realm_core.qa.wordpieces import run_tokenize_corpus


@task(name="tokenize_blocks", cache_result_in_memory=False)
def tokenize_blocks(cfg: TokenizeCorpusConfig):
    """Tokenise every block body and publish the arrays atomically."""
    try:
        return run_tokenize_corpus(cfg, info=get_run_logger().info)
    except RealmError as exc:
        return Failed(message=str(exc))
