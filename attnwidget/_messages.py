"""What the widget sends: the one reply key and the payload of every message.

Pure functions of their arguments (a map's :class:`~attnwidget.metrics.PanelMetrics`,
the view state as plain values); they never read a trait. Bytes come from
:mod:`attnwidget._codec`. The reply key and the choice lists are read from
``protocol.json`` (beside this file), the one place both Python and
``js/src/state.ts`` take them from.

Every message carries the ``view`` it belongs to, so the browser never shows
an old reply as current: a picture carries :func:`panel_view`, the metrics
:func:`reply_view` (the picture's key but its colour scale, which the numbers do not
depend on, plus threshold, query and top-k).
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
#: ``caption_b`` with compare on and no record to compare with.
NOTHING_TO_COMPARE = ("nothing to compare yet: ablate a head (the button or shift-click a head), "
                      "or call view.compare_with(other_record)")
#: The same for a view of a record (no model to ablate).
NOTHING_TO_COMPARE_RECORD = "nothing to compare yet: call view.compare_with(other_record)"

#: The main map is sent with at most this many cells a side; longer inputs are max-pooled.
OVERVIEW_SIDE = 512
#: A zoomed window is sent at full resolution up to this many cells a side.
DETAIL_SIDE = 512
#: Head thumbnails in the atlas have at most this many cells a side.
THUMB_SIDE = 64

_KINDS = {"head": "head", "grid": "head", "average": "average of heads", "rollout": "attention rollout"}


def panel_view(mode: str, layer: int, head: int, ablated: list[list[int]], scale: str) -> dict[str, Any]:
    """The state a picture belongs to (``protocol.json``'s ``panel_key``): the map and the colour
    scale it is drawn on (a picture of another scale is not the one asked for); head is None for
    layer modes."""
    return {"mode": mode, "layer": layer, "head": head if mode in HEAD_MODES else None, "ablated": ablated,
            "scale": scale}


def reply_view(state: dict[str, Any]) -> dict[str, Any]:
    """The state a metrics reply belongs to: every field of ``protocol.json``'s ``reply_key``, the
    picture's part first (the numbers do not depend on the colour scale: it is not among them)."""
    view = panel_view(state["mode"], state["layer"], state["head"], state["ablated"], "")
    reply = PROTOCOL["reply_key"]
    return {**{k: v for k, v in view.items() if k in reply}, **{k: state[k] for k in reply if k not in view}}


def map_key(mode: str, layer: int, head: int) -> tuple[str, int, int | None]:
    """``(kind, layer, head)`` of the map a mode shows (grid shows the head's map)."""
    kind = "head" if mode in HEAD_MODES else mode
    return kind, layer, head if kind == "head" else None


def colour_top(weights: Any, scale: str) -> float:
    """The weight drawn with the colormap's top colour: 1 for ``fixed``, the map's largest for
    ``auto`` and ``sqrt`` (whose colours follow the square root of the weight)."""
    if scale == "fixed":
        return 1.0
    top = float(weights.max())
    return top if top > 0 else 1.0


def overview_message(pm: PanelMetrics, scale: str) -> dict[str, Any]:
    """A map's overview as sent (max-pooled to :data:`OVERVIEW_SIDE`, quantised), without its ``view``."""
    pooled, visible, factor = overview(pm.weights, OVERVIEW_SIDE, pm.visible())
    # the pooled map holds the largest weight (a block's max): 0.05 ms against 2 ms at 4096 tokens
    return encode_panel(pooled, vmax=colour_top(pooled, scale), visible=visible, pool=factor,
                        full_shape=list(pm.shape), sqrt=scale == "sqrt")


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
                        pool=factor, origin=[q0, k0], window=viewport, sqrt=scale == "sqrt")


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
                              full_shape=[Q, K], sqrt=scale == "sqrt"),
        "panel_b": encode_panel(pooled_b, vmax=vmax, view=view, pool=factor, full_shape=list(b.shape),
                                sqrt=scale == "sqrt"),
        "panel_diff": {},
        "caption_b": f"B: {label}",
    }
    if tuple(b.shape) == (Q, K):
        diff = (a.weights - b).numpy()
        if diff.any():
            out["panel_diff"] = encode_signed(diff, factor, view=view, full_shape=[Q, K])
        else:  # a blank map on a +-1e-30 scale would look like a failure to draw
            out["caption_b"] += " · the same as A in this map, weight for weight: no difference to draw"
    else:
        out["caption_b"] += " (different shape: no difference map)"
    return out


def metrics_message(pm: PanelMetrics, state: dict[str, Any], typical: dict | None) -> dict[str, Any]:
    """:meth:`PanelMetrics.at` of the shown map, its ``kind``, its ``view``; with a corpus,
    ``typical`` (the head's median and quartiles over the corpus); with a ``generation`` in
    ``state`` and a query that chose a generated token, ``step`` (:func:`step_block`)."""
    out = pm.at(state["threshold"], state["query"], min(state["top_k"], pm.shape[1]))
    if typical is not None:
        out["typical"] = typical
    step = step_of_query(state["query"], state.get("generation", {}))
    if step is not None:
        out["step"] = step_block(pm, step, state["generation"], state["top_k"])
    return {**out, "kind": _KINDS[state["mode"]], "view": reply_view(state)}


def record_traits(maps: AttentionMaps, gen: Any) -> dict[str, Any]:
    """The traits a record fixes for the life of a view: its sizes, its tokens' display forms
    (invisible characters named here too: they may come from the caller) and ``generation``."""
    return {"n_layers": maps.n_layers, "n_heads": maps.n_heads,
            "query_tokens": [show_invisible(t) for t in maps.query_display],
            "key_tokens": [show_invisible(t) for t in maps.key_display], "generation": generation_info(gen)}


def generation_info(gen: Any) -> dict[str, Any]:
    """The ``generation`` trait: ``prompt_length`` (P, the first generated position), ``n_new``,
    ``greedy``, ``seed`` and ``cached`` of a :class:`attnwidget.generate.Generation`; ``{}`` for None."""
    if gen is None:
        return {}
    return {"prompt_length": gen.prompt_length, "n_new": gen.n_new, "greedy": bool(gen.greedy),
            "seed": int(gen.seed), "cached": bool(gen.cached)}


def query_of_step(step: int | None, generation: dict[str, Any]) -> int | None:
    """The query row that chose step ``step``'s token: ``prompt_length + step - 1`` (None for None)."""
    return None if step is None else generation["prompt_length"] + step - 1


def step_of_query(query: int | None, generation: dict[str, Any]) -> int | None:
    """The step whose token query row ``query`` chose, or None (no generation, no query, a prompt
    row before P - 1, or the last row, whose prediction was never used)."""
    if not generation or query is None:
        return None
    step = query - generation["prompt_length"] + 1
    return step if 0 <= step < generation["n_new"] else None


def step_block(pm: PanelMetrics, step: int, generation: dict[str, Any], k: int) -> dict[str, Any]:
    """The metrics' ``step`` block for the shown map: ``step``, ``query`` (the row that chose the
    token), ``position`` (of the token written), and :func:`attnwidget.generate.step_summary`
    of that row (``top_k``, ``top_k_weights``, ``prompt_share``, ``generated_share``); for one
    head it equals :meth:`Generation.step` without the token text."""
    from attnwidget.generate import step_summary

    q = query_of_step(step, generation)
    return {"step": step, "query": q, "position": q + 1,
            **step_summary(pm.weights[q], q, generation["prompt_length"], k)}


def text_row_message(pm: PanelMetrics, received: Any, query: int | None, vmax: float, scale: str,
                     view: dict[str, Any]) -> dict[str, Any]:
    """The text view's shading as one uint8 row ``[1, K]`` (the panel's codec): with a query, its
    row of the map on the panel's colour range ``vmax`` (so at pool 1 the levels equal the map
    row's); without, ``received`` ``[K]`` (the attention each key receives) on its own range
    (0..its largest for ``auto``, 0..1 for ``fixed``). ``view``: the picture's key plus ``query``."""
    if query is None:
        values, visible = np.asarray(received, dtype=np.float32), None
        vmax = colour_top(values, scale)
    else:
        values = pm.weights[query].numpy()
        visible = pm.visible_row(query)
    return encode_panel(values[None], vmax=vmax, visible=None if visible is None else visible[None],
                        view={**view, "query": query}, kind="received" if query is None else "query")


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
