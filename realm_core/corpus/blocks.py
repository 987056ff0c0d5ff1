"""ORQA/REALM block packing and the blocks.parquet schema.

The rule (ORQA `wiki_preprocessor.py`, REALM §4.3): walk a document's sentences in order and add
each to the current block while 3 + len(title) + len(block) + len(next sentence) <= block_size
wordpieces (3 = [CLS], [SEP], [SEP]); a sentence that does not fit starts a new block, and one
longer than the whole budget is split at word boundaries.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
from tokenizers import Tokenizer

from realm_core.corpus.sentences import split_sentences

#: DESIGN.md §3. `n_wordpieces` is the model input length len([CLS] title [SEP] text [SEP]) and is
#: therefore always <= block_size; `sentence_starts` are code-point offsets into `text`.
BLOCKS_SCHEMA = pa.schema(
    [
        pa.field("block_id", pa.int64(), nullable=False),
        pa.field("doc_id", pa.string(), nullable=False),
        pa.field("block_index", pa.int32(), nullable=False),
        pa.field("title", pa.string(), nullable=False),
        pa.field("text", pa.string(), nullable=False),
        pa.field("sentence_starts", pa.list_(pa.int32()), nullable=False),
        pa.field("n_wordpieces", pa.int16(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
    ]
)
N_SPECIAL = 3  # [CLS] title [SEP] text [SEP]


# Characters Python's str.split() treats as whitespace but BERT's normaliser deletes as control
# characters; removing them keeps chunk-based counting exact (and they are never content).
_CONTROL_WS_RE = re.compile("[\x0b\x0c\x1c-\x1f\x85]")


def clean_control(text: str) -> str:
    """Drop the control characters that would make whitespace splitting disagree with BERT."""
    # A regex scan, not str.translate: translate looks every character up in a dict (slow), and
    # almost no text holds one of these.
    return _CONTROL_WS_RE.sub("", text) if _CONTROL_WS_RE.search(text) else text


def block_id(source: str, doc_id: str, block_index: int) -> int:
    """Stable 63-bit id from (source name, document id, block position): the same page in the same
    source always gets the same ids, whatever else the corpus holds and however it was sharded."""
    digest = hashlib.blake2b(f"{source}\x1f{doc_id}\x1f{block_index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") & 0x7FFF_FFFF_FFFF_FFFF


@dataclass
class PackStats:
    """Counters from packing, merged across workers."""

    sentences: int = 0
    long_sentences_split: int = 0
    blocks_truncated: int = 0
    docs_title_too_long: int = 0


@dataclass
class Blocks:
    """Column buffers for a batch of blocks (cheap to send between processes, no pickle on disk)."""

    block_id: list[int] = field(default_factory=list)
    doc_id: list[str] = field(default_factory=list)
    block_index: list[int] = field(default_factory=list)
    title: list[str] = field(default_factory=list)
    text: list[str] = field(default_factory=list)
    sentence_starts: list[list[int]] = field(default_factory=list)
    n_wordpieces: list[int] = field(default_factory=list)
    source: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.block_id)

    def extend(self, other: "Blocks") -> None:
        for name in BLOCKS_SCHEMA.names:
            getattr(self, name).extend(getattr(other, name))

    def to_table(self) -> pa.Table:
        return pa.table({name: getattr(self, name) for name in BLOCKS_SCHEMA.names}, schema=BLOCKS_SCHEMA)


class BlockPacker:
    """Packs documents into blocks with a BERT WordPiece tokenizer (a `tokenizers` JSON string)."""

    def __init__(self, tokenizer_json: str, block_size: int) -> None:
        # The Rust backend directly (serialised, so worker processes never import transformers):
        # transformers' Python wrapping of each encoding costs more than the tokenisation itself
        # at corpus scale. Padding and truncation are switched off: tokenizer.json files
        # (sentence-transformers ones among them) often enable both.
        self.backend = Tokenizer.from_str(tokenizer_json)
        self.backend.no_padding()
        self.backend.no_truncation()
        self.block_size = block_size
        self.stats = PackStats()
        self._chunk_counts: dict[str, int] = {}

    def _count(self, texts: list[str]) -> list[int]:
        """Exact wordpiece counts of `texts`, via a cache of space-separated chunks.

        BERT's normaliser and pre-tokenizer act per character and split at whitespace, so the
        tokens of a text are the concatenation of the tokens of its space-separated chunks; a
        chunk that holds other characters (tabs, NBSP, control characters) is simply encoded as
        a whole, which is still exact. Words repeat heavily in Wikipedia, so after warm-up almost
        every chunk is a dict hit: several times faster than encoding every sentence.
        """
        cache = self._chunk_counts
        get = cache.__getitem__
        # str.split() splits on every Python whitespace; the ones BERT does not treat as
        # whitespace (control characters it deletes) were removed by `clean_control`.
        split = [t.split() for t in texts]
        counts: list[int] = []
        missed: list[int] = []
        # Optimistic first pass: most texts are all hits, and a sum over dict lookups that stops
        # at the first miss is cheaper than testing every chunk for membership beforehand.
        for i, chunks in enumerate(split):
            try:
                counts.append(sum(map(get, chunks)))
            except KeyError:
                counts.append(0)
                missed.append(i)
        if missed:
            if len(cache) > 2_000_000:  # bound memory on huge, diverse corpora
                cache.clear()
            misses = list({c for i in missed for c in split[i] if c not in cache})
            cache.update(zip(misses, self._count_chunks(misses)))
            for i in missed:
                counts[i] = sum(map(get, split[i]))
        return counts

    def _count_chunks(self, chunks: list[str]) -> list[int]:
        """Wordpiece counts of whitespace-free `chunks`, from one encoding of them joined by
        spaces: each token is credited to the chunk its start offset falls in. A chunk is
        tokenized on its own either way (whitespace always splits), and one long encoding
        skips a Python Encoding object per chunk (faster than encode_batch)."""
        enc = self.backend.encode(" ".join(chunks), add_special_tokens=False)
        starts = np.cumsum([0] + [len(c) + 1 for c in chunks[:-1]])
        token_starts = np.fromiter((o[0] for o in enc.offsets), dtype=np.int64, count=len(enc.offsets))
        owner = np.searchsorted(starts, token_starts, side="right") - 1
        return np.bincount(owner, minlength=len(chunks)).tolist()

    def _encode(self, texts: list[str]):
        return self.backend.encode_batch(texts, add_special_tokens=False)

    def pack(self, source: str, doc_id: str, title: str, paragraphs: list[str], out: Blocks) -> int:
        """Append the blocks of one document to `out`; returns how many were added."""
        title = clean_control(title)
        title_len = self._count([title])[0] if title else 0
        budget = self.block_size - N_SPECIAL - title_len
        if budget < 16:
            self.stats.docs_title_too_long += 1
            return 0
        sentences: list[str] = []
        for para in paragraphs:
            para = clean_control(para)
            sentences.extend(para[s:e] for s, e in split_sentences(para))
        if not sentences:
            return 0
        pieces: list[tuple[str, int]] = []  # (sentence text, wordpiece count)
        hard_cut = False
        for sent, n in zip(sentences, self._count(sentences)):
            if n <= budget:
                pieces.append((sent, n))
            else:
                self.stats.long_sentences_split += 1
                split, cut_mid_word = self._split_long(sent, self._encode([sent])[0].offsets, budget)
                pieces.extend(split)
                hard_cut |= cut_mid_word
        self.stats.sentences += len(sentences)

        groups: list[list[tuple[str, int]]] = []
        current: list[tuple[str, int]] = []
        used = 0
        for piece in pieces:
            if current and used + piece[1] > budget:
                groups.append(current)
                current, used = [], 0
            current.append(piece)
            used += piece[1]
        if current:
            groups.append(current)

        texts, starts = [], []
        for group in groups:
            pos, st = 0, []
            for sent, _ in group:
                st.append(pos)
                pos += len(sent) + 1
            texts.append(" ".join(sent for sent, _ in group))
            starts.append(st)
        # Sentences are joined with a space, which BERT's pre-tokenizer splits on anyway, so a
        # block's count is the sum of its sentences' counts. Only a cut inside a word (a single
        # "word" longer than the budget) can change tokenisation; then the block is re-counted.
        counts = [sum(n for _, n in group) for group in groups]
        if hard_cut:
            counts = [len(e) for e in self._encode(texts)]
        for i, (text, st, n) in enumerate(zip(texts, starts, counts)):
            if n > budget:
                offs = self._encode([text])[0].offsets
                text = text[: offs[budget - 1][1]]
                st = [s for s in st if s < len(text)]
                n = len(self._encode([text])[0])
                self.stats.blocks_truncated += 1
            out.block_id.append(block_id(source, doc_id, i))
            out.doc_id.append(doc_id)
            out.block_index.append(i)
            out.title.append(title)
            out.text.append(text)
            out.sentence_starts.append(st)
            out.n_wordpieces.append(N_SPECIAL + title_len + n)
            out.source.append(source)
        return len(texts)

    @staticmethod
    def _split_long(sent: str, offs: list[tuple[int, int]], budget: int) -> tuple[list[tuple[str, int]], bool]:
        """Split an over-long sentence into pieces of <= budget wordpieces, cutting before a token
        that starts a word (preceded by whitespace) when one exists in the window. Returns the
        pieces and whether some cut fell inside a word."""
        out = []
        mid_word = False
        i = 0
        while i < len(offs):
            end = min(i + budget, len(offs))
            if end < len(offs):
                cut = end
                while cut > i + budget // 2 and not (offs[cut][0] > 0 and sent[offs[cut][0] - 1].isspace()):
                    cut -= 1
                if cut > i + budget // 2:
                    end = cut
                else:
                    mid_word |= offs[end][0] == offs[end - 1][1]
            piece = sent[offs[i][0]: offs[end - 1][1]].strip()
            if piece:
                out.append((piece, end - i))
            i = end
        return out, mid_word
