"""Views over a notebook's life, in a real JupyterLab: two views, re-run cells, a kernel
restart, a reopened notebook. No view may pass old data off as live."""

from __future__ import annotations

import json
import time

import pytest
from lab_server import jupyter_server, open_and_run_all, watch_page, write_notebook

pytestmark = pytest.mark.e2e

CELLS = [
    """import numpy as np
from attnwidget import AttentionView
from attnwidget.synthetic import create_synthetic_attention
first = AttentionView(create_synthetic_attention(12, "diagonal"))
first""",
    """second = AttentionView.from_tensor(np.full((2, 3, 6, 6), 1 / 6, dtype=np.float32), layer=1)
second""",
]


def rendered(layer=0, head=0, ablated=()):
    """The view's ``data-rendered`` key once it shows that state (threshold 0.1, top-k 5)."""
    return json.dumps(["head", layer, head, 0.1, None, 5, [list(p) for p in ablated]], separators=(",", ":"))


def test_views_stay_independent_and_never_pass_old_data_as_live(page, artifacts):
    from playwright.sync_api import expect

    with jupyter_server("lab", artifacts) as (url, token, root):
        write_notebook(root / "life.ipynb", CELLS)
        errors = watch_page(page).errors
        open_and_run_all(page, url, token, "lab", "life.ipynb")
        views = page.locator(".jp-OutputArea-output .attnwidget")
        expect(views).to_have_count(2, timeout=120_000)
        first, second = views.nth(0), views.nth(1)
        expect(first).to_have_attribute("data-rendered", rendered())
        expect(second).to_have_attribute("data-rendered", rendered(layer=1))

        # moving one view leaves the other as it was
        second.locator("input.aw-slider-head").fill("2")
        expect(second).to_have_attribute("data-rendered", rendered(layer=1, head=2))
        expect(second.locator(".aw-caption")).to_contain_text("layer 1 · head 2")
        expect(first).to_have_attribute("data-rendered", rendered())
        expect(first.locator(".aw-caption")).to_contain_text("layer 0 · head 0")

        # re-running a cell replaces its view by a new, live one
        page.locator(".jp-Cell").nth(1).click()
        page.keyboard.press("Control+Enter")
        expect(views).to_have_count(2)
        expect(views.nth(1)).to_have_attribute("data-rendered", rendered(layer=1))
        views.nth(1).locator("input.aw-slider-head").fill("1")
        expect(views.nth(1)).to_have_attribute("data-rendered", rendered(layer=1, head=1))
        assert errors == [], errors

        # save, then restart the kernel: the views stay on the page, but the first move
        # that gets no answer turns them into labelled snapshots
        page.get_by_role("menuitem", name="File", exact=True).click()
        page.locator("li.lm-Menu-item[data-command='docmanager:save']").click()
        expect(page.locator(".jp-mod-dirty")).to_have_count(0)
        page.get_by_role("menuitem", name="Kernel", exact=True).click()
        page.get_by_role("menuitem", name="Restart Kernel…").click()
        page.locator(".jp-Dialog-button.jp-mod-accept").click()
        toolbar = page.locator(".jp-NotebookPanel-toolbar .jp-Notebook-ExecutionIndicator")
        expect(toolbar).to_have_attribute("data-status", "idle", timeout=60_000)
        first.locator("input.aw-slider-layer").fill("0")  # the slider of a one-layer view...
        first.locator("input.aw-slider-head").fill("0")
        first.locator("input.aw-slider-threshold").fill("0.5")  # ...and one real change
        note = first.locator(".aw-offline")
        expect(note).to_be_visible(timeout=15_000)
        expect(note).to_contain_text("re-run its cell for a live view")
        assert first.evaluate("e => e.classList.contains('aw-no-reply')")
        page.screenshot(path=str(artifacts / "lifecycle-restarted.png"), full_page=True)

        # reopening the saved notebook in a fresh page: no live model, a plain message
        page.reload()
        outputs = page.locator(".jp-OutputArea-output")
        expect(outputs.first).to_contain_text("model not found", timeout=60_000)
        expect(page.locator(".attnwidget canvas")).to_have_count(0)
        # and running it again gives live views
        expect(page.locator(".jp-NotebookPanel-toolbar .jp-Notebook-ExecutionIndicator")).to_have_attribute(
            "data-status", "idle", timeout=60_000)
        page.get_by_role("menuitem", name="Run", exact=True).click()
        page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
        expect(views).to_have_count(2, timeout=120_000)
        expect(views.nth(0)).to_have_attribute("data-rendered", rendered())
        expect(views.nth(0).locator(".aw-offline")).to_be_hidden()


MODEL_CELLS = [
    """from attnwidget import AttentionView
from attnwidget.models import load_minilm
import time, torch
model, tok = load_minilm()
threads = torch.get_num_threads()
text = "The cat sat on the mat because it was warm and the dog was asleep."
enc = tok(text, return_tensors="pt")
view = AttentionView(model, text, tokenizer=tok, layer=2, head=5)
view""",
    # a cell that uses the model for a while (what a training loop does)
    """started = time.time()
with torch.no_grad():
    ref = model(**enc).last_hidden_state
outs, done_at, end = [], [], time.time() + 6
while time.time() < end:
    with torch.no_grad():
        outs.append((model(**enc).last_hidden_state - ref).abs().max().item())
    done_at.append(time.time())
print("AW-CELL", len(outs), sum(d > 1e-4 for d in outs), model.training, started, done_at[-1])""",
    # every page-asked run handed to the main thread from now on; where do the forwards run?
    """import threading
from attnwidget import _cells
_cells.HOP_MIN_S = 0.0
ran_on = []
hook = model.register_forward_pre_hook(lambda *_: ran_on.append(threading.current_thread().name))
print("AW-HOP")""",
    """hook.remove()
print("AW-THREADS", sorted(set(ran_on)), torch.get_num_threads() == threads)""",
]


def test_a_cell_using_the_model_is_never_ablated_by_a_click(page, artifacts):
    # JupyterLab 4.4+ sends widget messages to a kernel subshell: after its first reply the
    # view's messages are handled beside the running cell. An ablation click then must not
    # put its hooks on the model the cell is using (attnwidget._cells): it is refused with
    # the reason, and works once the cell has finished
    from lab_server import open_notebook, run_cell
    from playwright.sync_api import expect

    with jupyter_server("lab", artifacts) as (url, token, root):
        write_notebook(root / "cells.ipynb", MODEL_CELLS)
        errors = watch_page(page).errors
        open_notebook(page, url, token, "lab", "cells.ipynb")
        cells = page.locator(".jp-Notebook .jp-Cell")
        run_cell(page, 0)
        view = page.locator(".jp-OutputArea-output .attnwidget")
        expect(view).to_have_attribute("data-rendered", rendered(2, 5), timeout=120_000)
        view.locator("input.aw-slider-head").fill("6")  # its reply moves the view to the subshell
        expect(view).to_have_attribute("data-rendered", rendered(2, 6))

        run_cell(page, 1)
        indicator = page.locator(".jp-NotebookPanel-toolbar .jp-Notebook-ExecutionIndicator")
        expect(indicator).to_have_attribute("data-status", "busy")
        button = view.locator("button.aw-ablate")
        expect(button).to_have_text("ablate layer 2 head 6")
        button.click()
        status = view.locator(".aw-status")
        expect(status).to_contain_text("ablation: not run", timeout=4_000)  # while the cell runs
        refused_at = time.time()  # the kernel's clock too: one machine
        expect(status).to_contain_text("when the cell has finished")
        expect(button).to_have_text("ablate layer 2 head 6")
        assert indicator.get_attribute("data-status") == "busy", "the cell ended before the check"
        page.screenshot(path=str(artifacts / "cells-refused.png"), full_page=True)

        out = cells.nth(1).locator(".jp-OutputArea-output")
        expect(out).to_contain_text("AW-CELL", timeout=30_000)
        n, bad, training, started, last = out.inner_text().split()[1:6]
        # the cell used the model before and after the refused click (a count of forwards would
        # depend on the machine's load: with a busy core beside it, 16 in the 6 s)
        assert float(started) < refused_at < float(last), out.inner_text()
        assert int(n) > 1, out.inner_text()
        assert int(bad) == 0, out.inner_text()  # and never got an ablated output
        assert training == "False"
        button.click()  # the cell has finished: the click runs
        expect(view).to_have_attribute("data-rendered", rendered(2, 6, [[2, 6]]), timeout=30_000)
        expect(status).to_be_hidden()
        expect(button).to_have_text("restore layer 2 head 6")

        # a run handed to the kernel's main thread (a long one: here forced) shows the same way
        button.click()  # restore: the record kept, no run
        expect(button).to_have_text("ablate layer 2 head 6")
        run_cell(page, 2)
        expect(cells.nth(2).locator(".jp-OutputArea-output")).to_contain_text("AW-HOP", timeout=30_000)
        expect(indicator).to_have_attribute("data-status", "idle", timeout=30_000)
        view.locator("input.aw-slider-head").fill("7")
        button.click()
        expect(view).to_have_attribute("data-rendered", rendered(2, 7, [[2, 7]]), timeout=30_000)
        run_cell(page, 3)
        out = cells.nth(3).locator(".jp-OutputArea-output")
        expect(out).to_contain_text("AW-THREADS", timeout=30_000)
        # the run's forward on the main thread, which keeps all of torch's threads (the
        # subshell's torch work keeps to one)
        got = out.inner_text().split("AW-THREADS", 1)[1].split()
        assert got == ["['MainThread']", "True"], out.inner_text()
        assert errors == [], errors
