"""AttentionView: traits and their validation, the bytes it sends, and metrics equal to attnwidget.metrics."""

import asyncio
import json
import math

import numpy as np
import pytest
import torch
import traitlets
from tiny_models import TEXT

import attnwidget._panels as panels_module
from attnwidget import AttentionMaps, AttentionView
from attnwidget._codec import LEVELS, MASKED, decode_panel
from attnwidget._panels import PanelStore
from attnwidget._worker import WORKER
from attnwidget.maps import average_label
from attnwidget.metrics import attention_rollout, head_badges, panel_metrics

STEP = 0.5 / LEVELS  # half a colour level: the uint8 quantisation error at vmax 1


def stack(rng, L=2, H=3, Q=4, K=None):
    e = np.exp(rng.normal(size=(L, H, Q, K or Q)))
    return (e / e.sum(-1, keepdims=True)).astype(np.float32)


def causal_stack(rng, L=2, H=3, Q=6):
    e = np.exp(rng.normal(size=(L, H, Q, Q))) * np.tri(Q, Q)
    return (e / e.sum(-1, keepdims=True)).astype(np.float32)


def without_view(metrics):
    return {k: v for k, v in metrics.items() if k not in ("view", "kind")}


def assert_metrics_equal(got, expected):
    assert json.dumps(without_view(got), sort_keys=True) == json.dumps(expected, sort_keys=True)


def test_view_of_maps_sends_the_selected_head():
    rng = np.random.default_rng(0)
    w = stack(rng)
    maps = AttentionMaps(w, ["<b>x</b>", "Ġb", "c", "d"], model_name="toy", text="x b c d")
    view = AttentionView(maps, scale="fixed")
    assert (view.n_layers, view.n_heads) == (2, 3)
    assert view.query_tokens == ["<b>x</b>", "b", "c", "d"]
    np.testing.assert_allclose(decode_panel(view.panel), w[0, 0], atol=STEP + 1e-7)
    view.layer, view.head = 1, 2
    assert view.panel["view"] == {"mode": "head", "layer": 1, "head": 2, "ablated": [], "scale": "fixed"}
    assert (view.panel["pool"], view.panel["full_shape"], view.panel["vmax"]) == (1, [4, 4], 1.0)
    np.testing.assert_allclose(decode_panel(view.panel), w[1, 2], atol=STEP + 1e-7)
    assert view.caption == "toy · layer 1 · head 2 · no causal mask · “x b c d”"


def test_auto_scale_spans_the_panel_maximum():
    w = stack(np.random.default_rng(10))
    view = AttentionView.from_tensor(w)
    top = float(w[0, 0].max())
    assert view.panel["vmax"] == pytest.approx(top)
    levels = np.frombuffer(bytes(view.panel["buffer"]), np.uint8)
    assert levels.max() == LEVELS  # the strongest weight gets the top colour
    np.testing.assert_allclose(decode_panel(view.panel), w[0, 0], atol=top * STEP + 1e-7)


def test_sqrt_scale_sends_the_levels_of_the_square_root():
    from attnwidget._codec import quantize

    w = stack(np.random.default_rng(10))
    w[0, 0, :, 0] += 4.0  # a sink key: most of every row's weight
    w[0, 0] /= w[0, 0].sum(-1, keepdims=True)
    view = AttentionView.from_tensor(w, scale="sqrt")
    top = float(w[0, 0].max())
    assert view.panel["sqrt"] is True
    assert view.panel["vmax"] == pytest.approx(top)
    levels = np.frombuffer(bytes(view.panel["buffer"]), np.uint8).reshape(w.shape[-2:])
    np.testing.assert_array_equal(levels, quantize(np.sqrt(w[0, 0]), math.sqrt(top)))
    # the rest of the map reaches further up the scale than on "auto"
    view.scale = "auto"
    linear = np.frombuffer(bytes(view.panel["buffer"]), np.uint8).reshape(w.shape[-2:])
    assert "sqrt" not in view.panel
    assert np.median(levels[:, 1:]) > 2 * np.median(linear[:, 1:])
    view.close()


def test_trait_validation_states_the_range():
    view = AttentionView.from_tensor(stack(np.random.default_rng(1)))
    cases = [
        ("layer", 2, r"layer: expected 0..1 \(or -2..-1\), got 2"),
        ("head", -4, r"head: expected 0..2 \(or -3..-1\), got -4"),
        ("threshold", 1.5, r"threshold: expected 0..1, got 1.5"),
        ("threshold", float("nan"), r"threshold: expected 0..1, got nan"),
        ("query", 4, r"query: expected 0..3 \(or -4..-1\) or None, got 4"),
        ("mode", "heads", r"mode: expected one of \('head', 'grid', 'average', 'rollout'\), got 'heads'"),
        ("colormap", "jet", r"colormap: expected one of \('viridis', .*\), got 'jet'"),
        ("scale", "log", r"scale: expected one of \('auto', 'fixed', 'sqrt'\), got 'log'"),
        ("top_k", 0, r"top_k: expected an int >= 1 \(capped at the row's keys\), got 0"),
        ("viewport", [0, 5, 0, 2], r"viewport: expected \[\] or \[q0, q1, k0, k1\] with 0 <= q0 < q1 <= 4"),
    ]
    for name, value, message in cases:
        with pytest.raises(traitlets.TraitError, match=message):
            setattr(view, name, value)
    assert (view.layer, view.head, view.threshold, view.query, view.mode) == (0, 0, 0.1, None, "head")
    view.layer, view.head, view.query = -1, -1, -1  # from the end, as in Python
    assert (view.layer, view.head, view.query) == (1, 2, 3)
    with pytest.raises(traitlets.TraitError):
        view.panel = {}
    with pytest.raises(traitlets.TraitError):
        view.metrics = {}


def test_top_k_is_capped_at_the_visible_keys():
    w = causal_stack(np.random.default_rng(1), Q=6)
    view = AttentionView(AttentionMaps(w, list("abcdef"), causal=True), query=2, top_k=5)
    assert view.metrics["query"]["top_k"] == panel_metrics(w[0, 0], 0.1, 2, 3, causal=True)["query"]["top_k"]
    assert len(view.metrics["query"]["top_k"]) == 3  # query 2 sees keys 0..2 only


def test_metrics_follow_every_change_and_equal_panel_metrics():
    rng = np.random.default_rng(2)
    w = stack(rng, L=3, H=4, Q=7)
    view = AttentionView.from_tensor(w)
    assert_metrics_equal(view.metrics, panel_metrics(w[0, 0], 0.1))
    steps = [("layer", 2), ("head", 3), ("threshold", 0.25), ("query", 5), ("top_k", 2),
             ("threshold", 0.0), ("query", None), ("head", 1)]
    for name, value in steps:
        setattr(view, name, value)
        expected = panel_metrics(w[view.layer, view.head], view.threshold, view.query, view.top_k)
        assert_metrics_equal(view.metrics, expected)
        assert view.metrics["view"] == {
            "mode": "head", "layer": view.layer, "head": view.head, "threshold": view.threshold,
            "query": view.query, "top_k": view.top_k, "ablated": [],
        }


def test_threshold_and_query_send_no_new_panel():
    view = AttentionView.from_tensor(stack(np.random.default_rng(3)))
    panel = view.panel
    view.threshold = 0.3
    view.query = 2
    assert view.panel is panel  # dimming happens in the browser on the panel it has
    assert view.metrics["sparsity"] == pytest.approx(panel_metrics(view.maps.head(0, 0), 0.3)["sparsity"])


def test_average_and_rollout_modes_are_labelled_and_measured():
    rng = np.random.default_rng(4)
    w = stack(rng, L=3, H=4, Q=6)
    view = AttentionView.from_tensor(w, model_name="toy")
    view.layer, view.mode = 1, "average"
    assert average_label(4) in view.caption
    assert view.metrics["kind"] == "average of heads"
    assert view.panel["view"] == {"mode": "average", "layer": 1, "head": None, "ablated": [], "scale": "auto"}
    mean = w[1].mean(0)
    assert_metrics_equal(view.metrics, panel_metrics(mean, 0.1))
    view.mode = "rollout"
    rollout = attention_rollout(w)
    np.testing.assert_allclose(decode_panel(view.panel), rollout[1],
                               atol=float(rollout[1].max()) * STEP + 1e-6)
    assert_metrics_equal(view.metrics, panel_metrics(rollout[1], 0.1))
    assert "attention rollout" in view.caption
    view.mode = "grid"  # the grid shows every head; the metrics are the selected head's
    assert_metrics_equal(view.metrics, panel_metrics(w[1, 0], 0.1))


def test_rollout_refused_for_cross_attention():
    w = stack(np.random.default_rng(5), Q=3, K=5)
    view = AttentionView(AttentionMaps(w, list("abc"), list("vwxyz")))
    with pytest.raises(traitlets.TraitError, match=r"'rollout' needs self-attention .* got 3 x 5"):
        view.mode = "rollout"


def test_masked_cells_are_marked_apart_from_zero_weights():
    rng = np.random.default_rng(6)
    w = causal_stack(rng, Q=6)
    w[0, 0, 5, 2] = 0.0  # a visible weight that is exactly 0
    w[0, 0, 5] /= w[0, 0, 5].sum()
    maps = AttentionMaps(w, list("abcdef"), causal=True)
    view = AttentionView(maps)
    levels = np.frombuffer(bytes(view.panel["buffer"]), np.uint8).reshape(6, 6)
    np.testing.assert_array_equal(levels == MASKED, ~np.tri(6, 6, dtype=bool))
    assert levels[5, 2] == 0
    assert view.metrics == {**view.metrics, **panel_metrics(w[0, 0], 0.1, causal=True)}
    assert "causal mask" in view.caption


def test_padding_is_masked_in_panel_metrics_and_caption():
    w = np.zeros((1, 2, 4, 4), np.float32)
    w[..., :3, :3] = 1 / 3  # the last position is padding: no weight on it, its row empty
    maps = AttentionMaps(w, [*"abc", "[PAD]"], key_padding=[0, 0, 0, 1], query_padding=[0, 0, 0, 1])
    view = AttentionView(maps)
    levels = np.frombuffer(bytes(view.panel["buffer"]), np.uint8).reshape(4, 4)
    assert (levels[3] == MASKED).all()
    assert (levels[:, 3] == MASKED).all()
    assert (levels[:3, :3] == LEVELS).all()
    assert view.metrics["sparsity"] == 0.0  # the 7 padded cells do not count as sparse
    assert "1 padded key" in view.caption


def test_atlas_has_every_head_of_the_layer_with_badges():
    rng = np.random.default_rng(7)
    w = stack(rng, L=2, H=5, Q=8)
    view = AttentionView.from_tensor(w, layer=1)
    atlas = view.atlas
    assert (atlas["shape"], atlas["layer"], atlas["pool"]) == ([5, 8, 8], 1, 1)
    thumbs = np.frombuffer(bytes(atlas["buffer"]), np.uint8).reshape(5, 8, 8)
    for h in range(5):  # each thumbnail on its own range: its maximum is the top level
        np.testing.assert_allclose(thumbs[h] / LEVELS * w[1, h].max(), w[1, h],
                                   atol=w[1, h].max() * STEP + 1e-7)
    badges = head_badges(w[1])
    assert [b["grade"] for b in atlas["badges"]] == list(badges["grade"])
    np.testing.assert_allclose([b["entropy"] for b in atlas["badges"]], badges["entropy"], rtol=1e-6)
    atlas_before = view.atlas
    view.head = 3
    assert view.atlas is atlas_before  # a head change inside the layer re-sends no thumbnails
    view.layer = 0
    assert view.atlas["layer"] == 0


def test_long_input_is_pooled_and_zoom_sends_full_resolution():
    rng = np.random.default_rng(8)
    n = 1100
    w = np.zeros((1, 1, n, n), np.float32)
    idx = rng.integers(0, n, size=n)
    w[0, 0, np.arange(n), idx] = 1.0  # one-hot rows: the sharpest head there is
    view = AttentionView.from_tensor(w, scale="fixed")
    assert (view.panel["pool"], view.panel["shape"]) == (3, [367, 367])
    overview = decode_panel(view.panel)
    # max-pooling keeps every one-hot weight visible in its block
    for q in range(0, n, 97):
        assert overview[q // 3, idx[q] // 3] == pytest.approx(1.0)
    assert view.detail == {}
    view.viewport = [100, 400, 200, 700]
    d = view.detail
    assert (d["origin"], d["pool"], d["shape"]) == ([100, 200], 1, [300, 500])
    np.testing.assert_allclose(decode_panel(d), w[0, 0, 100:400, 200:700], atol=STEP)
    view.viewport = []
    assert view.detail == {}


def test_browser_message_with_several_traits_updates_once(monkeypatch):
    view = AttentionView.from_tensor(stack(np.random.default_rng(9), L=3, H=3))
    calls = []
    original = view._send_panel
    monkeypatch.setattr(view, "_send_panel", lambda: (calls.append(1), original()))
    view.set_state({"layer": 2, "head": 1, "threshold": 0.2})
    assert len(calls) == 1
    assert (view.metrics["view"]["layer"], view.metrics["view"]["head"]) == (2, 1)


def test_metrics_cache_stays_within_its_budget(monkeypatch):
    w = stack(np.random.default_rng(11), L=2, H=3, Q=8)
    store = PanelStore(AttentionMaps.from_tensor(w), budget=1000)
    for layer in range(2):
        for head in range(3):
            key = store.key("head", layer, head)
            store.overview(key, "auto")
            store.metrics(key).at(0.1, None, 5)  # what the view asks of each map
            store.trim()
    assert store.nbytes() <= 1000  # overviews of evicted maps count, so they went too
    assert 1 <= len(store.keys()) < 6
    monkeypatch.setattr(panels_module, "METRICS_CACHE_BYTES", 1000)
    view = AttentionView.from_tensor(w)
    for layer in range(2):
        for head in range(3):
            view.layer, view.head = layer, head
    view.layer, view.head = 0, 0  # an evicted map comes back, recomputed
    assert_metrics_equal(view.metrics, panel_metrics(view.maps.head(0, 0), 0.1))


def test_head_average_record_is_labelled():
    maps = AttentionMaps(stack(np.random.default_rng(2)), list("abcd")).head_mean()
    assert f" · {average_label(3)} · " in AttentionView(maps).caption


def test_long_text_is_shortened_in_the_caption_only():
    maps = AttentionMaps(stack(np.random.default_rng(3)), list("abcd"), text="y" * 200)
    view = AttentionView(maps)
    assert "y" * 79 + "…" in view.caption
    assert view.maps.text == "y" * 200


def test_maps_view_refuses_extraction_arguments():
    maps = AttentionMaps(stack(np.random.default_rng(4)), list("abcd"))
    with pytest.raises(TypeError, match=r"takes no extraction arguments, got \['truncation'\]"):
        AttentionView(maps, truncation=True)


def test_a_bad_text_is_named_as_the_view_names_it(minilm):
    model, tok = minilm
    with pytest.raises(TypeError, match=r"^text: expected a str, a tensor of input ids .*, got int$"):
        AttentionView(model, 123, tokenizer=tok)
    with pytest.raises(TypeError, match=r"^text: expected the input text or the model's inputs, got None$"):
        AttentionView(model, tokenizer=tok)
    with pytest.raises(ValueError, match=r"^text: expected a non-empty string, got ''$"):
        AttentionView(model, "", tokenizer=tok)
    # a trait that is no constructor argument: said before any extraction, with what to do
    with pytest.raises(TypeError, match=r"^compare: not an AttentionView\(\.\.\.\) argument; set it on the "
                                        r"view after making it \(view\.compare = \.\.\.\)$"):
        AttentionView(model, "a cat", tokenizer=tok, compare=True)


def test_state_is_json_safe():
    view = AttentionView.from_tensor(stack(np.random.default_rng(12)), query=1)
    state = view.get_state()
    for key in ("metrics", "caption", "query_tokens"):
        json.dumps(state[key], allow_nan=False)  # NaN would break the browser's JSON.parse


def test_view_from_model_metrics_match(minilm):
    model, tok = minilm
    view = AttentionView(model, TEXT, tokenizer=tok, layer=5, head=11)
    assert view.caption.startswith("sentence-transformers/all-MiniLM-L6-v2 · layer 5 · head 11")
    assert view.query_tokens[0] == "[CLS]"
    head = view.maps.head(5, 11)
    np.testing.assert_allclose(decode_panel(view.panel), head, atol=float(head.max()) * STEP + 1e-7)
    for layer, h, threshold, query in [(0, 0, 0.05, None), (3, 7, 0.2, 2), (5, 11, 0.5, 0)]:
        view.layer, view.head, view.threshold, view.query = layer, h, threshold, query
        assert_metrics_equal(view.metrics, panel_metrics(view.maps.head(layer, h), threshold, query, 5))
    # the record's heads really differ, so equal metrics are not a coincidence
    assert view.metrics["mean_entropy"] != panel_metrics(view.maps.head(0, 0))["mean_entropy"]
    assert torch.is_tensor(view.maps.weights)


def test_a_pooled_overview_spans_the_whole_maps_maximum():
    # the overview takes its top colour from the pooled map: each block keeps its max, so the
    # largest weight is there, also when it sits in a partial edge block
    rng = np.random.default_rng(14)
    e = rng.random((1, 1, 1030, 1030)).astype(np.float32)
    e[0, 0, 1029, 1029] = 50.0  # in the last, partial block (1030 = 3 * 343 + 1)
    w = e / e.sum(-1, keepdims=True)
    view = AttentionView.from_tensor(w)
    assert view.panel["pool"] == 3
    assert view.panel["vmax"] == float(w.max())  # max is exact: equal, not close
    view.close()


def test_neighbouring_heads_of_a_large_map_are_computed_ahead(monkeypatch):
    w = stack(np.random.default_rng(13), L=1, H=4, Q=8)
    store = PanelStore(AttentionMaps.from_tensor(w), prefetch_cells=10)
    for fut in store.prefetch(0, 2, "fixed"):
        fut.result(timeout=30)
    assert {store.key("head", 0, 1), store.key("head", 0, 3)} <= set(store.keys())
    assert store.metrics(store.key("head", 0, 3))._static is not None  # computed, not only created
    # encoded on the scale asked for at scheduling time, whatever is asked for later
    assert store.overview(store.key("head", 0, 3), "fixed")["vmax"] == 1.0
    assert store.overview(store.key("head", 0, 3), "auto")["vmax"] == pytest.approx(float(w[0, 3].max()))
    store.close()
    assert store.closed
    assert store.keys() == []
    monkeypatch.setattr(panels_module, "PREFETCH_CELLS", 10)
    view = AttentionView.from_tensor(w, head=1)
    view.head = 2
    view.head = 3  # served from the prefetched entry, and equal to a fresh computation
    assert_metrics_equal(view.metrics, panel_metrics(w[0, 3], 0.1))
    np.testing.assert_allclose(decode_panel(view.panel), w[0, 3], atol=float(w[0, 3].max()) * STEP + 1e-7)
    assert view.panel["view"] == {"mode": "head", "layer": 0, "head": 3, "ablated": [], "scale": "auto"}
    view.close()


def record_submits(monkeypatch) -> list[tuple]:
    """From now on, (the job's first argument: its map's key or layer, idle) of every job the
    panel store submits to the worker, in order (the jobs still run)."""
    submitted = []
    real_submit = panels_module.WORKER.submit

    def recorded(owner, fn, *args, idle=False):
        submitted.append((args[0], idle))
        return real_submit(owner, fn, *args, idle=idle)

    monkeypatch.setattr(panels_module.WORKER, "submit", recorded)
    return submitted


def test_prefetch_computes_the_numbers_of_heads_whose_picture_came_first(monkeypatch):
    # the idle prefetch draws the layer's other heads (picture only for a large map): a later
    # prefetch must still compute the numbers of the neighbours among them, the head the
    # slider steps to first on both cores
    monkeypatch.setattr(panels_module, "LATER_CELLS", 20)
    w = stack(np.random.default_rng(25), L=3, H=4, Q=8)
    store = PanelStore(AttentionMaps.from_tensor(w), prefetch_cells=10)
    for h in range(4):  # what the idle jobs leave: every head's picture, no numbers
        store.overview(store.key("head", 1, h), "fixed")
    assert not any(store.has_numbers(store.key("head", 1, h)) for h in range(4))
    both_cores = []
    real = PanelStore._warm_numbers_first
    monkeypatch.setattr(PanelStore, "_warm_numbers_first",
                        lambda self, key, scale: (both_cores.append(key), real(self, key, scale))[1])
    submitted = record_submits(monkeypatch)
    for fut in store.prefetch(1, 2, "fixed", before=(1, 1)):  # a step from head 1 to 2
        fut.result(timeout=30)
    assert both_cores == [store.key("head", 1, 3)]  # the head the next step reaches
    # a large map (over LATER_CELLS): every neighbour at once, the step's first
    assert [what for what, idle in submitted if not idle] == [
        store.key("head", 1, 3), store.key("head", 1, 1), store.key("head", 2, 2), store.key("head", 2, 2), 2,
        store.key("head", 0, 2), store.key("head", 0, 2), 0]
    near = [store.key("head", *lh) for lh in ((1, 3), (1, 1), (2, 2), (0, 2))]
    assert all(store.has_numbers(k) for k in near)
    assert not store.has_numbers(store.key("head", 1, 0))  # not a neighbour: on demand
    np.testing.assert_allclose(store.metrics(near[0]).static()["mean_entropy"],
                               panel_metrics(w[1, 3], 0.1)["mean_entropy"], rtol=1e-6)
    store.close()


def test_a_drag_on_small_maps_gets_its_next_step_now_and_the_rest_when_idle(monkeypatch):
    # maps up to LATER_CELLS: only the map a slider's next step reaches is computed at once;
    # the other neighbours (and their layers' thumbnails) wait for the kernel to be idle
    w = stack(np.random.default_rng(26), L=3, H=4, Q=8)
    store = PanelStore(AttentionMaps.from_tensor(w), prefetch_cells=10)
    submitted = record_submits(monkeypatch)
    for fut in store.prefetch(1, 2, "fixed", before=(0, 2)):  # a layer step from 0 to 1
        fut.result(timeout=30)
    ahead = store.key("head", 2, 2)  # picture, numbers, then its layer's thumbnails
    assert [what for what, idle in submitted if not idle] == [ahead, ahead, 2]
    assert {what for what, idle in submitted if idle} >= {store.key("head", 1, 3), store.key("head", 1, 1),
                                                          store.key("head", 0, 2), 0}
    # all of it done in the end (the futures waited for), the same numbers as computed at once
    for lay, h in ((2, 2), (1, 3), (1, 1), (0, 2)):
        np.testing.assert_allclose(store.metrics(store.key("head", lay, h)).static()["mean_entropy"],
                                   panel_metrics(w[lay, h], 0.1)["mean_entropy"], rtol=1e-6)
    store.close()
    fresh = PanelStore(AttentionMaps.from_tensor(w), prefetch_cells=10)
    submitted.clear()
    for fut in fresh.prefetch(1, 2, "fixed"):  # no step before (a new view): every neighbour at once
        fut.result(timeout=30)
    now = {what for what, idle in submitted if not idle}
    assert {fresh.key("head", *lh) for lh in ((1, 3), (1, 1), (2, 2), (0, 2))} | {0, 2} <= now
    assert {what for what, idle in submitted if idle} == {fresh.key("head", 1, 0)}  # the far head
    fresh.close()


async def until(condition, timeout_s: float = 60.0) -> None:
    """Let the event loop run until ``condition()`` holds or ``timeout_s`` passes (the shared
    worker may finish an earlier view's job first); the caller asserts what it needs."""
    for _ in range(int(timeout_s / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)


def test_atlas_is_built_off_the_event_loop_and_handed_back_to_it():
    w = stack(np.random.default_rng(14), L=3, H=2, Q=5)

    async def session():
        view = AttentionView.from_tensor(w)
        view.layer = 2  # the map and metrics are set at once; the thumbnails follow
        assert view.metrics["view"]["layer"] == 2
        await until(lambda: view.atlas.get("layer") == 2)
        return view

    view = asyncio.run(session())
    assert view.atlas["layer"] == 2
    thumbs = np.frombuffer(bytes(view.atlas["buffer"]), np.uint8).reshape(2, 5, 5)
    np.testing.assert_allclose(thumbs[1] / LEVELS * w[2, 1].max(), w[2, 1], atol=w[2, 1].max() * STEP + 1e-7)
    view.close()


def test_thumbnails_of_the_next_layer_are_built_ahead_and_shown_with_the_map(monkeypatch):
    # the worker builds layer 1's thumbnails while layer 0 is shown: moving to layer 1 then
    # sets the atlas at once, with the map (no wait for the worker); equal to a fresh build
    monkeypatch.setattr(panels_module, "PREFETCH_CELLS", 10)
    w = stack(np.random.default_rng(24), L=3, H=2, Q=6)

    async def session():
        view = AttentionView.from_tensor(w)
        # the worker: its work for this view starts 30 ms after the change, a few ms each
        assert await asyncio.to_thread(WORKER.wait_idle, 60)
        view.layer = 1
        assert view.atlas["layer"] == 1  # set with the map, in the same change
        return view

    view = asyncio.run(session())
    thumbs = np.frombuffer(bytes(view.atlas["buffer"]), np.uint8).reshape(2, 6, 6)
    np.testing.assert_allclose(thumbs[0] / LEVELS * w[1, 0].max(), w[1, 0], atol=w[1, 0].max() * STEP + 1e-7)
    view.close()


def test_a_large_maps_numbers_follow_its_picture_from_the_worker(monkeypatch):
    # over LATER_CELLS the picture goes at once and the metrics when the worker has them; the
    # kernel answers meanwhile, and numbers for a map no longer shown are never sent
    monkeypatch.setattr(panels_module, "LATER_CELLS", 10)
    monkeypatch.setattr(panels_module, "PREFETCH_CELLS", 10**9)  # nothing computed ahead
    w = stack(np.random.default_rng(25), L=3, H=3, Q=8)

    async def session():
        view = AttentionView.from_tensor(w)
        await until(lambda: view.metrics.get("view", {}).get("layer") == 0)
        view.layer = 1
        assert view.panel["view"]["layer"] == 1  # the picture at once
        assert view.metrics["view"]["layer"] == 0  # the numbers of the map before, until...
        view.head = 2  # ...a newer change: layer 1 head 0's numbers must not be sent
        await until(lambda: view.metrics["view"]["head"] == 2)
        await asyncio.sleep(0.2)
        return view

    view = asyncio.run(session())
    assert (view.metrics["view"]["layer"], view.metrics["view"]["head"]) == (1, 2)
    assert_metrics_equal(view.metrics, panel_metrics(w[1, 2], 0.1))
    view.close()


def test_ablation_needs_a_model_and_valid_heads():
    view = AttentionView.from_tensor(stack(np.random.default_rng(15)))
    assert view.can_ablate is False  # the page disables its ablate button and hint
    with pytest.raises(traitlets.TraitError, match="ablated: this view shows a record, not a model"):
        view.ablated = [[0, 1]]
    with pytest.raises(traitlets.TraitError, match=r"ablation_mode: expected one of \('zero', 'mean'\)"):
        view.ablation_mode = "half"


def test_a_message_takes_what_it_shows_and_its_view_from_one_reading(minilm):
    # ipykernel handles a view's first message on the main thread and later ones on a subshell,
    # and the worker's numbers are delivered on the loop that asked for them: a change can land
    # while a reply is being written. The reply must then be old (numbers and view of the head
    # before), never mixed (one head's numbers under another head's view, which the page would
    # show as current: seen once in the e2e storm, head 11's entropy under head 9's stamp)
    model, tok = minilm
    view = AttentionView(model, TEXT, tokenizer=tok, layer=2, head=11)

    def a_change_during(send, lookup: str) -> None:
        """``send()`` with head 11 shown, while the store's ``lookup`` moves the head to 9."""
        view._batch += 1  # set without a reply of its own, as another thread's change would be
        view.head = 11
        view._batch -= 1
        looked_up = getattr(view._panels, lookup)

        def then_a_change(*args):
            out = looked_up(*args)
            view._batch += 1
            try:
                view.head = 9
            finally:
                view._batch -= 1
            return out

        setattr(view._panels, lookup, then_a_change)
        try:
            send()
        finally:
            delattr(view._panels, lookup)
        assert view.head == 9  # the change did land meanwhile

    a_change_during(lambda: view._send_numbers({"metrics"}), "metrics")
    assert view.metrics["view"]["head"] == 11
    expected = panel_metrics(view.maps.head(2, 11), view.threshold, view.query, view.top_k)
    for key in ("mean_entropy", "sparsity", "max"):
        assert view.metrics[key] == pytest.approx(expected[key], rel=1e-6), key

    a_change_during(view._send_panel, "overview")
    assert view.panel["view"]["head"] == 11
    assert "· layer 2 · head 11 ·" in view.caption
    assert view.panel["vmax"] == pytest.approx(float(view.maps.head(2, 11).max()), rel=1e-6)


def test_ablating_a_head_reruns_the_model_and_restores(minilm):
    from attnwidget import extract_attention
    from attnwidget.ablate import ablate_heads, ablation_effect

    model, tok = minilm
    view = AttentionView(model, TEXT, tokenizer=tok, layer=4, head=1)
    assert view.can_ablate is True
    original = view.maps
    before = dict(view.metrics)
    with pytest.raises(traitlets.TraitError, match=r"ablated: expected \[layer, head\] pairs"):
        view.ablated = [[6, 0]]
    view.ablated = [[2, 5], [2, 5]]  # duplicates collapse
    assert view.ablated == [[2, 5]]
    with ablate_heads(model, {2: [5]}):
        by_hand = extract_attention(model, TEXT, tok)
    torch.testing.assert_close(view.maps.weights, by_hand.weights)
    torch.testing.assert_close(view.maps.weights[:3], original.weights[:3])  # earlier layers untouched
    assert not torch.allclose(view.maps.weights[4], original.weights[4])
    assert_metrics_equal(view.metrics, panel_metrics(by_hand.head(4, 1), 0.1))
    assert view.metrics["view"]["ablated"] == [[2, 5]]
    assert view.panel["view"]["ablated"] == [[2, 5]]
    expected = ablation_effect(model, TEXT, {2: [5]}, tok, attention=False)
    # two float32 forwards (see test_ablate: thread splits move the score by ~1e-7)
    assert view.effect["score"] == pytest.approx(expected["score"], abs=2e-6)
    assert view.effect["heads"] == [[2, 5]]
    assert view.effect["attention_change_by_layer"][:3] == [0.0, 0.0, 0.0]
    json.dumps(view.effect, allow_nan=False)

    # side by side with the original, and their difference
    view.compare = True
    b = decode_panel(view.panel_b)
    head_b = original.head(4, 1)
    np.testing.assert_allclose(b, head_b, atol=view.panel_b["vmax"] * STEP + 1e-7)
    assert view.panel["vmax"] == view.panel_b["vmax"]  # one colour range for A and B
    span = view.panel_diff["span"]
    diff = decode_panel(view.panel_diff) * 2 * span - span
    np.testing.assert_allclose(diff, by_hand.head(4, 1) - head_b, atol=span / LEVELS + 1e-6)
    assert view.caption_b == "B: original (no head ablated)"
    # the ablated head's own layer: A and B are the same there, which the caption says (a
    # blank difference map on a +-1e-30 scale looked like a failure to draw)
    view.layer = 2
    assert view.panel_diff == {}
    assert view.caption_b == ("B: original (no head ablated) · the same as A in this map, weight for "
                              "weight: no difference to draw")
    view.layer = 4

    view.ablated = []
    assert view.maps is original
    assert view.effect == {}
    assert without_view(view.metrics) == without_view(before)
    assert view.panel_b == {}  # nothing to compare with any more, and the view says so
    assert view.panel_diff == {}
    assert view.caption_b.startswith("nothing to compare yet: ablate a head")
    view.mode = "rollout"  # no comparison in this mode, whatever there is to compare
    assert view.caption_b == "comparison: shown for one head or the head average"
    view.mode = "head"
    view.compare = False
    assert view.caption_b == ""
    # a view of a record has no model to ablate: the note does not offer it
    record = AttentionView.from_tensor(np.full((1, 2, 4, 4), 0.25, np.float32))
    record.compare = True
    assert record.caption_b == "nothing to compare yet: call view.compare_with(other_record)"


def test_an_ablation_keeps_what_the_view_computed_from_the_layers_it_cannot_change(minilm):
    # the ablated record shares its layers up to the first ablated one with the original: the
    # shown head's numbers and picture, and that layer's thumbnails, are kept (not computed
    # again), both ways; a later layer's are the re-run's
    model, tok = minilm
    view = AttentionView(model, TEXT, tokenizer=tok, layer=2, head=5)
    store = view._panels
    shown, thumbs = view._shown(), store.atlas(2)
    average = store.metrics(store.key("average", 1, None))
    later = store.metrics(store.key("head", 4, 1))
    view.ablated = [[2, 5]]
    assert view._shown() is shown
    assert store.atlas(2) is thumbs
    assert store.metrics(store.key("average", 1, None)) is average
    after = store.metrics(store.key("head", 4, 1))
    assert after is not later
    assert_metrics_equal(after.at(0.1), panel_metrics(view.maps.head(4, 1), 0.1))
    assert not np.allclose(after.weights, later.weights)
    view.ablated = []  # the original back: the shared layers' entries come back with it
    assert view._shown() is shown
    assert store.atlas(2) is thumbs
    assert store.key("head", 4, 1) not in store  # the ablated record's own layer: gone
    assert_metrics_equal(view.metrics, panel_metrics(view.maps.head(2, 5), 0.1))


def test_a_click_on_ablate_is_answered_in_one_message(minilm):
    # the effect, the picture and the numbers of the ablated record go together: one round of
    # the transport, one repaint in the browser
    model, tok = minilm
    view = AttentionView(model, TEXT, tokenizer=tok, layer=3, head=1)
    sent = []
    view._send = lambda msg, buffers=None: sent.append(set(msg.get("state", {})))
    view.set_state({"ablated": [[2, 5]]})
    with_effect = [m for m in sent if "effect" in m]
    assert len(with_effect) == 1
    assert {"effect", "panel", "metrics"} <= with_effect[0]
    assert not [m for m in sent if m & {"panel", "metrics"} and "effect" not in m]


def test_a_store_keeps_nothing_of_a_record_that_shares_no_layer():
    maps = AttentionMaps(torch.softmax(torch.randn(2, 2, 6, 6), -1), [f"t{i}" for i in range(6)])
    same_numbers = AttentionMaps(maps.weights.clone(), maps.query_tokens)  # equal, not shared
    store = PanelStore(maps)
    store.metrics(store.key("head", 0, 1))
    store.atlas(0)
    store.replace(same_numbers)
    assert store.keys() == []
    assert store._atlases == {}


def model_runs(monkeypatch) -> list:
    """The heads of each ablated run of the model from now on (``ablated_record`` watched)."""
    from attnwidget import ablate

    runs = []
    real = ablate.ablated_record
    monkeypatch.setattr(ablate, "ablated_record", lambda *a, **k: runs.append(a[2]) or real(*a, **k))
    return runs


def test_switching_a_head_off_again_reuses_its_run(minilm, monkeypatch):
    # off, on, off: the model runs once; another head or mode runs it again

    model, tok = minilm
    view = AttentionView(model, TEXT, tokenizer=tok, layer=3, head=0)
    runs = model_runs(monkeypatch)
    view.ablated = [[2, 5]]
    first = (view.maps, dict(view.effect), dict(view.metrics))
    view.ablated = []
    view.ablated = [[2, 5]]
    assert len(runs) == 1
    assert view.maps is first[0]
    assert view.effect == first[1]
    assert view.metrics == first[2]
    view.ablated = [[2, 5], [3, 1]]
    view.ablation_mode = "mean"
    assert runs == [{2: [5]}, {2: [5], 3: [1]}, {2: [5], 3: [1]}]
    view._how.forget()  # a view that let go of its record drops the runs it kept
    assert view._how.kept_runs == []
    assert view._how.base is None


def test_the_ablate_buttons_hint_runs_the_model_before_the_click(minilm, monkeypatch):
    # the pointer on the ablate button sends the heads a click would switch off: the kernel
    # runs them then, the click finds the run kept; the hint itself changes nothing shown
    from attnwidget import ablate

    model, tok = minilm
    view = AttentionView(model, TEXT, tokenizer=tok, layer=2, head=5)
    runs = model_runs(monkeypatch)

    def hint(ablated, mode="zero"):
        view._on_message(view, {"type": "prepare_ablation", "ablated": ablated, "mode": mode}, [])

    hint([[2, 5]])
    assert runs == [{2: [5]}]
    assert view.ablated == []
    assert view.effect == {}
    view.ablated = [[2, 5]]
    assert runs == [{2: [5]}]  # the click's run was the hint's
    assert view.effect["heads"] == [[2, 5]]
    assert view.effect["score"] > 0
    # hints that no longer fit are dropped: a head out of range, another mode than the
    # view's, not pairs, nothing to switch off, what is shown already
    for bad in ([[9, 0]], "x", None, [[2]], [{"a": 1, "b": 2}], [], [[2, 5]]):
        hint(bad)
    hint([[2, 5], [3, 1]], mode="mean")
    assert runs == [{2: [5]}]
    hint([[2, 5], [3, 1]])  # the next click's heads: kept beside the run shown
    view.ablated = [[2, 5], [3, 1]]
    view.ablated = [[2, 5]]
    assert runs == [{2: [5]}, {2: [5], 3: [1]}]
    # a view whose runs are long takes no hint: the kernel would hold the sliders meanwhile;
    # nor one with no estimate of the run yet
    how = view._how
    how.last_run_s = how.PREPARE_MAX_S + 0.1
    hint([[2, 5], [4, 1]])
    how.last_run_s, extract_s, how.extract_s = None, how.extract_s, None
    hint([[2, 5], [4, 1]])
    assert len(runs) == 2
    assert 0 < extract_s < how.PREPARE_MAX_S  # before any ablation: the extraction's time
    how.extract_s = extract_s
    # a hint whose run fails says nothing: the click runs it again and shows the error
    monkeypatch.setattr(ablate, "ablated_record", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("boom")))
    hint([[2, 5], [4, 0]])
    assert view.status == ""
    assert view.ablated == [[2, 5]]


def test_a_model_changed_in_place_is_run_again_not_replayed_from_before(bpe_tokenizer):
    # the kept plain run (and its replay) and the kept ablated run belong to the model as it
    # was: after an in-place change (what an optimizer step or load_state_dict does) the
    # view's numbers are those of the model as it is now
    from tiny_models import tiny

    from attnwidget.ablate import ablation_effect

    model = tiny("gpt2", len(bpe_tokenizer), "eager")
    text = "The cat sat on the mat and looked."
    view = AttentionView(model, text, tokenizer=bpe_tokenizer, layer=1)
    view.ablated = [[1, 0]]
    base, first = view._how.base, dict(view.effect)
    view.ablated = []
    with torch.no_grad():
        model.transformer.h[0].mlp.c_fc.weight.mul_(20.0)
    view.ablated = [[1, 0]]
    assert view._how.base is not base
    expected = ablation_effect(model, text, {1: [0]}, bpe_tokenizer, attention=False)
    for key in ("loss", "loss_ablated"):
        assert view.effect[key] == pytest.approx(expected[key], rel=1e-5)
        assert abs(view.effect[key] - first[key]) > 100 * 1e-5 * expected[key]  # not the old model's


def test_compare_with_another_record():
    rng = np.random.default_rng(16)
    a, b = stack(rng, L=2, H=2, Q=5), stack(rng, L=2, H=2, Q=5)
    view = AttentionView.from_tensor(a, layer=1, head=1, scale="fixed")
    with pytest.raises(ValueError, match=r"other: expected 2 layers x 2 heads like this view, got 1 x 2"):
        view.compare_with(AttentionMaps(b[:1], list("abcde")))
    view.compare_with(AttentionMaps(b, list("abcde")), label="second input")
    assert view.compare
    np.testing.assert_allclose(decode_panel(view.panel_b), b[1, 1], atol=STEP + 1e-7)
    assert view.caption_b == "B: second input"
    view.head = 0  # B follows the sliders
    np.testing.assert_allclose(decode_panel(view.panel_b), b[1, 0], atol=STEP + 1e-7)
    span = view.panel_diff["span"]
    np.testing.assert_allclose(decode_panel(view.panel_diff) * 2 * span - span, a[1, 0] - b[1, 0],
                               atol=span / LEVELS + 1e-6)


def test_sweep_scores_reach_the_view(minilm):
    from attnwidget.ablate import ablation_sweep

    model, tok = minilm
    view = AttentionView(model, TEXT, tokenizer=tok)
    score = view.sweep(progress=False)
    assert score.shape == (6, 12)
    np.testing.assert_allclose(score, ablation_sweep(model, TEXT, tok, progress=False)["score"])
    assert view.sweep_scores["score"][3][4] == pytest.approx(float(score[3, 4]))
    assert view.sweep_scores["metric"] == "1 - cosine of the sentence embedding"
    json.dumps(view.sweep_scores, allow_nan=False)
    with pytest.raises(ValueError, match="sweep: this view shows a record"):
        AttentionView.from_tensor(stack(np.random.default_rng(17))).sweep()
