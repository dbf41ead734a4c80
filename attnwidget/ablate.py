"""Head ablation: switch attention heads off and measure what changes.

A head's output enters the residual stream through the layer's output
projection, ``out = W_o [c_1; ...; c_H] + b``, where ``c_h`` ``[B, Q, d_head]``
is head h's weighted sum of values. Ablating head h replaces ``c_h``:

* ``mode="zero"``: by 0 (the head contributes nothing; the bias stays);
* ``mode="mean"``: by its mean over the sequence positions of the same input
  (the head keeps its average contribution but loses all position-specific
  information; padding positions are included in that mean).

Where it is done (one site per attention layer, in model order):

* transformers BERT-like (``BertAttention``: ``output.dense``), GPT-2
  (``c_proj``), Llama-style and other ``o_proj``/``out_proj`` layouts: a forward
  pre-hook on the output projection rewrites the slice ``[h * d, (h + 1) * d)``
  of its input. With grouped-query attention the slices are the *query* heads,
  the same heads ``extract_attention`` shows one map each for.
* ``nn.MultiheadAttention`` (its forward reads ``out_proj.weight`` directly, so
  hooks on ``out_proj`` never run): its ``forward`` is wrapped on the instance; the
  wrapper asks for per-head weights, recomputes each ablated head's
  ``c_h = A_h v_h`` from them and the value input, subtracts
  ``W_h (c_h - replacement)`` from the output (by linearity, the projection run
  on the replaced ``c_h``) and answers in the form the call asked for.

Everything is undone when the ``with`` block ends, also after an exception;
ablating nothing registers nothing and changes nothing, bit for bit.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

#: How an ablated head is switched off (the widget's view modes are attnwidget.widget.VIEW_MODES).
ABLATION_MODES = ("zero", "mean")
#: Which heads to switch off: ``{layer: [head, ...]}`` or ``{layer: head}``.
Heads = Mapping[int, Sequence[int] | int]


@dataclasses.dataclass(frozen=True)
class Site:
    """One attention layer: where its heads meet the residual stream."""

    layer: int
    name: str
    n_heads: int
    head_dim: int
    attention: nn.Module
    projection: nn.Module  # the output projection (for nn.MultiheadAttention: the module itself)
    kind: str  # "projection" (pre-hook on the output projection) or "mha" (forward wrapped)


def _heads_of(module: nn.Module, config: Any) -> int | None:
    for owner in (module, getattr(module, "self", None), config):
        for attr in ("num_heads", "num_attention_heads", "n_head", "n_heads"):
            value = getattr(owner, attr, None) if owner is not None else None
            if isinstance(value, int) and value > 0:
                return value
    return None


def _projection_of(module: nn.Module) -> nn.Module | None:
    """The output projection of a transformers-style attention module, if it has one."""
    output = getattr(module, "output", None)
    if output is not None and isinstance(getattr(output, "dense", None), nn.Module):
        return output.dense  # BERT family: BertAttention.output.dense
    for attr in ("o_proj", "c_proj", "out_proj", "o"):
        proj = getattr(module, attr, None)
        if isinstance(proj, nn.Module):
            return proj
    return None


def _in_features(proj: nn.Module) -> int | None:
    if isinstance(proj, nn.Linear):
        return proj.in_features
    weight = getattr(proj, "weight", None)  # GPT-2's Conv1D stores [in, out]
    if isinstance(weight, torch.Tensor) and type(proj).__name__ == "Conv1D":
        return int(weight.shape[0])
    return None


def attention_sites(model: nn.Module) -> list[Site]:
    """The attention layers of ``model`` that heads can be ablated in, in model order.

    Raises ValueError for encoder-decoder models (their layer numbering would be
    ambiguous) and for models where no attention layer is recognised.
    """
    config = getattr(model, "config", None)
    if getattr(config, "is_encoder_decoder", False):
        raise ValueError(
            f"model: {type(model).__name__} is an encoder-decoder model; ablate_heads supports "
            "encoder-only and decoder-only models and nn.MultiheadAttention"
        )
    sites: list[Site] = []
    claimed: set[int] = set()
    for name, module in model.named_modules():
        if id(module) in claimed:
            continue
        if isinstance(module, nn.MultiheadAttention):
            sites.append(Site(len(sites), name, module.num_heads, module.head_dim, module, module, "mha"))
            claimed.update(id(m) for m in module.modules())
            continue
        if not type(module).__name__.endswith("Attention"):
            continue
        proj = _projection_of(module)
        heads = _heads_of(module, config)
        width = _in_features(proj) if proj is not None else None
        if proj is None or heads is None or width is None or width % heads:
            continue
        sites.append(Site(len(sites), name, heads, width // heads, module, proj, "projection"))
        claimed.update(id(m) for m in module.modules())
    if not sites:
        raise ValueError(
            f"model: found no attention layer to ablate in {type(model).__name__} (looked for "
            "nn.MultiheadAttention and transformers *Attention modules with an output projection)"
        )
    return sites


def _check_heads(heads: Any, sites: Sequence[Site]) -> dict[int, list[int]]:
    if not isinstance(heads, Mapping):
        raise TypeError(f"heads: expected a mapping {{layer: [head, ...]}}, got {type(heads).__name__}")
    out: dict[int, list[int]] = {}
    for layer, hs in heads.items():
        if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer < len(sites):
            raise ValueError(f"heads: layer {layer!r} is not one of 0..{len(sites) - 1}")
        if isinstance(hs, int):
            hs = [hs]
        n = sites[layer].n_heads
        chosen = []
        for h in hs:
            if isinstance(h, bool) or not isinstance(h, int) or not 0 <= h < n:
                raise ValueError(f"heads: head {h!r} of layer {layer} is not one of 0..{n - 1}")
            chosen.append(h)
        if chosen:
            out[layer] = sorted(set(chosen))
    return out


def _replace(part: torch.Tensor, mode: str) -> torch.Tensor:
    """The stand-in for a head's output ``[..., Q, d]``: 0, or its mean over positions."""
    if mode == "zero":
        return torch.zeros_like(part)
    return part.mean(dim=-2, keepdim=True).expand_as(part)


def _projection_hook(heads: list[int], head_dim: int, mode: str):
    def hook(_module: nn.Module, args: tuple) -> tuple:
        x = args[0].clone()
        for h in heads:
            part = x[..., h * head_dim : (h + 1) * head_dim]
            x[..., h * head_dim : (h + 1) * head_dim] = _replace(part, mode)
        return (x, *args[1:])

    return hook


def _mha_ablated(site: Site, heads: list[int], mode: str) -> contextlib.AbstractContextManager:
    """``nn.MultiheadAttention``'s ``forward`` (on the instance) asks for per-head weights,
    takes the heads' share out of its output, and answers in the form it was asked for.

    A wrapper of ``forward``, not a pair of hooks: it runs after every pre-hook and before every
    hook, so it sees what the call finally asks (``need_weights=False`` from
    ``nn.TransformerEncoderLayer``, or ``True`` from an extraction's pre-hook) and gives that
    back. As a pre-hook registered first it took the layer's ``False`` as the answer's form and
    dropped the weights that a later extraction hook had asked for: the ablated layer was
    missing from the ablated record. A ``forward`` set on the instance before (accelerate's) is
    wrapped too, and put back (:func:`attnwidget._replay.forward_wrapped`).
    """
    from attnwidget._replay import forward_wrapped
    from attnwidget.extract._common import MHA_FORWARD_ARGS

    def wrap(_mha: nn.Module, forward: Any) -> Any:
        def ablated_forward(*args: Any, **kwargs: Any) -> tuple:
            bound = dict(zip(MHA_FORWARD_ARGS, args, strict=False))
            bound.update(kwargs)
            need, average = bound.get("need_weights", True), bound.get("average_attn_weights", True)
            out, weights = forward(**{**bound, "need_weights": True, "average_attn_weights": False})
            out = out - _mha_heads_share(site, heads, mode, bound["value"], out, weights)
            if not need:
                return out, None
            return out, weights.mean(dim=-3) if average else weights

        return ablated_forward

    return forward_wrapped([site.attention], wrap)


def _mha_heads_share(site: Site, heads: list[int], mode: str, value: torch.Tensor,
                     out: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """What ``heads`` add to an ``nn.MultiheadAttention``'s output beyond their stand-in
    (:func:`_replace`), in the output's layout: ``weights`` are per head, ``[B, H, Q, K]``
    (``[H, Q, K]`` unbatched)."""
    mha: nn.MultiheadAttention = site.attention  # type: ignore[assignment]
    batched = value.dim() == 3
    if batched and not mha.batch_first:
        value = value.transpose(0, 1)  # -> [B, K, E]
    if not batched:
        value = value.unsqueeze(0)
        weights = weights.unsqueeze(0)
    E, d = mha.embed_dim, site.head_dim
    w_v = mha.in_proj_weight[2 * E :] if mha.in_proj_weight is not None else mha.v_proj_weight
    b_v = mha.in_proj_bias[2 * E :] if mha.in_proj_bias is not None else None
    v = nn.functional.linear(value, w_v, b_v)  # [B, K, E]
    fix = torch.zeros(weights.shape[0], weights.shape[2], E, dtype=out.dtype, device=out.device)
    for h in heads:
        c_h = weights[:, h] @ v[..., h * d : (h + 1) * d]  # [B, Q, d]
        delta = c_h - _replace(c_h, mode)
        fix = fix + delta @ mha.out_proj.weight[:, h * d : (h + 1) * d].T
    if not batched:
        return fix[0]
    return fix if mha.batch_first else fix.transpose(0, 1)


@contextlib.contextmanager
def ablate_heads(model: nn.Module, heads: Heads, mode: str = "zero") -> Iterator[list[Site]]:
    """Ablate attention heads inside a ``with`` block; the model is restored on exit.

    ``heads``: ``{layer: [head, ...]}`` with layers numbered as
    :func:`attention_sites` (and ``extract_attention``) number them. ``mode``:
    ``"zero"`` or ``"mean"`` (see the module docstring). Yields the sites.
    Errors name the argument: unknown layer or head, unknown mode.
    """
    if mode not in ABLATION_MODES:
        raise ValueError(f"mode: expected one of {ABLATION_MODES}, got {mode!r}")
    sites = attention_sites(model)
    chosen = _check_heads(heads, sites)
    handles = []
    with contextlib.ExitStack() as stack:
        try:
            if any(sites[layer].kind == "mha" for layer in chosen):
                from attnwidget.extract._common import no_mha_fastpath

                stack.enter_context(no_mha_fastpath())
            for layer, hs in chosen.items():
                site = sites[layer]
                if site.kind == "mha":
                    stack.enter_context(_mha_ablated(site, hs, mode))
                else:
                    hook = _projection_hook(hs, site.head_dim, mode)
                    handles.append(site.projection.register_forward_pre_hook(hook))
            yield sites
        finally:
            for handle in handles:
                handle.remove()


# --------------------------------------------------------------------------- effects
def _prepare(model: nn.Module, text_or_inputs: Any, tokenizer: Any) -> dict[str, torch.Tensor]:
    from attnwidget.extract._common import check_text
    from attnwidget.extract.huggingface import as_inputs, infer_tokenizer

    if isinstance(text_or_inputs, str):
        check_text(text_or_inputs)
        tokenizer = tokenizer if tokenizer is not None else infer_tokenizer(model)
        if tokenizer is None:
            raise ValueError("tokenizer: needed to turn text into input ids; pass tokenizer=...")
        return dict(tokenizer(text_or_inputs, return_tensors="pt"))
    return as_inputs(text_or_inputs)


def _is_causal_lm(model: nn.Module, out: Any) -> bool:
    config = getattr(model, "config", None)
    if getattr(out, "hidden_states", None) is None:  # a plain model returning logits: our tiny LMs
        return True  # next-token prediction, whatever its mask (a reverse mask makes it cheat)
    return getattr(out, "logits", None) is not None and (
        bool(getattr(config, "is_decoder", False))
        or type(model).__name__.endswith(("ForCausalLM", "LMHeadModel"))
    )


def _run(model: nn.Module, inputs: dict[str, torch.Tensor], attentions: bool) -> Any:
    """One forward: transformers models with hidden states (and attentions when asked);
    any other model as ``model(input_ids) -> logits [B, T, vocab]`` (the project's tiny LMs)."""
    import types

    from attnwidget.extract._common import eval_mode
    from attnwidget.extract.huggingface import eager_attention, is_hf_model

    if not is_hf_model(model):
        with eval_mode(model), torch.inference_mode():
            out = model(inputs["input_ids"])
        if not isinstance(out, torch.Tensor) or out.ndim != 3:
            raise TypeError(
                f"model: expected {type(model).__name__}(input_ids) to return logits [batch, tokens, "
                f"vocab], got {type(out).__name__}"
            )
        return types.SimpleNamespace(logits=out, hidden_states=None, attentions=None)
    guard = eager_attention(model) if attentions else contextlib.nullcontext()
    with eval_mode(model), guard, torch.inference_mode():
        return model(**inputs, output_attentions=attentions, output_hidden_states=True, return_dict=True)


def unablated_run(model: nn.Module, text_or_inputs: Any, tokenizer: Any = None, *,
                  attentions: bool = True, replay_bytes: int | None = None) -> Any:
    """The model's plain run on one input, kept small enough to hold next to a view.

    What :func:`ablated_record` compares an ablation with (``base=``): the hidden
    states, the next-token loss (causal LMs) and the last position's logits only,
    not the whole ``[T, vocab]`` (100 MB for GPT-2 at 512 tokens); ``versions``, the
    state of the weights it ran with (:func:`attnwidget._replay.weights_state`: a view
    runs it again once the model has changed); and ``replay``, the inputs and outputs
    of the linear layers and of BERT-like self-attention up to the last attention
    layer's output projection (at most :data:`attnwidget._replay.REPLAY_BYTES`), which
    an ablated re-run gives back below its first ablated head instead of computing
    them (:mod:`attnwidget._replay`). The run uses eager attention and asks for the
    weights, as extraction does, so that the two make the same calls; with
    ``attentions=False`` it runs as :func:`ablation_sweep`'s re-runs do, without them.
    ``replay_bytes``: the replay's budget instead of :data:`~attnwidget._replay.REPLAY_BYTES`
    (``replay.cut`` says whether it stopped the recording short).
    """
    import types

    from attnwidget._replay import Replay, weights_state

    inputs = _prepare(model, text_or_inputs, tokenizer)
    replay = Replay(replay_bytes)
    with _recording(replay, model, attention_sites(model)):
        # asked as the re-runs ask: what a layer returns depends on it
        out = _run(model, inputs, attentions)
    causal = _is_causal_lm(model, out)
    loss = (_next_token_loss(out.logits, inputs["input_ids"], inputs.get("attention_mask"))
            if causal else None)
    logits = out.logits[:, -1:] if getattr(out, "logits", None) is not None else None
    return types.SimpleNamespace(hidden_states=out.hidden_states, attentions=None, logits=logits,
                                 loss_value=loss, causal=causal, replay=replay,
                                 versions=weights_state(model))


@contextlib.contextmanager
def _next_output(model: nn.Module) -> Iterator[dict[str, Any]]:
    """``{"out": ...}``: the output of the model's next forward, with its hidden states asked for,
    so that the forward that extracts an ablated record also measures the ablation's effect."""
    import types

    from attnwidget.extract.huggingface import is_hf_model

    got: dict[str, Any] = {}
    hf = is_hf_model(model)

    def ask(_module, args, kwargs):
        return (args, {**kwargs, "output_hidden_states": True}) if hf else None

    def keep(_module, _args, _kwargs, output):
        got["out"] = output if hf else types.SimpleNamespace(logits=output, hidden_states=None,
                                                              attentions=None)

    handles = [model.register_forward_pre_hook(ask, with_kwargs=True),
               model.register_forward_hook(keep, with_kwargs=True)]
    try:
        yield got
    finally:
        for h in handles:
            h.remove()


def _recording(replay: Any, model: nn.Module, sites: list[Site]) -> contextlib.AbstractContextManager:
    """Record a plain run for :mod:`attnwidget._replay`: the linear layers, and whole the parts
    of an attention layer that hold no output projection (BERT's self-attention: query, key,
    value and the weights); nothing from the last layer's output projection on."""
    return replay.recording(model, [s.projection for s in sites], [p for _, p in replay_pieces(sites)])


def replay_pieces(sites: list[Site]) -> list[tuple[Site, nn.Module]]:
    """The parts of the attention layers a replay keeps whole, each with its site: those that
    hold linear layers but not the output projection (BERT's self-attention: query, key, value
    and the weights)."""
    from attnwidget._replay import is_linear

    pieces = []
    for site in sites:
        if site.kind != "projection":
            continue
        for child in site.attention.children():
            inner = list(child.modules())
            if not is_linear(child) and any(is_linear(m) for m in inner) and not any(
                    m is site.projection for m in inner):
                pieces.append((site, child))
    return pieces


def replay_bytes_estimate(model: nn.Module, tokens: int) -> int:
    """About how many bytes a plain run's replay holds for ``tokens`` tokens
    (:mod:`attnwidget._replay`), to decide whether to try (the replay's budget is what holds):
    the input and output of each linear layer registered before the last attention layer's
    output projection (nothing is recorded from there on; the input that siblings such as
    query, key and value take in turn, once), and the output of each piece kept
    whole (its context, and its attention weights: ``tokens`` squared per head). MiniLM, in
    MB estimated and recorded: 1.3 and 1.3 at 9 tokens, 22.8 and 22.8 at 130, 39.7 and 39.7
    at 202."""
    from attnwidget._replay import is_linear

    sites = attention_sites(model)
    last = sites[-1].projection if sites else None
    projections = {id(site.projection) for site in sites}
    size, before = 0, None
    for name, m in model.named_modules():
        if m is last:
            break
        if not is_linear(m) or getattr(m, "weight", None) is None:
            continue
        # nn.Linear's weight is [out, in], transformers' Conv1D's [in, out]
        n_in, n_out = m.weight.shape[::-1] if isinstance(m, nn.Linear) else m.weight.shape
        # siblings taking the same input in turn (query, key, value; gate, up) keep one copy of
        # it; an output projection takes the heads' output, whatever its width
        shared = before == (name.rpartition(".")[0], n_in) and id(m) not in projections
        before = (name.rpartition(".")[0], n_in)
        size += ((0 if shared else n_in) + n_out) * tokens * m.weight.element_size()
    for site, _piece in replay_pieces(sites):
        item = site.projection.weight.element_size()
        size += (site.n_heads * tokens + site.n_heads * site.head_dim) * tokens * item
    return int(size)


def _replaying(model: nn.Module, base: Any) -> contextlib.AbstractContextManager:
    """Give back what ``base`` recorded below the first ablated head (if it recorded anything)."""
    replay = getattr(base, "replay", None)
    return replay.replaying(model) if replay is not None else contextlib.nullcontext()


def _next_token_loss(logits: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor | None) -> float:
    """Mean cross-entropy (nats) of predicting token t+1 from position t, over real tokens."""
    logp = torch.log_softmax(logits[:, :-1].double(), dim=-1)
    target = ids[:, 1:]
    nll = -logp.gather(-1, target.unsqueeze(-1)).squeeze(-1)
    keep = mask[:, 1:].bool() if mask is not None else torch.ones_like(nll, dtype=torch.bool)
    return float(nll[keep].mean())


def _pooled(hidden: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean over real (non-padding) positions: the sentence embedding ``[B, D]``."""
    if mask is None:
        return hidden.mean(dim=1)
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1)


def ablation_effect(model: nn.Module, text_or_inputs: Any, heads: Heads, tokenizer: Any = None, *,
                    mode: str = "zero", top_k: int = 5, attention: bool = True) -> dict[str, Any]:
    """What ablating ``heads`` changes on one input (a transformers model).

    Returns a dict:

    * ``score``: one number per ablation, larger = the heads matter more: the
      increase of next-token loss (nats) for causal LMs, ``1 - cosine`` of the
      sentence embedding for encoders; ``metric`` names it.
    * causal LMs: ``loss`` / ``loss_ablated`` (mean next-token cross-entropy,
      nats) and ``top_predictions`` / ``top_predictions_ablated`` at the last
      position (``[(token, probability), ...]``, ``top_k`` of them).
    * encoders: ``embedding_cosine`` (mean-pooled last hidden state, padding left out).
    * both: ``hidden_change`` ``[L + 1]`` (relative L2 change of each layer's
      hidden states, embeddings first) and, with ``attention=True``,
      ``attention_change`` ``[L, H]`` (mean absolute change of each head's
      weights; exactly 0 below the first ablated layer).
    """

    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ValueError(f"top_k: expected an int >= 1, got {top_k!r}")
    inputs = _prepare(model, text_or_inputs, tokenizer)
    return _effect(model, inputs, heads, tokenizer, mode, top_k, attention,
                   _run(model, inputs, attention))


def _share_unchanged(maps: Any, original: Any, heads: dict[int, list[int]],
                     sites: list[Site]) -> tuple[Any, int]:
    """The ablated record with the original's own tensors for the layers the ablation cannot
    change, and how many those are (0: none shared).

    Those are every layer up to the first ablated one, that one included: an ablation rewrites
    a head's output after its weights. Shared only when the records number their layers as the
    model's attention sites (one stack) and have one shape, when each of those layers holds
    memory of its own in the original (a layer that is a view into a stacked record would keep
    the whole stack alive), and when they agree with the re-run's within 1e-5 (the first
    ablated layer whole, the ones below on each head's last query row; the plain run
    that the re-run replayed and the original's extraction may have run on different threads,
    so the BLAS may have rounded differently; an absolute bound, so a half-precision model's
    layers are not shared). A record made from another input or another model state, or one
    whose layers are not in the order the model runs its attention sites, shares nothing.
    """
    if not heads or maps.n_layers != len(sites) or maps.shape != original.shape:
        return maps, 0
    first = min(heads)
    same = range(first + 1)
    for i in same:
        layer = original._layers[i]
        if layer.untyped_storage().nbytes() != layer.numel() * layer.element_size():
            return maps, 0
        # the first ablated layer whole; below it each head's last row, which every position
        # feeds (a layer out of order, or another input, differs there): a full comparison of
        # them all cost as much as the change it spares at 510 tokens
        rows = slice(None) if i == first else slice(-1, None)
        if float((maps._layers[i][:, rows] - layer[:, rows]).abs_().max()) > 1e-5:  # allclose: 10x slower
            return maps, 0
    return maps._sharing_layers(original, same), len(same)


def _effect(
    model: nn.Module, inputs: dict[str, torch.Tensor], heads: Heads,
    tokenizer: Any, mode: str, top_k: int, attention: bool, base: Any, abl: Any = None,
    sites: list[Site] | None = None,
) -> dict[str, Any]:
    if abl is None:
        with ablate_heads(model, heads, mode) as sites, _replaying(model, base):
            abl = _run(model, inputs, attention)
    mask = inputs.get("attention_mask")
    out: dict[str, Any] = {"heads": _check_heads(heads, sites or attention_sites(model)), "mode": mode}
    hidden = [
        float((a - b).norm() / b.norm().clamp(min=1e-30))
        for b, a in zip(base.hidden_states or (), abl.hidden_states or (), strict=True)
    ]
    out["hidden_change"] = np.array(hidden)
    if attention and base.attentions:
        out["attention_change"] = np.stack([
            (a - b).abs().mean(dim=(0, 2, 3)).double().numpy()
            for b, a in zip(base.attentions, abl.attentions, strict=True)
        ])
    if _is_causal_lm(model, base):
        ids = inputs["input_ids"]
        out["metric"] = "next-token loss increase (nats)"
        loss = getattr(base, "loss_value", None)  # precomputed by unablated_run
        out["loss"] = _next_token_loss(base.logits, ids, mask) if loss is None else loss
        out["loss_ablated"] = _next_token_loss(abl.logits, ids, mask)
        out["score"] = out["loss_ablated"] - out["loss"]
        tok = tokenizer
        for key, res in (("top_predictions", base), ("top_predictions_ablated", abl)):
            p = torch.softmax(res.logits[0, -1].double(), dim=-1)
            vals, idx = p.topk(min(top_k, p.numel()))
            names = (tok.convert_ids_to_tokens(idx.tolist()) if tok is not None
                     else [f"#{int(i)}" for i in idx])
            out[key] = [(str(n), float(v)) for n, v in zip(names, vals, strict=True)]
    else:
        last_b, last_a = base.hidden_states[-1], abl.hidden_states[-1]
        cos = torch.nn.functional.cosine_similarity(_pooled(last_b, mask).double(),
                                                    _pooled(last_a, mask).double(), dim=-1)
        out["metric"] = "1 - cosine of the sentence embedding"
        out["embedding_cosine"] = float(cos.mean())
        out["score"] = 1.0 - out["embedding_cosine"]
    return out


def ablation_sweep(
    model: nn.Module,
    text_or_inputs: Any,
    tokenizer: Any = None,
    *,
    mode: str = "zero",
    heads: Mapping[int, Sequence[int]] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Ablate each head on its own and score it: ``score`` ``[L, H]`` (NaN where not swept).

    ``heads``: the heads to sweep (default: every head of every layer). Each
    cell equals ``ablation_effect(model, input, {l: [h]}, mode=mode)["score"]``
    (computed here without the attention maps, which the score does not need).
    A tqdm progress bar shows with ``progress=True``.
    """
    from tqdm.auto import tqdm

    sites = attention_sites(model)
    todo = _check_heads(heads, sites) if heads is not None else {
        s.layer: list(range(s.n_heads)) for s in sites
    }
    n_heads = max(s.n_heads for s in sites)
    score = np.full((len(sites), n_heads), np.nan)
    metric = None
    pairs = [(layer, h) for layer, hs in todo.items() for h in hs]
    inputs = _prepare(model, text_or_inputs, tokenizer)
    # one unablated run serves every cell, and each ablated run replays it below its head
    base = unablated_run(model, inputs, tokenizer, attentions=False)
    for layer, h in tqdm(pairs, desc="ablating heads", disable=not progress):
        res = _effect(model, inputs, {layer: [h]}, tokenizer, mode, 1, False, base)
        score[layer, h] = res["score"]
        metric = res["metric"]
    return {"score": score, "metric": metric, "mode": mode}


def ablated_record(model: nn.Module, text_or_inputs: Any, heads: Heads, tokenizer: Any = None, *,
                   mode: str = "zero", original: Any = None, base: Any = None,
                   **extract_options: Any) -> tuple[Any, dict[str, Any]]:
    """The attention record with ``heads`` ablated, and a JSON-ready summary of the effect.

    ``original``: the unablated :class:`AttentionMaps` of the same input, to
    measure the attention change against (extracted here when not given). The
    summary holds ``heads`` (``[[layer, head], ...]``), ``mode``, ``metric``,
    ``score`` and the metric's before/after values from :func:`ablation_effect`,
    plus ``attention_change`` (``[L][H]`` mean absolute change of each head's
    weights) and ``attention_change_by_layer`` (``[L]``).

    ``base``: :func:`unablated_run` of the same input (run here when not given); a
    view that toggles heads keeps it, so each toggle costs one forward: the ablated
    one, which gives both the record and the effect.

    The record's layers up to the first ablated one (that one included) are
    ``original``'s own tensors when ``original`` agrees there (:func:`_share_unchanged`);
    their ``attention_change`` is 0.
    """
    from attnwidget.extract import extract_attention

    if original is None:
        original = extract_attention(model, text_or_inputs, tokenizer, **extract_options)
    if base is None:
        base = unablated_run(model, text_or_inputs, tokenizer)
    with ablate_heads(model, heads, mode) as sites, _next_output(model) as got, _replaying(model, base):
        maps = extract_attention(model, text_or_inputs, tokenizer, **extract_options)
    inputs = _prepare(model, text_or_inputs, tokenizer)
    abl = got.get("out")
    if abl is not None and base.hidden_states is not None and (
            abl.hidden_states is None or abl.hidden_states[0].shape != base.hidden_states[0].shape):
        abl = None  # the extraction saw another sequence (truncation, a picked batch row): run again
    effect = _effect(model, inputs, heads, tokenizer, mode, 5, False, base, abl, sites)
    maps, same = _share_unchanged(maps, original, effect["heads"], sites)
    # layer by layer (views, no stacked copy): at 512 tokens the whole difference is 75 MB
    change = np.zeros((maps.n_layers, maps.n_heads))  # [L, H]; 0 where the layers are shared
    for i in range(same, maps.n_layers):
        change[i] = (maps._layers[i] - original._layers[i]).abs_().mean(dim=(-2, -1)).double().numpy()
    summary: dict[str, Any] = {
        "heads": [[layer, h] for layer, hs in effect["heads"].items() for h in hs],
        "mode": mode, "metric": effect["metric"], "score": float(effect["score"]),
        "attention_change": change.tolist(),
        "attention_change_by_layer": change.mean(axis=1).tolist(),
        "hidden_change": [float(v) for v in effect["hidden_change"]],
    }
    for key in ("loss", "loss_ablated", "embedding_cosine"):
        if key in effect:
            summary[key] = float(effect[key])
    for key in ("top_predictions", "top_predictions_ablated"):
        if key in effect:
            summary[key] = [[t, p] for t, p in effect[key]]
    return maps, summary
