"""What the widget sends: the one reply key and the payload of every message.

Pure functions of their arguments (a map's :class:`~attnwidget.metrics.PanelMetrics`,
the view state as plain values); they never read a trait. Bytes come from
:mod:`attnwidget._codec`. The reply key and the choice lists are read from
``protocol.json`` (beside this file), the one place both Python and
``js/src/state.ts`` take them from.

Every message carries the ``view`` it belongs to, so the browser never shows
an old reply as current: a picture carries :func:`panel_view`, the metrics
:func:`reply_view` (the picture's key plus threshold, query and top-k).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from attnwidget._codec import encode_atlas, encode_panel, encode_signed, overview, pool_factor, pool_max
from attnwidget.maps import AttentionMaps
from attnwidget.metrics import PanelMetrics, head_badges
from attnwidget.tokens import show_invisible

PROTOCOL: dict[str, Any] = json.loads((Path(__file__).parent / "protocol.json").read_text("utf-8"))
#: View modes: one head, all heads of the layer, the layer's head average, rollout up to the layer.
VIEW_MODES: tuple[str, ...] = tuple(PROTOCOL["modes"])
COLORMAPS: tuple[str, ...] = tuple(PROTOCOL["colormaps"])
SCALES: tuple[str, ...] = tuple(PROTOCOL["scales"])
#: Modes whose picture and key name a head (the others show a whole layer).
HEAD_MODES: tuple[str, ...] = tuple(PROTOCOL["head_modes"])
#: Modes in which a comparison record is shown beside the map (not rollout).
COMPARED_MODES = ("head", "grid", "average")
#: ``caption_b`` when comparing in another mode.
NOT_COMPARED = "comparison: shown for one head or the head average"

#: The main map is sent with at most this many cells a side; longer inputs are max-pooled.
OVERVIEW_SIDE = 512
#: A zoomed window is sent at full resolution up to this many cells a side.
DETAIL_SIDE = 512
#: Head thumbnails in the atlas have at most this many cells a side.
THUMB_SIDE = 64

_KINDS = {"head": "head", "grid": "head", "average": "average of heads", "rollout": "attention rollout"}


def panel_view(mode: str, layer: int, head: int, ablated: list[list[int]]) -> dict[str, Any]:
    """The state a picture belongs to (``protocol.json``'s ``panel_key``); head is None for layer modes."""
    return {"mode": mode, "layer": layer, "head": head if mode in HEAD_MODES else None, "ablated": ablated}


def reply_view(state: dict[str, Any]) -> dict[str, Any]:
    """The state a metrics reply belongs to: every field of ``protocol.json``'s ``reply_key``."""
    view = panel_view(state["mode"], state["layer"], state["head"], state["ablated"])
    return {**view, **{name: state[name] for name in PROTOCOL["reply_key"] if name not in view}}


def map_key(mode: str, layer: int, head: int) -> tuple[str, int, int | None]:
    """``(kind, layer, head)`` of the map a mode shows (grid shows the head's map)."""
    kind = "head" if mode in HEAD_MODES else mode
    return kind, layer, head if kind == "head" else None


def colour_top(weights: Any, scale: str) -> float:
    """The weight drawn with the colormap's top colour: 1 for ``fixed``, the map's largest for ``auto``."""
    if scale == "fixed":
        return 1.0
    top = float(weights.max())
    return top if top > 0 else 1.0


def overview_message(pm: PanelMetrics, scale: str) -> dict[str, Any]:
    """A map's overview as sent (max-pooled to :data:`OVERVIEW_SIDE`, quantised), without its ``view``."""
    pooled, visible, factor = overview(pm.weights, OVERVIEW_SIDE, pm.visible())
    return encode_panel(pooled, vmax=colour_top(pm.weights, scale), visible=visible, pool=factor,
                        full_shape=list(pm.shape))


def detail_message(pm: PanelMetrics, viewport: list[int], scale: str, view: dict) -> dict[str, Any]:
    """The zoomed window ``[q0, q1, k0, k1]`` at full resolution (or pooled to :data:`DETAIL_SIDE`);
    empty when there is no window or the overview is already at full resolution."""
    Q, K = pm.shape
    if not viewport or pool_factor(Q, K, OVERVIEW_SIDE) == 1:
        return {}
    q0, q1, k0, k1 = viewport
    visible = pm.visible()
    pooled, visible, factor = overview(pm.weights[q0:q1, k0:k1], DETAIL_SIDE,
                                       None if visible is None else visible[q0:q1, k0:k1])
    return encode_panel(pooled, vmax=colour_top(pm.weights, scale), visible=visible, view=view,
                        pool=factor, origin=[q0, k0], window=viewport)


def comparison_maps(other: AttentionMaps, mode: str, layer: int, head: int) -> torch.Tensor:
    """The comparison record's map for the shown state: its head, or its layer's head average."""
    if mode == "average":
        return torch.from_numpy(other.layer(layer)).mean(dim=0)
    return torch.from_numpy(other.head(layer, head))


def comparison_messages(
    a: PanelMetrics, b: torch.Tensor, label: str, scale: str, view: dict
) -> dict[str, Any]:
    """``panel`` (A), ``panel_b`` and ``panel_diff`` (A - B) on the colour range A and B share,
    and ``caption_b`` naming B. The difference is empty when the shapes differ.
    """
    Q, K = a.shape
    factor = pool_factor(Q, K, OVERVIEW_SIDE)
    pooled_a, visible = pool_max(a.weights, factor, a.visible())  # [Q/f, K/f]
    pooled_b, _ = pool_max(b, factor)
    vmax = 1.0 if scale == "fixed" else max(float(a.weights.max()), float(b.max()), 1e-30)
    out = {
        "panel": encode_panel(pooled_a, vmax=vmax, visible=visible, view=view, pool=factor,
                              full_shape=[Q, K]),
        "panel_b": encode_panel(pooled_b, vmax=vmax, view=view, pool=factor, full_shape=list(b.shape)),
        "panel_diff": {},
        "caption_b": f"B: {label}",
    }
    if tuple(b.shape) == (Q, K):
        out["panel_diff"] = encode_signed((a.weights - b).numpy(), factor, view=view, full_shape=[Q, K])
    else:
        out["caption_b"] += " (different shape: no difference map)"
    return out


def metrics_message(pm: PanelMetrics, state: dict[str, Any], typical: dict | None) -> dict[str, Any]:
    """:meth:`PanelMetrics.at` of the shown map, its ``kind``, its ``view`` and, with a corpus,
    ``typical`` (the head's median and quartiles over the corpus)."""
    out = pm.at(state["threshold"], state["query"], min(state["top_k"], pm.shape[1]))
    if typical is not None:
        out["typical"] = typical
    return {**out, "kind": _KINDS[state["mode"]], "view": reply_view(state)}


def atlas_message(maps: AttentionMaps, layer_index: int, corpus: Any = None) -> dict[str, Any]:
    """Thumbnails ``[H, h, w]`` of one layer (max-pooled to :data:`THUMB_SIDE`) and their badges."""
    layer = torch.from_numpy(maps.layer(layer_index))  # [H, Q, K], no copy of the stack
    H = layer.shape[0]
    pooled, vis, factor = overview(layer, THUMB_SIDE, maps.visible_cells())  # [H, h, w], [h, w]
    badges = head_badges(layer, mask=maps.key_mask(), causal=bool(maps.causal))
    return {
        **encode_atlas(pooled, vis), "layer": layer_index, "pool": factor,
        "badges": [
            {"head": h, "name": show_invisible(maps.head_names[h]),
             "entropy": float(badges["entropy"][h]),
             "normalized_entropy": float(badges["normalized_entropy"][h]),
             "sharpness": float(badges["sharpness"][h]), "grade": str(badges["grade"][h]),
             **_badge_typical(corpus, layer_index, h)}
            for h in range(H)
        ],
    }


def _badge_typical(corpus: Any, layer: int, head: int) -> dict[str, Any]:
    """``{"typical": ...}``: the badge's entropy and sharpness over the corpus (median, quartiles)."""
    if corpus is None:
        return {}
    t = corpus.typical(layer, head)
    return {"typical": {"entropy": t["mean_entropy"], "sharpness": t["sharpness"],
                        "n_sequences": t["n_sequences"]}}


def sweep_message(score: np.ndarray, metric: str, mode: str) -> dict[str, Any]:
    """``{"score": [L][H] (None where not swept), "metric", "mode"}`` for the head strip."""
    return {"score": [[None if np.isnan(v) else float(v) for v in row] for row in score],
            "metric": metric, "mode": mode}


def view_caption(maps: AttentionMaps, mode: str, layer: int, head: int) -> str:
    """The provenance line under the map (:meth:`AttentionMaps.provenance` of what the mode shows)."""
    return maps.provenance(layer, head if mode in HEAD_MODES else None, rollout=mode == "rollout")
