"""A synthetic knowledge corpus for REALM effect tests (REALM_NOTES §7.1): the facts are known, so
a test can assert that retrieval helps instead of hoping that it does.

The knowledge base is a set of people, each with a birth year, a home city and an employer. It is
rendered into blocks (blocks.parquet, the `realm_core.corpus.blocks` schema) of three kinds:
- a biography (title: the person's name): "X was born in 1912. X grew up in Rome. X works for Sony.";
- city blocks (title: the city) listing up to `per_list` residents: "X, born in 1912, lives in Rome.";
- organisation blocks (title: the organisation) listing employees: "Sony employs X, who was born in 1912.".
Every fact is therefore stated in at least two blocks with different templates (the year in three,
city and employer in two): after the source block is excluded as a trivial retrieval, another
block still carries it. People come in pairs that share a first name and a home city, and the
attribute pools are small, so many people share a year, city or employer (distractors: the first
name alone does not single out the right block, the surname does).

Every block also gets one filler sentence, cycling through three kinds:
- `plain`: no salient span at all (never a pre-training example);
- `generic`: a salient span that the sentence itself determines ("The year begins in January."):
  no world knowledge needed;
- `once`: a salient name that occurs in this block only ("A painter named Hugo once lived
  there."): no other block can help to predict it.

Salient spans (salient_spans.parquet, the `tag_entities` schema) are the attribute values in the
fact sentences and the spans of the filler sentences, with exact char offsets; the returned
`Span.kind` ("fact", "generic", "once") tells tests which is which. Person names are not salient
by default (`mask_names`): every fact example asks for an attribute whose subject stays visible,
which is what a retriever can look up.

Block ids are a hash of title, text and a salt. With `heldout_fraction`, every `heldout_every`-th
person is held out: the salt of each of their blocks is chosen so that the project's held-out
split (`held_out_mask(block_id, heldout_fraction)`) puts it in the held-out part, and the salt
of every other block so that it does not. The facts of held-out people then occur in no training
block, so a model cannot memorise them: only retrieval from the index (which holds every block)
can supply them. List blocks only group people of the same side.

All names, cities, organisations, months, weekdays and years used are single wordpieces of the
BERT uncased vocabulary, so every masked span is one scored token.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

FIRST = ("alice bob carol david emma frank grace henry irene jack kate leo mary nina oscar paul rose sam "
         "tina victor").split()
LAST = ("smith jones brown taylor wilson moore clark lewis walker hall young king wright hill green adams baker "
        "nelson carter mitchell parker evans turner collins stewart morris murphy cook rogers morgan cooper ward "
        "cox howard gray hughes price wood barnes ross").split()
CITIES = "paris london berlin madrid rome vienna tokyo cairo".split()
ORGS = "nokia intel sony boeing siemens honda toyota samsung".split()
BIRTH_YEARS = list(range(1900, 1940))
ONCE_NAMES = "hugo felix ivan omar pablo luca marco hans igor yuri boris".split()
GENERIC = [  # (sentence with {} for the span, the span): the sentence alone determines the span
    ("The year begins in {}.", "January"),
    ("The year ends in {}.", "December"),
    ("The working week starts on {}.", "Monday"),
]
PLAIN = ["The streets are quiet in the evening.", "Many visitors come to see it.",
         "It is mentioned in several old books.", "Little else is known about it."]
ONCE = ["A painter named {} once lived there.", "A sailor named {} was seen there."]
FILLERS = ("plain", "generic", "once")


@dataclass(frozen=True)
class Person:
    name: str
    year: int
    city: str
    org: str
    heldout: bool = False


@dataclass(frozen=True)
class Span:
    block_id: int
    start: int
    end: int
    label: str
    kind: str  # "fact", "generic" or "once"
    text: str


@dataclass
class SyntheticCorpus:
    people: list[Person]
    blocks: list[dict]
    spans: list[Span]
    heldout_fraction: float

    def spans_of(self, block_id: int) -> list[Span]:
        return [s for s in self.spans if s.block_id == block_id]


def make_people(n: int, seed: int = 0, *, heldout_every: int = 0) -> list[Person]:
    """`n` people with distinct full names; consecutive pairs share a first name and a city (and
    with more than 40 people, surnames repeat too). With `heldout_every` k > 0, people k−1,
    2k−1, ... are held out (so pairs straddle the split)."""
    rng = random.Random(seed)
    if n > len(FIRST) * len(LAST):
        raise ValueError(f"at most {len(FIRST) * len(LAST)} people")
    people: list[Person] = []
    names: set[str] = set()
    lasts: list[str] = []
    for i in range(n):
        if i % 2 == 0:
            first, city = rng.choice(FIRST), rng.choice(CITIES)
            while all(f"{first} {last}" in names for last in LAST):
                first = rng.choice(FIRST)
        if not lasts:
            lasts = rng.sample(LAST, len(LAST))
        last = next((x for x in lasts if f"{first} {x}" not in names), None)
        if last is None:
            last = next(x for x in LAST if f"{first} {x}" not in names)
        else:
            lasts.remove(last)
        names.add(f"{first} {last}")
        held = heldout_every > 0 and i % heldout_every == heldout_every - 1
        people.append(Person(f"{first.capitalize()} {last.capitalize()}", rng.choice(BIRTH_YEARS), city.capitalize(),
                             rng.choice(ORGS).capitalize(), held))
    return people


class _Block:
    """Sentences joined by single spaces, with the char offsets of every sentence and span."""

    def __init__(self, title: str, doc_id: str, source: str, heldout: bool) -> None:
        self.title, self.doc_id, self.source, self.heldout = title, doc_id, source, heldout
        self.text = ""
        self.starts: list[int] = []
        self.spans: list[tuple[int, int, str, str]] = []

    def add(self, template: str, values: list[tuple[str, str | None, str]] = ()) -> None:
        """Append a sentence; `template` has one {} per value: (text, label or None, kind)."""
        if self.text:
            self.text += " "
        start = len(self.text)
        self.starts.append(start)
        pieces = template.split("{}")
        assert len(pieces) == len(values) + 1, template
        out = pieces[0]
        for (value, label, kind), tail in zip(values, pieces[1:]):
            s = start + len(out)
            out += value
            if label is not None:
                self.spans.append((s, s + len(value), label, kind))
            out += tail
        self.text += out

    def filler(self, rng: random.Random, kind: str) -> None:
        if kind == "plain":
            self.add(rng.choice(PLAIN))
        elif kind == "generic":
            template, value = rng.choice(GENERIC)
            self.add(template, [(value, "DATE", "generic")])
        else:
            self.add(rng.choice(ONCE), [(rng.choice(ONCE_NAMES).capitalize(), "PER", "once")])


def block_id(title: str, text: str, salt: int = 0) -> int:
    """A stable non-negative 63-bit id from the block's title, text and a salt."""
    return int.from_bytes(hashlib.sha1(f"{title}\x00{text}\x00{salt}".encode()).digest()[:8], "little") >> 1


def _block_id_on_side(title: str, text: str, heldout: bool, fraction: float) -> int:
    from realm_core.training.heldout import held_out_mask

    for salt in range(100_000):
        bid = block_id(title, text, salt)
        if not fraction or bool(held_out_mask(np.asarray([bid], dtype=np.int64), fraction)[0]) == heldout:
            return bid
    raise AssertionError("no salt puts the block on its side")


def build_corpus(n_people: int = 24, *, seed: int = 0, per_list: int = 1, mask_names: bool = False,
                 heldout_fraction: float = 0.0, heldout_every: int = 4) -> SyntheticCorpus:
    """The KB and its blocks (see the module docstring); deterministic in its arguments."""
    rng = random.Random(seed + 1)
    people = make_people(n_people, seed, heldout_every=heldout_every if heldout_fraction else 0)
    name_label = "PER" if mask_names else None
    blocks: list[_Block] = []

    def filler(b: _Block) -> None:
        b.filler(rng, FILLERS[len(blocks) % len(FILLERS)])

    for p in people:
        b = _Block(p.name, f"person/{p.name}", "synthetic/bio", p.heldout)
        facts = [("{} was born in {}.", [(p.name, name_label, "fact"), (str(p.year), "DATE", "fact")]),
                 ("{} grew up in {}.", [(p.name, name_label, "fact"), (p.city, "LOC", "fact")]),
                 ("{} works for {}.", [(p.name, name_label, "fact"), (p.org, "ORG", "fact")])]
        rng.shuffle(facts)
        at = rng.randrange(len(facts) + 1)
        for i, (template, values) in enumerate(facts):
            if i == at:
                filler(b)
            b.add(template, values)
        if at == len(facts):
            filler(b)
        blocks.append(b)
    for attr, label, opening, template in (
            ("city", "LOC", "{} is a large city.", "{}, born in {}, lives in {}."),
            ("org", "ORG", "{} is a company.", "{} employs {}, who was born in {}.")):
        groups: dict[tuple[str, bool], list[Person]] = {}
        for p in people:
            groups.setdefault((getattr(p, attr), p.heldout), []).append(p)
        for (value, held) in sorted(groups):
            members = groups[(value, held)]
            for lo in range(0, len(members), per_list):
                b = _Block(value, f"{attr}/{value}/{len(blocks)}", f"synthetic/{attr}", held)
                b.add(opening, [(value, None, "fact")])
                for p in members[lo: lo + per_list]:
                    if attr == "city":
                        b.add(template, [(p.name, name_label, "fact"), (str(p.year), "DATE", "fact"),
                                         (value, label, "fact")])
                    else:
                        b.add(template, [(value, label, "fact"), (p.name, name_label, "fact"),
                                         (str(p.year), "DATE", "fact")])
                filler(b)
                blocks.append(b)
    rows, spans, seen = [], [], set()
    for b in blocks:
        bid = _block_id_on_side(b.title, b.text, b.heldout, heldout_fraction)
        assert bid not in seen, "duplicate block id"
        seen.add(bid)
        rows.append({"block_id": bid, "doc_id": b.doc_id, "block_index": 0, "title": b.title, "text": b.text,
                     "sentence_starts": b.starts, "n_wordpieces": len(b.text.split()) + len(b.starts),
                     "source": b.source, "heldout": b.heldout})
        spans.extend(Span(bid, s, e, label, kind, b.text[s:e]) for s, e, label, kind in b.spans)
    return SyntheticCorpus(people, rows, spans, heldout_fraction)


def write_corpus(corpus: SyntheticCorpus, out: str | Path) -> tuple[Path, Path]:
    """blocks.parquet and salient_spans.parquet under `out`, in the project's schemas."""
    from realm_core.corpus.blocks import BLOCKS_SCHEMA
    from realm_core.entities.salient import SPANS_SCHEMA

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    blocks, spans = out / "blocks.parquet", out / "salient_spans.parquet"
    cols = {name: [b[name] for b in corpus.blocks] for name in BLOCKS_SCHEMA.names}
    pq.write_table(pa.table(cols, schema=BLOCKS_SCHEMA), str(blocks))
    s = corpus.spans
    pq.write_table(pa.table({"block_id": [x.block_id for x in s], "start": [x.start for x in s],
                             "end": [x.end for x in s], "label": [x.label for x in s], "score": [1.0] * len(s)},
                            schema=SPANS_SCHEMA), str(spans))
    return blocks, spans

