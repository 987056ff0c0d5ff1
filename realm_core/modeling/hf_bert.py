"""What the three saved model kinds share: loading a BERT checkpoint and reading their metadata.

The retriever embedder (`embedder.py`), the knowledge-augmented encoder (`encoder.py`) and the span
reader (`reader.py`) each start from "any BERT checkpoint" and each save an HF-style directory with
a small JSON file carrying a format tag. The checks and messages for both live here, once, so the
three kinds fail the same way on the same bad input.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any, Iterator

import torch

from realm_core.errors import RealmError, first_line


def read_format_json(path: str | Path, filename: str, fmt: str, what: str) -> dict[str, Any]:
    """The JSON object `path/filename` of a saved `what`; RealmError unless its "format" is `fmt`."""
    path = Path(path)
    if not path.is_dir():
        raise RealmError(f"{path}: {what} directory does not exist")
    try:
        data = json.loads((path / filename).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise RealmError(f"{path / filename}: cannot read ({first_line(exc)}); not a saved {what}") from None
    if not isinstance(data, dict):
        raise RealmError(f"{path / filename}: expected a JSON object; not a saved {what}")
    if data.get("format") != fmt:
        raise RealmError(f"{path / filename}: not a saved {what} (format {data.get('format')!r}, expected {fmt!r})")
    return data


def has_format(path: str | Path, filename: str, fmt: str) -> bool:
    """Whether `path` is a directory saved with format tag `fmt` (no error when it is not)."""
    try:
        return json.loads((Path(path) / filename).read_text(encoding="utf-8")).get("format") == fmt
    except (OSError, ValueError, AttributeError):
        return False


def portable_config(config) -> dict[str, Any]:
    """A BertConfig as a dict without `_name_or_path`: that is where the weights were loaded from
    (an absolute path into the virtual environment for a packaged model), so keeping it would make
    the saved config, and every hash taken over it, depend on the checkout's location."""
    data = config.to_dict()
    data.pop("_name_or_path", None)
    return data


def load_bert(model_cls, init: str, path: str, *, what: str, num_layers: int | None = None,
              optional: tuple[str, ...] = ("pooler.",), **kwargs: Any):
    """`model_cls` (BertModel, BertForMaskedLM) from the BERT checkpoint at `path`, the resolved
    form of the user's `init`; the first `num_layers` layers only when given.

    Weights whose names start with one of `optional` may be missing (they are initialised fresh:
    a pooler, an MLM head); any other missing weight is an error naming `init`, as is a checkpoint
    that is not a BERT. `what` names the model in messages ("retriever", "encoder", "reader").
    """
    from transformers import BertConfig

    looks_local = init.startswith(("/", ".", "~")) or Path(path).is_absolute() or Path(path).exists()
    if looks_local and not Path(path).expanduser().exists():
        raise RealmError(f"{what} init '{init}': {path} does not exist")
    try:
        config = BertConfig.from_pretrained(path)
    except (OSError, ValueError) as exc:
        raise RealmError(f"{what} init '{init}': cannot load a BERT config ({first_line(exc)})") from None
    if config.model_type != "bert":
        raise RealmError(f"{what} init '{init}': model_type {config.model_type!r}, expected a BERT checkpoint")
    if num_layers:
        if not 1 <= num_layers <= config.num_hidden_layers:
            raise RealmError(f"{what} init '{init}': num_layers={num_layers}, but it has {config.num_hidden_layers}")
        # Loading with fewer layers keeps encoder.layer.0..N-1 and drops the rest.
        config.num_hidden_layers = num_layers
    try:
        with quiet_transformers():
            model, info = model_cls.from_pretrained(path, config=config, output_loading_info=True, **kwargs)
    except (OSError, ValueError) as exc:
        raise RealmError(f"{what} init '{init}': cannot load weights ({first_line(exc)})") from None
    missing = [k for k in info.get("missing_keys", []) if not k.startswith(optional)]
    if missing:
        raise RealmError(f"{what} init '{init}': checkpoint lacks {len(missing)} encoder weights, e.g. {missing[0]}")
    # HF's loader can leave parameters in storage that is not 64-byte aligned, and MKL then picks
    # other kernels: outputs differ in the last bits from the same weights after a save/load
    # round trip. Fresh (aligned) copies make from_init and from_pretrained bitwise consistent.
    with torch.no_grad():
        for param in model.parameters():
            param.data = param.data.clone()
    return model


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence the per-load weight report and progress bar (dropped layers are intended)."""
    from transformers.utils import logging as hf_logging

    verbosity, bar = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bar:
            hf_logging.enable_progress_bar()
