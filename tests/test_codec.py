import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from attnwidget._codec import (
    LEVELS,
    MASKED,
    MAX_PANEL_BYTES,
    decode_panel,
    encode_panel,
    pool_factor,
    pool_max,
)


def test_uint8_round_trip_within_half_a_level():
    rng = np.random.default_rng(0)
    panel = rng.random((7, 11)).astype(np.float32)
    msg = encode_panel(panel)
    assert msg["dtype"] == "uint8"
    assert msg["shape"] == [7, 11]
    assert isinstance(msg["buffer"], memoryview)
    assert len(msg["buffer"]) == 77
    np.testing.assert_allclose(decode_panel(msg), panel, atol=0.5 / LEVELS + 1e-7)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 9), st.integers(1, 9), st.floats(1e-4, 1.0), st.integers(0, 2**31 - 1))
def test_uint8_round_trip_any_vmax(rows, cols, vmax, seed):
    rng = np.random.default_rng(seed)
    panel = (rng.random((rows, cols)) * vmax).astype(np.float32)
    visible = rng.random((rows, cols)) > 0.2
    back = decode_panel(encode_panel(panel, vmax=vmax, visible=visible))
    assert np.array_equal(np.isnan(back), ~visible)
    np.testing.assert_allclose(back[visible], panel[visible], atol=0.5 * vmax / LEVELS + 1e-6)


def test_quantisation_hand_computed():
    msg = encode_panel(np.array([[0.0, 1.0, 0.5, 0.002]]))
    assert bytes(msg["buffer"]) == bytes([0, 254, 127, 1])
    # vmax 0.5: 0.5 is the top colour, 0.25 the middle, 1.0 saturates
    msg = encode_panel(np.array([[0.25, 0.5, 1.0, 0.0]]), vmax=0.5,
                       visible=np.array([[True, True, True, False]]))
    assert bytes(msg["buffer"]) == bytes([127, 254, 254, MASKED])
    assert msg["vmax"] == 0.5


def test_max_pooling_keeps_a_single_sharp_weight():
    w = np.zeros((10, 10), np.float32)
    w[7, 3] = 0.9
    assert pool_factor(10, 10, 4) == 3
    pooled, vis = pool_max(w, 3)
    assert pooled.shape == (4, 4)  # ceil(10 / 3): the edge block is partial
    assert pooled[2, 1] == pytest.approx(0.9)
    assert pooled.sum() == pytest.approx(0.9)
    assert vis is None
    causal = np.tri(10, 10, dtype=bool)
    _, vis = pool_max(w, 3, causal)
    # a block is visible when any of its cells is: the blocks strictly above the diagonal are not
    np.testing.assert_array_equal(vis, np.tri(4, 4, dtype=bool))


@settings(max_examples=80, deadline=None)
@given(st.integers(1, 3), st.integers(1, 40), st.integers(1, 40), st.integers(2, 9), st.booleans(),
       st.integers(0, 2**31 - 1))
def test_block_max_equals_max_pool2d(lead, rows, cols, factor, with_nan, seed):
    # pool_max takes the max of whole rows first; torch's max_pool2d with ceil_mode (the
    # implementation it replaced) is the reference: the same blocks, partial at the edges. Max
    # is exact, so the results are equal bit for bit on any CPU
    import torch

    rng = np.random.default_rng(seed)
    w = rng.standard_normal((lead, rows, cols)).astype(np.float32)
    if with_nan:
        w[rng.random(w.shape) < 0.05] = np.nan
    visible = rng.random((rows, cols)) < 0.3
    ref = torch.nn.functional.max_pool2d(torch.from_numpy(w)[:, None], factor, ceil_mode=True)[:, 0].numpy()
    ref_vis = torch.nn.functional.max_pool2d(torch.from_numpy(visible.astype(np.float32))[None, None],
                                             factor, ceil_mode=True)[0, 0].numpy() > 0
    pooled, vis = pool_max(w, factor, visible)
    np.testing.assert_array_equal(pooled, ref)  # NaN where the reference has NaN
    np.testing.assert_array_equal(vis, ref_vis)
    one, _ = pool_max(w[0], factor)
    np.testing.assert_array_equal(one, ref[0])


def test_bad_inputs():
    with pytest.raises(ValueError, match=r"message\['dtype'\]: expected one of \('uint8',\), got 'float32'"):
        decode_panel({"buffer": memoryview(bytes(16)), "dtype": "float32", "shape": [2, 2]})
    with pytest.raises(ValueError, match="panel: expected a 2-D"):
        encode_panel(np.zeros(3))
    with pytest.raises(ValueError, match=r"vmax: expected a positive finite number, got 0\.0"):
        encode_panel(np.zeros((2, 2)), vmax=0)
    with pytest.raises(ValueError, match=r"visible: expected shape \(2, 2\), got \(2, 3\)"):
        encode_panel(np.zeros((2, 2)), visible=np.ones((2, 3), bool))
    with pytest.raises(ValueError, match="max_side: expected >= 1"):
        pool_factor(3, 3, 0)
    side = int(np.sqrt(MAX_PANEL_BYTES)) + 1
    with pytest.raises(ValueError, match="over the 16 MiB limit per panel"):
        encode_panel(np.zeros((side, side), dtype=np.float32))
