"""Static attention figures with bokeh, from the same record and metrics the widget uses.

Every function takes an :class:`AttentionMaps` (or weights, where noted) and
returns a bokeh model; :func:`save_html` writes it as one standalone HTML file
with bokeh's JavaScript inlined, so it opens offline. Token text reaches the
figure only as data (axis labels, hover fields), never as HTML.

Figures: :func:`heatmap` (one head), :func:`heads_grid` (small multiples of a
layer, with the head average only as an extra, labelled panel),
:func:`entropy_grid` (layer x head), :func:`similarity_matrix` (KL or JS between
heads), :func:`rollout_figure`, :func:`last_query_figure`, :func:`received_figure`,
:func:`recency_figure` (several samples, error bars), :func:`scaling_figure`
(the scaling experiment) and :func:`mask_figure` (causal vs reverse mask).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from bokeh.layouts import gridplot, row
from bokeh.models import (
    BasicTicker,
    ColorBar,
    ColumnDataSource,
    HoverTool,
    LinearColorMapper,
    Whisker,
)
from bokeh.palettes import Cividis256, Greys256, Inferno256, Magma256, Plasma256, Viridis256
from bokeh.plotting import figure

from attnwidget import metrics as M  # noqa: N812 (the package's usual short name)
from attnwidget.maps import AttentionMaps
from attnwidget.tokens import show_invisible

PALETTES = {"viridis": Viridis256, "plasma": Plasma256, "magma": Magma256, "inferno": Inferno256,
            "cividis": Cividis256, "greys": tuple(reversed(Greys256))}
#: Text in titles is shortened to this many characters.
TITLE_TEXT_CHARS = 60


def _palette(name: str) -> Sequence[str]:
    if name not in PALETTES:
        raise ValueError(f"palette: expected one of {tuple(PALETTES)}, got {name!r}")
    return PALETTES[name]


def _as_maps(maps: Any) -> AttentionMaps:
    if isinstance(maps, AttentionMaps):
        return maps
    return AttentionMaps.from_tensor(maps)


#: Axis labels show at most this many characters of a token (hover shows the whole token).
AXIS_LABEL_CHARS = 32


def _short(text: str | None, n: int = TITLE_TEXT_CHARS) -> str:
    text = (text or "").replace("\n", " ")
    return text if len(text) <= n else text[: n - 1] + "…"


def caption(maps: AttentionMaps, layer: int, head: int | None) -> str:
    """Provenance line: model · layer · head · masking · “text”."""
    what = "head average (AVERAGE, not a head)" if head is None else maps.head_names[head]
    masking = "causal mask" if maps.causal else "no causal mask"
    text = _short(show_invisible(maps.text or ""))
    return show_invisible(f"{maps.model_name or 'unknown model'} · {maps.layer_names[layer]} · {what} · "
                          f"{masking}" + (f" · “{text}”" if text else ""))


def _matrix_figure(
    w: np.ndarray, query_labels: Sequence[str], key_labels: Sequence[str], title: str,
    palette: str = "viridis", vmax: float | None = 1.0, annotate: bool = False, size: int = 520,
    colorbar_title: str = "Attention weight", low: float = 0.0, tools: bool = True,
    threshold: float | None = None,
) -> Any:
    """One ``[Q, K]`` matrix as rectangles, queries down and keys across.

    ``threshold``: cells strictly below it are drawn faint (as the widget dims them).
    """
    w = np.asarray(w, dtype=float)
    Q, K = w.shape
    query_labels = [show_invisible(str(t)) for t in query_labels]
    key_labels = [show_invisible(str(t)) for t in key_labels]
    qi, ki = np.meshgrid(np.arange(Q), np.arange(K), indexing="ij")
    source = ColumnDataSource({
        "x": ki.ravel(), "y": qi.ravel(), "weight": w.ravel(),
        "query": np.asarray(list(query_labels), dtype=object)[qi.ravel()],
        "key": np.asarray(list(key_labels), dtype=object)[ki.ravel()],
        "alpha": np.where(w.ravel() < threshold, 0.2, 1.0) if threshold else np.ones(w.size),
    })
    high = float(np.nanmax(w)) if vmax is None else float(vmax)
    mapper = LinearColorMapper(palette=list(_palette(palette)), low=low, high=high if high > low else low + 1)
    fig = figure(title=title, width=size + 90, height=size, x_range=(-0.5, K - 0.5), y_range=(Q - 0.5, -0.5),
                 tools="pan,wheel_zoom,box_zoom,reset,save" if tools else "", toolbar_location="above")
    fig.rect("x", "y", 1, 1, source=source, fill_color={"field": "weight", "transform": mapper},
             fill_alpha="alpha", line_color=None)
    fig.add_tools(HoverTool(tooltips=[("query", "@query"), ("key", "@key"), ("weight", "@weight{0.0000}")]))
    step_q = max(1, int(np.ceil(Q / 40)))
    step_k = max(1, int(np.ceil(K / 40)))
    fig.yaxis.ticker = list(range(0, Q, step_q))
    fig.xaxis.ticker = list(range(0, K, step_k))
    # labels are plain strings handed to bokeh: it draws them as text on the canvas. A long
    # token would push the map aside, so the axis shows its start (the hover shows all of it)
    fig.yaxis.major_label_overrides = {i: _short(query_labels[i], AXIS_LABEL_CHARS)
                                       for i in range(0, Q, step_q)}
    fig.xaxis.major_label_overrides = {i: _short(key_labels[i], AXIS_LABEL_CHARS)
                                       for i in range(0, K, step_k)}
    fig.xaxis.major_label_orientation = 1.2
    fig.xaxis.axis_label = "key"
    fig.yaxis.axis_label = "query"
    fig.grid.visible = False
    bar = ColorBar(color_mapper=mapper, title=colorbar_title, ticker=BasicTicker(desired_num_ticks=5))
    fig.add_layout(bar, "right")
    if annotate:
        if Q * K > 400:
            raise ValueError(f"annotate: value labels need a small map (at most 400 cells), got {Q} x {K}")
        source.data["text"] = [f"{v:.2f}" for v in w.ravel()]
        fig.text("x", "y", text="text", source=source, text_align="center", text_baseline="middle",
                 text_font_size="9px", text_color="white")
    return fig


def matrix_figure(
    weights: Any, query_labels: Sequence[str], key_labels: Sequence[str], title: str, *,
    palette: str = "viridis", adaptive: bool = False, threshold: float | None = None, size: int = 520,
    annotate: bool = False,
) -> Any:
    """Any ``[Q, K]`` map (a head, a head average, a rollout) with tokens, colour bar and hover.

    ``annotate=True`` writes each value in its cell (small maps only, at most 400 cells).
    """
    return _matrix_figure(np.asarray(weights), query_labels, key_labels, title, palette,
                          None if adaptive else 1.0, annotate, size=size, threshold=threshold)


def heatmap(
    maps: Any, layer: int = 0, head: int = 0, *, palette: str = "viridis", adaptive: bool = False,
    annotate: bool = False, size: int = 520, threshold: float | None = None,
) -> Any:
    """One head: tokens on both axes, colour bar "Attention weight", hover, a provenance title.

    Colours span 0..1 unless ``adaptive=True`` (0..the head's largest weight);
    ``annotate=True`` writes each value in its cell (small maps only).
    """
    maps = _as_maps(maps)
    w = maps.head(layer, head)
    return _matrix_figure(w, maps.query_display, maps.key_display, caption(maps, layer, head), palette,
                          None if adaptive else 1.0, annotate, size, threshold=threshold)


def heads_grid(
    maps: Any, layer: int | None = 0, *, ncols: int = 4, palette: str = "viridis", size: int = 220,
    include_average: bool = True,
) -> Any:
    """Small multiples: every head of ``layer`` (``None``: of every layer), each titled with
    ``L{l} H{h} · H={entropy} · {grade}``; the head average, when asked, is one extra panel
    titled as an average, never a replacement for the heads."""
    maps = _as_maps(maps)
    layers = range(maps.n_layers) if layer is None else [layer]
    panels = []
    for li in layers:
        entropy = M.compute_attention_statistics(maps.layer(li))["mean_entropy"]
        grades = M.sharpness_grade(maps.layer(li))
        for h in range(maps.n_heads):
            title = f"L{li} H{h} · H={float(entropy[h]):.2f} · {grades[h]}"
            panels.append(_matrix_figure(maps.head(li, h), maps.query_display, maps.key_display, title,
                                         palette, None, size=size, tools=False))
        if include_average:
            avg = maps.layer(li).mean(0)
            panels.append(_matrix_figure(avg, maps.query_display, maps.key_display,
                                         f"L{li} AVERAGE of {maps.n_heads} heads (not a head)",
                                         palette, None, size=size, tools=False))
    return gridplot(panels, ncols=ncols, toolbar_location=None)


def entropy_grid(maps: Any, *, palette: str = "viridis") -> Any:
    """Mean row entropy (nats) of every head, layers down and heads across."""
    maps = _as_maps(maps)
    ent = np.asarray(M.compute_attention_statistics(maps)["mean_entropy"], dtype=float)  # [L, H]
    return _matrix_figure(ent, list(maps.layer_names), list(maps.head_names),
                          f"Mean entropy per head (nats) · {maps.model_name or ''}", palette, None,
                          size=360, colorbar_title="entropy (nats)")


def similarity_matrix(maps: Any, layer: int = 0, *, method: str = "js", palette: str = "viridis") -> Any:
    """How different the heads of a layer are: Jensen-Shannon distance (``js``) or KL (``kl``)."""
    maps = _as_maps(maps)
    if method not in ("js", "kl"):
        raise ValueError(f"method: expected 'js' or 'kl', got {method!r}")
    w = maps.layer(layer)
    d = M.js_distance_matrix(w) if method == "js" else M.kl_divergence_matrix(w)
    names = list(maps.head_names)
    label = "Jensen-Shannon distance" if method == "js" else "KL divergence (nats)"
    return _matrix_figure(d, names, names, f"{label} between heads · {maps.layer_names[layer]}", palette,
                          None, size=360, colorbar_title=label)


def rollout_figure(maps: Any, layer: int | None = None, *, palette: str = "viridis") -> Any:
    """Attention rollout up to ``layer`` (default: the last); see :func:`metrics.attention_rollout`."""
    maps = _as_maps(maps)
    roll = M.attention_rollout(maps)
    li = maps.n_layers - 1 if layer is None else layer
    return _matrix_figure(roll[li], maps.query_display, maps.key_display,
                          f"Attention rollout to {maps.layer_names[li]} (not an explanation)", palette, None)


def last_query_figure(maps: Any, layer: int = 0, head: int = 0) -> Any:
    """The last query's weight over every key position (its history), as a line."""
    maps = _as_maps(maps)
    profile = maps.head(layer, head)[-1]
    fig = figure(title=f"Last query's attention over the history · {caption(maps, layer, head)}",
                 width=700, height=260, x_axis_label="key position", y_axis_label="weight")
    fig.line(np.arange(len(profile)), profile, line_width=2)
    fig.add_tools(HoverTool(tooltips=[("position", "$index"), ("weight", "@y{0.0000}")]))
    return fig


def received_figure(maps: Any, layer: int = 0, head: int = 0) -> Any:
    """Attention received per key position (mean over queries), as bars."""
    maps = _as_maps(maps)
    received = M.attention_received(maps.head(layer, head), causal=maps.causal)
    fig = figure(title=f"Attention received per position · {caption(maps, layer, head)}", width=700,
                 height=260, x_axis_label="key position", y_axis_label="mean weight received")
    fig.vbar(x=np.arange(len(received)), top=received, width=0.8)
    return fig


def recency_figure(samples: Sequence[Any], *, causal: bool = True, layer: int = 0) -> Any:
    """Recency ratio of each head of ``layer`` over several samples: mean with ±1 std error bars."""
    hist = M.history_metrics(samples, causal=causal)
    mean = np.asarray(hist["recency_ratio"]["mean"], dtype=float)[layer]
    std = np.asarray(hist["recency_ratio"]["std"], dtype=float)[layer]
    x = np.arange(len(mean))
    source = ColumnDataSource({"x": x, "mean": mean, "lower": mean - std, "upper": mean + std})
    fig = figure(title=f"Recency ratio per head over {len(samples)} samples (layer {layer})", width=600,
                 height=300, x_axis_label="head", y_axis_label="recent / distant weight")
    fig.vbar(x="x", top="mean", width=0.7, source=source)
    fig.add_layout(Whisker(source=source, base="x", upper="upper", lower="lower"))
    return fig


def scaling_figure(result: dict[str, list] | None = None) -> Any:
    """The scaling experiment: max weight, gradient size and entropy against d_k, scaled vs unscaled."""
    from attnwidget.scratch import scaling_experiment

    result = result or scaling_experiment()
    panels = []
    for key, label in (("max_weight", "largest weight (1 = saturated)"),
                       ("grad_norm", "gradient size at the scores"), ("entropy", "entropy (nats)")):
        fig = figure(title=label, width=320, height=280, x_axis_type="log", x_axis_label="d_k")
        for scaled, colour, name in ((False, "#c62828", "no scale"), (True, "#1565c0", "1/sqrt(d_k)")):
            xs = [d for d, s in zip(result["d_k"], result["scaled"], strict=True) if s == scaled]
            ys = [v for v, s in zip(result[key], result["scaled"], strict=True) if s == scaled]
            fig.line(xs, ys, color=colour, legend_label=name, line_width=2)
            fig.scatter(xs, ys, color=colour, size=6)
        fig.legend.location = "top_left" if key == "max_weight" else "top_right"
        panels.append(fig)
    return row(*panels)


def mask_figure(n: int = 8) -> Any:
    """The causal and the reverse mask side by side (1 = may attend)."""
    from attnwidget.scratch import causal_mask, reverse_mask

    labels = [str(i) for i in range(n)]
    return row(
        _matrix_figure(causal_mask(n).float().numpy(), labels, labels, "causal: the past", "greys", 1.0,
                       size=280, colorbar_title="may attend"),
        _matrix_figure(reverse_mask(n).float().numpy(), labels, labels, "reverse: the future (a cheat)",
                       "greys", 1.0, size=280, colorbar_title="may attend"),
    )


def save_html(fig: Any, path: str | Path, title: str = "attnwidget figure") -> Path:
    """Write a standalone HTML file with bokeh's JavaScript inlined: it opens offline, no CDN."""
    from bokeh.embed import file_html
    from bokeh.resources import INLINE

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(file_html(fig, INLINE, title), encoding="utf-8")
    return path


# --------------------------------------------------------------------------- export
CHROMIUM_ARGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync")


def _find(env: str, names: Sequence[str]) -> str | None:
    import os
    import shutil

    if os.environ.get(env):
        return os.environ[env]
    for name in names:
        path = shutil.which(name)
        if path:
            return path
    return None


def _webdriver(scale: float = 1.0) -> Any:
    """A headless Chromium driven by Debian's chromedriver, offline, with a fresh profile."""
    import tempfile

    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError as exc:
        raise ModuleNotFoundError(
            "PNG/SVG export needs selenium: pip install 'attnwidget[export]'"
        ) from exc
    browser = _find("CHROMIUM_PATH", ("chromium", "chromium-browser", "google-chrome"))
    driver = _find("CHROMEDRIVER_PATH", ("chromedriver",))
    if browser is None or driver is None:
        raise FileNotFoundError(
            "PNG/SVG export needs Chromium and chromedriver (Debian: apt-get install chromium "
            "chromium-driver, or scripts/install-browser.sh); set CHROMIUM_PATH/CHROMEDRIVER_PATH "
            "if they live elsewhere"
        )
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for arg in CHROMIUM_ARGS:
        options.add_argument(arg)
    options.add_argument(f"--user-data-dir={tempfile.mkdtemp(prefix='aw-export-')}")
    options.add_argument(f"--force-device-scale-factor={scale}")  # bokeh renders PNGs at this ratio
    return webdriver.Chrome(service=Service(executable_path=driver), options=options)


def _svg_backend(obj: Any) -> None:
    for fig in obj.select({"type": figure().__class__}) if hasattr(obj, "select") else []:
        fig.output_backend = "svg"
    if hasattr(obj, "output_backend"):
        obj.output_backend = "svg"


def export(fig: Any, path: str | Path, *, scale: float = 2.0, title: str = "attnwidget figure") -> Path:
    """Save a figure as ``.html`` (offline), ``.png`` (``scale`` x its CSS size, for print) or ``.svg``.

    PNG and SVG are rendered by a headless Chromium (bokeh's exporter), with no network.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".html":
        return save_html(fig, path, title)
    if suffix not in (".png", ".svg"):
        raise ValueError(f"path: expected a .html, .png or .svg file name, got {path.name!r}")
    from bokeh.io import export_png, export_svg

    path.parent.mkdir(parents=True, exist_ok=True)
    driver = _webdriver(scale if suffix == ".png" else 1.0)
    figs = list(fig.select({"type": figure().__class__})) if hasattr(fig, "select") else [fig]
    toolbars = [(f, f.toolbar_location) for f in figs]
    for f, _ in toolbars:  # a printed figure has no buttons
        f.toolbar_location = None
    try:
        if suffix == ".png":
            export_png(fig, filename=str(path), webdriver=driver, scale_factor=scale)
        else:
            _svg_backend(fig)
            export_svg(fig, filename=str(path), webdriver=driver)
    finally:
        driver.quit()
        for f, where in toolbars:
            f.toolbar_location = where
    return path
