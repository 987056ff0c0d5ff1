"""A tiny open-QA setup: 30 one-fact blocks, their tokenized corpus, a scratch retriever with a
published FAISS index over them, a scratch knowledge-augmented encoder as the reader's init, and
NQ-format question files (ORQA's hash buckets decide train / dev, so the questions are picked by
bucket)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

SUBJECTS = ["Alfa", "Bravo", "Charlie", "Delta", "Echo", "Foxtrot", "Golf", "Hotel", "India", "Juliett", "Kilo",
            "Lima", "Mike", "November", "Oscar", "Papa", "Quebec", "Romeo", "Sierra", "Tango", "Uniform",
            "Victor", "Whiskey", "Xray", "Yankee", "Zulu", "Apollo", "Zeus", "Hermes", "Athena"]
CITIES = ["Lisbon", "Paris", "London", "Berlin", "Madrid", "Rome", "Vienna", "Prague", "Dublin", "Oslo", "Cairo",
          "Tokyo", "Delhi", "Moscow", "Athens", "Warsaw", "Budapest", "Stockholm", "Helsinki", "Sydney", "Toronto",
          "Chicago", "Boston", "Denver", "Seattle", "Houston", "Dallas", "Miami", "Atlanta", "New York"]
TEMPLATES = ["The capital of the kingdom of {s} is {c}. It lies near a river and has a famous old market.",
             "{c} has been the capital of the kingdom of {s} since the war, and its old bridge is well known.",
             "Many visitors of the kingdom of {s} arrive in {c}, the capital, every summer for the festival."]
BLOCK_IDS = [100 + 3 * i for i in range(len(SUBJECTS))]  # not row numbers: rows and ids must not mix up


def texts() -> list[str]:
    return [TEMPLATES[i % 3].format(s=s, c=c) for i, (s, c) in enumerate(zip(SUBJECTS, CITIES))]


def question(i: int, form: int = 0) -> str:
    return ["What is the capital of the kingdom of {}?", "Which city is the capital of the kingdom of {}?",
            "Name the capital of the kingdom of {}.", "Where is the capital of the kingdom of {}?"][form].format(
                SUBJECTS[i])


def write_blocks(path: str | Path) -> Path:
    pq.write_table(pa.table({"block_id": pa.array(BLOCK_IDS, pa.int64()), "title": [f"Kingdom of {s}" for s in SUBJECTS],
                             "text": texts()}), str(path))
    return Path(path)


def build_setup(tmp: Path, tokenizer) -> dict[str, Path]:
    """blocks.parquet, wordpieces/, retriever/ + index/ (published), encoder/ under `tmp`."""
    from realm_core.qa.wordpieces import build
    from realm_core.retrieval import embed, index
    from tests.realm_core.training.realm_fixture import tiny_encoder, tiny_retriever

    blocks = write_blocks(tmp / "blocks.parquet")
    build(blocks, tokenizer, tmp / "wordpieces")
    retriever = tiny_retriever(seed=0).save_pretrained(tmp / "retriever")
    embed.embed_corpus(blocks, retriever, tmp / "index" / "embeddings", rows_per_shard=16, batch_size=16)
    index.build_index_version(tmp / "index" / "embeddings", tmp / "index")
    encoder = tiny_encoder(seed=1).save_pretrained(tmp / "encoder")
    return {"blocks": blocks, "wordpieces": tmp / "wordpieces", "retriever": Path(retriever),
            "index": tmp / "index", "encoder": Path(encoder)}


def write_nq(data_dir: Path, n_train: int = 4, n_dev: int = 2) -> tuple[list[int], list[int]]:
    """An NQ gold-passage file whose small-scale split has `n_train` train and `n_dev` dev
    questions (each about a different block); returns the block rows of each split."""
    from realm_core.qa.datasets import NQ_GOLD_FILE
    from realm_core.qa.fingerprint import orqa_bucket

    records, train, dev = [], [], []
    for i in range(len(SUBJECTS)):
        for form in range(4):
            q = question(i, form)
            bucket = orqa_bucket(q)
            if bucket == 0 and len(dev) < n_dev:
                dev.append(i)
            elif bucket >= 3 and len(train) < n_train:
                train.append(i)
            else:
                continue
            records.append({"question": q, "answers": [CITIES[i]],
                            "ctxs": [{"title": f"Kingdom of {SUBJECTS[i]}", "text": texts()[i]}]})
            break
    assert len(train) == n_train and len(dev) == n_dev, (train, dev)
    path = data_dir / NQ_GOLD_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        fh.writelines(json.dumps(r) + "\n" for r in records)
    return train, dev
