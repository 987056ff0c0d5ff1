"""REALM's knowledge-augmented encoder: a BERT masked language model that reads a document.

One class serves two stages (REALM_NOTES §1.3, §7.2 step 0):
- `pretrain_mlm` trains it as plain BERT ("our BERT"): `[CLS] text [SEP]`, random masks. That
  model is the no-retrieval baseline and the init of every reader, as BERT is in the paper.
- `pretrain_realm` feeds it `[CLS] masked_x [SEP] z_body [SEP]` (segments 0, then 1 from the
  body on; the title is left out, as REALM's `featurization.py` does); the null document is
  `[CLS] masked_x [SEP] [SEP]`.

The MLM head is BERT's (dense -> gelu -> LayerNorm -> decoder tied to the word embeddings, plus a
bias), and it runs **only at the masked positions**: at 384 positions × 30,522 words the full
vocabulary projection would cost as much as the encoder itself (REALM's `mlm_positions`).

Saved as an HF `BertForMaskedLM` directory (config.json, model.safetensors, tokenizer) plus
`realm_encoder.json` (format tag, init, lengths), so `bert-base-uncased`'s own MLM head loads as
an init and the saved model loads in plain transformers too. No pickle.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from realm_core.errors import RealmError
from realm_core.io import atomic_path
from realm_core.modeling.hf_bert import has_format, load_bert, read_format_json
from realm_core.modeling.inputs import InputBuilder
from realm_core.pretrained import load_tokenizer, resolve_pretrained, scratch_bert_config

FORMAT = "realm-knowledge-aug-encoder/1"
META_FILE = "realm_encoder.json"
SCRATCH = "scratch"


class KnowledgeAugEncoder(nn.Module):
    """BERT + MLM head whose logits are computed only where asked (`positions`)."""

    def __init__(self, mlm: nn.Module, tokenizer, *, init: str = SCRATCH, max_query_len: int = 96,
                 max_candidate_len: int = 288) -> None:
        super().__init__()
        self.mlm = mlm  # transformers BertForMaskedLM
        self.tokenizer = tokenizer
        self.init_name, self.max_query_len, self.max_candidate_len = init, max_query_len, max_candidate_len
        ids = [tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id, tokenizer.mask_token_id]
        if any(i is None for i in ids):
            raise RealmError("encoder: a BERT tokenizer with [CLS], [SEP], [PAD] and [MASK] tokens is required")
        self.cls_id, self.sep_id, self.pad_id, self.mask_id = (int(i) for i in ids)
        self.vocab_size = int(mlm.config.vocab_size)
        self.inputs = InputBuilder(tokenizer)  # the retriever's padding, shared

    @property
    def device(self) -> torch.device:
        """Where the parameters live."""
        return next(self.parameters()).device

    def forward(self, input_ids, attention_mask, token_type_ids, positions) -> torch.Tensor:
        """MLM logits [rows, M, vocab] at `positions` [rows, M] (rows of the batch; padding
        positions may point anywhere, e.g. 0, and are ignored by the caller)."""
        hidden = self.mlm.bert(input_ids=input_ids, attention_mask=attention_mask,
                               token_type_ids=token_type_ids).last_hidden_state
        picked = hidden.gather(1, positions.unsqueeze(-1).expand(-1, -1, hidden.size(-1)))
        return self.mlm.cls(picked)

    # ------------------------------------------------------------------ inputs

    def joint_ids(self, query: Sequence[int], body: Sequence[int] | None) -> tuple[list[int], int]:
        """`[CLS] x [SEP] body [SEP]` from a `[CLS] x [SEP]` query and body wordpieces (no special
        tokens; None or empty = the null document). Returns the ids and where segment 1 starts."""
        q = list(query[: self.max_query_len])
        if q[-1] != self.sep_id:  # a query cut by max_query_len still ends in [SEP]
            q[-1] = self.sep_id
        tail = list(body[: self.max_candidate_len - 2]) if body else []
        return q + tail + [self.sep_id], len(q)

    def pad(self, seqs: Sequence[Sequence[int]], segment_starts: Sequence[int]) -> dict[str, torch.Tensor]:
        """Right-pad to the longest row; token_type 1 from `segment_starts[i]` on (InputBuilder.pad)."""
        return self.inputs.pad(seqs, segment_starts)

    # ------------------------------------------------------------------ save / load

    def meta(self) -> dict[str, Any]:
        """What `realm_encoder.json` holds."""
        return {"format": FORMAT, "init": self.init_name, "max_query_len": self.max_query_len,
                "max_candidate_len": self.max_candidate_len}

    def save_pretrained(self, path: str | Path) -> Path:
        """Write the HF directory + realm_encoder.json, atomically (a temp dir renamed into place)."""
        path = Path(path)
        old = path.with_name(f".{path.name}.old")
        with atomic_path(path) as tmp:
            tmp.mkdir()
            from realm_core.modeling.hf_bert import quiet_transformers

            with quiet_transformers():  # no per-save progress bar
                self.mlm.save_pretrained(str(tmp))
            self.tokenizer.save_pretrained(str(tmp))
            (tmp / META_FILE).write_text(json.dumps(self.meta(), indent=2, sort_keys=True) + "\n")
            if path.exists():
                shutil.rmtree(old, ignore_errors=True)
                path.rename(old)
        shutil.rmtree(old, ignore_errors=True)
        return path

    @classmethod
    def from_pretrained(cls, path: str | Path, *, device: str | torch.device | None = None) -> "KnowledgeAugEncoder":
        """Load a directory written by `save_pretrained`."""
        path = Path(path)
        meta = read_meta(path)
        mlm = _load_mlm(str(path), str(path), None)
        model = cls(mlm, load_tokenizer(str(path)), init=meta.get("init", str(path)),
                    max_query_len=int(meta["max_query_len"]), max_candidate_len=int(meta["max_candidate_len"]))
        return model.to(device) if device is not None else model

    @classmethod
    def from_init(cls, init: str, *, num_layers: int | None = None, scratch_config: dict[str, Any] | None = None,
                  tokenizer: str | None = None, max_query_len: int = 96, max_candidate_len: int = 288,
                  seed: int = 0, device: str | torch.device | None = None) -> "KnowledgeAugEncoder":
        """A fresh encoder: "scratch" (a small BERT from `scratch_config` over `tokenizer`'s
        vocabulary), a directory written by `save_pretrained` (loaded as is), or any BERT
        checkpoint (`package:...`, a directory, `bert-base-uncased`) whose MLM head is used when
        it has one and drawn from `seed` when it has not (the packaged MiniLM has none)."""
        from transformers import BertForMaskedLM

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            if init == SCRATCH:
                if tokenizer is None:
                    raise RealmError("encoder init 'scratch' needs a tokenizer")
                tok = load_tokenizer(tokenizer)
                overrides = dict(scratch_config or {})
                if num_layers:
                    overrides["num_hidden_layers"] = num_layers
                config = scratch_bert_config(tok, overrides, max_positions=max_query_len + max_candidate_len,
                                             what="encoder scratch_config")
                model = cls(BertForMaskedLM(config), tok, init=init, max_query_len=max_query_len,
                            max_candidate_len=max_candidate_len)
            elif _is_encoder_dir(Path(resolve_pretrained(init))):
                model = cls.from_pretrained(resolve_pretrained(init))
            else:
                path = resolve_pretrained(init)
                model = cls(_load_mlm(init, path, num_layers), load_tokenizer(init), init=init,
                            max_query_len=max_query_len, max_candidate_len=max_candidate_len)
        positions = model.mlm.config.max_position_embeddings
        if model.max_query_len + model.max_candidate_len > positions:
            raise RealmError(f"encoder: query + candidate length {model.max_query_len + model.max_candidate_len} "
                             f"exceeds the model's {positions} positions")
        return model.to(device) if device is not None else model


def read_meta(path: str | Path) -> dict[str, Any]:
    """`realm_encoder.json` of a saved encoder; RealmError if `path` is not one."""
    return read_format_json(path, META_FILE, FORMAT, "encoder")


def _is_encoder_dir(path: Path) -> bool:
    return has_format(path, META_FILE, FORMAT)


def _load_mlm(init: str, path: str, num_layers: int | None):
    from transformers import BertForMaskedLM

    # The MiniLM package has no MLM head ("cls."), and BertForMaskedLM has no pooler.
    mlm = load_bert(BertForMaskedLM, init, path, what="encoder", num_layers=num_layers,
                    optional=("cls.", "bert.pooler."))
    mlm.tie_weights()  # the decoder shares the word embeddings (load_bert's aligned copies separated them)
    return mlm
