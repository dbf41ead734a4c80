"""TransformerLens ``HookedTransformer`` -> AttentionMaps (optional dependency).

Reads the ``blocks.{layer}.attn.hook_pattern`` activations, which are the
post-softmax weights ``[batch, head, query_pos, key_pos]`` per layer (one per
query head, also for grouped-query models). Install with
``pip install 'attnwidget[lens]'``.
"""

from __future__ import annotations

from typing import Any

import torch

from attnwidget.extract._common import (
    check_length,
    check_text,
    eval_mode,
    pick_sequence,
    sequence_layers,
)
from attnwidget.maps import AttentionMaps


def is_hooked_transformer(model: Any) -> bool:
    """True for a TransformerLens ``HookedTransformer`` (without importing it)."""
    return any(
        c.__name__ == "HookedTransformer" and c.__module__.startswith("transformer_lens")
        for c in type(model).__mro__
    )


def extract_lens(
    model: Any,
    text_or_inputs: Any,
    *,
    truncation: bool = False,
    prepend_bos: bool | None = None,
    batch_index: int | None = None,
    model_name: str | None = None,
) -> AttentionMaps:
    """Run a HookedTransformer once and return its attention patterns ``[L, H, Q, K]``.

    ``text_or_inputs``: text (tokenized by ``model.tokenizer``) or a tensor of
    token ids ``[seq]``/``[batch, seq]``. Inputs longer than ``cfg.n_ctx``
    raise unless ``truncation=True`` (TransformerLens itself would cut silently).
    """
    n_ctx = int(model.cfg.n_ctx)
    text = None
    if isinstance(text_or_inputs, str):
        text = check_text(text_or_inputs)
        if model.tokenizer is None:
            raise ValueError(
                "tokenizer: this HookedTransformer has no tokenizer, so pass token ids "
                "instead of text"
            )
        ids = model.to_tokens(text, prepend_bos=prepend_bos, truncate=False)
    elif isinstance(text_or_inputs, torch.Tensor):
        ids = text_or_inputs if text_or_inputs.ndim == 2 else text_or_inputs.unsqueeze(0)
    else:
        raise TypeError(
            "text_or_inputs: expected a str or a tensor of token ids, "
            f"got {type(text_or_inputs).__name__}"
        )
    if truncation:
        ids = ids[:, :n_ctx]
    check_length(int(ids.shape[-1]), n_ctx, "cfg.n_ctx", "text_or_inputs")

    names = [f"blocks.{layer}.attn.hook_pattern" for layer in range(model.cfg.n_layers)]
    wanted = set(names)
    with eval_mode(model), torch.no_grad():
        _, cache = model.run_with_cache(ids, names_filter=lambda name: name in wanted)
    weights = sequence_layers([cache[name] for name in names], batch_index)
    seq = pick_sequence(ids, batch_index)
    if model.tokenizer is not None:
        tokens = model.tokenizer.convert_ids_to_tokens(seq.tolist())
        specials = list(model.tokenizer.all_special_tokens)
    else:
        tokens, specials = [f"#{int(i)}" for i in seq], []
    return AttentionMaps(
        weights,
        tokens,
        layer_names=names,
        model_name=model_name or getattr(model.cfg, "model_name", None) or "HookedTransformer",
        text=text,
        causal=None,
        special_tokens=specials,
    )
