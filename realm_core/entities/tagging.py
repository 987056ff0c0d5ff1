"""Entity tagger inference: word windows, first-sub-token predictions, spans with char offsets.

The tagger is trained like BERT on CoNLL (Devlin et al. 2019 §5.3): each *word* is classified
from its first wordpiece. At inference, raw text is first split into CoNLL-like words
(`split_words`), so an entity span always starts and ends on word boundaries of the original
string, whatever the tokenizer does to accents or punctuation.

Case feature: the default encoder is uncased (its tokenizer lower-cases), which throws away the
strongest NER cue in English. A tagger trained with `case_feature` gets it back through BERT's
segment embedding: every piece of a word containing an upper-case letter has token type 1, the
rest 0 (the segment distinction is otherwise unused for single-sentence tagging). The choice is
recorded in the saved config (`realm_case_feature`), so inference builds the same inputs; any other
token classifier (a cased hub model, say) is run with type 0 everywhere, as it was trained.

Long inputs (a 288-wordpiece block with a 128-token model) are cut into overlapping windows of
whole words; each word takes its prediction from the window where it has the most context on
both sides, so no word is predicted from a window edge when a better window exists.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from realm_core.devices import autocast, resolve_device, resolve_precision
from realm_core.entities.conll import chunks, entity_scores
from realm_core.errors import RealmError

IGNORE_INDEX = -100

# CoNLL-2003 tokenisation, approximately: initialisms keep their dots ("U.S."), words keep inner
# hyphens, apostrophes, periods, ampersands ("Urdu-speaking", "O'Neil", "AT&T", "3.5", "1,000",
# "10:30"), the possessive 's is its own token as in the Reuters data, and any other non-space
# character (punctuation) is a word by itself.
_WORD_RE = re.compile(
    r"(?:[^\W\d_]\.){2,}"
    r"|\w+(?:(?:[-&./:]|,(?=\d)|['’](?![sS]\b))\w+)*"
    r"|['’][sS]\b"
    r"|\S"
)


def split_words(text: str) -> list[tuple[int, int]]:
    """Char spans of the CoNLL-like words of `text` (never containing whitespace)."""
    return [m.span() for m in _WORD_RE.finditer(text)]


@dataclass
class Window:
    """Model input for a run of whole words of one document."""

    doc: int
    input_ids: list[int]  # [CLS] pieces [SEP]
    word_index: list[int]  # per position: the word whose FIRST piece sits here, else -1
    context: list[int]  # per position: how much context the word has here (higher is better)
    type_ids: list[int]  # per position: 1 on pieces of a word with an upper-case letter (case feature)


CASE_FEATURE_KEY = "realm_case_feature"  # model config attribute: trained with the case feature


def _has_upper(word: str) -> int:
    return int(any(c.isupper() for c in word))


def encode_windows(
    tokenizer, docs: Sequence[Sequence[str]], max_len: int, case_feature: bool = False
) -> list[Window]:
    """Tokenise word lists and cut them into windows of at most `max_len` pieces.

    With `case_feature`, `type_ids` marks the pieces of words with an upper-case letter (see the
    module docstring); without, it is all zeros.

    A document that fits is one window. Otherwise windows end on word boundaries and overlap by
    about half a window; a single word longer than a window is cut inside (its first piece, the
    one that carries the label, is kept).
    """
    if max_len < 3:
        raise RealmError(f"max_len must be at least 3, got {max_len}")
    budget = max_len - 2
    windows: list[Window] = []
    if not docs:
        return windows
    enc = tokenizer(
        [list(d) for d in docs],
        is_split_into_words=True,
        add_special_tokens=False,
        truncation=False,
        padding=False,
    )
    for d in range(len(docs)):
        ids = enc["input_ids"][d]
        wids = enc.word_ids(d)
        n = len(ids)
        first = [w is not None and (j == 0 or wids[j - 1] != w) for j, w in enumerate(wids)]
        upper = [_has_upper(docs[d][w]) if case_feature and w is not None else 0 for w in wids]
        for s, e in _piece_spans(first, budget):
            word_index = [-1]
            context = [-1]
            for j in range(s, e):
                word_index.append(wids[j] if first[j] else -1)
                # the document's own edges are not missing context
                left = j - s if s > 0 else n
                right = e - 1 - j if e < n else n
                context.append(min(left, right))
            word_index.append(-1)
            context.append(-1)
            ids_w = [tokenizer.cls_token_id, *ids[s:e], tokenizer.sep_token_id]
            windows.append(Window(d, ids_w, word_index, context, [0, *upper[s:e], 0]))
    return windows


def _piece_spans(first: list[bool], budget: int) -> list[tuple[int, int]]:
    n = len(first)
    if n <= budget:
        return [(0, n)]
    spans = []
    s = 0
    while True:
        e = min(s + budget, n)
        if e < n:
            b = e
            while b > s and not first[b]:
                b -= 1
            if b > s:
                e = b
        spans.append((s, e))
        if e >= n:
            return spans
        nxt = max(s + 1, e - budget // 2)
        while nxt < e and not first[nxt]:
            nxt += 1
        s = nxt


def pad_batch(rows: Sequence[Sequence[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad id lists to the longest; returns (input_ids, attention_mask)."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        mask[i, : len(r)] = 1
    return ids.to(device), mask.to(device)


class EntityTagger:
    """A token-classification model and its tokenizer, used on words or on raw text.

    `precision` is the compute precision of the forward pass ("fp32", "bf16", "fp16": autocast on
    the model's device; see `realm_core.devices`), checked against the device the model is on when
    the tagger is made (fp16 needs CUDA; "auto" is resolved there). Tag probabilities are float32
    whatever it is.
    """

    def __init__(self, model, tokenizer, precision: str = "fp32") -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.precision = resolve_precision(precision, next(model.parameters()).device)
        self.id2label = {int(k): v for k, v in model.config.id2label.items()}
        self.case_feature = bool(getattr(model.config, CASE_FEATURE_KEY, False))

    @classmethod
    def load(cls, model_dir: str | Path, device: str | torch.device | None = None,
             precision: str = "fp32") -> "EntityTagger":
        """Load a tagger saved by `train_tagger` (an HF model directory with its tokenizer) onto
        `device` ("auto"/None: CUDA when torch sees a GPU, else the CPU; "cpu", "cuda[:N]")."""
        from transformers import AutoModelForTokenClassification  # heavy import, only here

        from realm_core.pretrained import load_tokenizer

        model_dir = Path(model_dir)
        if not (model_dir / "config.json").is_file():
            raise RealmError(f"{model_dir}: not a saved tagger (no config.json)")
        tokenizer = load_tokenizer(str(model_dir))
        model = AutoModelForTokenClassification.from_pretrained(str(model_dir))
        return cls(model.to(resolve_device(device)).eval(), tokenizer, precision=precision)

    def predict_words(
        self, docs: Sequence[Sequence[str]], batch_size: int = 32, max_len: int = 128
    ) -> list[list[tuple[str, float]]]:
        """(IOB2 tag, probability) for every word of every document.

        A word whose text yields no wordpiece (e.g. a lone control character) is ("O", 1.0).
        """
        was_training = self.model.training
        self.model.eval()
        windows = encode_windows(self.tokenizer, docs, max_len, self.case_feature)
        best: list[dict[int, tuple[int, int, float]]] = [{} for _ in docs]  # word -> (ctx, tag, p)
        order = sorted(range(len(windows)), key=lambda i: len(windows[i].input_ids))
        device = next(self.model.parameters()).device
        # One autocast region around every batch, under no_grad (see realm_core.devices.autocast).
        no_grad = torch.inference_mode() if self.precision == "fp32" else torch.no_grad()
        with no_grad, autocast(device, self.precision):
            for b in range(0, len(order), batch_size):
                batch = [windows[i] for i in order[b:b + batch_size]]
                ids, mask = pad_batch([w.input_ids for w in batch], self.tokenizer.pad_token_id, device)
                extra = {}
                if self.case_feature:  # only then: some token classifiers take no token_type_ids
                    extra["token_type_ids"] = pad_batch([w.type_ids for w in batch], 0, device)[0]
                logits = self.model(input_ids=ids, attention_mask=mask, **extra).logits
                probs = torch.softmax(logits.float(), -1)
                top_p, top_tag = probs.max(-1)
                top_p, top_tag = top_p.cpu().tolist(), top_tag.cpu().tolist()
                for row, w in enumerate(batch):
                    seen = best[w.doc]
                    for pos, word in enumerate(w.word_index):
                        if word >= 0 and (word not in seen or w.context[pos] > seen[word][0]):
                            seen[word] = (w.context[pos], top_tag[row][pos], top_p[row][pos])
        self.model.train(was_training)
        out = []
        for d, words in enumerate(docs):
            preds = best[d]
            out.append([
                (self.id2label[preds[i][1]], preds[i][2]) if i in preds else ("O", 1.0)
                for i in range(len(words))
            ])
        return out

    def tag(
        self, texts: Sequence[str], batch_size: int = 32, max_len: int = 128
    ) -> list[list[tuple[int, int, str, float]]]:
        """Entity spans (start, end, type, score) of each text, with char offsets into it.

        Decoding reads the predicted IOB2 tags of the words with conlleval's rules (an I-X after
        O also opens an entity); the score is the mean probability of its words' tags.
        """
        word_spans = [split_words(t) for t in texts]
        docs = [[t[s:e] for s, e in spans] for t, spans in zip(texts, word_spans)]
        results = []
        for spans, preds in zip(word_spans, self.predict_words(docs, batch_size, max_len)):
            tags = [tag for tag, _ in preds]
            ents = []
            for typ, first, last in chunks(tags):
                score = sum(p for _, p in preds[first:last]) / (last - first)
                ents.append((spans[first][0], spans[last - 1][1], typ, score))
            results.append(ents)
        return results

    def evaluate(self, sentences, batch_size: int = 32, max_len: int = 128):
        """conlleval scores on (tokens, tags) sentences: {type or "overall": Scores}."""
        preds = self.predict_words([tokens for tokens, _ in sentences], batch_size, max_len)
        return entity_scores([tags for _, tags in sentences], [[t for t, _ in p] for p in preds])


def tag_texts(
    model_dir: str | Path, texts: Sequence[str], batch_size: int = 32, max_len: int = 128
) -> list[list[tuple[int, int, str, float]]]:
    """Load the tagger in `model_dir` and return, per text, its entities as (start, end, type,
    score) char spans; see `EntityTagger.tag`."""
    return EntityTagger.load(model_dir).tag(texts, batch_size, max_len)


def evaluate_tagger(model_dir: str | Path, sentences, batch_size: int = 32, max_len: int = 128):
    """Entity-level P/R/F1 (conlleval) of the tagger in `model_dir` on CoNLL sentences."""
    return EntityTagger.load(model_dir).evaluate(sentences, batch_size, max_len)
