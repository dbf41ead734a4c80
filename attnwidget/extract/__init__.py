"""Model -> AttentionMaps. The only stage that knows about models."""

from __future__ import annotations

from typing import Any

from attnwidget.extract._common import NoAttentionFoundError
from attnwidget.extract.arrays import from_arrays, is_array_like
from attnwidget.maps import AttentionMaps

__all__ = ["NoAttentionFoundError", "extract_attention", "from_arrays"]


def extract_attention(
    model: Any, text_or_inputs: Any = None, tokenizer: Any = None, **options: Any
) -> AttentionMaps:
    """Every layer's and head's attention for one input, as an :class:`AttentionMaps`.

    ``model`` may be

    * a transformers model (encoder, decoder-only, encoder-decoder):
      see :func:`attnwidget.extract.huggingface.extract_hf` for the options
      (``stack``, ``decoder_text``, ``truncation``, ``batch_index``, ``model_name``);
    * a TransformerLens ``HookedTransformer`` (:mod:`attnwidget.extract.lens`);
    * any other ``torch.nn.Module``: forward hooks on ``nn.MultiheadAttention``
      and on attention modules that return weights
      (:func:`attnwidget.extract.hooks.extract_hooks`; ``attention_modules``, ``tokens``);
    * raw weights instead of a model: ``[Q,K]``, ``[H,Q,K]``, ``[L,H,Q,K]``, or
      the per-layer tuple transformers returns; then the second argument is the
      tokens (:func:`attnwidget.extract.arrays.from_arrays`).

    ``text_or_inputs`` is the text (tokenized with ``tokenizer``, given or
    found offline), or the model's inputs (ids, or a mapping as a tokenizer returns).
    """
    if is_array_like(model):
        if tokenizer is not None:
            raise TypeError("tokenizer: raw weights carry no text to tokenize; pass tokens instead")
        return from_arrays(model, text_or_inputs, **options)
    from torch import nn

    if not isinstance(model, nn.Module):
        raise TypeError(
            "model: expected a torch.nn.Module (transformers, TransformerLens or plain PyTorch) "
            f"or an array/tensor of weights, got {type(model).__name__}"
        )
    if text_or_inputs is None:
        raise TypeError("text_or_inputs: expected the input text or the model's inputs, got None")
    from attnwidget.extract import hooks, huggingface, lens

    if lens.is_hooked_transformer(model):
        return lens.extract_lens(model, text_or_inputs, **options)
    if huggingface.is_hf_model(model):
        return huggingface.extract_hf(model, text_or_inputs, tokenizer, **options)
    return hooks.extract_hooks(model, text_or_inputs, tokenizer, **options)
