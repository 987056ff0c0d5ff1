"""Flow `tokenize_corpus`: every block body as wordpiece ids + char offsets, for the readers.

    python -m flows.tokenize_corpus [--params FILE] [--set tokenize_corpus.KEY=VALUE ...]

Writes `artifacts/corpus/wordpieces/` (memory-mapped by finetune_qa, evaluate and `realm ask`).
"""

from __future__ import annotations

import sys

import flows  # noqa: F401  (offline-safe environment defaults before Prefect loads)
from prefect import flow
from prefect.states import Failed

from flows.cli import main
from realm_core.config import TokenizeCorpusConfig
from realm_core.qa.wordpieces import check_inputs
from tasks.tokenize_corpus import tokenize_blocks


@flow(name="tokenize_corpus")
def tokenize_corpus_flow(cfg: TokenizeCorpusConfig):
    """Tokenise the corpus once; the summary is the task's log line."""
    state = tokenize_blocks(cfg, return_state=True)
    meta = state.result(raise_on_failure=False)
    if state.is_failed() or not isinstance(meta, dict):
        return Failed(message=state.message)
    return {k: meta[k] for k in ("n_blocks", "n_tokens", "seconds")}


def _run(cfg: TokenizeCorpusConfig):
    state = tokenize_corpus_flow(cfg, return_state=True)
    if state.is_completed():
        print(f"tokenize_corpus: {state.result()}")
    return state


if __name__ == "__main__":
    sys.exit(main("tokenize_corpus", _run, check_inputs))
