"""transformers models -> AttentionMaps.

Covers encoders (BERT-like), decoder-only models (GPT-2, Llama-style with
grouped-query attention) and encoder-decoder models (T5, BART: encoder
self-attention, decoder self-attention, cross-attention).

transformers' sdpa and flash kernels never form the attention matrix, so they
cannot return it. The extractor switches the model to the eager
implementation for the one forward pass and restores every (sub)config's
setting afterwards, also when the forward raises. Eager is the reference
implementation, so the maps equal those of a model loaded with
``attn_implementation="eager"``.

Grouped-query attention (Llama, Mistral, Qwen): keys and values have fewer
heads than queries; eager attention repeats each key/value head for its group
of query heads, so the result has one map per *query* head, and query head
``h`` uses key/value head ``h // (n_heads // n_kv_heads)``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from attnwidget.extract._common import (
    NoAttentionFoundError,
    all_modules,
    check_length,
    check_text,
    eval_mode,
    keep_positions,
    pick_sequence,
    sequence_layers,
)
from attnwidget.maps import AttentionMaps, check_size
from attnwidget.tokens import Scheme

STACKS = ("encoder", "decoder", "cross")
_POSITION_ATTRS = ("max_position_embeddings", "n_positions", "max_seq_len", "n_ctx")


def is_hf_model(model: Any) -> bool:
    """True for a transformers ``PreTrainedModel`` (without importing transformers)."""
    return any(
        c.__name__ == "PreTrainedModel" and c.__module__.startswith("transformers")
        for c in type(model).__mro__
    )


# --------------------------------------------------------------------------- eager switch
def _configs(modules: Sequence[nn.Module]) -> list[Any]:
    """Every config object reachable from the modules: their own, and sub-configs."""
    seen: dict[int, Any] = {}
    # vars(): nn.Module.__getattr__ raises (slowly) for every module without the attribute
    todo = [vars(m).get("config") for m in modules]
    while todo:
        cfg = todo.pop()
        if cfg is None or id(cfg) in seen or not hasattr(cfg, "_attn_implementation"):
            continue
        seen[id(cfg)] = cfg
        todo.extend(getattr(cfg, key, None) for key in getattr(cfg, "sub_configs", {}) or {})
    return list(seen.values())


def _impl(cfg: Any) -> Any:
    return getattr(cfg, "_attn_implementation_internal", getattr(cfg, "_attn_implementation", None))


@contextlib.contextmanager
def eager_attention(
    model: nn.Module, modules: Sequence[nn.Module] | None = None
) -> Iterator[None]:
    """Temporarily use eager attention (which can return weights); always restore."""
    saved = [(cfg, _impl(cfg)) for cfg in _configs(modules or all_modules(model))]
    if all(impl in (None, "eager") for _, impl in saved):
        yield
        return
    try:
        if hasattr(model, "set_attn_implementation"):
            model.set_attn_implementation("eager")
        else:  # older transformers read the config at forward time
            for cfg, _ in saved:
                cfg._attn_implementation_internal = "eager"
        yield
    finally:
        for cfg, impl in saved:
            cfg._attn_implementation_internal = impl


# --------------------------------------------------------------------------- tokenizers
def _scheme(tokenizer: Any) -> Scheme | None:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    text = f"{getattr(backend, 'decoder', '')} {getattr(backend, 'pre_tokenizer', '')}"
    if "ByteLevel" in text:
        return "bytelevel"
    if "Metaspace" in text:
        return "sentencepiece"
    if "WordPiece" in text:
        return "wordpiece"
    return None  # guessed from the tokens


def infer_tokenizer(model: nn.Module) -> Any:
    """A tokenizer found offline for this model, or None.

    Looks in the model's ``name_or_path`` when it is a local folder, then among
    attnwidget's embedded models. Never downloads.
    """
    name = str(getattr(model, "name_or_path", "") or getattr(model.config, "name_or_path", ""))
    if name and os.path.isdir(name):
        files = set(os.listdir(name))
        if files & {"tokenizer.json", "vocab.txt", "tokenizer_config.json", "spiece.model"}:
            from transformers import AutoTokenizer

            return AutoTokenizer.from_pretrained(name)
    from attnwidget.models import embedded_tokenizer

    return embedded_tokenizer(name)


def max_positions(model: nn.Module, tokenizer: Any) -> tuple[int | None, str]:
    """The longest input the model takes, and where that number comes from."""
    found: list[tuple[int, str]] = []
    for attr in _POSITION_ATTRS:
        value = getattr(model.config, attr, None)
        if isinstance(value, int) and value > 0:
            found.append((value, f"config.{attr}"))
            break
    tok_max = getattr(tokenizer, "model_max_length", None)
    if isinstance(tok_max, int) and 0 < tok_max < 1_000_000:  # "no limit" is stored as 1e30
        found.append((tok_max, "tokenizer.model_max_length"))
    return min(found) if found else (None, "")


def _is_causal(modules: Sequence[nn.Module]) -> bool | None:
    """transformers attention modules say whether they mask the future (``is_causal``).

    Reading it avoids scanning the upper triangle of the whole stack; None
    (infer from the weights) where no module says.
    """
    flags = {
        flag for m in modules
        if isinstance(flag := vars(m).get("is_causal", getattr(type(m), "is_causal", None)), bool)
    }
    return flags.pop() if len(flags) == 1 else None


def _model_name(model: nn.Module) -> str:
    name = str(getattr(model, "name_or_path", "") or "")
    return name or type(model).__name__


def _encode(
    tokenizer: Any, text: str, limit: int | None, source: str, truncation: bool, name: str
) -> tuple[dict[str, torch.Tensor], list[str] | None]:
    """Model inputs for ``text``, and its raw tokens when the tokenizer already has them.

    Fast tokenizers return the token strings with the ids; reusing them saves a
    second vocabulary lookup (~0.4 ms at 512 tokens).
    """
    check_text(text, name)
    if truncation and limit is not None:
        encoded = tokenizer(text, return_tensors="pt", truncation=True, max_length=limit)
    else:
        encoded = tokenizer(text, return_tensors="pt", truncation=False, verbose=False)
        check_length(int(encoded["input_ids"].shape[-1]), limit, source, name)
    raw = encoded.tokens() if getattr(encoded, "is_fast", False) else None
    return dict(encoded), raw


def as_inputs(text_or_inputs: Any) -> dict[str, Any]:
    """Input ids ``[B, T]`` (or ``[T]``), or a dict/BatchEncoding of them, as model keyword arguments."""
    if isinstance(text_or_inputs, torch.Tensor):
        ids = text_or_inputs if text_or_inputs.ndim == 2 else text_or_inputs.unsqueeze(0)
        if ids.ndim != 2 or ids.dtype not in (torch.int64, torch.int32):
            raise ValueError(
                "text_or_inputs: expected input ids as an integer tensor [seq] or [batch, seq], "
                f"got dtype {text_or_inputs.dtype} and shape {tuple(text_or_inputs.shape)}"
            )
        return {"input_ids": ids.long()}
    if isinstance(text_or_inputs, Mapping):
        if "input_ids" not in text_or_inputs:
            raise ValueError(
                f"text_or_inputs: a mapping of model inputs needs 'input_ids', got keys "
                f"{sorted(text_or_inputs)}"
            )
        return dict(text_or_inputs)
    raise TypeError(
        "text_or_inputs: expected a str, a tensor of input ids or a mapping of model inputs "
        f"(as a tokenizer returns), got {type(text_or_inputs).__name__}"
    )


def _tokens(tokenizer: Any, ids: torch.Tensor) -> list[str]:
    if tokenizer is None:
        return [f"#{int(i)}" for i in ids]  # no vocabulary at hand: show the ids honestly
    return list(tokenizer.convert_ids_to_tokens([int(i) for i in ids]))


def _check_record_size(config: Any, inputs: dict[str, Any], stack: str | None) -> None:
    """Refuse before the forward an input whose record would pass MAX_RECORD_BYTES.

    The model returns every layer's weights at once, so a too-long input would
    otherwise fill the memory (and kill the kernel) before any check could run.
    """
    layers = getattr(config, "num_hidden_layers", None)
    heads = getattr(config, "num_attention_heads", None)
    if stack is not None:
        layers = getattr(config, "decoder_layers" if stack != "encoder" else "encoder_layers", layers)
        heads = getattr(config, "decoder_attention_heads" if stack != "encoder" else
                        "encoder_attention_heads", heads)
    if not isinstance(layers, int) or not isinstance(heads, int):
        return  # unknown: the record's own size check still applies afterwards
    q = inputs["input_ids"].shape[-1] if stack in (None, "encoder") else inputs.get(
        "decoder_input_ids", inputs["input_ids"]).shape[-1]
    k = inputs["input_ids"].shape[-1] if stack in (None, "encoder", "cross") else q
    # the record holds one sequence (batch_index); long maps are fine here, only bytes count
    check_size(layers, heads, q, k, "text_or_inputs", max_cells=2**62)


def extract_hf(
    model: nn.Module,
    text_or_inputs: Any,
    tokenizer: Any = None,
    *,
    stack: str | None = None,
    decoder_text: str | None = None,
    truncation: bool = False,
    batch_index: int | None = None,
    model_name: str | None = None,
) -> AttentionMaps:
    """Run a transformers model once and return its attention as ``[L, H, Q, K]``.

    ``text_or_inputs``: a string (needs a tokenizer, given or found offline),
    a tensor of input ids, or the mapping a tokenizer returns (``attention_mask``
    padding is dropped from the picked sequence ``batch_index``).
    ``stack`` (encoder-decoder models only): ``"encoder"`` (default),
    ``"decoder"`` or ``"cross"`` (queries: decoder tokens, keys: encoder tokens).
    ``decoder_text``: the decoder's target text (default: the input text,
    teacher-forced); it is shifted right as in training.
    ``truncation``: longer inputs than the model takes raise unless this is True.
    """
    config = model.config
    seq2seq = bool(getattr(config, "is_encoder_decoder", False))
    if stack is not None and not seq2seq:
        raise ValueError(
            f"stack: only encoder-decoder models have several stacks; {type(model).__name__} "
            f"has one, so leave stack=None (got {stack!r})"
        )
    stack = stack or "encoder"
    if stack not in STACKS:
        raise ValueError(f"stack: expected one of {STACKS}, got {stack!r}")

    text = text_or_inputs if isinstance(text_or_inputs, str) else None
    if tokenizer is None:
        tokenizer = infer_tokenizer(model)
    limit, source = max_positions(model, tokenizer)
    if text is not None:
        if tokenizer is None:
            raise ValueError(
                f"tokenizer: {type(model).__name__} needs a tokenizer to turn text into tokens, "
                f"and none was given or found offline for {_model_name(model)!r}; pass "
                "tokenizer=AutoTokenizer.from_pretrained(<local folder>) or input ids"
            )
        inputs, raw_tokens = _encode(tokenizer, text, limit, source, truncation, "text")
    else:
        # a fast tokenizer's BatchEncoding carries its token strings: reuse them
        raw_tokens = None
        if getattr(text_or_inputs, "is_fast", False) and text_or_inputs["input_ids"].ndim == 2:
            raw_tokens = text_or_inputs.tokens(batch_index or 0)
        inputs = as_inputs(text_or_inputs)
        check_length(int(inputs["input_ids"].shape[-1]), limit, source, "text_or_inputs")

    if seq2seq:
        target = decoder_text if decoder_text is not None else text
        if target is None:
            if "decoder_input_ids" not in inputs:
                raise ValueError(
                    "decoder_text: an encoder-decoder model given input ids also needs "
                    "decoder_text or 'decoder_input_ids' in the inputs"
                )
        else:
            if tokenizer is None:
                raise ValueError("tokenizer: needed to encode decoder_text; pass tokenizer=...")
            labels, _ = _encode(tokenizer, target, limit, source, truncation, "decoder_text")
            inputs["decoder_input_ids"] = model.prepare_decoder_input_ids_from_labels(
                labels=labels["input_ids"]
            )
    if getattr(config, "use_cache", False):
        inputs["use_cache"] = False  # a KV cache is not needed and costs memory

    _check_record_size(config, inputs, stack if seq2seq else None)
    modules = all_modules(model)
    with eval_mode(model, modules), eager_attention(model, modules), torch.inference_mode():
        out = model(**inputs, output_attentions=True, return_dict=True)

    field = {"encoder": "encoder_attentions", "decoder": "decoder_attentions",
             "cross": "cross_attentions"}[stack] if seq2seq else "attentions"
    per_layer = getattr(out, field, None)
    if not per_layer:
        raise NoAttentionFoundError(
            f"{type(model).__name__} returned no attention weights ({field} is empty) even "
            f"with eager attention requested; load it with attn_implementation='eager'"
        )
    weights = sequence_layers(per_layer, batch_index)  # L x [H, Q, K]

    enc_ids = pick_sequence(inputs["input_ids"], batch_index)
    enc_tokens = raw_tokens if raw_tokens is not None else _tokens(tokenizer, enc_ids)
    mask = inputs.get("attention_mask")
    enc_keep = pick_sequence(mask, batch_index).bool() if mask is not None else None
    if seq2seq and stack != "encoder":
        dec_tokens = _tokens(tokenizer, pick_sequence(inputs["decoder_input_ids"], batch_index))
        query_tokens = dec_tokens
        if stack == "cross":
            weights, key_tokens = keep_positions(weights, enc_tokens, enc_keep, "key")
        else:
            key_tokens = dec_tokens
    else:
        weights, key_tokens = keep_positions(weights, enc_tokens, enc_keep, "key")
        weights, query_tokens = keep_positions(weights, enc_tokens, enc_keep, "query")

    n_layers = len(weights)
    return AttentionMaps(
        weights,
        query_tokens,
        key_tokens if stack == "cross" or len(key_tokens) != len(query_tokens) else None,
        layer_names=[f"{stack}.{i}" if seq2seq else f"layer {i}" for i in range(n_layers)],
        model_name=model_name or _model_name(model),
        text=text if stack == "encoder" or decoder_text is None else decoder_text,
        causal=_is_causal(modules) if not seq2seq else stack == "decoder",
        token_scheme=_scheme(tokenizer),
        special_tokens=list(getattr(tokenizer, "all_special_tokens", []) or []),
    )
