"""Plain PyTorch models -> AttentionMaps, through forward hooks.

Two kinds of module are captured:

* ``nn.MultiheadAttention``: by default it returns weights averaged over
  heads, or none at all (``need_weights=False`` inside ``nn.TransformerEncoderLayer``).
  A forward pre-hook asks for per-head weights (``need_weights=True,
  average_attn_weights=False``) and PyTorch's fused "fast path", which skips
  the module entirely, is switched off for the pass. The module's output is
  the same either way; only the weights are additionally returned.
* custom attention modules whose forward returns the weights somewhere in its
  output (a tuple, list, dict or ModelOutput holding a tensor ``[batch, heads,
  Q, K]``, or ``[batch, Q, K]`` for one head, whose rows sum to 1). Found
  automatically when the module's name or class name contains "attn" or
  "attention", or named explicitly with ``attention_modules``.

Every hook is removed and every flag restored afterwards, also when the
forward raises. Layers are ordered by call order; a module called twice gives two layers.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from attnwidget.extract._common import (
    MHA_FORWARD_ARGS,
    NoAttentionFoundError,
    check_text,
    eval_mode,
    no_mha_fastpath,
    sequence_layers,
)
from attnwidget.maps import ROW_SUM_ATOL, AttentionMaps

#: Module names (last dotted part) or class names that auto-discovery hooks.
NAME_PATTERN = re.compile(r"attn|attention", re.IGNORECASE)
_MHA_NEED_WEIGHTS = MHA_FORWARD_ARGS.index("need_weights")  # positional indices
_MHA_AVERAGE = MHA_FORWARD_ARGS.index("average_attn_weights")


def _looks_like_weights(t: Any) -> bool:
    if not isinstance(t, torch.Tensor) or not t.is_floating_point() or t.ndim not in (3, 4):
        return False
    if t.shape[-1] == 0 or not bool(torch.isfinite(t).all()) or bool((t < 0).any()):
        return False
    sums = t.sum(-1)
    return bool((((sums - 1).abs() <= ROW_SUM_ATOL) | (sums == 0)).all())


def _find_weights(output: Any) -> torch.Tensor | None:
    if isinstance(output, torch.Tensor):
        items: list[Any] = [output]
    elif isinstance(output, Mapping):
        items = list(output.values())
    elif isinstance(output, (tuple, list)):
        items = list(output)
    else:
        return None
    found = [t for t in items if _looks_like_weights(t)]
    found.sort(key=lambda t: -t.ndim)  # prefer per-head [B, H, Q, K]
    return found[0] if found else None


def attention_candidates(
    model: nn.Module, attention_modules: Sequence[str | nn.Module] | None
) -> tuple[list[tuple[str, nn.Module]], bool]:
    """The ``(name, module)`` pairs to hook, and whether the caller named them.

    ``attention_modules=None``: every ``nn.MultiheadAttention`` and every module
    whose name (last dotted part) or class name matches :data:`NAME_PATTERN`.
    Otherwise names (as in ``model.named_modules()``) or module objects; an
    unknown name raises ValueError listing similar names.
    """
    named = dict(model.named_modules())
    if attention_modules is None:
        found = [
            (name, m) for name, m in named.items()
            if name and (
                isinstance(m, nn.MultiheadAttention)
                or NAME_PATTERN.search(name.rsplit(".", 1)[-1])
                or NAME_PATTERN.search(type(m).__name__)
            )
        ]
        return found, False
    if isinstance(attention_modules, (str, nn.Module)):
        attention_modules = [attention_modules]
    by_module = {id(m): name for name, m in named.items()}
    chosen = []
    for item in attention_modules:
        if isinstance(item, nn.Module):
            if id(item) not in by_module:
                raise ValueError(
                    f"attention_modules: {type(item).__name__} is not a submodule of the model"
                )
            chosen.append((by_module[id(item)], item))
        elif item in named:
            chosen.append((item, named[item]))
        else:
            # a typo anywhere in the path ("encoder.layer.0.atention") still finds the name
            close = difflib.get_close_matches(item, [n for n in named if n], n=5, cutoff=0.6)
            tail = item.rsplit(".", 1)[-1]
            close += [n for n in named if n and tail in n and n not in close][: 5 - len(close)]
            raise ValueError(
                f"attention_modules: no submodule named {item!r}; "
                f"similar names: {close or 'none'} (see model.named_modules())"
            )
    if not chosen:
        raise ValueError("attention_modules: expected at least one module name, got none")
    return chosen, True


def _ask_per_head_weights(
    module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    args = list(args)
    for index, key, value in ((_MHA_NEED_WEIGHTS, "need_weights", True),
                              (_MHA_AVERAGE, "average_attn_weights", False)):
        if len(args) > index:
            args[index] = value
        else:
            kwargs[key] = value
    return tuple(args), kwargs


def layer_weights(
    module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any
) -> torch.Tensor | None:
    """The weights a hooked module returned, as ``[batch, heads, Q, K]``, or None if it returned none.

    ``nn.MultiheadAttention`` on unbatched input gives ``[H, Q, K]`` (a batch
    axis is added); a custom module returning ``[B, Q, K]`` has one head (a head axis is added).
    """
    weights = _find_weights(output)
    if weights is None:
        return None
    if isinstance(module, nn.MultiheadAttention):
        query = args[0] if args else kwargs.get("query")
        if query is not None and query.dim() == 2:  # unbatched: [H, Q, K]
            weights = weights.unsqueeze(0)
    elif weights.ndim == 3:  # custom module, one head: [B, Q, K]
        weights = weights.unsqueeze(1)
    return weights


def is_passed_through(weights: torch.Tensor, captured: Sequence[torch.Tensor]) -> bool:
    """True when ``weights`` is a tensor already captured in this forward.

    An outer module (BERT's ``attention``) that passes its inner module's
    (``attention.self``) weights through is not a new layer.
    """
    return any(w.data_ptr() == weights.data_ptr() and w.shape == weights.shape for w in captured)


def hook_module(module: nn.Module, hook: Any) -> list[torch.utils.hooks.RemovableHandle]:
    """Register ``hook(module, args, kwargs, output)`` after ``module``'s forward; return the handles.

    An ``nn.MultiheadAttention`` also gets a pre-hook that asks it for
    per-head weights (its output is unchanged). Remove every handle to undo.
    """
    handles = []
    if isinstance(module, nn.MultiheadAttention):
        handles.append(module.register_forward_pre_hook(_ask_per_head_weights, with_kwargs=True))
    handles.append(module.register_forward_hook(hook, with_kwargs=True))
    return handles


def _run(model: nn.Module, inputs: Any, forward_kwargs: Mapping[str, Any]) -> None:
    if isinstance(inputs, Mapping):
        model(**inputs, **forward_kwargs)
    elif isinstance(inputs, tuple):
        model(*inputs, **forward_kwargs)
    else:
        model(inputs, **forward_kwargs)


def extract_hooks(
    model: nn.Module,
    inputs: Any,
    tokenizer: Any = None,
    *,
    tokens: Sequence[str] | None = None,
    attention_modules: Sequence[str | nn.Module] | None = None,
    forward_kwargs: Mapping[str, Any] | None = None,
    batch_index: int | None = None,
    model_name: str | None = None,
    causal: bool | None = None,
) -> AttentionMaps:
    """Run ``model(inputs)`` once with hooks and return the captured attention ``[L, H, Q, K]``.

    ``inputs``: what the model's forward takes (a tensor, a tuple of
    positional arguments or a mapping of keyword arguments), or a string when
    a transformers-style ``tokenizer`` is given. ``tokens``: labels for the
    positions (default: the tokenizer's tokens, else "0", "1", ...).
    ``attention_modules``: names (as in ``model.named_modules()``) or module
    objects to hook instead of auto-discovery; each must return weights.
    """
    text = None
    if isinstance(inputs, str):
        text = check_text(inputs)
        if tokenizer is None or not hasattr(tokenizer, "convert_ids_to_tokens"):
            raise ValueError(
                f"tokenizer: {type(model).__name__} is a plain PyTorch model, so text needs a "
                "transformers-style tokenizer (pass tokenizer=...) or pass input ids instead"
            )
        ids = tokenizer(text, return_tensors="pt")["input_ids"]
        if tokens is None:
            tokens = tokenizer.convert_ids_to_tokens(ids[0].tolist())
        inputs = ids
    elif (tokens is None and hasattr(tokenizer, "convert_ids_to_tokens") and isinstance(inputs, torch.Tensor)
          and inputs.ndim in (1, 2) and not inputs.is_floating_point() and inputs.numel()):
        # ids with their tokenizer: label the positions with its tokens, as for a text (the
        # row shown: batch_index's; one out of range is left to the extraction's own error)
        rows = inputs.reshape(-1, inputs.shape[-1])
        b = 0 if batch_index is None else batch_index
        if isinstance(b, int) and -len(rows) <= b < len(rows):
            tokens = tokenizer.convert_ids_to_tokens(rows[b].tolist())
    candidates, explicit = attention_candidates(model, attention_modules)

    captured: list[tuple[str, torch.Tensor]] = []
    calls: dict[str, int] = {}
    answered: set[str] = set()

    def make_hook(name: str, module: nn.Module) -> Any:
        def hook(mod: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> None:
            weights = layer_weights(mod, args, kwargs, output)
            if weights is None:
                return
            answered.add(name)
            if is_passed_through(weights, [w for _, w in captured]):
                return
            calls[name] = calls.get(name, 0) + 1
            label = name if calls[name] == 1 else f"{name}#{calls[name]}"
            captured.append((label, weights.detach()))
        return hook

    handles = []
    try:
        for name, module in candidates:
            handles.extend(hook_module(module, make_hook(name, module)))
        with eval_mode(model), no_mha_fastpath(), torch.no_grad():
            _run(model, inputs, forward_kwargs or {})
    finally:
        for handle in handles:
            handle.remove()

    if explicit:
        silent = [name for name, _ in candidates if name not in answered]
        if silent:
            raise NoAttentionFoundError(
                f"attention_modules: {silent} ran without returning attention weights; "
                "expected a tensor [batch, heads, queries, keys] (rows summing to 1) in "
                "each module's output"
            )
    if not captured:
        searched = [name for name, _ in candidates]
        raise NoAttentionFoundError(
            f"no attention weights found in {type(model).__name__}: searched "
            f"nn.MultiheadAttention modules and modules named like {NAME_PATTERN.pattern!r} "
            f"({searched or 'none found'}), and none returned weights; pass "
            "attention_modules=[...] naming modules whose forward returns "
            "[batch, heads, queries, keys] weights"
        )
    shapes = {tuple(w.shape[1:]) for _, w in captured}
    if len(shapes) > 1:
        listing = ", ".join(f"{n}: {tuple(w.shape)}" for n, w in captured)
        raise ValueError(
            f"attention_modules: captured layers differ in shape ({listing}); pick modules "
            "with the same heads, queries and keys (e.g. only self-attention) via attention_modules"
        )
    weights = sequence_layers([w for _, w in captured], batch_index)
    Q, K = weights[0].shape[-2:]
    return AttentionMaps(
        weights,
        tokens if tokens is not None else [str(i) for i in range(Q)],
        None if Q == K else [str(i) for i in range(K)],
        layer_names=[n for n, _ in captured],
        model_name=model_name or getattr(model, "name_or_path", None) or type(model).__name__,
        text=text,
        causal=causal,
        special_tokens=list(getattr(tokenizer, "all_special_tokens", []) or []),
    )
