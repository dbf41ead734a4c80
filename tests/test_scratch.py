"""attnwidget.scratch.attention against torch's scaled_dot_product_attention and hand-computed cases.

The Attention Surgeon handout's semantics: ``scale`` is a bool (or an explicit
factor) and masks come as bool, 0/1 keep-masks or additive 0 / -inf. Dropout
is checked statistically. Tiled attention: test_scratch_tiled.py; top-k,
cross- and grouped-query attention: test_scratch_variants.py.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F  # noqa: N812 (the usual name)

from attnwidget.scratch import (
    attention,
    attention_dropout,
    causal_mask,
    padding_mask,
    reverse_mask,
    scaling_experiment,
    sliding_window_mask,
)


def qkv(B=2, H=3, n=7, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(B, H, n, d, generator=g, dtype=torch.float64) for _ in range(3))


def additive(keep: torch.Tensor) -> torch.Tensor:
    """The handout's form of a bool mask: 0 where allowed, -inf where hidden."""
    return torch.zeros(keep.shape, dtype=torch.float64).masked_fill(~keep, float("-inf"))


def test_hand_computed_two_tokens():
    Q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    K = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    V = torch.tensor([[1.0, 10.0], [3.0, 30.0]])
    e = math.exp(1.0)
    for scale in (False, 1.0, 1):  # no scaling, or an explicit factor of 1
        out, w = attention(Q, K, V, scale=scale)
        # row 0 scores (1, 0): softmax (e, 1) / (e + 1); row 1 scores (0, 2)
        torch.testing.assert_close(w[0], torch.tensor([e / (e + 1), 1 / (e + 1)]))
        torch.testing.assert_close(w[1], torch.tensor([1 / (1 + e**2), e**2 / (1 + e**2)]))
        torch.testing.assert_close(out, w @ V)
    # scale=True divides by sqrt(d_k) = sqrt(2): row 0 scores (1/sqrt 2, 0)
    _, w = attention(Q, K, V, scale=True)
    a = math.exp(1 / math.sqrt(2))
    torch.testing.assert_close(w[0], torch.tensor([a / (a + 1), 1 / (a + 1)]))


@pytest.mark.parametrize("masking", [
    "none", "causal", "reverse", "padding", "window", "float_bias", "additive_causal",
    "keep01_float", "keep01_int", "numpy_bool", "all_zero_float", "alibi_causal", "keep_all_ones",
])
def test_equals_scaled_dot_product_attention(masking):
    Q, K, V = qkv()
    n = Q.shape[-2]
    causal = causal_mask(n)
    dist = (torch.arange(n)[:, None] - torch.arange(n)[None, :]).double()
    # (mask given to attention, the same mask in sdpa's terms: bool keep or float bias; SAME = as is)
    SAME = object()
    mask, reference = {
        "none": (None, None),
        "causal": (causal, causal),
        "reverse": (reverse_mask(n), reverse_mask(n)),
        "padding": (padding_mask([7, 4], n), padding_mask([7, 4], n)),
        "window": (sliding_window_mask(n, 3), sliding_window_mask(n, 3)),
        "float_bias": (torch.randn(n, n, dtype=torch.float64), SAME),  # an additive finite bias
        "additive_causal": (additive(causal), causal),  # the handout's create_causal_mask
        "keep01_float": (causal.double(), causal),  # the handout's masked_fill(mask == 0, -inf)
        "keep01_int": (causal.long(), causal),
        "numpy_bool": (causal.numpy(), causal),
        "all_zero_float": (torch.zeros(n, n, dtype=torch.float64), None),  # additive: masks nothing
        "alibi_causal": (additive(causal) - 0.5 * dist.clamp(min=0), SAME),  # ALiBi slope 0.5 + causal
        "keep_all_ones": (torch.ones(n, n), None),  # keep everything
    }[masking]
    reference = mask if reference is SAME else reference
    out, w = attention(Q, K, V, mask=mask)
    expected = F.scaled_dot_product_attention(Q, K, V, attn_mask=reference)
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(w.sum(-1), torch.ones(w.shape[:-1], dtype=w.dtype))
    if reference is not None and reference.dtype == torch.bool:
        assert (w.masked_select(~reference.expand(w.shape)) == 0).all()


def test_the_handouts_two_mask_forms_agree():
    # Q, K, V as the handout shapes them: [batch, seq_len, d_k]; the two forms of its causal mask
    g = torch.Generator().manual_seed(1)
    Q, K, V = (torch.randn(2, 5, 16, generator=g) for _ in range(3))
    minus_inf_above = torch.triu(torch.full((5, 5), float("-inf")), diagonal=1)  # 0 below, -inf above
    ones_below = torch.tril(torch.ones(5, 5))  # 1 = attend, for masked_fill(mask == 0, -inf)
    out_a, w_a = attention(Q, K, V, mask=minus_inf_above)
    out_b, w_b = attention(Q, K, V, mask=ones_below)
    # the handout's own steps, written out
    scores = (Q @ K.transpose(-2, -1) / math.sqrt(16)).masked_fill(ones_below == 0, float("-inf"))
    w_ref = torch.softmax(scores, dim=-1)
    for w in (w_a, w_b):
        torch.testing.assert_close(w, w_ref)
    torch.testing.assert_close(out_a, w_ref @ V)
    torch.testing.assert_close(out_b, out_a)
    assert (w_a.triu(1) == 0).all()


def test_scale_is_the_handouts_bool():
    Q, K, V = qkv()
    default = F.scaled_dot_product_attention(Q, K, V)  # divides by sqrt(d_k)
    unscaled = F.scaled_dot_product_attention(Q, K, V, scale=1.0)
    for scale, expected in [(True, default), (None, default), (np.bool_(True), default),
                            (False, unscaled), (np.bool_(False), unscaled), (0.3, None), (2, None)]:
        out, w = attention(Q, K, V, scale=scale)
        if expected is None:
            expected = F.scaled_dot_product_attention(Q, K, V, scale=float(scale))
        torch.testing.assert_close(out, expected)
    # the bug this replaces: scale=False multiplied the scores by 0, so every weight was 1/n
    _, w = attention(Q, K, V, scale=False)
    assert w.std(dim=-1).min() > 0.01
    # without the scale the softmax is sharper (d_k = 8: scores 2.8x larger)
    _, w_scaled = attention(Q, K, V)
    assert w.max(-1).values.mean() > w_scaled.max(-1).values.mean()


@pytest.mark.parametrize(("scale", "error", "message"), [
    ("yes", TypeError, r"scale: expected True \(divide by sqrt\(d_k\)\), False \(no scaling\) or a "
                       r"positive finite factor \(float\), got str 'yes'"),
    (torch.tensor(0.5), TypeError, r"scale: expected True .* got Tensor"),
    ([1.0], TypeError, r"scale: expected .* got list"),
    (-1.0, ValueError, r"scale: expected .* positive finite factor, got -1\.0"),
    (0, ValueError, r"scale: expected .* got 0"),
    (float("nan"), ValueError, r"scale: expected .* got nan"),
    (float("inf"), ValueError, r"scale: expected .* got inf"),
])
def test_bad_scale_names_the_argument(scale, error, message):
    Q, K, V = qkv()
    with pytest.raises(error, match=message):
        attention(Q, K, V, scale=scale)


def test_mask_rule_edges():
    Q, K, V = qkv(B=1, H=1, n=4)
    plain, _ = attention(Q, K, V)
    # all-zero float: additive, masks nothing
    torch.testing.assert_close(attention(Q, K, V, mask=torch.zeros(4, 4))[0], plain)
    # a keep-mask of 1s only, or a constant bias per row: the softmax does not change
    torch.testing.assert_close(attention(Q, K, V, mask=torch.ones(4, 4))[0], plain)
    # 1 / -inf (a keep-mask someone masked_fill-ed already): additive, the same as 0 / -inf
    keep = causal_mask(4)
    ones_neginf = torch.ones(4, 4).masked_fill(~keep, float("-inf"))
    torch.testing.assert_close(attention(Q, K, V, mask=ones_neginf)[0],
                               attention(Q, K, V, mask=keep)[0])
    # all-zero int (or bool False): a keep-mask that hides everything: zero outputs, no NaN
    for hide_all in (torch.zeros(4, 4, dtype=torch.long), torch.zeros(4, 4, dtype=torch.bool)):
        out, w = attention(Q, K, V, mask=hide_all)
        assert (out == 0).all()
        assert (w == 0).all()


@pytest.mark.parametrize(("mask", "error", "message"), [
    (torch.zeros(7, 7).index_put_((torch.tensor([0, 0]), torch.tensor([1, 2])),
                                  torch.tensor([1.0, float("-inf")])), ValueError,
     r"mask: ambiguous float mask: it holds 0, 1 and -inf together.* expected a bool mask \(True = may "
     r"attend\), a 0/1 keep-mask .* or an additive float mask"),
    (torch.full((7, 7), float("nan")), ValueError, r"mask: got NaN or \+inf values; expected a bool mask"),
    (torch.full((7, 7), float("inf")), ValueError, r"mask: got NaN or \+inf values"),
    (torch.full((7, 7), 2), ValueError, r"mask: an integer mask must be a 0/1 keep-mask .* got values \[2\]"),
    (torch.ones(3, 3, dtype=torch.bool), ValueError,
     r"mask: expected a shape that broadcasts to the scores' \(2, 3, 7, 7\) \(\[\.\.\., n_q, n_k\]\), "
     r"got \(3, 3\)"),
    (torch.ones(4, 2, 3, 7, 7, dtype=torch.bool), ValueError,  # would grow the output's batch
     r"mask: expected a shape that broadcasts to the scores' \(2, 3, 7, 7\)"),
    ([[True] * 7] * 7, TypeError, r"mask: expected a torch tensor or numpy array, a bool mask .* got list"),
    (torch.ones(7, 7, dtype=torch.complex64), TypeError,
     r"mask: expected a bool mask .*got a torch\.complex64 tensor"),
])
def test_bad_masks_name_the_forms(mask, error, message):
    Q, K, V = qkv()
    with pytest.raises(error, match=message):
        attention(Q, K, V, mask=mask)


def test_numpy_inputs_work_like_tensors():
    Q, K, V = qkv()
    out_np, w_np = attention(Q.numpy(), K.numpy(), V.numpy(), mask=causal_mask(7).numpy())
    out, w = attention(Q, K, V, mask=causal_mask(7))
    torch.testing.assert_close(out_np, out)
    torch.testing.assert_close(w_np, w)


def test_fully_masked_rows_give_zeros_not_nan():
    Q, K, V = qkv(B=1, H=1, n=4)
    mask = torch.ones(4, 4, dtype=torch.bool)
    mask[2] = False  # query 2 may look at nothing
    for form in (mask, mask.double(), additive(mask)):
        out, w = attention(Q, K, V, mask=form)
        assert torch.isfinite(out).all()
        assert (w[..., 2, :] == 0).all()
        assert (out[..., 2, :] == 0).all()
    # the naive formula really gives NaN there
    scores = (Q @ K.transpose(-2, -1)).masked_fill(~mask, float("-inf"))
    assert torch.isnan(torch.softmax(scores, -1)[..., 2, :]).all()


def test_no_keys_gives_no_weights_and_zero_outputs():
    Q, K, V = qkv(B=1, H=1, n=4)
    out, w = attention(Q, K[..., :0, :], V[..., :0, :])
    assert w.shape == (*Q.shape[:-1], 0)
    assert out.shape == Q.shape[:-1] + V.shape[-1:]
    assert (out == 0).all()


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
    with pytest.raises(ValueError, match=r"K: expected 8 features like Q \(\[\.\.\., n_k, 8\]\), got shape"):
        attention(Q, K[..., :4], V)
    with pytest.raises(ValueError, match=r"V: expected 7 positions like K"):
        attention(Q, K, V[..., :5, :])
    with pytest.raises(TypeError, match=r"Q: expected a floating-point torch tensor .* got list"):
        attention([[1.0]], K, V)
    with pytest.raises(TypeError, match=r"K: expected a floating-point .* got a torch\.int64 tensor"):
        attention(Q, K.long(), V)
    with pytest.raises(ValueError, match=r"V: expected at least 2 dimensions .* got shape \(8,\)"):
        attention(Q, K, V[0, 0, 0])
    with pytest.raises(TypeError, match=r"V: expected dtype torch\.float64 like Q, got torch\.float32"):
        attention(Q, K, V.float())
    with pytest.raises(ValueError, match=r"Q, K, V: expected leading \(batch, head\) dims that broadcast"):
        attention(Q, K[:, :2], V[:, :2])
    with pytest.raises(ValueError, match=r"lengths: expected one length in 0\.\.3"):
        padding_mask([4], 3)
    with pytest.raises(ValueError, match="window: expected >= 1"):
        sliding_window_mask(3, 0)


# ---------------------------------------------------------------------------------------------
# dropout (bonus challenge 5)


def test_dropout_eval_mode_and_p0_are_the_identity():
    Q, K, V = qkv()
    w = torch.softmax(torch.randn(3, 5, 5, dtype=torch.float64), -1)
    assert attention_dropout(w, 0.5, training=False) is w
    assert attention_dropout(w, 0.0) is w
    out, weights = attention(Q, K, V, dropout_p=0.5, training=False)
    plain_out, plain_w = attention(Q, K, V)
    torch.testing.assert_close(out, plain_out, rtol=0, atol=0)
    torch.testing.assert_close(weights, plain_w, rtol=0, atol=0)
    assert (attention_dropout(w, 1.0) == 0).all()


def test_dropout_zeroes_or_rescales_each_weight():
    w = torch.softmax(torch.randn(4, 6, 6, dtype=torch.float64), -1)
    p = 0.25
    dropped = attention_dropout(w, p, generator=torch.Generator().manual_seed(0))
    kept = dropped != 0
    torch.testing.assert_close(dropped[kept], w[kept] / (1 - p))  # survivors scaled by 1/(1-p)
    again = attention_dropout(w, p, generator=torch.Generator().manual_seed(0))
    assert torch.equal(dropped, again)  # the generator makes it reproducible
    # attention() applies it to the weights it returns, and those weights multiplied V
    Q, K, V = qkv()
    out, weights = attention(Q, K, V, dropout_p=p, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(out, weights @ V)
    assert (weights == 0).any()


def test_dropout_keeps_the_expected_weight():
    # Each dropped weight is X = w * B / (1 - p) with B ~ Bernoulli(1 - p): E[X] = w and
    # Var[X] = w^2 p / (1 - p). The mean of T independent draws therefore has standard error
    # SE = w * sqrt(p / ((1 - p) T)), and by the central limit theorem it lies within 5 SE of w
    # except with probability 5.7e-7 per entry (2e-5 for all 36 entries here); the generator is
    # seeded, so the outcome is fixed, and the bound is derived rather than tuned to it.
    p, T = 0.3, 20_000
    w = torch.softmax(torch.randn(6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(2)), -1)
    draws = attention_dropout(w.expand(T, 6, 6), p, generator=torch.Generator().manual_seed(3))
    se = w * math.sqrt(p / ((1 - p) * T))
    z = (draws.mean(0) - w) / se
    assert z.abs().max() < 5
    # the share of zeros is Binomial(6 * 6 * T, p) / (6 * 6 * T): SE = sqrt(p (1 - p) / N)
    n = draws.numel()
    assert abs(float((draws == 0).double().mean()) - p) < 5 * math.sqrt(p * (1 - p) / n)
    # a single draw's rows no longer sum to 1, but their mean does
    assert (draws[0].sum(-1) - 1).abs().max() > 1e-3
    # the output: out_i = sum_j w'_ij v_j, independent terms, Var = sum_j w_ij^2 v_j^2 p / (1 - p)
    g = torch.Generator().manual_seed(4)
    Q, K, V = (torch.randn(6, 4, dtype=torch.float64, generator=g) for _ in range(3))
    out_plain, w_plain = attention(Q, K, V)
    outs = torch.stack([attention(Q, K, V, dropout_p=p, generator=g)[0] for _ in range(2_000)])
    se_out = torch.sqrt((w_plain**2) @ (V**2) * p / ((1 - p) * len(outs)))
    assert ((outs.mean(0) - out_plain) / se_out).abs().max() < 5


@pytest.mark.parametrize(("p", "error", "message"), [
    (1.5, ValueError, r"dropout_p: expected a probability in \[0, 1\], got 1\.5"),
    (-0.1, ValueError, r"dropout_p: expected a probability in \[0, 1\], got -0\.1"),
    (float("nan"), ValueError, r"dropout_p: expected a probability in \[0, 1\], got nan"),
    ("0.1", TypeError, r"dropout_p: expected a probability in \[0, 1\] \(float\), got str '0\.1'"),
    (True, TypeError, r"dropout_p: expected a probability .* got bool True"),
])
def test_bad_dropout_names_the_argument(p, error, message):
    Q, K, V = qkv()
    with pytest.raises(error, match=message):
        attention(Q, K, V, dropout_p=p)
    with pytest.raises(error, match=message.replace("dropout_p", "p")):
        attention_dropout(torch.ones(2, 2), p)


# ---------------------------------------------------------------------------------------------


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
