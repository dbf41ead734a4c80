"""A PNG picture of what an :class:`AttentionView` shows, drawn in Python with Pillow (no browser).

The view puts it in its display data beside the live widget (``image/png``),
so front ends without the widget manager — nbconvert, GitHub, nbviewer, a
notebook opened without its kernel where the front end falls back to the
picture — show the map instead of an error. It is drawn from the same uint8
panel the browser gets (``view.panel``: max-pooled to at most 512 cells a
side), through the same colour table, with the same threshold dimming and
the same caption, laid out like the canvas (js/src/heatmap.ts): query tokens
down the left, key tokens up the top, thinned so that labels are 11 px
apart, a colour bar with the threshold marked, masked cells hatched.

Token text is drawn as pixels; the display forms it gets already name
invisible characters (:func:`attnwidget.tokens.show_invisible`).
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import numpy as np

from attnwidget._codec import LEVELS, MASKED, colormap_rgb, level_rgba, sqrt_ticks

#: Side of the square plot area in pixels, and the margins for the token labels
#: (PLOT_PX, MARGIN_LEFT and MARGIN_TOP in js/src/heatmap.ts).
PLOT_PX = 512
MARGIN_LEFT = 96
MARGIN_TOP = 96
BAR_GAP, BAR_W, BAR_LABELS = 14, 12, 52
LABEL_PX = 11
#: Labels longer than this are cut (``shorten`` in heatmap.ts).
LABEL_CHARS = 12
#: The caption takes at most this many lines under the map.
CAPTION_LINES = 3
BACKGROUND = (255, 255, 255)
TEXT = (34, 34, 34)
MASKED_RGB = (158, 158, 158)  # the widget's --jp-border-color1 fallback
ACCENT = (232, 89, 12)  # --jp-brand-color1 fallback: the threshold mark
#: The hatch under masked cells: a diagonal line every this many pixels, as the canvas tile.
HATCH_PERIOD = 6


@lru_cache(maxsize=4)
def _font(size: int) -> Any:
    from PIL import ImageFont

    for name in ("DejaVuSans.ttf", "LiberationSans-Regular.ttf", "Arial.ttf"):
        try:
            return ImageFont.truetype(name, size)
        except OSError:
            continue
    return ImageFont.load_default(size=size)


def shorten(label: str, n: int = LABEL_CHARS) -> str:
    """One line of at most ``n`` characters (newlines and tabs would break the axis)."""
    flat = label.replace("\r", " ").replace("\n", " ").replace("\t", " ")
    return flat if len(flat) <= n else flat[: n - 1] + "…"


def thin(count: int, cell_px: float) -> list[int]:
    """Label positions at least :data:`LABEL_PX` apart (``thinLabels`` in heatmap.ts)."""
    step = max(1, math.ceil(LABEL_PX / max(cell_px, 1e-9)))
    return list(range(0, count, step))


def format_tick(v: float) -> str:
    """A colour bar tick as the widget writes it (``formatTick`` in heatmap.ts): up to three
    significant digits, in decimals down to 0.001, exponent form below (``4.0e-4``)."""
    if v == 0:
        return "0"
    if v >= 1e-3:
        return f"{v:.3g}"  # as JS String(Number(v.toPrecision(3))) for weights up to 1
    mantissa, exponent = f"{v:.1e}".split("e")
    return f"{mantissa}e{int(exponent):+d}"  # JS toExponential writes e-4, not e-04


def map_pixels(
    levels: np.ndarray, full_shape: tuple[int, int], pool: int, colormap: str, threshold: float, vmax: float,
    side: int = PLOT_PX, sqrt: bool = False,
) -> np.ndarray:
    """uint8 RGB ``[H, W, 3]`` of the plot area: each full-resolution cell ``side / max(Q, K)``
    pixels wide, coloured by its pooled level, dimmed below the threshold, masked cells hatched.

    ``levels``: uint8 ``[ceil(Q/pool), ceil(K/pool)]`` as :func:`attnwidget._codec.encode_panel`
    makes them; ``full_shape``: ``(Q, K)`` before pooling; ``sqrt``: the levels are of the square
    root of the weight (the "sqrt" scale), so the threshold dims from ``sqrt(threshold / vmax)``.
    """
    Q, K = full_shape
    cell = min(side / K, side / Q)
    H, W = max(1, round(cell * Q)), max(1, round(cell * K))
    # the full-resolution cell under each pixel's centre, then the pooled block holding it
    rows = np.minimum(((np.arange(H) + 0.5) / cell).astype(int), Q - 1) // pool
    cols = np.minimum(((np.arange(W) + 0.5) / cell).astype(int), K - 1) // pool
    place = math.sqrt(threshold / vmax) if sqrt else threshold / vmax
    rgba = level_rgba(colormap, place * LEVELS if threshold > 0 else 0.0, BACKGROUND)
    px = rgba[levels[rows[:, None], cols[None, :]]]  # [H, W, 4]
    yy, xx = np.mgrid[0:H, 0:W]
    hatch = np.where(((xx + yy) % HATCH_PERIOD == HATCH_PERIOD - 1)[..., None], MASKED_RGB, BACKGROUND)
    masked = px[..., 3] == 0
    out = px[..., :3].copy()
    out[masked] = hatch[masked]
    return out


def render(
    levels: Any, *, full_shape: tuple[int, int] | None = None, pool: int = 1, vmax: float = 1.0,
    colormap: str = "viridis", threshold: float = 0.0, caption: str = "",
    query_tokens: Sequence[str] = (), key_tokens: Sequence[str] = (), sqrt: bool = False,
) -> Any:
    """A ``PIL.Image`` (RGB) of one panel: tokens, map, colour bar, caption; see the module docstring.

    ``levels``: uint8 ``[rows, cols]`` (255 = masked); ``vmax``: the weight of level 254;
    ``sqrt``: the levels are of the square root of the weight (the colour bar says so).
    """
    from PIL import Image, ImageDraw

    levels = np.asarray(levels)
    if levels.ndim != 2 or levels.dtype != np.uint8:
        raise ValueError(f"levels: expected a 2-D uint8 array, got {levels.dtype} with shape {levels.shape}")
    Q, K = full_shape if full_shape is not None else levels.shape
    if not (threshold >= 0 and math.isfinite(vmax) and vmax > 0):
        raise ValueError(f"threshold, vmax: expected threshold >= 0 and vmax > 0, got {threshold}, {vmax}")
    plot = map_pixels(levels, (Q, K), pool, colormap, threshold, vmax, sqrt=sqrt)
    H, W = plot.shape[:2]
    font = _font(10)
    lines = _wrap(caption, font, MARGIN_LEFT + PLOT_PX + BAR_GAP + BAR_W + BAR_LABELS - 8)
    width = MARGIN_LEFT + PLOT_PX + BAR_GAP + BAR_W + BAR_LABELS
    height = MARGIN_TOP + max(H, 60) + 12 + 14 * len(lines) + 6
    img = Image.new("RGB", (width, height), BACKGROUND)
    img.paste(Image.fromarray(plot), (MARGIN_LEFT, MARGIN_TOP))
    draw = ImageDraw.Draw(img)
    cell = min(PLOT_PX / K, PLOT_PX / Q)
    for q in thin(Q, cell) if query_tokens else ():
        y = MARGIN_TOP + (q + 0.5) * cell
        draw.text((MARGIN_LEFT - 4, y), shorten(str(query_tokens[q])), fill=TEXT, font=font, anchor="rm")
    if key_tokens:  # drawn across a strip, turned a quarter left: they read upwards from the map
        strip = Image.new("RGB", (MARGIN_TOP, W), BACKGROUND)
        sdraw = ImageDraw.Draw(strip)
        for k in thin(K, cell):
            sdraw.text((4, (k + 0.5) * cell), shorten(str(key_tokens[k])), fill=TEXT, font=font, anchor="lm")
        img.paste(strip.rotate(90, expand=True), (MARGIN_LEFT, 0))
    _colour_bar(draw, colormap, vmax, threshold, max(H, 60), font, sqrt)
    y = MARGIN_TOP + max(H, 60) + 12
    for line in lines:
        draw.text((4, y), line, fill=TEXT, font=font)
        y += 14
    return img


def _colour_bar(draw: Any, colormap: str, vmax: float, threshold: float, h: int, font: Any,
                sqrt: bool = False) -> None:
    lut = colormap_rgb(colormap)
    x = MARGIN_LEFT + PLOT_PX + BAR_GAP
    for i in range(256):
        y0 = MARGIN_TOP + h - (i + 1) / 256 * h
        colour = tuple(int(c) for c in lut[i])
        draw.rectangle([x, math.floor(y0), x + BAR_W - 1, math.ceil(y0 + h / 256)], fill=colour)
    def place(v: float) -> float:  # 0..1 up the bar
        return math.sqrt(v / vmax) if sqrt else v / vmax

    for v in sqrt_ticks(vmax, 4) if sqrt else (0.0, 0.5 * vmax, vmax):
        draw.text((x + BAR_W + 3, MARGIN_TOP + h - place(v) * h), format_tick(v), fill=TEXT, font=font,
                  anchor="lm")
    if 0 < threshold <= vmax:
        y = MARGIN_TOP + h - place(threshold) * h
        draw.line([x - 3, y, x + BAR_W + 2, y], fill=ACCENT, width=2)
    draw.text((x - 4, MARGIN_TOP - 6), "weight (√)" if sqrt else "weight", fill=TEXT, font=font, anchor="ls")


def _wrap(text: str, font: Any, width: int) -> list[str]:
    """``text`` broken at spaces into lines of at most ``width`` pixels, at most CAPTION_LINES of them."""
    lines: list[str] = []
    current = ""
    for word in text.split(" "):
        trial = f"{current} {word}" if current else word
        if font.getlength(trial) <= width or not current:
            current = trial
        else:
            lines.append(current)
            current = word
    if current:
        lines.append(current)
    if len(lines) > CAPTION_LINES:
        lines = [*lines[: CAPTION_LINES - 1], lines[CAPTION_LINES - 1] + " …"]
    return lines


def _grid(view: Any) -> Any:
    """All heads of the layer as the grid mode shows them (each thumbnail on its own colour range)."""
    from PIL import Image, ImageDraw

    atlas = view.atlas
    if not atlas or atlas.get("layer") != view.layer:  # in a kernel the worker may still be on it
        from attnwidget._messages import atlas_message

        atlas = atlas_message(view.maps, view.layer)
    heads, rows, cols = atlas["shape"]
    thumbs = np.frombuffer(bytes(atlas["buffer"]), dtype=np.uint8).reshape(heads, rows, cols)
    n = math.ceil(math.sqrt(heads))
    size = PLOT_PX // n
    inner = size - 18
    font = _font(10)
    lines = _wrap(view.caption, font, n * size - 8)
    grid_rows = math.ceil(heads / n)
    img = Image.new("RGB", (n * size, grid_rows * size + 14 + 14 * len(lines) + 8), BACKGROUND)
    draw = ImageDraw.Draw(img)
    for h in range(heads):
        x, y = (h % n) * size, (h // n) * size + 14
        px = map_pixels(thumbs[h], (rows, cols), 1, view.colormap, 0.0, 1.0, side=inner)
        img.paste(Image.fromarray(px), (x + 2, y + 2))
        badge = atlas["badges"][h]
        draw.text((x + 2, y + inner + 16), f"{badge['name']} · {badge['grade']} · H {badge['entropy']:.2f}",
                  fill=TEXT, font=font, anchor="ls")
        if h == view.head:
            draw.rectangle([x + 1, y + 1, x + inner + 3, y + inner + 3], outline=ACCENT, width=3)
    y = grid_rows * size + 20
    for line in lines:
        draw.text((4, y), line, fill=TEXT, font=font)
        y += 14
    return img


def view_image(view: Any) -> Any:
    """The ``PIL.Image`` of what ``view`` shows now (its ``panel``, or every head in grid mode)."""
    if view.mode == "grid":
        return _grid(view)
    panel = view.panel
    rows, cols = panel["shape"]
    levels = np.frombuffer(bytes(panel["buffer"]), dtype=np.uint8).reshape(rows, cols)
    full_shape = tuple(panel.get("full_shape", (rows, cols)))
    return render(levels, full_shape=full_shape, pool=int(panel.get("pool", 1)), vmax=float(panel["vmax"]),
                  colormap=view.colormap,
                  threshold=float(view.threshold) if view.dim else 0.0, caption=view.caption,
                  query_tokens=view.query_tokens, key_tokens=view.key_tokens, sqrt=bool(panel.get("sqrt")))


def png_bytes(image: Any) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


def view_png(view: Any) -> bytes:
    """PNG bytes of :func:`view_image`."""
    return png_bytes(view_image(view))


def view_png_base64(view: Any) -> str:
    """What a notebook's display data holds under ``image/png``: :func:`view_png` in base64."""
    return base64.b64encode(view_png(view)).decode("ascii")


def with_snapshot(view: Any, bundle: Any, options: dict[str, Any]) -> Any:
    """A widget's display ``bundle`` plus ``image/png`` (:func:`view_png_base64`) unless
    ``options`` (``include``/``exclude`` of ``_repr_mimebundle_``) leave it out.

    Drawn once per display, not on every slider move: a notebook keeps the display data of
    the moment it was shown, and re-displaying the view takes a new picture. A picture that
    fails is a warning, never a missing live view.
    """
    wanted = "image/png" not in (options.get("exclude") or ()) and (
        not options.get("include") or "image/png" in options["include"])
    if not bundle or not wanted:
        return bundle
    data, metadata = bundle if isinstance(bundle, tuple) else (bundle, {})
    try:
        png = view_png_base64(view)
    except Exception as exc:  # no picture must not mean no live view: say why, show the view
        import warnings

        warnings.warn(f"attnwidget: no PNG snapshot in the display data: {type(exc).__name__}: {exc}",
                      stacklevel=3)
        return bundle
    return {**data, "image/png": png}, metadata


__all__ = ["MASKED", "render", "view_image", "view_png", "view_png_base64", "with_snapshot"]
