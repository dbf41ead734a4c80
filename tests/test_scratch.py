"""attnwidget.scratch against torch's scaled_dot_product_attention and hand-computed cases."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F  # noqa: N812 (the usual name)

from attnwidget.scratch import (
    attention,
    causal_mask,
    padding_mask,
    reverse_mask,
    scaling_experiment,
    sliding_window_mask,
)


def qkv(B=2, H=3, n=7, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(B, H, n, d, generator=g, dtype=torch.float64) for _ in range(3))


def test_hand_computed_two_tokens():
    Q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    K = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    V = torch.tensor([[1.0, 10.0], [3.0, 30.0]])
    out, w = attention(Q, K, V, scale=1.0)
    e = math.exp(1.0)
    # row 0 scores (1, 0): softmax (e, 1) / (e + 1); row 1 scores (0, 2)
    torch.testing.assert_close(w[0], torch.tensor([e / (e + 1), 1 / (e + 1)]))
    torch.testing.assert_close(w[1], torch.tensor([1 / (1 + e**2), e**2 / (1 + e**2)]))
    torch.testing.assert_close(out, w @ V)


@pytest.mark.parametrize("masking", ["none", "causal", "reverse", "padding", "window", "float"])
def test_equals_scaled_dot_product_attention(masking):
    Q, K, V = qkv()
    n = Q.shape[-2]
    mask = {
        "none": None, "causal": causal_mask(n), "reverse": reverse_mask(n),
        "padding": padding_mask([7, 4], n), "window": sliding_window_mask(n, 3),
        "float": torch.randn(n, n, dtype=torch.float64),
    }[masking]
    out, w = attention(Q, K, V, mask=mask)
    expected = F.scaled_dot_product_attention(Q, K, V, attn_mask=mask)
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(w.sum(-1), torch.ones(w.shape[:-1], dtype=w.dtype))
    if mask is not None and mask.dtype == torch.bool:
        assert (w.masked_select(~mask.expand(w.shape)) == 0).all()
    out2, _ = attention(Q, K, V, scale=0.3)
    torch.testing.assert_close(out2, F.scaled_dot_product_attention(Q, K, V, scale=0.3))


def test_fully_masked_rows_give_zeros_not_nan():
    Q, K, V = qkv(B=1, H=1, n=4)
    mask = torch.ones(4, 4, dtype=torch.bool)
    mask[2] = False  # query 2 may look at nothing
    out, w = attention(Q, K, V, mask=mask)
    assert torch.isfinite(out).all()
    assert (w[..., 2, :] == 0).all()
    assert (out[..., 2, :] == 0).all()
    # the naive formula really gives NaN there
    scores = (Q @ K.transpose(-2, -1)).masked_fill(~mask, float("-inf"))
    assert torch.isnan(torch.softmax(scores, -1)[..., 2, :]).all()


def test_masks_by_hand():
    assert causal_mask(3).tolist() == [[True, False, False], [True, True, False], [True, True, True]]
    assert reverse_mask(3).tolist() == [[True, True, True], [False, True, True], [False, False, True]]
    assert causal_mask(2, 4).tolist() == [[True, True, True, False], [True, True, True, True]]
    assert sliding_window_mask(4, 2).tolist() == [
        [True, False, False, False], [True, True, False, False],
        [False, True, True, False], [False, False, True, True]]
    assert padding_mask([2, 3], 3)[:, 0, 0].tolist() == [[True, True, False], [True, True, True]]


def test_bad_inputs_name_the_argument():
    Q, K, V = qkv()
    with pytest.raises(ValueError, match=r"K: expected 8 features like Q"):
        attention(Q, K[..., :4], V)
    with pytest.raises(ValueError, match=r"V: expected 7 positions like K"):
        attention(Q, K, V[..., :5, :])
    with pytest.raises(ValueError, match=r"mask: shape \(3, 3\) does not broadcast"):
        attention(Q, K, V, mask=torch.ones(3, 3, dtype=torch.bool))
    with pytest.raises(TypeError, match="Q: expected a floating-point torch tensor"):
        attention([[1.0]], K, V)
    with pytest.raises(ValueError, match=r"lengths: expected one length in 0\.\.3"):
        padding_mask([4], 3)
    with pytest.raises(ValueError, match="window: expected >= 1"):
        sliding_window_mask(3, 0)


def test_scaling_experiment_shows_saturation_without_the_scale():
    res = scaling_experiment(d_k=(16, 64, 256, 1024))
    rows = list(zip(*res.values(), strict=True))
    assert len(rows) == 8
    by = {(r[0], r[1]): dict(zip(res, r, strict=True)) for r in rows}
    for d in (16, 64, 256, 1024):
        raw, scaled = by[(d, False)], by[(d, True)]
        # raw scores have std ~ sqrt(d_k); scaled ones ~ 1
        assert raw["score_std"] == pytest.approx(math.sqrt(d), rel=0.2)
        assert scaled["score_std"] == pytest.approx(1.0, rel=0.2)
    # without the scale: the softmax saturates and its gradient vanishes as d_k grows
    assert by[(1024, False)]["max_weight"] > 0.9
    assert by[(1024, False)]["grad_norm"] < 0.5 * by[(1024, True)]["grad_norm"]
    assert by[(1024, False)]["grad_norm"] < 0.5 * by[(16, False)]["grad_norm"]
    assert by[(1024, False)]["entropy"] < 0.3
    raw_max = [by[(d, False)]["max_weight"] for d in (16, 64, 256, 1024)]
    assert raw_max == sorted(raw_max)  # the wider the keys, the harder it saturates
    # with it: the same picture at every width
    scaled_max = [by[(d, True)]["max_weight"] for d in (16, 64, 256, 1024)]
    assert max(scaled_max) - min(scaled_max) < 0.1
    assert all(by[(d, True)]["entropy"] > 2.5 for d in (16, 64, 256, 1024))  # ln 64 = 4.16
    assert scaling_experiment(d_k=(16,)) == scaling_experiment(d_k=(16,))  # seeded
