"""Attention while a causal LM writes: the record of a generation, step by step.

:func:`generate_attention` runs a causal language model for ``n_new`` tokens
after a prompt and keeps every layer's and head's attention over the whole
sequence (prompt + generated tokens, causal), as one :class:`AttentionMaps`
``[layer, head, T, T]`` plus where the generation starts.

Which row belongs to a step: the token generated at position ``p`` was chosen
from the logits of query ``p - 1``, so *step* ``i`` (the ``i``-th new token, at
position ``prompt_length + i``) reads row ``prompt_length + i - 1``: what the
model looked at when it wrote that token (:meth:`Generation.step`). The last
token's own row is in the record too (one extra forward), so the record equals
one forward over the final sequence (tested).

With a transformers model the generation runs with its KV cache: each step
feeds one token and returns one new attention row per layer and head, which is
written into the record. The record stays exact, because a cached step computes
the same softmax over the same keys as a full forward (to float rounding). The
embedded tiny LM has no cache; it generates with its own loop and the record
comes from one forward over the final sequence.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from attnwidget.maps import AttentionMaps, check_size


@dataclass(frozen=True)
class Generation:
    """A generation and its attention.

    ``maps``: the record ``[layer, head, T, T]`` over prompt + generated tokens (causal);
    ``token_ids``: int64 ``[T]``; ``prompt_length``: P, the position of the first
    generated token (so ``T - P`` tokens were generated); ``greedy``/``seed``: how
    tokens were picked; ``cached``: whether a KV cache was used.
    """

    maps: AttentionMaps
    token_ids: torch.Tensor
    prompt_length: int
    greedy: bool
    seed: int
    cached: bool

    @property
    def n_new(self) -> int:
        """How many tokens were generated."""
        return int(self.token_ids.numel()) - self.prompt_length

    @property
    def generated_text(self) -> str:
        """The generated tokens' display forms, joined (plain text)."""
        return "".join(self.maps.query_display[self.prompt_length:])

    def step_row(self, step: int) -> int:
        """The query row that chose step ``step``'s token: ``prompt_length + step - 1``."""
        if isinstance(step, bool) or not isinstance(step, (int, np.integer)):
            raise TypeError(f"step: expected an int in 0..{self.n_new - 1}, got {type(step).__name__}")
        if not -self.n_new <= step < self.n_new:
            raise IndexError(f"step: expected 0..{self.n_new - 1} (or negative from the end), got {step}")
        return self.prompt_length + int(step) % self.n_new - 1

    def step(self, step: int, layer: int = -1, head: int = 0, k: int = 5) -> dict[str, Any]:
        """What one head looked at when it wrote step ``step``'s token.

        Returns ``token`` (display form), ``position`` (of the token), ``query`` (the
        row that chose it), ``top_k`` keys and ``top_k_weights`` (strongest first),
        ``prompt_share`` and ``generated_share``: the row's weight on prompt keys and on
        earlier generated keys (they sum to 1).
        """
        q = self.step_row(step)
        row = self.maps.head(layer, head)[q]  # [T], zero beyond q (causal)
        return {"token": self.maps.query_display[q + 1], "position": q + 1, "query": q,
                **step_summary(row, q, self.prompt_length, k)}

    def shares(self, layer: int = -1) -> np.ndarray:
        """Per head and step, the share of the choosing row's weight on the prompt, ``[H, n_new]``."""
        w = self.maps.layer(layer)  # [H, T, T]
        rows = [self.step_row(i) for i in range(self.n_new)]
        return w[:, rows, : self.prompt_length].sum(-1)


def step_summary(row: Any, query: int, prompt_length: int, k: int = 5) -> dict[str, Any]:
    """What one query row of a generation looked at: its top-k keys and where its weight lies.

    ``row``: the weights ``[T]`` of query ``query`` (causal: keys ``0..query`` count);
    ``prompt_length``: P, the first generated position. Returns ``top_k`` keys and
    ``top_k_weights`` (strongest first, ties to the lower position, at most ``query + 1``
    of them), ``prompt_share`` (weight on keys ``0..P-1``) and ``generated_share``
    (on keys ``P..``), which sum to the row's total (1 for softmax attention).
    The widget's step block and :meth:`Generation.step` both come from here.
    """
    from attnwidget.metrics import PanelMetrics

    row = np.asarray(row, dtype=np.float32)
    # the query block only (no map statistics): a step move costs one row's top-k
    detail = PanelMetrics(row[None, : query + 1]).query(0, min(k, query + 1))
    return {"top_k": detail["top_k"], "top_k_weights": detail["top_k_weights"],
            "prompt_share": float(row[:prompt_length].sum()),
            "generated_share": float(row[prompt_length:].sum())}


def _check_n_new(n_new: Any) -> int:
    if isinstance(n_new, bool) or not isinstance(n_new, (int, np.integer)):
        raise TypeError(f"n_new: expected an int >= 1 (tokens to generate), got {type(n_new).__name__}")
    if n_new < 1:
        raise ValueError(f"n_new: expected an int >= 1 (tokens to generate), got {n_new}")
    return int(n_new)


def _pick(logits: torch.Tensor, greedy: bool, gen: torch.Generator) -> torch.Tensor:
    """Next token id ``[1]`` from ``logits`` ``[vocab]``: argmax, or a seeded sample."""
    if greedy:
        return logits.argmax(-1, keepdim=True)
    return torch.multinomial(torch.softmax(logits.float(), -1), 1, generator=gen)


def generate_attention(
    model: nn.Module,
    prompt: Any,
    tokenizer: Any = None,
    n_new: int = 16,
    *,
    greedy: bool = True,
    seed: int = 0,
    use_cache: bool = True,
    model_name: str | None = None,
) -> Generation:
    """Generate ``n_new`` tokens after ``prompt`` and keep all attention; a :class:`Generation`.

    ``model``: a transformers causal LM (GPT-2, Llama-style, ...; encoder-only and
    encoder-decoder models are refused) or the embedded tiny LM
    (:func:`attnwidget.models.load_tiny_lm`). ``prompt``: text (needs ``tokenizer``,
    given or found offline) or input ids ``[P]``/``[1, P]``. ``greedy``: argmax at
    every step, else a sample seeded with ``seed``. ``use_cache``: use the model's KV
    cache where it has one.

    Refused before any forward: ``n_new < 1``, a model that cannot generate, a prompt
    that with ``n_new`` new tokens is longer than the model takes, a record over
    :data:`attnwidget.maps.MAX_RECORD_BYTES`.
    """
    n_new = _check_n_new(n_new)
    if not isinstance(model, nn.Module):
        raise TypeError(
            f"model: expected a causal language model (torch.nn.Module), got {type(model).__name__}")
    from attnwidget.tinylm import TinyLM

    if isinstance(model, TinyLM):
        return _generate_tiny(model, prompt, tokenizer, n_new, greedy, seed, model_name)
    from attnwidget.extract import huggingface as hf

    if not hf.is_hf_model(model):
        raise TypeError(
            f"model: generation needs a transformers causal LM or attnwidget's tiny LM, got "
            f"{type(model).__name__}; for other models generate the ids yourself and call "
            "extract_attention on the final sequence"
        )
    config = model.config
    can_generate = getattr(model, "can_generate", lambda: False)()
    if getattr(config, "is_encoder_decoder", False) or not can_generate:
        kind = "an encoder-decoder" if getattr(config, "is_encoder_decoder", False) else "an encoder-only"
        raise ValueError(
            f"model: {type(model).__name__} is {kind} model; generate_attention follows a causal "
            "(decoder-only) LM such as GPT-2 or Llama, loaded with AutoModelForCausalLM"
        )
    return _generate_hf(model, prompt, tokenizer, n_new, greedy, seed, use_cache, model_name)


def _prompt_ids(prompt: Any, tokenizer: Any, name: str = "prompt") -> tuple[torch.Tensor, str | None]:
    if isinstance(prompt, str):
        if tokenizer is None:
            raise ValueError(f"tokenizer: needed to turn the {name} text into tokens; pass tokenizer=...")
        if not prompt:
            raise ValueError(f"{name}: expected a non-empty text, got ''")
        encoded = tokenizer(prompt, return_tensors="pt")
        return encoded["input_ids"].reshape(-1).long(), prompt
    if isinstance(prompt, (torch.Tensor, np.ndarray, list, tuple)):
        ids = torch.as_tensor(prompt)
        if ids.dtype not in (torch.int64, torch.int32) or ids.ndim not in (1, 2) or (
                ids.ndim == 2 and ids.shape[0] != 1) or ids.numel() == 0:
            raise ValueError(f"{name}: expected token ids as integers [P] or [1, P] with P >= 1, got "
                             f"dtype {ids.dtype} and shape {tuple(ids.shape)}")
        return ids.reshape(-1).long(), None
    raise TypeError(f"{name}: expected a text or token ids, got {type(prompt).__name__}")


def _check_fits(P: int, n_new: int, limit: int | None, source: str, layers: Any, heads: Any) -> None:
    if limit is not None and P + n_new > limit:
        raise ValueError(
            f"n_new: the prompt's {P} tokens plus {n_new} new ones make {P + n_new}, but the model "
            f"takes at most {limit} ({source}); generate at most {max(0, limit - P)} tokens or "
            "shorten the prompt"
        )
    if isinstance(layers, int) and isinstance(heads, int):
        T = P + n_new
        check_size(layers, heads, T, T, "n_new")


def _generate_hf(
    model: nn.Module, prompt: Any, tokenizer: Any, n_new: int, greedy: bool, seed: int,
    use_cache: bool, model_name: str | None,
) -> Generation:
    from attnwidget.extract import huggingface as hf
    from attnwidget.extract._common import all_modules, eval_mode

    if tokenizer is None:
        tokenizer = hf.infer_tokenizer(model)
    ids, text = _prompt_ids(prompt, tokenizer)
    P = int(ids.numel())
    limit, source = hf.max_positions(model, tokenizer)
    config = model.config
    L, H = getattr(config, "num_hidden_layers", None), getattr(config, "num_attention_heads", None)
    _check_fits(P, n_new, limit, source, L, H)
    gen = torch.Generator().manual_seed(seed)
    modules = all_modules(model)
    with eval_mode(model, modules), hf.eager_attention(model, modules), torch.inference_mode():
        if use_cache:
            weights, ids = _cached_loop(model, ids, n_new, greedy, gen)
        else:
            for _ in range(n_new):  # the plain way: a full forward per token
                logits = model(input_ids=ids[None], use_cache=False, return_dict=True).logits[0, -1]
                ids = torch.cat([ids, _pick(logits, greedy, gen)])
            out = model(input_ids=ids[None], use_cache=False, output_attentions=True, return_dict=True)
            weights = torch.stack([a[0] for a in out.attentions]).float()  # [L, H, T, T]
    raw = hf._tokens(tokenizer, ids)
    decodes = tokenizer is not None and hasattr(tokenizer, "decode")
    full_text = tokenizer.decode(ids.tolist()) if decodes else text
    maps = AttentionMaps(
        weights, raw, model_name=model_name or hf._model_name(model), text=full_text, causal=True,
        token_scheme=hf._scheme(tokenizer),
        special_tokens=list(getattr(tokenizer, "all_special_tokens", []) or []),
    )
    return Generation(maps, ids, P, greedy, seed, use_cache)


def _cached_loop(
    model: nn.Module, ids: torch.Tensor, n_new: int, greedy: bool, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """KV-cache generation; returns the record ``[L, H, T, T]`` (float32) and the ids ``[T]``.

    The prompt's forward fills rows ``0..P-1``; each later forward feeds one token and
    returns its row. The last generated token is fed too (its logits are not used), so
    every row of the final sequence is in the record.
    """
    import inspect

    # transformers 5 renamed the cache argument and output field (past_key_values -> cache)
    field = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    P = int(ids.numel())
    T = P + n_new
    out = model(input_ids=ids[None], use_cache=True, output_attentions=True, return_dict=True)
    L = len(out.attentions)
    H = out.attentions[0].shape[1]
    record = torch.zeros(L, H, T, T, dtype=torch.float32)
    for layer, a in enumerate(out.attentions):
        record[layer, :, :P, :P] = a[0]
    tokens = [ids]
    for step in range(n_new):
        nxt = _pick(out.logits[0, -1], greedy, gen)
        tokens.append(nxt)
        pos = P + step
        out = model(input_ids=nxt[None], use_cache=True, output_attentions=True, return_dict=True,
                    **{field: getattr(out, field)})
        for layer, a in enumerate(out.attentions):  # a: [1, H, 1, pos + 1]
            record[layer, :, pos, : pos + 1] = a[0, :, 0]
    return record, torch.cat(tokens)


def _generate_tiny(
    model: Any, prompt: Any, tokenizer: Any, n_new: int, greedy: bool, seed: int, model_name: str | None,
) -> Generation:
    from attnwidget.extract import extract_attention
    from attnwidget.tinylm import CharTokenizer

    tokenizer = tokenizer if tokenizer is not None else CharTokenizer()
    ids, _ = _prompt_ids(prompt, tokenizer)
    P = int(ids.numel())
    cfg = model.config
    _check_fits(P, n_new, cfg.max_len, "TinyConfig.max_len", cfg.n_layers, cfg.n_heads)
    if int(ids.max()) >= cfg.vocab_size or int(ids.min()) < 0:
        raise ValueError(
            f"prompt: token ids must lie in 0..{cfg.vocab_size - 1}, got {int(ids.min())}..{int(ids.max())}")
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            # TinyLM.generate draws samples from the same kind of seeded generator
            ids = model.generate(ids, n_new, greedy=greedy, seed=seed)
    finally:
        model.train(was_training)
    maps = extract_attention(model, tokenizer.decode(ids.tolist()), tokenizer,
                             **({"model_name": model_name} if model_name else {}))
    return Generation(maps, ids, P, greedy, seed, cached=False)


__all__ = ["Generation", "generate_attention", "step_summary"]
