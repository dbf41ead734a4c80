"""The range rules of AttentionView's state: each raises ``TraitError`` naming the trait,
the valid range and what it got, and returns the value as stored (negative indices
counted from the end, as everywhere in Python: -1 is the last layer).

:func:`check` is the one entry point; ``limits`` says the record's sizes
(``layers``, ``heads``, ``queries``, ``keys``, ``steps``: the generated tokens, 0
without a generation) and whether a model can re-run (``model``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from traitlets import TraitError

from attnwidget._messages import COLORMAPS, SCALES, VIEW_MODES


def _index(name: str, value: int, size: int) -> int:
    if not -size <= value < size:
        raise TraitError(f"{name}: expected 0..{size - 1} (or -{size}..-1), got {value}")
    return value % size


def _query(value: int | None, limits: dict[str, Any]) -> int | None:
    Q = limits["queries"]
    if value is not None and not -Q <= value < Q:
        raise TraitError(f"query: expected 0..{Q - 1} (or -{Q}..-1) or None, got {value}")
    return None if value is None else value % Q


def _step(value: int | None, limits: dict[str, Any]) -> int | None:
    n = limits["steps"]
    if value is not None and n == 0:
        raise TraitError(f"step: this view shows no generation, so step must be None, got {value}; build "
                         "it with AttentionView(model, prompt, tokenizer=tok, generate=N)")
    if value is not None and not -n <= value < n:
        raise TraitError(f"step: expected 0..{n - 1} (a generated token; or -{n}..-1) or None, got {value}")
    return None if value is None else value % n


def _show_text(value: bool, limits: dict[str, Any]) -> bool:
    if value and limits["queries"] != limits["keys"]:
        raise TraitError(f"show_text: the text view needs self-attention (the same tokens as queries and "
                         f"keys), got {limits['queries']} x {limits['keys']}; expected False")
    return value


def _threshold(value: float, _limits: dict[str, Any]) -> float:
    if not 0.0 <= value <= 1.0:  # also refuses NaN
        raise TraitError(f"threshold: expected 0..1, got {value}")
    return value


def _top_k(value: int, _limits: dict[str, Any]) -> int:
    if value < 1:
        raise TraitError(f"top_k: expected an int >= 1 (capped at the row's keys), got {value}")
    return value


def _one_of(name: str, value: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise TraitError(f"{name}: expected one of {choices}, got {value!r}")
    return value


def _mode(value: str, limits: dict[str, Any]) -> str:
    _one_of("mode", value, VIEW_MODES)
    Q, K = limits["queries"], limits["keys"]
    if value == "rollout" and Q != K:
        raise TraitError(f"mode: 'rollout' needs self-attention (as many queries as keys), got {Q} x {K}")
    return value


def _ablated(pairs: list[list[int]], limits: dict[str, Any]) -> list[list[int]]:
    if pairs and not limits["model"]:
        raise TraitError(
            "ablated: this view shows a record, not a model; build it with "
            "AttentionView(model, text, tokenizer=...) to ablate heads"
        )
    out = set()
    L, H = limits["layers"], limits["heads"]
    for pair in pairs:
        if len(pair) != 2 or not (-L <= pair[0] < L and -H <= pair[1] < H):
            raise TraitError(
                f"ablated: expected [layer, head] pairs with layer 0..{L - 1} and "
                f"head 0..{H - 1} (negative from the end), got {pair}"
            )
        out.add((int(pair[0]) % L, int(pair[1]) % H))
    return [list(p) for p in sorted(out)]


def _ablation_mode(value: str, _limits: dict[str, Any]) -> str:
    from attnwidget.ablate import ABLATION_MODES

    return _one_of("ablation_mode", value, ABLATION_MODES)


def _viewport(value: list[int], limits: dict[str, Any]) -> list[int]:
    value = list(value)
    Q, K = limits["queries"], limits["keys"]
    if value and not (len(value) == 4 and 0 <= value[0] < value[1] <= Q and 0 <= value[2] < value[3] <= K):
        raise TraitError(
            f"viewport: expected [] or [q0, q1, k0, k1] with 0 <= q0 < q1 <= {Q} and "
            f"0 <= k0 < k1 <= {K}, got {value}"
        )
    return value


#: The rule of each checked trait.
RULES: dict[str, Callable[[Any, dict[str, Any]], Any]] = {
    "layer": lambda v, lim: _index("layer", v, lim["layers"]),
    "head": lambda v, lim: _index("head", v, lim["heads"]),
    "query": _query,
    "step": _step,
    "show_text": _show_text,
    "threshold": _threshold,
    "top_k": _top_k,
    "mode": _mode,
    "colormap": lambda v, _: _one_of("colormap", v, COLORMAPS),
    "scale": lambda v, _: _one_of("scale", v, SCALES),
    "ablated": _ablated,
    "ablation_mode": _ablation_mode,
    "viewport": _viewport,
}


def check(name: str, value: Any, limits: dict[str, Any]) -> Any:
    """``value`` of trait ``name`` as stored, or TraitError naming the valid range."""
    return RULES[name](value, limits)
