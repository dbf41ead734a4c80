import numpy as np
import pytest

from attnwidget._codec import MAX_PANEL_BYTES, decode_panel, encode_panel


def test_uint8_round_trip_within_half_a_step():
    rng = np.random.default_rng(0)
    panel = rng.random((7, 11)).astype(np.float32)
    msg = encode_panel(panel)
    assert msg["dtype"] == "uint8"
    assert msg["shape"] == [7, 11]
    assert isinstance(msg["buffer"], memoryview)
    assert len(msg["buffer"]) == 77
    np.testing.assert_allclose(decode_panel(msg), panel, atol=0.5 / 255 + 1e-7)


def test_float32_round_trip_is_exact():
    rng = np.random.default_rng(1)
    panel = rng.random((5, 3)).astype(np.float32)
    msg = encode_panel(panel, dtype="float32")
    assert len(msg["buffer"]) == 60
    np.testing.assert_array_equal(decode_panel(msg), panel)


def test_quantisation_hand_computed():
    msg = encode_panel(np.array([[0.0, 1.0, 0.5, 0.002]]))
    assert bytes(msg["buffer"]) == bytes([0, 255, 128, 1])


def test_bad_inputs():
    with pytest.raises(ValueError, match="dtype: expected one of"):
        encode_panel(np.zeros((2, 2)), dtype="float16")
    with pytest.raises(ValueError, match="panel: expected a 2-D"):
        encode_panel(np.zeros(3))
    side = int(np.sqrt(MAX_PANEL_BYTES)) + 1
    with pytest.raises(ValueError, match="over the 16 MiB limit per panel"):
        encode_panel(np.zeros((side, side), dtype=np.float32))
