"""AttentionView over a generation: the traits, the step block, the text view's row, bad input.

The view's numbers are compared with :class:`attnwidget.generate.Generation`, computed here
on the same model and prompt (CPU float32 and greedy decoding are deterministic).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tiny_models import tiny
from traitlets import TraitError

from attnwidget import AttentionMaps, AttentionView
from attnwidget._codec import LEVELS, MASKED, quantize
from attnwidget.generate import generate_attention
from attnwidget.metrics import attention_received
from attnwidget.models import load_tiny_lm

SEGMENT = "q8Zr2kLmxT"
PROMPT = SEGMENT + SEGMENT[:3]  # the repeat has begun: the tiny LM continues it
N_NEW = 7


def levels(message: dict) -> np.ndarray:
    """The uint8 levels of a panel or text-row message, ``message['shape']``."""
    return np.frombuffer(bytes(message["buffer"]), dtype=np.uint8).reshape(message["shape"])


@pytest.fixture(scope="module")
def tiny_lm():
    return load_tiny_lm()


@pytest.fixture(scope="module")
def reference(tiny_lm):
    model, tok = tiny_lm
    return generate_attention(model, PROMPT, tok, n_new=N_NEW)


@pytest.fixture
def view(tiny_lm):
    model, tok = tiny_lm
    v = AttentionView(model, PROMPT, tokenizer=tok, generate=N_NEW, layer=1, head=0)
    yield v
    v.close()


def test_generation_traits_and_defaults(view, reference):
    P = len(PROMPT)
    assert view.generation == {"prompt_length": P, "n_new": N_NEW, "greedy": True, "seed": 0,
                               "cached": False}
    assert view.show_text  # on by default for a generation
    assert view.step is None
    assert view.query is None
    # the record shown is the generation's, tokens included
    np.testing.assert_array_equal(view.maps.weights, reference.maps.weights)
    assert view.query_tokens[P:] == list(reference.generated_text)
    assert "".join(view.query_tokens) == SEGMENT * 2
    # a plain view has no generation, no text view unless asked for, and no step
    plain = AttentionView(reference.maps)
    try:
        assert plain.generation == {}
        assert not plain.show_text
        assert plain.text_row == {}
        with pytest.raises(TraitError, match=r"step: this view shows no generation, so step must be None, "
                                             r"got 0; build it with AttentionView\(model, prompt"):
            plain.step = 0
        plain.show_text = True
        assert plain.text_row["kind"] == "received"
        # from raw weights too
        uniform = np.full((3, 3), 1 / 3, dtype=np.float32)
        raw = AttentionView.from_tensor(uniform, ["a", "b", "c"], show_text=True)
        assert raw.show_text
        np.testing.assert_array_equal(levels(raw.text_row)[0], [LEVELS] * 3)
        raw.close()
    finally:
        plain.close()


def test_step_selects_the_query_that_chose_the_token_and_back(view):
    P = len(PROMPT)
    view.step = 0
    assert view.query == P - 1  # the last prompt token's row chose the first generated token
    view.step = -1
    assert (view.step, view.query) == (N_NEW - 1, P + N_NEW - 2)
    view.query = P + 2  # a query that chose a generated token names its step
    assert view.step == 3
    view.query = 4  # a prompt row chose no generated token
    assert view.step is None
    assert view.query == 4
    view.query = P + N_NEW - 1  # the last row: its prediction was never used
    assert view.step is None
    view.step = 2
    view.step = None  # clearing the step clears its query
    assert view.query is None
    with pytest.raises(TraitError, match=r"step: expected 0..6 \(a generated token; or -7..-1\) or None, "
                                         r"got 7"):
        view.step = 7
    with pytest.raises(TraitError, match=r"step: expected 0..6"):
        view.step = -8
    assert AttentionView(view.maps, step=None).step is None  # plain views accept None


def test_constructor_step(tiny_lm):
    model, tok = tiny_lm
    v = AttentionView(model, PROMPT, tokenizer=tok, generate=N_NEW, step=4, show_text=False)
    try:
        assert (v.step, v.query) == (4, len(PROMPT) + 3)
        assert v.text_row == {}
        assert v.metrics["step"]["step"] == 4
    finally:
        v.close()


@pytest.mark.parametrize(("layer", "head"), [(1, 0), (1, 2), (0, 1)])
def test_metrics_step_block_equals_generation_step(view, reference, layer, head):
    view.layer, view.head, view.top_k = layer, head, 4
    for step in range(N_NEW):
        view.step = step
        expected = reference.step(step, layer=layer, head=head, k=4)
        got = view.metrics["step"]
        assert got["step"] == step
        assert {k: got[k] for k in ("query", "position", "top_k")} == {
            k: expected[k] for k in ("query", "position", "top_k")}
        np.testing.assert_allclose(got["top_k_weights"], expected["top_k_weights"], rtol=0, atol=0)
        assert got["prompt_share"] == expected["prompt_share"]
        assert got["generated_share"] == expected["generated_share"]
        assert got["prompt_share"] + got["generated_share"] == pytest.approx(1.0, abs=1e-5)
        # the query block is the same row's
        assert view.metrics["query"]["index"] == expected["query"]
    # the induction head (layer 1, head 0) looks at the token after the earlier occurrence
    if (layer, head) == (1, 0):
        view.step = 2  # writes SEGMENT[5]; the earlier 'k' is at 5, chosen by query P + 1 ('2')
        assert view.metrics["step"]["top_k"][0] == SEGMENT.index(SEGMENT[5])


def test_step_block_in_average_mode_reads_the_mean_row(view, reference):
    view.mode, view.layer = "average", 1
    view.step = 1
    q = reference.step_row(1)
    row = reference.maps.layer(1).mean(axis=0)[q]  # [T]: the head average the view shows
    got = view.metrics["step"]
    assert got["prompt_share"] == pytest.approx(float(row[: len(PROMPT)].sum()), rel=1e-6)
    assert got["top_k"][0] == int(np.argmax(row))
    view.query = 2  # a prompt row: no step block
    assert "step" not in view.metrics


def test_text_row_equals_the_map_row_and_the_received_attention(view, reference):
    P = len(PROMPT)
    T = P + N_NEW
    # no query: each token shaded by the attention it receives, on its own range
    assert view.text_row["kind"] == "received"
    assert view.text_row["shape"] == [1, T]
    received = attention_received(reference.maps.head(1, 0), causal=True)
    np.testing.assert_array_equal(levels(view.text_row)[0], quantize(received, float(received.max())))
    assert view.text_row["vmax"] == pytest.approx(float(received.max()))
    assert view.text_row["view"] == {"mode": "head", "layer": 1, "head": 0, "ablated": [], "scale": "auto",
                                     "query": None}
    for step in (0, 3, N_NEW - 1):
        view.step = step
        q = view.query
        assert view.panel["pool"] == 1
        # the same vmax and the same codec as the map: the text's levels are the map row's
        assert view.text_row["vmax"] == view.panel["vmax"]
        np.testing.assert_array_equal(levels(view.text_row)[0], levels(view.panel)[q])
        assert view.text_row["view"]["query"] == q
        row = levels(view.text_row)[0]
        assert (row[q + 1:] == MASKED).all()  # keys after the query are causally masked
        assert (row[: q + 1] <= LEVELS).all()
    view.scale = "fixed"
    assert view.text_row["vmax"] == view.panel["vmax"] == 1.0
    np.testing.assert_array_equal(levels(view.text_row)[0], levels(view.panel)[view.query])
    view.head = 2
    assert view.text_row["view"]["head"] == 2
    np.testing.assert_array_equal(levels(view.text_row)[0], levels(view.panel)[view.query])
    view.show_text = False
    assert view.text_row == {}


def test_text_view_needs_self_attention():
    w = np.full((1, 1, 3, 5), 0.2, dtype=np.float32)
    cross = AttentionMaps(w, query_tokens=["a", "b", "c"], key_tokens=list("vwxyz"))
    with pytest.raises(TraitError, match=r"show_text: the text view needs self-attention .* got 3 x 5; "
                                         r"expected False"):
        AttentionView(cross, show_text=True)


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_transformers_generation_view_and_its_ablation(kind):
    model = tiny(kind, vocab=50)
    prompt = torch.tensor([3, 17, 5, 9, 22, 41, 7])
    ref = generate_attention(model, prompt, n_new=6)
    v = AttentionView(model, prompt, generate=6, layer=1, head=3, step=5)
    try:
        assert v.generation["cached"]
        np.testing.assert_array_equal(v.maps.weights, ref.maps.weights)
        exp = ref.step(5, layer=1, head=3, k=5)
        assert v.metrics["step"]["top_k"] == exp["top_k"]
        assert v.metrics["step"]["prompt_share"] == exp["prompt_share"]
        # ablation re-runs the model on the generated sequence itself
        v.ablated = [[0, 1]]
        assert v.status == ""
        assert v.effect["heads"] == [[0, 1]]
        assert v.maps.shape == ref.maps.shape
        assert not np.array_equal(v.maps.weights[1], ref.maps.weights[1])
        assert v.generation["prompt_length"] == 7
        assert v.metrics["step"]["step"] == 5
    finally:
        v.close()


def test_bad_input_is_refused_before_any_forward(tiny_lm, minilm):
    model, tok = tiny_lm
    calls = []
    handle = model.register_forward_pre_hook(lambda *a: calls.append(1))
    try:
        with pytest.raises(ValueError, match=r"n_new: expected an int >= 1 \(tokens to generate\), got 0"):
            AttentionView(model, PROMPT, tokenizer=tok, generate=0)
        with pytest.raises(ValueError, match=r"n_new: expected an int >= 1 \(tokens to generate\), got -3"):
            AttentionView(model, PROMPT, tokenizer=tok, generate=-3)
        with pytest.raises(ValueError, match=r"n_new: the prompt's 40 tokens plus 9 new ones make 49, "
                                             r"but the model takes at most 48"):
            AttentionView(model, "a" * 40, tokenizer=tok, generate=9)
        with pytest.raises(TypeError, match=r"prompt: generate=N needs a prompt"):
            AttentionView(model, tokenizer=tok, generate=3)
    finally:
        handle.remove()
    assert calls == []
    bert, btok = minilm
    bcalls = []
    bhandle = bert.register_forward_pre_hook(lambda *a: bcalls.append(1))
    try:
        with pytest.raises(ValueError, match=r"model: BertModel is an encoder-only model"):
            AttentionView(bert, "The cat", tokenizer=btok, generate=3)
    finally:
        bhandle.remove()
    assert bcalls == []


def test_generation_options_without_generate_or_with_a_record(reference):
    with pytest.raises(TypeError, match=r"greedy/seed: only used with generate=N"):
        AttentionView(reference.maps, seed=3)
    with pytest.raises(TypeError, match=r"generate: needs a causal LM and a prompt.* got a record"):
        AttentionView(reference.maps, generate=3)


def test_tiny_lm_generation_view_ablates_on_the_generated_text(tiny_lm, reference):
    # the re-run reads the final sequence (prompt + generated) again; it does not generate anew
    from attnwidget.ablate import ablate_heads
    from attnwidget.extract import extract_attention

    model, tok = tiny_lm
    v = AttentionView(model, PROMPT, tokenizer=tok, generate=N_NEW, layer=1, step=2)
    try:
        v.ablated = [[0, 1]]
        assert v.status == ""
        assert v.effect["heads"] == [[0, 1]]
        with ablate_heads(model, {0: [1]}):
            expected = extract_attention(model, SEGMENT * 2, tok)
        np.testing.assert_allclose(v.maps.weights, expected.weights, rtol=0, atol=1e-6)
        assert not np.allclose(v.maps.weights[1], reference.maps.weights[1])  # layer 1 reads layer 0
        assert v.query_tokens == list(SEGMENT * 2)
        assert v.metrics["step"]["step"] == 2
    finally:
        v.close()


def test_text_row_keeps_full_resolution_when_the_map_is_pooled():
    # 600 tokens: the map is max-pooled (2 x 2 blocks), the text row is not: each token keeps its
    # own level on the map's colour range
    from attnwidget.synthetic import create_synthetic_attention

    w = np.asarray(create_synthetic_attention(600, "local"), dtype=np.float32)
    v = AttentionView(AttentionMaps(w[None, None], [f"t{i}" for i in range(600)]), show_text=True, query=300)
    try:
        assert v.panel["pool"] == 2
        assert v.text_row["shape"] == [1, 600]
        np.testing.assert_array_equal(levels(v.text_row)[0], quantize(w[300], v.panel["vmax"]))
        pooled = levels(v.panel)[150]  # the block of rows 300-301: each cell the max of 2 x 2
        block_max = np.maximum(*quantize(w[300:302], v.panel["vmax"])).reshape(-1, 2).max(axis=1)
        np.testing.assert_array_equal(pooled, block_max)
    finally:
        v.close()
