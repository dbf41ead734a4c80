"""Saving figures: offline HTML, and PNG/SVG through one headless Chromium per call.

PNG and SVG are rendered by bokeh's exporter in Debian's chromium driven by
chromedriver (``pip install 'attnwidget[export]'`` for selenium). Starting
the browser costs about a second, so :class:`Exporter` keeps one driver for
all the figures of a call (the report's dozen figures, a lab's folder of
figures). Without a browser or selenium, export raises
:class:`BrowserUnavailableError`, whose message is one line saying what to install.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

CHROMIUM_ARGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--hide-scrollbars")
SUFFIXES = (".html", ".png", ".svg")
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
    """A headless Chromium driven by Debian's chromedriver, offline, with a fresh profile."""
    browser, driver = check_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for arg in CHROMIUM_ARGS:
        options.add_argument(arg)
    options.add_argument(f"--user-data-dir={tempfile.mkdtemp(prefix='aw-export-')}")
    options.add_argument(f"--force-device-scale-factor={scale}")  # bokeh renders PNGs at this ratio
    try:
        return webdriver.Chrome(service=Service(executable_path=driver), options=options)
    except Exception as exc:  # a broken install: say so in one line, not selenium's page of text
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BrowserUnavailableError(f"PNG/SVG export could not start {browser} with {driver}: {first} "
                                 f"({INSTALL_HINT})") from exc


def _check_path(path: str | Path) -> tuple[Path, str]:
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise ValueError(f"path: expected a .html, .png or .svg file name, got {path.name!r}")
    return path, suffix


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
        from bokeh.io import export_png, export_svg
        from bokeh.plotting import figure

        driver = self.driver()
        path.parent.mkdir(parents=True, exist_ok=True)
        figs = list(fig.select({"type": figure().__class__})) if hasattr(fig, "select") else [fig]
        saved = [(f, f.toolbar_location, f.output_backend) for f in figs]
        for f, _, _ in saved:  # a printed figure has no buttons
            f.toolbar_location = None
        try:
            if suffix == ".png":
                export_png(fig, filename=str(path), webdriver=driver, scale_factor=self.scale)
            else:
                for f, _, _ in saved:
                    f.output_backend = "svg"
                export_svg(fig, filename=str(path), webdriver=driver)
        finally:
            for f, where, backend in saved:
                f.toolbar_location = where
                f.output_backend = backend
        return path

    def export_all(self, items: Iterable[tuple[Any, str | Path]]) -> list[Path]:
        """Every ``(figure, path)`` with the one browser."""
        return [self.export(fig, path) for fig, path in items]


def export(fig: Any, path: str | Path, *, scale: float = 2.0, title: str = "attnwidget figure") -> Path:
    """Save a figure as ``.html`` (offline), ``.png`` (``scale`` x its CSS size, for print) or ``.svg``.

    PNG and SVG are rendered by a headless Chromium (bokeh's exporter), with no
    network; :class:`Exporter` keeps one browser for several figures. Without
    Chromium, chromedriver or selenium this raises :class:`BrowserUnavailableError`
    (one line: what to install); ``.html`` needs none of them.
    """
    with Exporter(scale) as exporter:
        return exporter.export(fig, path, title)
