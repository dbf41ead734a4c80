"""AttentionView (first version): traits, validation, panel bytes, caption."""

import numpy as np
import pytest
import traitlets
from tiny_models import TEXT

from attnwidget import AttentionMaps, AttentionView
from attnwidget._codec import decode_panel, encode_panel


def stack(rng, L=2, H=3, Q=4):
    e = np.exp(rng.normal(size=(L, H, Q, Q)))
    return (e / e.sum(-1, keepdims=True)).astype(np.float32)


def test_view_of_maps_sends_the_selected_head():
    rng = np.random.default_rng(0)
    w = stack(rng)
    maps = AttentionMaps(w, ["<b>x</b>", "Ġb", "c", "d"], model_name="toy", text="x b c d")
    view = AttentionView(maps)
    assert (view.n_layers, view.n_heads) == (2, 3)
    assert view.query_tokens == ["<b>x</b>", "b", "c", "d"]
    assert bytes(view.panel["buffer"]) == bytes(encode_panel(w[0, 0])["buffer"])
    view.layer, view.head = 1, 2
    np.testing.assert_allclose(decode_panel(view.panel), w[1, 2], atol=0.5 / 255 + 1e-7)
    assert view.caption == "toy · layer 1 · head 2 · no causal mask · “x b c d”"


def test_trait_validation_states_the_range():
    view = AttentionView.from_tensor(stack(np.random.default_rng(1)))
    with pytest.raises(traitlets.TraitError, match=r"layer: expected 0..1, got 2"):
        view.layer = 2
    with pytest.raises(traitlets.TraitError, match=r"head: expected 0..2, got -1"):
        view.head = -1
    assert (view.layer, view.head) == (0, 0)
    with pytest.raises(traitlets.TraitError):
        view.panel = {}


def test_head_average_is_labelled():
    maps = AttentionMaps(stack(np.random.default_rng(2)), list("abcd")).head_mean()
    assert "mean of 3 heads (AVERAGE, not a head)" in AttentionView(maps).caption


def test_long_text_is_shortened_in_the_caption_only():
    maps = AttentionMaps(stack(np.random.default_rng(3)), list("abcd"), text="y" * 200)
    view = AttentionView(maps)
    assert "y" * 79 + "…" in view.caption
    assert view.maps.text == "y" * 200


def test_maps_view_refuses_extraction_arguments():
    maps = AttentionMaps(stack(np.random.default_rng(4)), list("abcd"))
    with pytest.raises(TypeError, match=r"takes no extraction arguments, got \['truncation'\]"):
        AttentionView(maps, truncation=True)


def test_view_from_model(minilm):
    model, tok = minilm
    view = AttentionView(model, TEXT, tokenizer=tok, layer=5, head=11)
    assert view.caption.startswith("sentence-transformers/all-MiniLM-L6-v2 · layer 5 · head 11")
    assert view.query_tokens[0] == "[CLS]"
    np.testing.assert_allclose(
        decode_panel(view.panel), view.maps.head(5, 11), atol=0.5 / 255 + 1e-7
    )
