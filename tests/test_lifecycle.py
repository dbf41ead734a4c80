"""Views over their life: independent of each other, empty after close, answering liveness pings.

The browser side (kernel restart, reopened notebook) is in tests/e2e/test_lifecycle_browser.py.
"""

from __future__ import annotations

import gc
import weakref

import numpy as np
import pytest
import torch

from attnwidget import AttentionMaps, AttentionView
from attnwidget.metrics import panel_metrics
from attnwidget.synthetic import create_synthetic_attention


def record(n: int = 24) -> AttentionMaps:
    torch.manual_seed(0)
    w = torch.rand(3, 4, n, n).softmax(-1)
    return AttentionMaps(w, [f"t{i}" for i in range(n)], model_name="toy")


def test_two_views_of_one_record_are_independent():
    maps = record()
    a, b = AttentionView(maps), AttentionView(maps, layer=2, head=3, threshold=0.3)
    b_before = (dict(b.metrics), b.panel["buffer"].tobytes(), b.caption)
    a.layer, a.head, a.threshold, a.mode = 1, 2, 0.05, "average"
    assert (dict(b.metrics), b.panel["buffer"].tobytes(), b.caption) == b_before
    assert (b.layer, b.head, b.threshold, b.mode) == (2, 3, 0.3, "head")
    expected = panel_metrics(maps.head(2, 3), 0.3, None, 5)
    assert b.metrics["mean_entropy"] == pytest.approx(expected["mean_entropy"])
    a.close()  # closing one leaves the other working
    b.head = 1
    assert b.metrics["view"]["head"] == 1
    assert b.maps is maps


def test_close_lets_go_of_the_record_while_the_view_is_still_referenced():
    view = AttentionView(AttentionMaps(torch.rand(2, 2, 64, 64).softmax(-1), [str(i) for i in range(64)]))
    view.layer, view.mode = 1, "rollout"  # fill caches, rollout included
    record_ref, weights_ref = weakref.ref(view.maps), weakref.ref(view.maps.weights)
    gc.collect()
    assert weights_ref() is not None  # the view holds it
    view.close()
    gc.collect()
    assert record_ref() is None, "a closed view still holds the record"
    assert weights_ref() is None, "a closed view still holds the weights"
    assert repr(view) == "AttentionView(closed)"
    with pytest.raises(RuntimeError, match="closed and holds no record; create a new view"):
        _ = view.maps
    view.layer = 0  # a closed view ignores its sliders: nothing to compute, nothing to show
    with pytest.raises(RuntimeError, match="closed"):
        view.export("x.html")


def test_ping_is_answered_after_the_change_before_it():
    view = AttentionView(create_synthetic_attention(8, "diagonal"))
    sent = []
    view.send = sent.append  # what would go to the browser
    view._on_message(view, {"type": "ping", "seq": 7}, [])
    view._on_message(view, {"type": "something else"}, [])
    assert sent == [{"type": "pong", "seq": 7}]


def test_repr_says_what_it_shows():
    view = AttentionView(record(), layer=1, head=2)
    assert repr(view) == ("AttentionView(toy, 3 layers x 4 heads, 24 x 24 tokens; layer 1, head 2) - "
                          "a live view: run the cell to see it")
    bundle = view._repr_mimebundle_()[0]
    assert bundle["text/plain"] == repr(view)  # where a notebook cannot show the live view


def test_closing_while_the_worker_builds_thumbnails_raises_nothing():
    import asyncio

    maps = AttentionMaps.from_tensor(np.full((2, 8, 700, 700), 1 / 700, dtype=np.float32))

    async def scenario():
        view = AttentionView(maps)
        view.layer = 1  # the atlas goes to the worker thread in an event loop
        view.close()
        await asyncio.sleep(0.5)
        return view

    view = asyncio.run(scenario())
    assert view.comm is None


def test_a_view_no_display_shows_lets_go_of_its_record_and_rebuilds_it(minilm):
    # the browser says when a display appears and goes (js/src/link.ts display()); a cell
    # re-run leaves the old view alive in ipywidgets' registry and IPython's Out, so the
    # view itself must free its record, and extract it again if it is ever needed
    model, tok = minilm
    text = "The cat sat on the mat because it was warm."
    view = AttentionView(model, text, tokenizer=tok, layer=3, head=5, threshold=0.2)
    first = view.maps.weights.clone()
    weights_ref = weakref.ref(view.maps.weights)
    metrics_before = dict(view.metrics)
    view._on_message(view, {"type": "shown"}, [])
    view._on_message(view, {"type": "shown"}, [])  # a second display (a new view of the output)
    view._on_message(view, {"type": "hidden"}, [])
    gc.collect()
    assert weights_ref() is not None  # one display still shows it
    view._on_message(view, {"type": "hidden"}, [])
    gc.collect()
    assert weights_ref() is None, "a view no display shows still holds its record"
    assert repr(view).startswith("AttentionView(sentence-transformers")  # not closed
    assert dict(view.metrics) == metrics_before  # what a returning display shows is unchanged
    # needed again: the same record, extracted again (same model, same text: equal to rounding)
    torch.testing.assert_close(view.maps.weights, first, rtol=1e-5, atol=1e-6)
    view.head = 6
    assert_view = panel_metrics(view.maps.head(3, 6), 0.2, None, 5)
    assert view.metrics["mean_entropy"] == pytest.approx(assert_view["mean_entropy"], rel=1e-6)


def test_a_record_given_to_a_view_stays_when_no_display_shows_it():
    maps = record()
    view = AttentionView(maps)
    view._on_message(view, {"type": "shown"}, [])
    view._on_message(view, {"type": "hidden"}, [])
    assert view.maps is maps  # the caller's record: the view cannot make it again
    view.head = 2
    assert view.metrics["view"]["head"] == 2
