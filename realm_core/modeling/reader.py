"""ORQA's span reader, which REALM fine-tunes for open QA (REALM_NOTES §1.5).

Input `[CLS] question [SEP] block_body [SEP]` (at most `seq_len` = 320 wordpieces; the question is
cut to `max_question_len`, the block to what is left, and the last position is always [SEP]).
Span scorer over BERT's token states: a dense layer to 2 × `span_hidden` (256), split into start
and end halves; for every span of width 1..`max_span_width` (10), ReLU(start[s] + end[e]) →
LayerNorm (eps 1e-3, Keras' default in ORQA) → dense to 1. Spans must lie inside the block;
others get −10000, ORQA's mask value. The caller adds the block's retrieval score to each span
logit, so one softmax runs over every (block, span) pair of the top 5. Dense layers start from a
truncated normal with std 0.02, as in ORQA.

Saved HF-style: the BERT encoder as a `BertModel` directory (config.json, model.safetensors,
tokenizer files), the span head in `span_head.safetensors`, and `realm_reader.json` (format,
lengths, init). `from_init` accepts any BERT checkpoint, including this project's
knowledge-augmented encoders (`models/pretrain_mlm`, `models/realm_encoder`), whose MLM head is
dropped: that is how ORQA's reader starts from BERT and REALM's from its pre-trained encoder.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from realm_core.errors import RealmError, first_line
from realm_core.io import atomic_path
from realm_core.modeling.hf_bert import has_format, load_bert, read_format_json
from realm_core.modeling.inputs import InputBuilder
from realm_core.pretrained import load_tokenizer, resolve_pretrained

FORMAT = "realm-span-reader/1"
META_FILE = "realm_reader.json"
HEAD_FILE = "span_head.safetensors"
MASK_VALUE = -10000.0  # ORQA's logit for a span outside the block


class SpanReader(nn.Module):
    """BERT + ORQA's span MLP; `forward` returns span logits [rows, seq, max_span_width]."""

    def __init__(self, bert: nn.Module, tokenizer, *, init: str = "", span_hidden: int = 256,
                 max_span_width: int = 10, seq_len: int = 320, max_question_len: int = 32,
                 layer_norm_eps: float = 1e-3) -> None:
        super().__init__()
        if seq_len > bert.config.max_position_embeddings:
            raise RealmError(f"reader: seq_len {seq_len} exceeds the model's {bert.config.max_position_embeddings} positions")
        if not 3 <= max_question_len + 3 <= seq_len - 1:
            raise RealmError(f"reader: max_question_len {max_question_len} leaves no room for a block in {seq_len}")
        self.bert, self.tokenizer, self.init_name = bert, tokenizer, init
        self.span_hidden, self.max_span_width = span_hidden, max_span_width
        self.seq_len, self.max_question_len, self.layer_norm_eps = seq_len, max_question_len, layer_norm_eps
        hidden = bert.config.hidden_size
        self.span_proj = nn.Linear(hidden, 2 * span_hidden)
        self.span_norm = nn.LayerNorm(span_hidden, eps=layer_norm_eps)
        self.span_out = nn.Linear(span_hidden, 1)
        for layer in (self.span_proj, self.span_out):
            nn.init.trunc_normal_(layer.weight, std=0.02, a=-0.04, b=0.04)
            nn.init.zeros_(layer.bias)
        self.inputs = InputBuilder(tokenizer)
        self.cls_id, self.sep_id = self.inputs.cls_id, self.inputs.sep_id

    @property
    def device(self) -> torch.device:
        """Where the parameters live."""
        return next(self.parameters()).device

    def forward(self, input_ids, attention_mask, token_type_ids, block_start, block_end) -> torch.Tensor:
        """Span logits [rows, seq, width]: entry (r, s, w) scores the span s..s+w of row r.

        `block_start` / `block_end` [rows] are the first and last position of each row's block;
        spans not inside them get MASK_VALUE. Computed in float32 whatever the autocast.
        """
        hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask,
                           token_type_ids=token_type_ids).last_hidden_state
        proj = self.span_proj(hidden).float()
        start, end = proj.split(self.span_hidden, dim=-1)  # [R, L, H] each
        length = hidden.size(1)
        offsets = torch.arange(self.max_span_width, device=hidden.device)
        starts = torch.arange(length, device=hidden.device)
        ends = starts[:, None] + offsets[None, :]  # [L, W]
        with torch.autocast(hidden.device.type, enabled=False):
            logits = self.span_logits(start, end)  # [R, L, W]
        valid = (starts[None, :, None] >= block_start[:, None, None]) & (ends[None] <= block_end[:, None, None])
        return logits.masked_fill(~valid, MASK_VALUE)

    def span_logits(self, start: torch.Tensor, end: torch.Tensor) -> torch.Tensor:
        """dense(LayerNorm(ReLU(start[s] + end[s + w]))) [R, L, W] for start and end [R, L, H] and
        widths w < max_span_width, in float32 (spans past the last position see end = 0: the
        caller masks them).

        The last layer is a dot product, so with x = ReLU(start + end), m = mean(x), v = var(x):
        dense(LayerNorm(x)) = (Σ (w∘γ)·x − m Σ (w∘γ)) / sqrt(v + eps) + w·β + b. That needs three
        reductions over x (Σx, Σ(w∘γ)x, ‖x‖²) instead of materialising [R, L, W, H] for the
        LayerNorm's output and the dense layer: the LayerNorm form was 14-16 % of the reader's
        bf16 forward in prediction, and this one takes 0.25-0.86 of its time. In training it saves
        nothing (the backward materialises [R, L, W, H] as LayerNorm's does; benchmarks/
        span_head.py --train). x ≥ 0 is O(1) and eps is 1e-3, so the one-pass variance loses
        nothing that matters in float32 (equal to nn.LayerNorm + dense to 1e-5 in values and
        gradients, tests/realm_core/modeling/test_reader.py).
        """
        # The one [R, L, W, H] tensor: end[s + w] is a strided window view of the padded end
        # states (no gather copy), and the ReLU runs in place (its backward needs only its output).
        width = self.max_span_width
        windows = nn.functional.pad(end, (0, 0, 0, width - 1)).unfold(1, width, 1).transpose(2, 3)
        x = (windows + start[:, :, None, :]).relu_()
        w = self.span_out.weight[0].float()
        wg = w * self.span_norm.weight.float()
        sums = x @ torch.stack([torch.ones_like(wg), wg], 1)  # [R, L, W, 2]: Σx, Σ(w∘γ)x
        size = x.size(-1)
        mean = sums[..., 0] / size
        var = (torch.linalg.vector_norm(x, dim=-1).square() / size - mean * mean).clamp_min(0)
        bias = w @ self.span_norm.bias.float() + self.span_out.bias[0].float()
        return (sums[..., 1] - mean * wg.sum()) * torch.rsqrt(var + self.span_norm.eps) + bias

    def compile_for_inference(self, precision: str) -> str:
        """Compile the BERT encoder with Inductor for prediction; "" on success, else why not.

        `torch.compile(dynamic=True)` with Inductor's "freezing": the weights become constants,
        cast to bf16 and packed for oneDNN once instead of on every call, and the elementwise work
        between the GEMMs (autocast's casts, the float32 residual adds, GELU, LayerNorm) is fused:
        on a CPU that work and attention, not the GEMMs, hold the eager bf16 forward near half the
        matmul peak (speed and compile time: benchmarks/reader_compile.py, docs/benchmarks.md).
        The weights are baked in, so this is only for a model that is not trained afterwards
        (evaluate's fine-tuned models; never finetune_qa's dev evaluation between steps). The
        logits differ from the eager ones at the precision's resolution, which can flip an answer
        where two spans nearly tie.

        It compiles now, on two rows of different lengths (Dynamo specialises sizes 0 and 1, and
        equal sizes share a symbol), under the same no_grad + autocast as `OpenQAModel.predict`,
        so that a failure (no C++ compiler, say) surfaces here: then the eager forward is put back
        and the first line of the error returned.
        """
        import torch._inductor.config as inductor_config

        from realm_core.devices import autocast

        bert, was_training = self.bert, self.training
        compiled = torch.compile(bert.forward, dynamic=True)

        def frozen_forward(*args: Any, **kwargs: Any):
            # Inductor reads "freezing" when it compiles, i.e. inside a call (the first, or a
            # recompile for new shapes). Passed in torch.compile's options it did not take effect
            # (1.06x instead of 1.22x, benchmarks/reader_compile.py), hence the patch per call.
            with inductor_config.patch(freezing=True):
                return compiled(*args, **kwargs)

        bert.forward = frozen_forward
        pairs = [self.pair([self.cls_id] * 2, [self.sep_id] * n) for n in (7, 9)]
        self.eval()
        try:
            with torch.no_grad(), autocast(self.device, precision):
                self(**self.batch(pairs))
        except Exception as exc:  # noqa: BLE001 - any compiler failure: predict eagerly instead
            del bert.forward  # the class's forward again
            return first_line(exc)
        finally:
            self.train(was_training)
        return ""

    # ------------------------------------------------------------------ inputs

    def question_ids(self, questions: Sequence[str]) -> list[list[int]]:
        """Question wordpieces (no special tokens), cut to `max_question_len`."""
        return [q[: self.max_question_len] for q in self.inputs.wordpieces(questions)]

    def pair(self, question: Sequence[int], body: Sequence[int]) -> tuple[list[int], int, int]:
        """`[CLS] q [SEP] body [SEP]` ids (at most seq_len; the body cut to fit, the last position
        [SEP]), and the first and last position of the body (last < first for an empty body)."""
        q = list(question[: self.max_question_len])
        room = self.seq_len - len(q) - 3
        first = len(q) + 2
        body = [int(t) for t in body[:room]]
        return [self.cls_id, *q, self.sep_id, *body, self.sep_id], first, first + len(body) - 1

    def batch(self, pairs: Sequence[tuple[list[int], int, int]]) -> dict[str, torch.Tensor]:
        """Padded tensors for `pairs` from `pair` (segment 1 from the body on), on the model's device."""
        batch = self.inputs.pad([p[0] for p in pairs], [p[1] for p in pairs])
        batch["block_start"] = torch.tensor([p[1] for p in pairs], dtype=torch.long)
        batch["block_end"] = torch.tensor([p[2] for p in pairs], dtype=torch.long)
        device = self.device
        return {k: v.to(device) for k, v in batch.items()}

    # ------------------------------------------------------------------ save / load

    def meta(self) -> dict[str, Any]:
        """What `realm_reader.json` holds."""
        return {"format": FORMAT, "init": self.init_name, "span_hidden": self.span_hidden,
                "max_span_width": self.max_span_width, "seq_len": self.seq_len,
                "max_question_len": self.max_question_len, "layer_norm_eps": self.layer_norm_eps}

    def save_pretrained(self, path: str | Path) -> Path:
        """Write the reader directory atomically (a temp dir renamed into place)."""
        from safetensors.torch import save_file

        from realm_core.modeling.hf_bert import quiet_transformers

        path = Path(path)
        old = path.with_name(f".{path.name}.old")
        with atomic_path(path) as tmp:
            tmp.mkdir()
            with quiet_transformers():
                self.bert.save_pretrained(str(tmp))
            self.tokenizer.save_pretrained(str(tmp))
            head = {f"{name}.{k}": v.detach().cpu().contiguous()
                    for name in ("span_proj", "span_norm", "span_out")
                    for k, v in getattr(self, name).state_dict().items()}
            save_file(head, str(tmp / HEAD_FILE))
            (tmp / META_FILE).write_text(json.dumps(self.meta(), indent=2, sort_keys=True) + "\n")
            if path.exists():
                shutil.rmtree(old, ignore_errors=True)
                path.rename(old)
        shutil.rmtree(old, ignore_errors=True)
        return path

    @classmethod
    def from_pretrained(cls, path: str | Path, *, device: str | torch.device | None = None) -> "SpanReader":
        """Load a directory written by `save_pretrained`."""
        from safetensors.torch import load_file

        path = Path(path)
        meta = read_meta(path)
        model = cls(_load_bert(str(path), str(path)), load_tokenizer(str(path)), init=meta.get("init", ""),
                    span_hidden=int(meta["span_hidden"]), max_span_width=int(meta["max_span_width"]),
                    seq_len=int(meta["seq_len"]), max_question_len=int(meta["max_question_len"]),
                    layer_norm_eps=float(meta["layer_norm_eps"]))
        try:
            head = load_file(str(path / HEAD_FILE))
        except (OSError, ValueError) as exc:
            raise RealmError(f"{path / HEAD_FILE}: cannot load the span head ({first_line(exc)})") from None
        for name in ("span_proj", "span_norm", "span_out"):
            getattr(model, name).load_state_dict({k.split(".", 1)[1]: v for k, v in head.items()
                                                  if k.startswith(name + ".")})
        return model.to(device) if device is not None else model

    @classmethod
    def from_init(cls, init: str, *, seed: int = 0, device: str | torch.device | None = None,
                  **kw: Any) -> "SpanReader":
        """A reader from a saved reader directory (as is) or any BERT checkpoint (new span head,
        drawn from `seed`); `kw` are the constructor's lengths and sizes."""
        path = resolve_pretrained(init)
        if _is_reader_dir(Path(path)):
            return cls.from_pretrained(path, device=device)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = cls(_load_bert(init, path), load_tokenizer(path if Path(path).exists() else init), init=init, **kw)
        return model.to(device) if device is not None else model


def read_meta(path: str | Path) -> dict[str, Any]:
    """`realm_reader.json` of a saved reader; RealmError if `path` is not one."""
    return read_format_json(path, META_FILE, FORMAT, "reader")


def _is_reader_dir(path: Path) -> bool:
    return has_format(path, META_FILE, FORMAT)


def _load_bert(init: str, path: str):
    """A `BertModel` (no pooler) from any BERT checkpoint; an MLM or other head is dropped."""
    from transformers import BertModel

    return load_bert(BertModel, init, path, what="reader", add_pooling_layer=False)
