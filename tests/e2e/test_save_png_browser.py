"""The widget's "save PNG" control in a real JupyterLab: the file is the canvas's own pixels,
named from the caption; and the saved notebook keeps the kernel's PNG snapshot beside the view."""

from __future__ import annotations

import base64
import io
import json
import time

import numpy as np
import pytest
from lab_server import jupyter_server, open_and_run_all, watch_page, write_notebook

pytestmark = pytest.mark.e2e

# a causal toy stack whose caption carries a path, markup and a bidi control: none of them
# may reach the file name
CELL = """
import numpy as np
from attnwidget import AttentionView
rng = np.random.default_rng(0)
n = 40
e = np.exp(rng.normal(size=(2, 3, n, n)) * 2) * np.tril(np.ones((n, n)))
w = (e / e.sum(-1, keepdims=True)).astype(np.float32)
view = AttentionView.from_tensor(w, [f"t{i}" for i in range(n)], model_name="../toy <b>", causal=True,
                                 text="a\\u202eb c", threshold=0.05)
view
"""
CANVAS_PNG = "c => c.toDataURL('image/png')"


def pixels(data: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(data)).convert("RGBA"))


def canvas_pixels(canvas) -> np.ndarray:
    url = canvas.evaluate(CANVAS_PNG)
    return pixels(base64.b64decode(url.split(",", 1)[1]))


def state_key(mode="head", layer=0, head=0, threshold=0.05):
    head = head if mode in ("head", "grid") else None
    return json.dumps([mode, layer, head, threshold, None, 5, []], separators=(",", ":"))


def assert_same_pixels(saved: np.ndarray, shown: np.ndarray, artifacts, name: str) -> None:
    """The saved file equals the canvas; on a mismatch both pictures go to the artifacts."""
    from PIL import Image

    if not np.array_equal(saved, shown):
        Image.fromarray(saved).save(artifacts / f"{name}-saved.png")
        Image.fromarray(shown).save(artifacts / f"{name}-canvas.png")
    np.testing.assert_array_equal(saved, shown)


def save(page, view, tmp_path, name):
    with page.expect_download() as info:
        view.locator("button.aw-save").click()
    download = info.value
    path = tmp_path / name
    download.save_as(path)
    return download.suggested_filename, path.read_bytes()


def test_save_png_downloads_what_the_canvas_shows(page, artifacts, tmp_path):
    from playwright.sync_api import expect

    with jupyter_server("lab", artifacts) as (url, token, root):
        write_notebook(root / "save.ipynb", [CELL])
        seen = watch_page(page, allowed=(url, "data:", "blob:"))
        external, errors = seen.external, seen.errors
        try:
            open_and_run_all(page, url, token, "lab", "save.ipynb")
            view = page.locator(".jp-OutputArea-output .attnwidget")
            expect(view).to_have_attribute("data-rendered", state_key(), timeout=60_000)
            button = view.locator("button.aw-save")
            expect(button).to_have_text("save PNG")
            canvas = view.locator("canvas.aw-heatmap")

            name, data = save(page, view, tmp_path, "first.png")
            assert name == "toy-b_layer-0_head-0_causal-mask_a-RLO-b-c.png"
            first = pixels(data)
            assert_same_pixels(first, canvas_pixels(canvas), artifacts, "first")  # exactly the canvas
            assert first.shape[1] >= 96 + 512  # the whole drawing: labels, map and colour bar
            assert len(np.unique(first.reshape(-1, 4), axis=0)) > 50

            # another head, threshold and colormap: the file follows what is shown
            view.locator("input.aw-slider-layer").fill("1")
            view.locator("input.aw-slider-head").fill("2")
            view.locator("input.aw-slider-threshold").fill("0.2")
            view.locator("select.aw-select-colormap").select_option("magma")
            expect(view).to_have_attribute("data-rendered", state_key(layer=1, head=2, threshold=0.2))
            name, data = save(page, view, tmp_path, "second.png")
            assert name == "toy-b_layer-1_head-2_causal-mask_a-RLO-b-c.png"
            second = pixels(data)
            assert_same_pixels(second, canvas_pixels(canvas), artifacts, "second")
            assert not np.array_equal(second, first)

            # grid mode saves the grid canvas
            view.locator("select.aw-select-mode").select_option("grid")
            expect(view).to_have_attribute("data-rendered", state_key("grid", 1, 2, 0.2))
            expect(view.locator("canvas.aw-grid-view")).to_be_visible()
            _, data = save(page, view, tmp_path, "grid.png")
            grid = canvas_pixels(view.locator("canvas.aw-grid-view"))
            assert_same_pixels(pixels(data), grid, artifacts, "grid")

            # the saved notebook keeps the kernel's picture beside the live view: what GitHub,
            # nbviewer and nbconvert show
            page.locator(".jp-NotebookPanel-notebook").first.click(position={"x": 5, "y": 5})
            page.keyboard.press("Control+s")
            deadline = time.monotonic() + 30
            while True:
                outputs = json.loads((root / "save.ipynb").read_text())["cells"][0]["outputs"]
                if outputs or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
            (result,) = [o for o in outputs if o["output_type"] == "execute_result"]
            widget = "application/vnd.jupyter.widget-view+json"
            assert {widget, "image/png", "text/plain"} <= set(result["data"])
            snap = pixels(base64.b64decode(result["data"]["image/png"]))
            assert snap.shape[1] == 96 + 512 + 14 + 12 + 52  # attnwidget.snapshot's layout
            page.screenshot(path=str(artifacts / "save-png-lab.png"), full_page=True)
            assert external == [], f"the page tried to reach the network: {external}"
            assert [e for e in errors if "attnwidget" in e or "aw-" in e or "save PNG" in e] == [], errors
        except Exception:
            page.screenshot(path=str(artifacts / "failure-save-png.png"), full_page=True)
            raise
