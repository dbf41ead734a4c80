"""AttentionView: the anywidget that draws one head's map on a canvas.

Traits and glue only: extraction comes from :mod:`attnwidget.extract`, bytes
from :mod:`attnwidget._codec`; the drawing lives in ``js/src``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anywidget
import traitlets

from attnwidget._codec import encode_panel
from attnwidget.maps import AttentionMaps

_STATIC = Path(__file__).parent / "static"
#: Input text in the caption is shortened to this many characters (the full text stays in Python).
CAPTION_TEXT_CHARS = 80


# Shown instead of the view when the bundle was never built (a source tree without
# `pip install -e .`): importing attnwidget still works for metrics and extraction.
_MISSING_BUNDLE_ESM = """
export default { render({ el }) {
  el.textContent = "attnwidget: the JS bundle (attnwidget/static/widget.js) is missing; "
    + "build it with `pip install -e .` or `npm --prefix js run build`.";
} };
"""


def _bundle(name: str) -> str | Path:
    path = _STATIC / name
    if path.exists():
        return path
    return _MISSING_BUNDLE_ESM if name.endswith(".js") else ""


class AttentionView(anywidget.AnyWidget):
    """One attention head on a canvas, with layer and head sliders.

    ``AttentionView(model, text, tokenizer=None, **extract_options)`` extracts
    with :func:`attnwidget.extract_attention`; ``AttentionView(maps)`` shows
    any :class:`AttentionMaps`; :meth:`from_tensor` takes raw weights.
    """

    _esm = _bundle("widget.js")
    _css = _bundle("widget.css")

    layer = traitlets.Int(0).tag(sync=True)
    """int, default 0: the layer shown, 0..n_layers-1."""
    head = traitlets.Int(0).tag(sync=True)
    """int, default 0: the head shown, 0..n_heads-1."""
    n_layers = traitlets.Int(1, read_only=True).tag(sync=True)
    """int: layers in the record (read-only)."""
    n_heads = traitlets.Int(1, read_only=True).tag(sync=True)
    """int: heads per layer (read-only)."""
    panel = traitlets.Dict(read_only=True).tag(sync=True)
    """dict ``{"buffer", "dtype", "shape"}``: the shown ``[Q, K]`` map as binary (read-only)."""
    query_tokens = traitlets.List(traitlets.Unicode(), read_only=True).tag(sync=True)
    """list[str]: display forms of the query tokens (rendered as text)."""
    key_tokens = traitlets.List(traitlets.Unicode(), read_only=True).tag(sync=True)
    """list[str]: display forms of the key tokens (rendered as text)."""
    caption = traitlets.Unicode("", read_only=True).tag(sync=True)
    """str: provenance line under the map: model, layer, head, text, masking."""

    def __init__(
        self, model: Any, text: Any = None, tokenizer: Any = None, *,
        layer: int = 0, head: int = 0, **extract_options: Any,
    ) -> None:
        if isinstance(model, AttentionMaps):
            if text is not None or tokenizer is not None or extract_options:
                extra = sorted(extract_options) + [
                    n for n, v in (("text", text), ("tokenizer", tokenizer)) if v is not None
                ]
                raise TypeError(f"AttentionView(maps) takes no extraction arguments, got {extra}")
            maps = model
        else:
            from attnwidget.extract import extract_attention

            maps = extract_attention(model, text, tokenizer, **extract_options)
        self._maps = maps
        super().__init__()
        with self.hold_trait_notifications():
            self.set_trait("n_layers", maps.n_layers)
            self.set_trait("n_heads", maps.n_heads)
            self.set_trait("query_tokens", list(maps.query_display))
            self.set_trait("key_tokens", list(maps.key_display))
            self.layer = layer
            self.head = head
        self._update_panel()

    @classmethod
    def from_tensor(cls, weights: Any, tokens: Any = None, **record: Any) -> AttentionView:
        """From raw weights ``[Q,K]``, ``[H,Q,K]`` or ``[L,H,Q,K]`` and optional tokens."""
        return cls(AttentionMaps.from_tensor(weights, tokens, **record))

    @property
    def maps(self) -> AttentionMaps:
        """The record this view shows."""
        return self._maps

    def _check_range(self, proposal: dict[str, Any], name: str, size: int) -> int:
        value = proposal["value"]
        if not 0 <= value < size:
            raise traitlets.TraitError(f"{name}: expected 0..{size - 1}, got {value}")
        return value

    @traitlets.validate("layer")
    def _valid_layer(self, proposal: dict[str, Any]) -> int:
        return self._check_range(proposal, "layer", self.n_layers)

    @traitlets.validate("head")
    def _valid_head(self, proposal: dict[str, Any]) -> int:
        return self._check_range(proposal, "head", self.n_heads)

    @traitlets.observe("layer", "head")
    def _on_select(self, _change: dict[str, Any]) -> None:
        if hasattr(self, "_maps"):
            self._update_panel()

    def _update_panel(self) -> None:
        maps = self._maps
        text = maps.text or ""
        if len(text) > CAPTION_TEXT_CHARS:
            text = text[: CAPTION_TEXT_CHARS - 1] + "…"
        head = maps.head_names[self.head] + (" (AVERAGE, not a head)" if maps.is_average else "")
        masking = "causal mask" if maps.causal else "no causal mask"
        with self.hold_trait_notifications():
            self.set_trait("panel", encode_panel(maps.head(self.layer, self.head)))
            self.set_trait(
                "caption",
                f"{maps.model_name or 'unknown model'} · {maps.layer_names[self.layer]} · "
                f"{head} · {masking}" + (f" · “{text}”" if text else ""),
            )
