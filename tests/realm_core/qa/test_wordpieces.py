"""The tokenized corpus (tokenize_corpus): ids and offsets per block, atomic publication, checks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from realm_core.qa import wordpieces
from realm_core.qa.wordpieces import WordpieceCorpus, build
from realm_core.errors import RealmError
from tests.realm_core.training.ict_fixture import write_blocks

HAND = [
    "Bramantyo met Bram in Paris, 1889.",
    "",  # an empty block: no wordpieces, but a row
    "The Eiffel Tower — café déjà vu!  Spaces   and\ttabs.",
    "New York City's population was 8,336,817 in 2019.",
]


def write_table(path: Path, texts: list[str], ids: list[int] | None = None) -> Path:
    ids = ids if ids is not None else list(range(100, 100 + len(texts)))
    pq.write_table(pa.table({"block_id": pa.array(ids, pa.int64()), "title": [f"t{i}" for i in ids],
                             "text": texts}), str(path))
    return path


@pytest.fixture(scope="module")
def built(tmp_path_factory, tokenizer):
    tmp = tmp_path_factory.mktemp("wordpieces")
    real = pq.read_table(write_blocks(tmp / "real.parquet", 12)).column("text").to_pylist()
    texts = HAND + real
    blocks = write_table(tmp / "blocks.parquet", texts, [7 * i + 3 for i in range(len(texts))])
    meta = build(blocks, tokenizer, tmp / "wp", tokenizer_name="tok", batch_size=3)  # batches cut across rows
    return blocks, texts, meta, WordpieceCorpus(tmp / "wp")


def test_ids_and_offsets_round_trip(built, tokenizer):
    blocks, texts, meta, corpus = built
    assert len(corpus) == len(texts) and meta["n_blocks"] == len(texts) and meta["n_tokens"] == len(corpus.ids)
    assert corpus.ids.dtype == np.int32 and corpus.offsets.dtype == np.int32
    from tokenizers import Tokenizer

    # The package tokenizer pads and truncates to 128; the corpus must hold every wordpiece.
    plain = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
    plain.no_padding()
    plain.no_truncation()
    assert max(len(corpus.body(r)) for r in range(len(corpus))) > 128
    vocab = tokenizer.convert_ids_to_tokens
    checked = 0
    for row, text in enumerate(texts):
        body, offsets = corpus.body(row), corpus.body_offsets(row)
        expected = plain.encode(text, add_special_tokens=False)
        assert body.tolist() == expected.ids, row
        assert offsets.tolist() == [list(o) for o in expected.offsets], row
        assert np.all(offsets[:, 0] < offsets[:, 1]) and np.all(offsets[:, 1] <= len(text))
        assert np.all(np.diff(offsets[:, 0]) > 0)  # in text order
        for tid, (s, e) in zip(body.tolist(), offsets.tolist()):
            piece, surface = vocab(tid), text[s:e]
            if surface.isascii() and surface.isalnum() and piece != "[UNK]":
                assert surface.lower() == piece.removeprefix("##"), (row, surface, piece)
                checked += 1
    assert checked > 500
    # Spot checks by hand: case is in the text, not in the ids.
    first = [texts[0][s:e] for s, e in corpus.body_offsets(0).tolist()]
    assert first[:5] == ["Bram", "ant", "yo", "met", "Bram"]


def test_starts_and_block_ids_are_consistent(built):
    blocks, texts, meta, corpus = built
    table = pq.read_table(blocks)
    assert corpus.block_ids.tolist() == table.column("block_id").to_pylist()
    assert corpus.row_of == {b: i for i, b in enumerate(table.column("block_id").to_pylist())}
    assert corpus.starts[0] == 0 and corpus.starts[-1] == len(corpus.ids) == len(corpus.offsets)
    assert np.all(np.diff(corpus.starts) >= 0)
    assert len(corpus.body(1)) == 0 and corpus.body_offsets(1).shape == (0, 2)  # the empty block
    assert sum(len(corpus.body(r)) for r in range(len(corpus))) == len(corpus.ids)
    assert meta["format"] == wordpieces.FORMAT and meta["tokenizer"] == "tok"
    on_disk = json.loads((corpus.path / "meta.json").read_text())
    assert on_disk == meta
    assert isinstance(corpus.ids, np.memmap)  # memory-mapped, not copied


def test_build_replaces_the_output_whole(tmp_path, tokenizer):
    blocks = write_table(tmp_path / "a.parquet", ["alpha beta", "gamma"])
    out = tmp_path / "wp"
    build(blocks, tokenizer, out)
    (out / "stray.txt").write_text("from an older build")
    blocks_b = write_table(tmp_path / "b.parquet", ["delta epsilon zeta", "eta", "theta"])
    build(blocks_b, tokenizer, out)
    assert sorted(p.name for p in out.iterdir()) == sorted(wordpieces.FILES)
    assert len(WordpieceCorpus(out)) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.parquet", "b.parquet", "wp"]  # no temp/old dirs


@pytest.mark.parametrize("existing", [False, True])
def test_a_failed_build_leaves_no_output_or_the_old_one(tmp_path, tokenizer, monkeypatch, existing):
    blocks = write_table(tmp_path / "a.parquet", ["alpha beta", "gamma"])
    out = tmp_path / "wp"
    if existing:
        build(blocks, tokenizer, out)
        before = {p.name: p.read_bytes() for p in out.iterdir()}
    save = np.save

    def failing_save(path, arr, *a, **kw):
        if str(path).endswith("starts.npy"):
            raise OSError("disk full")
        return save(path, arr, *a, **kw)

    monkeypatch.setattr(wordpieces.np, "save", failing_save)
    other = write_table(tmp_path / "b.parquet", ["delta"])
    with pytest.raises(OSError, match="disk full"):
        build(other, tokenizer, out)
    monkeypatch.undo()
    if existing:
        assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    else:
        assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.parquet", "b.parquet"] + (["wp"] if existing else [])


def test_check_refuses_another_corpus_and_another_vocabulary(built, tmp_path, tokenizer):
    from transformers import BertTokenizerFast

    blocks, texts, meta, corpus = built
    corpus.check(blocks, tokenizer)  # the matching pair passes
    changed = write_table(tmp_path / "changed.parquet", texts[:-1] + [texts[-1] + " more"],
                          corpus.block_ids.tolist())
    with pytest.raises(RealmError, match="another corpus") as err:
        corpus.check(changed, tokenizer, key="finetune_qa.wordpieces")
    assert "finetune_qa.wordpieces" in str(err.value) and str(changed) in str(err.value)
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "a", "##s"]) + "\n")
    other = BertTokenizerFast(vocab_file=str(vocab))
    assert wordpieces.vocab_hash(other) != wordpieces.vocab_hash(tokenizer)
    with pytest.raises(RealmError, match="another vocabulary"):
        corpus.check(blocks, other)
    cased = BertTokenizerFast(vocab_file=str(vocab), do_lower_case=False)  # same vocabulary, other normaliser
    assert wordpieces.vocab_hash(cased) != wordpieces.vocab_hash(other)


def test_bad_inputs_are_realm_errors_naming_the_file(tmp_path, tokenizer):
    out = tmp_path / "wp"
    missing = tmp_path / "missing.parquet"
    with pytest.raises(RealmError, match="no such file") as err:
        build(missing, tokenizer, out)
    assert str(missing) in str(err.value)
    empty = write_table(tmp_path / "empty.parquet", [], [])
    with pytest.raises(RealmError, match="empty corpus") as err:
        build(empty, tokenizer, out)
    assert str(empty) in str(err.value)
    wrong = tmp_path / "spans.parquet"
    pq.write_table(pa.table({"block_id": [1], "start": [0], "end": [3]}), str(wrong))
    with pytest.raises(RealmError, match="not a blocks file") as err:
        build(wrong, tokenizer, out)
    assert str(wrong) in str(err.value)
    garbage = tmp_path / "garbage.parquet"
    garbage.write_bytes(b"this is not parquet at all")
    with pytest.raises(RealmError) as err:
        build(garbage, tokenizer, out)
    assert str(garbage) in str(err.value)
    assert not out.exists()


def test_missing_or_corrupt_directories_are_realm_errors(built, tmp_path):
    import shutil

    with pytest.raises(RealmError, match="not a tokenized corpus"):
        WordpieceCorpus(tmp_path / "nowhere")
    src = built[3].path

    def copy(name: str) -> Path:
        dst = tmp_path / name
        shutil.copytree(src, dst)
        return dst

    no_ids = copy("no_ids")
    (no_ids / "ids.npy").unlink()
    with pytest.raises(RealmError, match="ids.npy"):
        WordpieceCorpus(no_ids)
    bad_meta = copy("bad_meta")
    (bad_meta / "meta.json").write_text("{not json")
    with pytest.raises(RealmError, match="invalid JSON"):
        WordpieceCorpus(bad_meta)
    other_format = copy("other_format")
    (other_format / "meta.json").write_text(json.dumps({"format": "something-else/1"}))
    with pytest.raises(RealmError, match="format"):
        WordpieceCorpus(other_format)
    garbled = copy("garbled")
    (garbled / "offsets.npy").write_bytes(b"garbage, not an npy file")
    with pytest.raises(RealmError, match="unreadable"):
        WordpieceCorpus(garbled)
    truncated = copy("truncated")
    data = (truncated / "ids.npy").read_bytes()
    (truncated / "ids.npy").write_bytes(data[: len(data) // 2])
    with pytest.raises(RealmError):
        WordpieceCorpus(truncated)
    inconsistent = copy("inconsistent")
    starts = np.load(inconsistent / "starts.npy")
    np.save(inconsistent / "starts.npy", starts[:-1])
    with pytest.raises(RealmError, match="inconsistent"):
        WordpieceCorpus(inconsistent)
