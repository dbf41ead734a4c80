"""Fuzzing (issue 9, first part): every public entry point either returns a valid result or raises
a ValueError/TypeError whose message names the argument. No other exception type escapes."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from attnwidget import AttentionMaps, AttentionView
from attnwidget import metrics as M  # noqa: N812
from attnwidget._codec import decode_panel, encode_panel

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ARG = re.compile(r"^[\w\[\]'.]+: ")  # "name: what was wrong"

special = st.sampled_from([np.nan, np.inf, -np.inf, -1.0, 0.0, 1.0, 1e-30, 2.0])
shapes = st.lists(st.integers(0, 5), min_size=0, max_size=4).map(tuple)
dtypes = st.sampled_from([np.float32, np.float64, np.int64, np.float16, np.bool_])


@st.composite
def weights(draw):
    """Arbitrary arrays: random shapes and dtypes, sometimes valid softmax rows, sometimes junk."""
    shape = draw(shapes)
    if draw(st.booleans()) and len(shape) >= 2 and all(shape):
        a = np.exp(draw(arrays(np.float64, shape, elements=st.floats(-5, 5))))
        a = a / a.sum(-1, keepdims=True)
        if draw(st.booleans()):  # poke a special value somewhere
            idx = tuple(draw(st.integers(0, s - 1)) for s in shape)
            a[idx] = draw(special)
        return a.astype(draw(st.sampled_from([np.float32, np.float64])))
    dtype = draw(dtypes)
    if dtype == np.bool_:
        elements = st.booleans()
    elif dtype == np.int64:
        elements = st.integers(-3, 3)
    else:
        elements = st.one_of(st.floats(-2, 2, width=16), special.map(float))
    return draw(arrays(dtype, shape, elements=elements))


def check_error(exc: Exception) -> None:
    assert isinstance(exc, (ValueError, TypeError)), f"{type(exc).__name__}: {exc}"
    assert ARG.match(str(exc)), f"message does not start with the argument's name: {exc}"


METRICS = [
    ("compute_attention_entropy", lambda w: M.compute_attention_entropy(w)),
    ("normalized_entropy", lambda w: M.normalized_entropy(w)),
    ("compute_attention_sparsity", lambda w: M.compute_attention_sparsity(w, 0.1)),
    ("gini_coefficient", lambda w: M.gini_coefficient(w)),
    ("compute_attention_statistics", lambda w: M.compute_attention_statistics(w)),
    ("identify_attention_pattern", lambda w: M.identify_attention_pattern(w)),
    ("pattern_scores", lambda w: M.pattern_scores(w)),
    ("top_k_keys", lambda w: M.top_k_keys(w, 1)),
    ("head_sharpness", lambda w: M.head_sharpness(w, relative=True)),
    ("analyze_attention_patterns", lambda w: M.analyze_attention_patterns(w)),
    ("attention_received", lambda w: M.attention_received(w)),
    ("panel_metrics", lambda w: M.panel_metrics(w, 0.1, 0)),
]


@pytest.mark.parametrize(("name", "call"), METRICS, ids=[n for n, _ in METRICS])
@FUZZ
@given(w=weights())
def test_metrics_return_valid_results_or_name_the_argument(name, call, w):
    try:
        out = call(w)
    except (ValueError, TypeError) as exc:
        check_error(exc)
        return
    except Exception as exc:
        pytest.fail(f"{name}: {type(exc).__name__} escaped: {exc}")
    values = out.values() if isinstance(out, dict) else [out]
    # NaN means "undefined": only for a matrix whose rows are all fully masked (nothing is
    # attended), and normalized entropy of rows with fewer than two keys
    rows = np.asarray(w, dtype=np.float64).sum(axis=-1)
    has_empty_map = bool((rows == 0).all(axis=-1).any())
    for v in values:
        arr = np.asarray(v, dtype=object if isinstance(v, (str, list)) else None)
        if arr.dtype.kind == "f":
            assert (not np.isnan(arr).any() or has_empty_map
                    or name in ("normalized_entropy", "panel_metrics")), (name, v)


@FUZZ
@given(w=weights(), tokens=st.lists(st.text(max_size=30), max_size=6))
def test_record_and_view_constructors(w, tokens):
    for build in (lambda: AttentionMaps(w, tokens), lambda: AttentionMaps.from_tensor(w, tokens or None)):
        try:
            maps = build()
        except (ValueError, TypeError) as exc:
            check_error(exc)
            continue
        assert maps.weights.dtype == torch.float32
        assert bool(torch.isfinite(maps.weights).all())  # never NaN, even for fully masked rows
        view = AttentionView(maps)
        assert view.metrics["view"]["layer"] == 0
        view.close()


@FUZZ
@given(w=weights(), vmax=st.one_of(st.floats(allow_nan=True), st.none()))
def test_codec(w, vmax):
    try:
        msg = encode_panel(w, vmax=vmax)
    except (ValueError, TypeError) as exc:
        check_error(exc)
        return
    back = decode_panel(msg)
    assert back.shape == np.asarray(w).shape


def test_the_cases_fuzzing_found():
    # an empty stack used to fail with an IndexError deep inside the constructor
    with pytest.raises(ValueError, match=r"weights: every axis needs at least one entry, got shape \(0, 0"):
        AttentionMaps(np.zeros((0, 0, 0, 0), np.float32), [])
    with pytest.raises(ValueError, match=r"weights\[0\]: every axis needs at least one entry"):
        AttentionMaps([np.zeros((1, 0, 0), np.float32)], [])
    # NaN used to be cast to an arbitrary colour level with only a RuntimeWarning
    with pytest.raises(ValueError, match="panel: expected finite weights"):
        encode_panel(np.array([[np.nan, 1.0]]))
    msg = encode_panel(np.array([[0.5, 1.0]], np.float16), vmax=1e300)  # no overflow on the way
    assert bytes(msg["buffer"]) == bytes([0, 0])
