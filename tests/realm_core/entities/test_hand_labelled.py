"""Salient spans against hand-labelled Wikipedia sentences (tests/assets/entities/hand_labelled.jsonl).

The asset holds 53 sentences copied verbatim from the shipped corpus (blocks of data/wikipedia_xml
and data/passages, as prepare_corpus writes them to blocks.parquet; `source` is the block_id),
labelled by hand with char offsets:

- PER/ORG/LOC/MISC follow the CoNLL-2003 guidelines: titles and roles are not part of a name
  ("Emperor Caracalla" -> "Caracalla"), nationalities, religions, events, wars, eras/dynasties and
  titles of works are MISC, bands and publications are ORG, buildings are LOC, a lower-case
  word after a name is not part of it ("Indus valley" -> "Indus").
- DATE follows the scope documented in realm_core/entities/dates.py: the date expression without
  qualifiers ("c.750 AD" -> "750 AD", "the early 1950s" -> "1950s"), a dash-joined range is one
  span, a range written with words is two, counts/measures/identifiers are not dates.
  "April of 2016" is labelled as the month + year date it is, although the regex has no "of" form.
  A year inside a name ("20th Century Fox Television") is not a date: the whole name is an ORG.

48 sentences were chosen to cover the date forms, entity types and negatives (including 5 with
no span at all); the last 5 were taken from a random sample of corpus sentences that contain a
month or a 3-4 digit number, to temper the bias of choosing sentences by their form.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import pytest

from realm_core.entities.dates import find_dates
from realm_core.entities.tagging import split_words

ROOT = Path(__file__).resolve().parents[3]
ASSET = ROOT / "tests" / "assets" / "entities" / "hand_labelled.jsonl"
BLOCKS = ROOT / "artifacts" / "corpus" / "blocks.parquet"
ENTITY_TYPES = ("PER", "ORG", "LOC", "MISC")
# The trained tagger the tag_entities stage uses by default (params.yaml). REALM_TEST_TAGGER
# points the slow test at another saved tagger directory (e.g. a training run's best checkpoint).
TAGGER = Path(os.environ.get("REALM_TEST_TAGGER", ROOT / "models" / "tagger"))

# Dates, exact span match. Measured: 63 of 68 regex spans are gold, 63 of 66 gold spans are found
# (P 0.926, R 0.955). The 5 false positives: "20th Century" inside "20th Century Fox
# Television", "1012" (10^12 with its superscript lost by the dump), "322 BC" and "220 AD" (the
# second half of "384 BC–322 BC" / "206 BC–220 AD": an era year followed by a dash and a digit is
# dropped as part of a longer number), and "2016" out of "April of 2016". The 3 misses are those
# two era ranges and "April of 2016". The thresholds leave room for about 3 more errors of each
# kind on 66 gold spans (P 63/71 = 0.887, R 60/66 = 0.909 still pass) so that a regex change
# that fixes one case and costs another does not fail, while a real regression (a date form
# lost, a class of numbers newly taken for years) does.
DATE_MIN_PRECISION = 0.88
DATE_MIN_RECALL = 0.90

# Entities, exact (start, end, type) match, through the stage's own per-sentence path
# (salient.tag_table and load_tagger with the stage's default settings), on the 121 gold entities.
# Measured with the default tagger `dvc repro train_tagger` produces (uncased MiniLM-L6 + case
# feature, 1300 steps; CoNLL test F1 0.883): P 0.646 R 0.769 (tp 93, fp 51, fn 28); per type
# (P/R) PER 0.79/0.86, ORG 0.59/0.81, LOC 0.83/0.85, MISC 0.43/0.58. Earlier, a partially trained
# checkpoint without the case feature (step 454, CoNLL test F1 0.836) gave P 0.634 R 0.702.
# Lower than the CoNLL test F1 because the sentences are out of domain (palaces, dynasties, hymns,
# TV companies, statutes), MISC boundaries are hard ("the Battle of X" vs "X"), and split_words
# cuts a lone initial off its period ("Franklin D" + "Roosevelt"). The thresholds sit ~0.07 below
# the default tagger: 8 more misses (R) or ~15 more false positives (P) fail the test, which a
# regression in the tagger, the windowing or the sentence path would cause, and seed noise not.
ENTITY_MIN_PRECISION = 0.58
ENTITY_MIN_RECALL = 0.70


def load_gold() -> list[dict]:
    with ASSET.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def prf(gold: set, pred: set) -> tuple[float, float, int, int, int]:
    tp = len(gold & pred)
    fp, fn = len(pred - gold), len(gold - pred)
    precision = tp / (tp + fp) if tp + fp else 1.0
    recall = tp / (tp + fn) if tp + fn else 1.0
    return precision, recall, tp, fp, fn


def _report(rows: list[dict], gold: set, pred: set) -> str:
    lines = []
    for i, s, e, label in sorted(pred - gold):
        lines.append(f"  FP {label:<4} {rows[i]['text'][s:e]!r}  (source {rows[i]['source']})")
    for i, s, e, label in sorted(gold - pred):
        lines.append(f"  FN {label:<4} {rows[i]['text'][s:e]!r}  (source {rows[i]['source']})")
    return "\n".join(lines)


def test_asset_is_well_formed() -> None:
    rows = load_gold()
    assert len(rows) >= 25
    labels = Counter()
    for row in rows:
        text, spans = row["text"], row["spans"]
        assert text == text.strip() and "\n" not in text, row["source"]
        assert spans == sorted(spans), row["source"]
        words = split_words(text)
        starts, ends = {s for s, _ in words}, {e for _, e in words}
        prev_end = 0
        for start, end, label in spans:
            assert prev_end <= start < end <= len(text), (row["source"], start, end)
            piece = text[start:end]
            assert piece == piece.strip() and piece, (row["source"], piece)
            assert label in (*ENTITY_TYPES, "DATE"), label
            if label != "DATE":  # the tagger can only return whole CoNLL-like words
                assert start in starts and end in ends, (row["source"], piece)
            labels[label] += 1
            prev_end = end
    assert all(labels[t] >= 10 for t in (*ENTITY_TYPES, "DATE")), labels
    assert sum(1 for r in rows if not r["spans"]) >= 3  # sentences with no span at all


def test_asset_sentences_are_verbatim_corpus_text() -> None:
    if not BLOCKS.is_file():
        pytest.skip(f"{BLOCKS} is absent (run `python -m flows.prepare_corpus` to check this)")
    import pyarrow.parquet as pq

    table = pq.read_table(BLOCKS, columns=["block_id", "text"])
    texts = dict(zip(table.column("block_id").to_pylist(), table.column("text").to_pylist()))
    corpus = "\n".join(texts.values())
    for row in load_gold():
        block = texts.get(int(row["source"]))
        # the block id is stable for the shipped data and default settings; any block will do
        assert (block is not None and row["text"] in block) or row["text"] in corpus, row["source"]


def test_find_dates_precision_and_recall() -> None:
    rows = load_gold()
    gold = {(i, s, e, label) for i, r in enumerate(rows) for s, e, label in r["spans"] if label == "DATE"}
    pred = {(i, s, e, "DATE") for i, r in enumerate(rows) for s, e in find_dates(r["text"])}
    precision, recall, tp, fp, fn = prf(gold, pred)
    summary = f"DATE P={precision:.3f} R={recall:.3f} (tp={tp} fp={fp} fn={fn})\n{_report(rows, gold, pred)}"
    assert precision >= DATE_MIN_PRECISION, summary
    assert recall >= DATE_MIN_RECALL, summary


@pytest.mark.slow
def test_tagger_entities_precision_and_recall() -> None:
    """The trained tagger on the gold PER/ORG/LOC/MISC spans, tagged the way tag_entities does.

    Thresholds: see ENTITY_MIN_PRECISION above (set from measured checkpoints, with a margin).
    """
    if not (TAGGER / "config.json").is_file():
        pytest.skip(f"no trained tagger at {TAGGER} (run `python -m flows.train_tagger`, or set "
                    "REALM_TEST_TAGGER to a saved tagger directory)")
    import pyarrow as pa
    import torch

    from realm_core.config import TagEntitiesConfig
    from realm_core.entities.salient import load_tagger, tag_table

    torch.set_num_threads(min(2, torch.get_num_threads()))
    rows = load_gold()
    # One pseudo-block per sentence: tag_table then tags exactly that sentence.
    table = pa.table({
        "block_id": pa.array(range(len(rows)), pa.int64()),
        "text": [r["text"] for r in rows],
        "sentence_starts": pa.array([[0]] * len(rows), pa.list_(pa.int32())),
    })
    cfg = TagEntitiesConfig(tagger=str(TAGGER), include_dates=False)
    spans = tag_table(load_tagger(str(TAGGER), cfg.device, cfg.precision), table, cfg).to_pylist()  # as tag_shard loads it
    pred = {(s["block_id"], s["start"], s["end"], s["label"]) for s in spans}
    gold = {(i, s, e, label) for i, r in enumerate(rows) for s, e, label in r["spans"] if label != "DATE"}
    precision, recall, tp, fp, fn = prf(gold, pred)
    per_type = {t: prf({g for g in gold if g[3] == t}, {p for p in pred if p[3] == t})[:2] for t in ENTITY_TYPES}
    summary = (f"entities P={precision:.3f} R={recall:.3f} (tp={tp} fp={fp} fn={fn}); per type (P, R): "
               + ", ".join(f"{t} {p:.2f}/{r:.2f}" for t, (p, r) in per_type.items())
               + f"\n{_report(rows, gold, pred)}")
    print(summary)
    assert precision >= ENTITY_MIN_PRECISION, summary
    assert recall >= ENTITY_MIN_RECALL, summary
