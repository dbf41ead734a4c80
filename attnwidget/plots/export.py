"""Saving figures: offline HTML, and PNG/SVG through one headless Chromium per call.

PNG and SVG are rendered in Debian's chromium driven by chromedriver
(``pip install 'attnwidget[export]'`` for selenium). Starting the browser costs
about a second, so :class:`Exporter` keeps one driver for all the figures of a
call (the report's dozen figures, a lab's folder of figures), and
:meth:`Exporter.export_all` puts all the PNGs of a call on one page: BokehJS is
loaded and the figures laid out once, then each figure's box is captured
(Chrome's ``Page.captureScreenshot``). Bokeh's own ``export_png`` loads a page
per figure; for the report's ten figures that took 21.6 s against 12.2 s this way
(``benchmarks/bench_report.py``, MiniLM at 128 tokens; the same pixels). SVGs go
through bokeh's ``export_svg``. Without a browser or selenium, export raises
:class:`BrowserUnavailableError`, whose message is one line saying what to install.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import os
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

CHROMIUM_ARGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--hide-scrollbars")
SUFFIXES = (".html", ".png", ".svg")
#: How long the PNG page may take to lay out and draw its figures (s) before export fails.
RENDER_TIMEOUT_S = 120.0
INSTALL_HINT = ("Debian/Ubuntu: apt-get install chromium chromium-driver, then pip install "
                "'attnwidget[export]' (selenium); set CHROMIUM_PATH/CHROMEDRIVER_PATH if they live elsewhere")


class BrowserUnavailableError(RuntimeError):
    """PNG/SVG export needs Chromium, chromedriver and selenium, and one of them is missing.

    The message is one line: what is missing and what to install.
    """


def save_html(fig: Any, path: str | Path, title: str = "attnwidget figure") -> Path:
    """Write a standalone HTML file with bokeh's JavaScript inlined: it opens offline, no CDN."""
    from bokeh.embed import file_html
    from bokeh.resources import INLINE

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(file_html(fig, INLINE, title), encoding="utf-8")
    return path


def _find(env: str, names: Sequence[str]) -> str | None:
    """An executable: the path in ``env`` when set (None when nothing runnable is there), else on PATH."""
    if os.environ.get(env):
        path = os.environ[env]
        return path if os.path.isfile(path) and os.access(path, os.X_OK) else None
    for name in names:
        path = shutil.which(name)
        if path:
            return path
    return None


def check_browser() -> tuple[str, str]:
    """``(chromium, chromedriver)`` paths once selenium imports; else :class:`BrowserUnavailableError`."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        raise BrowserUnavailableError(
            f"PNG/SVG export needs selenium, which is not installed ({INSTALL_HINT})") from None
    browser = _find("CHROMIUM_PATH", ("chromium", "chromium-browser", "google-chrome"))
    driver = _find("CHROMEDRIVER_PATH", ("chromedriver",))
    missing = [name for name, path in (("chromium", browser), ("chromedriver", driver)) if path is None]
    if missing:
        raise BrowserUnavailableError(
            f"PNG/SVG export needs {' and '.join(missing)}, not found ({INSTALL_HINT})")
    return browser, driver  # type: ignore[return-value]


def _webdriver(scale: float = 1.0) -> Any:
    """A headless Chromium driven by Debian's chromedriver, offline, with a fresh profile that
    its ``quit()`` removes (Chromium writes a few MB there; each export made one more)."""
    browser, driver = check_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    class Chrome(webdriver.Chrome):
        def quit(self) -> None:
            try:
                super().quit()
            finally:
                shutil.rmtree(profile, ignore_errors=True)

    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for arg in CHROMIUM_ARGS:
        options.add_argument(arg)
    profile = tempfile.mkdtemp(prefix="aw-export-")
    options.add_argument(f"--user-data-dir={profile}")
    options.add_argument(f"--force-device-scale-factor={scale}")  # bokeh renders PNGs at this ratio
    try:
        chrome = Chrome(service=Service(executable_path=driver), options=options)
    except Exception as exc:  # a broken install: say so in one line, not selenium's page of text
        shutil.rmtree(profile, ignore_errors=True)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BrowserUnavailableError(f"PNG/SVG export could not start {browser} with {driver}: {first} "
                                 f"({INSTALL_HINT})") from exc
    chrome.profile_dir = profile
    return chrome


def _check_path(path: str | Path) -> tuple[Path, str]:
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise ValueError(f"path: expected a .html, .png or .svg file name, got {path.name!r}")
    return path, suffix


class Components:
    """Figures serialized once (bokeh's standalone documents) for two pages: one that shows them
    as they are, the report's, and the PNG page, which draws them as :func:`_printed` does,
    without toolbars; there the toolbars come off the serialized models instead of the figures.

    Serializing is the larger part of a report's build (a MiniLM layer grid is some 450
    models), and ``components()`` of the same figures for each page did it twice.
    ``divs`` holds each figure's ``<div>``, in order; :meth:`script` the script that draws them.
    """

    def __init__(self, figs: Sequence[Any]) -> None:
        from bokeh.core.templates import MACROS, ROOT_DIV
        from bokeh.embed.util import OutputDocumentFor, standalone_docs_json_and_render_items

        self.figs = list({id(fig): fig for fig in figs}.values())  # bokeh draws a root once
        with OutputDocumentFor(self.figs):
            self._docs, [self._item] = standalone_docs_json_and_render_items(self.figs)
        self.divs = [ROOT_DIV.render(root=root, macros=MACROS) for root in self._item.roots]
        # the models _printed would switch: each figure, and every plot and grid in it
        self._toolbars = {m.id for fig in self.figs for m in _printable(fig)}

    def script(self, printed: bool = False) -> str:
        """The ``<script>`` that draws :attr:`divs` (BokehJS loaded first); ``printed``: without
        any toolbar, as :func:`_printed` makes them."""
        from bokeh.embed.bundle import Script, bundle_for_objs_and_resources
        from bokeh.embed.elements import script_for_render_items

        docs = _without_toolbars(copy.deepcopy(self._docs), self._toolbars) if printed else self._docs
        bundle = bundle_for_objs_and_resources(None, None)
        bundle.add(Script(script_for_render_items(docs, [self._item])))
        return bundle.scripts(tag=True)


def _without_toolbars(node: Any, ids: set[str]) -> Any:
    """Serialized bokeh documents with ``toolbar_location`` null on the models in ``ids``: on
    their definitions (a model is written out once, later mentions are ``{"id": ...}``)."""
    if isinstance(node, dict):
        if node.get("type") == "object" and node.get("id") in ids:
            node.setdefault("attributes", {})["toolbar_location"] = None
        for value in node.values():
            _without_toolbars(value, ids)
    elif isinstance(node, list):
        for value in node:
            _without_toolbars(value, ids)
    return node


class Exporter:
    """One browser for many figures: ``with Exporter() as ex: ex.export(fig, "a.png"); ...``.

    The driver starts at the first PNG or SVG (HTML needs none) and quits on
    exit. ``scale``: PNG pixels per CSS pixel (2 = print resolution).
    """

    def __init__(self, scale: float = 2.0) -> None:
        if not (isinstance(scale, (int, float)) and 0 < scale <= 8):
            raise ValueError(f"scale: expected a number in (0, 8], got {scale!r}")
        self.scale = float(scale)
        self._driver: Any = None
        self.drivers_started = 0  # how many browsers this exporter started (one, at most)

    def __enter__(self) -> Exporter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Quit the browser (if one was started)."""
        if self._driver is not None:
            driver, self._driver = self._driver, None
            driver.quit()

    def driver(self) -> Any:
        if self._driver is None:
            # one device scale for PNG and SVG alike: bokeh's export_png sets the page's ratio
            # from scale_factor, and an SVG's coordinates are CSS pixels whatever the ratio
            self._driver = _webdriver(self.scale)
            self.drivers_started += 1
        return self._driver

    def export(self, fig: Any, path: str | Path, title: str = "attnwidget figure") -> Path:
        """Save ``fig`` as ``.html``, ``.png`` (``scale`` x its CSS size) or ``.svg``; returns the path."""
        path, suffix = _check_path(path)
        if suffix == ".html":
            return save_html(fig, path, title)
        if suffix == ".png":
            self._pngs([(fig, path)])
            return path
        from bokeh.io import export_svg

        driver = self.driver()
        path.parent.mkdir(parents=True, exist_ok=True)
        with _printed(fig, svg=True):
            export_svg(fig, filename=str(path), webdriver=driver)
        return path

    def export_all(self, items: Iterable[tuple[Any, str | Path]],
                   serialized: Components | None = None) -> list[Path]:
        """Every ``(figure, path)`` with the one browser, the PNGs on one page; returns the
        paths in the order given. ``serialized``: :class:`Components` of some of the figures,
        made for another page already (the report's), which the PNG page then reuses."""
        items = [(fig, *_check_path(path)) for fig, path in items]
        self._pngs([(fig, path) for fig, path, suffix in items if suffix == ".png"], serialized)
        return [path if suffix == ".png" else self.export(fig, path) for fig, path, suffix in items]

    def _pngs(self, items: list[tuple[Any, Path]], serialized: Components | None = None) -> None:
        """Draw every figure on one page and capture each one's box as ``scale`` x its CSS size.

        The figures of ``serialized`` are drawn from it, all of them (its script draws them
        together); the others are serialized here. Both without toolbars, as :func:`_printed`
        makes them."""
        if not items:
            return
        from bokeh.resources import INLINE

        driver = self.driver()
        wanted = {id(fig): fig for fig, _ in items}  # a figure is drawn once
        parts = []
        if serialized is not None and any(id(fig) in wanted for fig in serialized.figs):
            parts.append(serialized)  # drawn whole: its script draws every one of its figures
        done = {id(fig) for part in parts for fig in part.figs}
        rest = [fig for key, fig in wanted.items() if key not in done]
        if rest:  # their toolbars come off in the serialized page (script(printed=True))
            parts.append(Components(rest))
        figs = [fig for part in parts for fig in part.figs]
        script = "".join(part.script(printed=True) for part in parts)
        # one box per figure, each as wide as its figure: what is captured is the box
        boxes = "".join(f'<div class="aw-print" style="width:max-content">{div}</div>'
                        for part in parts for div in part.divs)
        page = (f"<!doctype html><html><head><meta charset='utf-8'>{INLINE.render()}"
                "<style>html,body{margin:0;padding:0;background:white}</style></head>"
                f"<body>{boxes}{script}</body></html>")
        with tempfile.TemporaryDirectory(prefix="aw-png-") as tmp:
            html = Path(tmp) / "figures.html"
            html.write_text(page, encoding="utf-8")
            driver.get(html.as_uri())
            rects = dict(zip(map(id, figs), _drawn_boxes(driver, len(figs), len(parts)), strict=True))
        for fig, path in items:
            x, y, width, height = rects[id(fig)]
            shot = driver.execute_cdp_cmd("Page.captureScreenshot", {
                "format": "png", "captureBeyondViewport": True,
                "clip": {"x": x, "y": y, "width": width, "height": height, "scale": 1}})
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(base64.b64decode(shot["data"]))


_BOXES = """return [...document.querySelectorAll('.aw-print')].map((e) => {
  const r = e.getBoundingClientRect();
  return [r.left + scrollX, r.top + scrollY, r.width, r.height].map(Math.round);
});"""
_IDLE = ("return !!window.Bokeh && Bokeh.documents.length >= arguments[0] && "
         "Bokeh.documents.every((d) => d.is_idle)")


def _drawn_boxes(driver: Any, n: int, docs: int = 1) -> list[list[int]]:
    """Wait until bokeh has drawn every figure of the page (its ``docs`` documents there and
    idle), then return the ``n`` boxes ``[x, y, width, height]`` in CSS pixels of the
    document. The window is widened first when a figure is wider than it (a box outside the
    viewport is captured all the same, but a layout must not depend on the window)."""
    deadline = time.monotonic() + RENDER_TIMEOUT_S
    widened = False
    while True:
        while not driver.execute_script(_IDLE, docs):
            if time.monotonic() > deadline:
                raise RuntimeError(f"PNG export: bokeh did not finish drawing the figures within "
                                   f"{RENDER_TIMEOUT_S:.0f} s")
            time.sleep(0.05)
        rects = driver.execute_script(_BOXES)
        if len(rects) != n or any(w <= 0 or h <= 0 for _, _, w, h in rects):
            raise RuntimeError(f"PNG export: expected {n} drawn figures, the page has boxes {rects}")
        need = max(x + w for x, _, w, _ in rects) + 20
        if widened or need <= driver.execute_script("return window.innerWidth"):
            break
        size = driver.get_window_size()
        driver.set_window_size(need + 100, size["height"])
        widened = True
        time.sleep(0.1)  # the resize event's relayout starts; idle is waited for again
    return rects


def _printable(fig: Any) -> list[Any]:
    """``fig`` and every plot and grid in it (a grid has a toolbar of its own), once each."""
    from bokeh.models import GridPlot, Plot

    parts = [fig] if isinstance(fig, (Plot, GridPlot)) else []
    if hasattr(fig, "select"):
        parts += [*fig.select({"type": Plot}), *fig.select({"type": GridPlot})]
    return list(dict.fromkeys(parts))


@contextlib.contextmanager
def _printed(fig: Any, svg: bool = False) -> Iterator[None]:
    """``fig`` as printed: no toolbar on it or on any plot in it (a grid has its own), and
    with ``svg`` every plot drawn as SVG; put back afterwards."""
    from bokeh.models import Plot

    saved = [(m, m.toolbar_location, getattr(m, "output_backend", None)) for m in _printable(fig)]
    try:
        for m, _, _ in saved:
            m.toolbar_location = None
            if svg and isinstance(m, Plot):
                m.output_backend = "svg"
        yield
    finally:
        for m, where, backend in saved:
            m.toolbar_location = where
            if isinstance(m, Plot):
                m.output_backend = backend


def export(fig: Any, path: str | Path, *, scale: float = 2.0, title: str = "attnwidget figure") -> Path:
    """Save a figure as ``.html`` (offline), ``.png`` (``scale`` x its CSS size, for print) or ``.svg``.

    PNG and SVG are rendered by a headless Chromium (bokeh's exporter), with no
    network; :class:`Exporter` keeps one browser for several figures. Without
    Chromium, chromedriver or selenium this raises :class:`BrowserUnavailableError`
    (one line: what to install); ``.html`` needs none of them.
    """
    with Exporter(scale) as exporter:
        return exporter.export(fig, path, title)
