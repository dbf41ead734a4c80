"""Binary encoding of attention panels for the browser.

A panel is one ``[query_pos, key_pos]`` map. It crosses the widget comm as raw
bytes inside a dict ``{"buffer", "dtype", "shape", "vmax", ...}`` (ipywidgets
sends the memoryview as a binary websocket frame), never as JSON numbers.

``uint8`` levels: a visible weight ``w`` becomes ``round(w / vmax * 254)``
(0..254, so the colour scale spans 0..vmax), and :data:`MASKED` (255) marks a
cell that is masked (causal mask, padding, a fully masked row): it is drawn
differently from a weight that is merely 0. ``uint8`` is the only ``dtype``;
the field stays in the message so that a reader can refuse anything else.

Maps larger than the overview size are max-pooled (:func:`pool_max`) so that a
single sharp weight still shows; zooming asks for full-resolution windows.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

#: Level of a masked cell in a uint8 panel; visible weights use 0..254.
MASKED = 255
LEVELS = 254

#: Largest panel payload sent in one message. A 4096 x 4096 uint8 panel is
#: 16 MiB; above that the browser would hold more than one full-resolution
#: 4K-token head per view, so bigger panels are refused (select fewer tokens).
MAX_PANEL_BYTES = 16 * 2**20

#: The one panel encoding (the ``dtype`` field of every panel message).
DTYPES = ("uint8",)


def pool_factor(rows: int, cols: int, max_side: int) -> int:
    """Smallest integer block size that brings ``rows x cols`` within ``max_side`` on both sides."""
    if max_side < 1:
        raise ValueError(f"max_side: expected >= 1, got {max_side}")
    return max(1, math.ceil(rows / max_side), math.ceil(cols / max_side))


def pool_max(
    panel: Any, factor: int, visible: Any = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """Max-pool ``[..., Q, K]`` in ``factor x factor`` blocks (edge blocks are partial).

    Returns the pooled weights ``[..., ceil(Q/f), ceil(K/f)]`` and, when ``visible``
    (bool ``[Q, K]``) is given, the pooled visibility: a block counts as
    visible when any of its cells is. Max, not mean, so that a head that puts
    all its weight on one key per row still shows at 1/8 resolution.
    """
    w = torch.as_tensor(np.asarray(panel, dtype=np.float32))
    if factor == 1:
        return w.numpy(), None if visible is None else np.asarray(visible, dtype=bool)
    pooled = _block_max(w, factor)
    vis = None
    if visible is not None:
        vis = (_block_max(torch.as_tensor(np.asarray(visible, dtype=np.float32)), factor) > 0).numpy()
    return pooled.numpy(), vis


def _block_max(w: torch.Tensor, f: int) -> torch.Tensor:
    """``[..., Q, K]`` -> ``[..., ceil(Q/f), ceil(K/f)]``: the max of each ``f x f`` block, the
    edge blocks over their cells only (what ``max_pool2d(ceil_mode=True)`` gives; NaN propagates).

    The max of ``f`` whole rows first (contiguous, vectorised; a view of the map, no copy), then
    of ``f`` neighbours in the rows left, which are ``f`` times fewer and the only thing padded
    when ``K`` is not a multiple of ``f``: 5-7 ms for a 4000-4096 token map at ``f = 8`` on one
    thread, against 26-28 ms for ``max_pool2d``, whose windows stride across rows; the first
    visit of a long text's head waits for it.
    """
    *lead, Q, K = w.shape
    rows, cols = -(-Q // f), -(-K // f)
    whole = Q // f * f
    out = w[..., :whole, :].reshape(*lead, Q // f, f, K).amax(dim=-2)  # [..., Q // f, K]
    if whole != Q:  # the last block of rows is partial
        out = torch.cat([out, w[..., whole:, :].amax(dim=-2, keepdim=True)], dim=-2)
    if cols * f != K:  # padding that never wins a max
        out = torch.nn.functional.pad(out, (0, cols * f - K), value=-math.inf)
    return out.reshape(*lead, rows, cols, f).amax(dim=-1)


def quantize(panel: Any, vmax: float, *, low: float = 0.0, visible: Any = None) -> np.ndarray:
    """``[..., Q, K]`` values -> uint8 levels ``[..., Q, K]``, as :func:`encode_panel` sends them.

    A value ``v`` becomes ``round((v - low) / (vmax - low) * 254)``, clipped to
    0..254; :data:`MASKED` (255) where ``visible`` (bool, broadcast to the
    panel) is False or the value is not finite (NaN: an empty map's statistic).
    """
    panel = np.asarray(panel)
    span = float(vmax) - float(low)
    if not (math.isfinite(span) and span > 0):
        raise ValueError(f"vmax: expected a finite number above low={low}, got {vmax!r}")
    scale = np.float32(LEVELS / span) if low == 0 and LEVELS / span < 3e38 else None
    if panel.dtype == np.float32 and scale is not None and np.isfinite(scale) and scale > 0:
        # the widget's own maps: float32 in place, five passes (the float64 route below costs
        # 20x more on a 512 x 512 map, on every head switch); +-inf clip to the ends as there
        levels = np.multiply(panel, scale, dtype=np.float32)
        np.clip(levels, 0, LEVELS, out=levels)
        np.rint(levels, out=levels)
        nan = np.isnan(levels)
        data = np.where(nan, 0, levels).astype(np.uint8) if nan.any() else levels.astype(np.uint8)
        data[nan] = MASKED
    else:
        # float64 and a ratio clipped to [0, 1]: a float16 panel, a huge or a subnormal vmax
        # must neither overflow nor turn into NaN on the way
        with np.errstate(over="ignore", invalid="ignore"):
            ratio = np.clip((panel.astype(np.float64) - low) / span, 0.0, 1.0)
        finite = np.isfinite(ratio)
        data = np.rint(np.where(finite, ratio, 0.0) * LEVELS).astype(np.uint8)
        data[~finite] = MASKED
    if visible is not None:
        data[~np.broadcast_to(np.asarray(visible, dtype=bool), data.shape)] = MASKED
    return data


#: Share of a dimmed cell's colour that is kept, the rest is the background
#: (``DIM_KEEP`` in js/src/heatmap.ts: figures and snapshots dim as the canvas does).
DIM_KEEP = 0.18
#: Colormaps by name, as bokeh.palettes spells them. The widget's six (js/src/colormaps.ts was
#: generated from the same tables) and, for figures, matplotlib's other common sequential maps.
COLORMAP_PALETTES = {"viridis": "Viridis256", "plasma": "Plasma256", "magma": "Magma256",
                     "inferno": "Inferno256", "cividis": "Cividis256", "greys": "Greys256",
                     "blues": "Blues256", "greens": "Greens256", "oranges": "Oranges256",
                     "purples": "Purples256", "reds": "Reds256", "turbo": "Turbo256"}
#: Those bokeh lists dark to light: reversed, so that 0 is the light end as in matplotlib.
LIGHT_FIRST = frozenset({"greys", "blues", "greens", "oranges", "purples", "reds"})


def colormap_hexes(name: str) -> list[str]:
    """The 256 ``#rrggbb`` colours of a colormap, low to high: a name of
    :data:`COLORMAP_PALETTES`, or one with ``_r`` appended (reversed, as in matplotlib)."""
    base = name[:-2] if isinstance(name, str) and name.endswith("_r") else name
    if base not in COLORMAP_PALETTES:
        raise ValueError(f"colormap: expected one of {tuple(COLORMAP_PALETTES)} (or one of them with _r "
                         f"for reversed), got {name!r}")
    from bokeh import palettes

    hexes = list(getattr(palettes, COLORMAP_PALETTES[base]))
    if (base in LIGHT_FIRST) != (base != name):
        hexes.reverse()
    return hexes


def colormap_rgb(name: str) -> np.ndarray:
    """uint8 ``[256, 3]``: the RGB colours of a colormap (:func:`colormap_hexes`)."""
    return np.array([[int(h[i:i + 2], 16) for i in (1, 3, 5)] for h in colormap_hexes(name)], dtype=np.uint8)


def level_rgba(
    name: str, dim_below: float = 0.0, background: tuple[int, int, int] = (255, 255, 255)
) -> np.ndarray:
    """uint8 ``[256, 4]``: the colour of every uint8 level, as js/src/heatmap.ts paints it.

    Level ``l`` (0..254) takes colormap entry ``round(l * 255 / 254)``; levels
    strictly below ``dim_below`` (a threshold in levels, ``threshold / vmax * 254``)
    keep :data:`DIM_KEEP` of their colour, blended into ``background``;
    :data:`MASKED` is transparent ``(0, 0, 0, 0)``.
    """
    lut = colormap_rgb(name).astype(np.float64)
    level = np.arange(LEVELS + 1)
    rgb = lut[np.floor(level * 255 / LEVELS + 0.5).astype(int)]  # Math.round, as in colorOf
    dim = level < dim_below
    rgb[dim] = rgb[dim] * DIM_KEEP + np.asarray(background, dtype=np.float64) * (1 - DIM_KEEP)
    out = np.zeros((256, 4), dtype=np.uint8)
    out[: LEVELS + 1, :3] = np.rint(rgb)  # a Uint8ClampedArray rounds half to even, as rint does
    out[: LEVELS + 1, 3] = 255
    return out


def overview(
    panel: Any, max_side: int, visible: Any = None
) -> tuple[np.ndarray, np.ndarray | None, int]:
    """A ``[Q, K]`` map as the widget sends it: max-pooled to at most ``max_side`` cells a side.

    Returns ``(pooled [ceil(Q/f), ceil(K/f)], pooled visibility or None, f)``;
    ``f = 1`` means full resolution.
    """
    Q, K = np.shape(panel)[-2:]
    factor = pool_factor(Q, K, max_side)
    pooled, vis = pool_max(panel, factor, visible)
    return pooled, vis, factor


def sqrt_ticks(high: float, most: int) -> list[float]:
    """0 and up to ``most`` round weights (1, 2 or 5 times a power of ten) up to ``high``, near
    ``i / most`` of the way up a square-root scale (i = 1..most): the colour bar's ticks, the
    top one near the bar's top (the widget's colour bar, js/src/heatmap.ts sqrtTicks, follows
    the same rule)."""
    if not (math.isfinite(high) and high > 0):
        return [0.0]
    top = math.floor(math.log10(high))
    rounds = sorted(m * 10.0**e for e in range(top - 8, top + 1) for m in (1, 2, 5) if m * 10.0**e <= high)
    marks = [0.0]
    for i in range(1, most + 1):
        aim = math.sqrt(high) * i / most
        best = min(rounds, key=lambda v: abs(math.sqrt(v) - aim))
        if best > marks[-1]:
            marks.append(best)
    return marks


def encode_panel(
    panel: Any,
    *,
    vmax: float | None = None,
    visible: Any = None,
    sqrt: bool = False,
    **extra: Any,
) -> dict[str, Any]:
    """``[Q, K]`` weights -> ``{"buffer", "dtype": "uint8", "shape", "vmax", **extra}``.

    ``vmax``: the weight drawn with the colormap's top colour (default 1.0;
    weights above it saturate). ``visible``: bool ``[Q, K]``, False where the
    cell is masked. One byte per cell (:func:`quantize`), enough for the 256
    colours of a colormap. ``sqrt``: the levels are of the square root of the
    weight (level ``round(sqrt(v / vmax) * 254)``); the message then says
    ``"sqrt": True`` and the browser squares a level back for the hover.
    """
    panel = np.asarray(panel)
    if panel.ndim != 2:
        raise ValueError(f"panel: expected a 2-D [queries, keys] array, got shape {panel.shape}")
    vmax = 1.0 if vmax is None else float(vmax)
    if not math.isfinite(vmax) or vmax <= 0:
        raise ValueError(f"vmax: expected a positive finite number, got {vmax!r}")
    size = panel.size  # one byte a cell
    if size > MAX_PANEL_BYTES:
        raise ValueError(
            f"panel: {panel.shape[0]} x {panel.shape[1]} as uint8 is {size / 2**20:.1f} MiB, "
            f"over the {MAX_PANEL_BYTES / 2**20:.0f} MiB limit per panel; select fewer tokens"
        )
    if panel.dtype.kind not in "fiub":
        raise TypeError(f"panel: expected numeric weights, got dtype {panel.dtype}")
    if not np.isfinite(panel).all():
        raise ValueError("panel: expected finite weights (mark masked cells with visible=), got NaN or inf")
    if visible is not None:
        visible = np.asarray(visible, dtype=bool)
        if visible.shape != panel.shape:
            raise ValueError(f"visible: expected shape {panel.shape}, got {visible.shape}")
    if sqrt:  # quantize's float32 route on the square roots
        data = quantize(np.sqrt(np.clip(panel, 0, None), dtype=np.float32), math.sqrt(vmax), visible=visible)
        extra = {**extra, "sqrt": True}
    else:
        data = quantize(panel, vmax, visible=visible)
    return {
        "buffer": memoryview(data.tobytes()), "dtype": "uint8", "shape": list(panel.shape),
        "vmax": vmax, **extra,
    }


def encode_signed(diff: Any, factor: int, **extra: Any) -> dict[str, Any]:
    """A signed ``[Q, K]`` map (A - B) as a uint8 panel on the symmetric range ``[-span, span]``.

    Each ``factor x factor`` block keeps its largest magnitude with its sign;
    ``span`` (sent along) is the largest magnitude, so level 127 is 0.
    """
    pooled_hi, _ = pool_max(diff, factor)
    pooled_lo, _ = pool_max(-np.asarray(diff), factor)
    signed = np.where(pooled_hi >= pooled_lo, pooled_hi, -pooled_lo)
    span = max(float(np.abs(signed).max()), 1e-30)
    shifted = (signed / span + 1.0) / 2.0  # -span..span -> 0..1
    return encode_panel(shifted, vmax=1.0, pool=factor, span=span, **extra)


def encode_atlas(pooled: Any, visible: Any = None) -> dict[str, Any]:
    """Thumbnails ``[H, h, w]`` as one uint8 block, each on its own colour range (0..its largest
    weight, so weak heads still show their shape); ``visible`` is bool ``[h, w]``."""
    thumbs = [encode_panel(p, vmax=max(float(p.max()), 1e-30), visible=visible) for p in pooled]
    return {"buffer": memoryview(b"".join(bytes(t["buffer"]) for t in thumbs)), "dtype": "uint8",
            "shape": [len(thumbs), *np.shape(pooled)[1:]]}


def decode_panel(message: dict[str, Any]) -> np.ndarray:
    """Inverse of :func:`encode_panel`: float32 ``[Q, K]``, NaN where masked.

    uint8 levels are scaled back to ``level / 254 * vmax`` (within half a level).
    """
    dtype = message.get("dtype")
    if dtype not in DTYPES:
        raise ValueError(f"message['dtype']: expected one of {DTYPES}, got {dtype!r}")
    shape = tuple(int(s) for s in message["shape"])
    n = int(np.prod(shape))
    raw = np.frombuffer(bytes(message["buffer"]), dtype=np.uint8)
    if raw.size != n:
        raise ValueError(
            f"message['buffer']: expected {n} values for shape {shape}, got {raw.size}"
        )
    levels = raw.reshape(shape)
    with np.errstate(over="ignore"):  # a vmax beyond float32's range decodes to inf, as it must
        out = (levels * (float(message.get("vmax", 1.0)) / LEVELS)).astype(np.float32)
    out[levels == MASKED] = np.nan
    return out
