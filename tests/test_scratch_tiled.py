"""tiled_attention (bonus challenge 1, flash attention): exact against sdpa, and O(N x block) memory."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F  # noqa: N812 (the usual name)

from attnwidget.scratch import attention, causal_mask, padding_mask, tiled_attention

# float32 tolerance: the 1e-5. The online softmax adds the same terms as sdpa in another
# order (block by block, each block rescaled once per later maximum), so the two differ by
# float32 rounding, ~ sqrt(#terms) x 6e-8 x |v| ~ 1e-6 for a few hundred keys of N(0, 1) values.
F32 = {"rtol": 1e-5, "atol": 1e-5}
# float64: the same argument with 1e-16 rounding
F64 = {"rtol": 1e-12, "atol": 1e-12}


def qkv(*lead, n_q=257, n_k=257, d=16, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(*lead, n_q, d, generator=g, dtype=dtype),
            torch.randn(*lead, n_k, d, generator=g, dtype=dtype),
            torch.randn(*lead, n_k, d, generator=g, dtype=dtype))


@pytest.mark.parametrize("block_size", [1, 7, 64, 128, 256, 1000])
def test_equals_sdpa_within_1e5(block_size):
    # 257 keys: the last block is partial for every block size but 1 and 257+
    Q, K, V = qkv(2, 3)
    out = tiled_attention(Q, K, V, block_size=block_size)
    torch.testing.assert_close(out, F.scaled_dot_product_attention(Q, K, V), **F32)
    out = tiled_attention(Q, K, V, scale=False, block_size=block_size)
    torch.testing.assert_close(out, F.scaled_dot_product_attention(Q, K, V, scale=1.0), **F32)


def test_float64_equals_the_untiled_version():
    Q, K, V = qkv(2, n_q=33, n_k=100, dtype=torch.float64)
    for scale in (True, False, 0.05):
        torch.testing.assert_close(tiled_attention(Q, K, V, scale=scale, block_size=16),
                                   attention(Q, K, V, scale=scale)[0], **F64)


@pytest.mark.parametrize("form", ["bool", "additive", "keep01", "padding", "alibi"])
def test_masks_block_by_block(form):
    Q, K, V = qkv(2, n_q=40, n_k=40, dtype=torch.float64)
    keep = causal_mask(40)
    dist = (torch.arange(40)[:, None] - torch.arange(40)[None, :]).double()
    mask = {
        "bool": keep,
        "additive": torch.zeros(40, 40, dtype=torch.float64).masked_fill(~keep, float("-inf")),
        "keep01": keep.double(),
        "padding": padding_mask([40, 13], 40)[:, 0],  # [B, 1, n_k]
        "alibi": -0.3 * dist.abs(),
    }[form]
    torch.testing.assert_close(tiled_attention(Q, K, V, mask=mask, block_size=6),
                               attention(Q, K, V, mask=mask)[0], **F64)


def test_causal_flag_without_a_mask_tensor():
    # n_q < n_k is a query window over a longer cache: causal_mask aligns at the last key
    for n_q, n_k in [(64, 64), (5, 300), (30, 10)]:
        Q, K, V = qkv(3, n_q=n_q, n_k=n_k, dtype=torch.float64)
        expected, _ = attention(Q, K, V, mask=causal_mask(n_q, n_k))
        torch.testing.assert_close(tiled_attention(Q, K, V, causal=True, block_size=8), expected, **F64)
    # n_q > n_k: the first 20 queries see no key at all and give zeros, as attention() does
    out = tiled_attention(Q, K, V, causal=True, block_size=8)
    assert (out[..., :20, :] == 0).all()
    assert torch.isfinite(out).all()


def test_fully_masked_rows_and_key_broadcast_masks():
    Q, K, V = qkv(n_q=6, n_k=50, dtype=torch.float64)
    row_mask = torch.tensor([True, False, True, True, False, True])[:, None]  # [n_q, 1]: whole rows
    out = tiled_attention(Q, K, V, mask=row_mask, block_size=16)
    expected, _ = attention(Q, K, V, mask=row_mask)
    torch.testing.assert_close(out, expected, **F64)
    assert (out[[1, 4]] == 0).all()


def test_logsumexp_is_the_softmax_denominator():
    Q, K, V = qkv(2, n_q=20, n_k=70, dtype=torch.float64)
    keep = causal_mask(20, 70)
    keep[3] = False
    out, lse = tiled_attention(Q, K, V, mask=keep, block_size=9, return_logsumexp=True)
    scores = (Q @ K.transpose(-2, -1) / 4.0).masked_fill(~keep, float("-inf"))  # d_k = 16
    torch.testing.assert_close(lse, torch.logsumexp(scores, dim=-1), **F64)
    assert torch.isneginf(lse[:, 3]).all()
    torch.testing.assert_close(out, tiled_attention(Q, K, V, mask=keep, block_size=9), rtol=0, atol=0)


def test_gradients_match_sdpa():
    # the running maxima are treated as constants; the result does not depend on them, so the
    # gradient must still be the exact one
    Q, K, V = (t.requires_grad_(True) for t in qkv(2, n_q=30, n_k=45, dtype=torch.float64))
    upstream = torch.randn(2, 30, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    (tiled_attention(Q, K, V, block_size=8, causal=True) * upstream).sum().backward()
    ours = [t.grad.clone() for t in (Q, K, V)]
    for t in (Q, K, V):
        t.grad = None
    (F.scaled_dot_product_attention(Q, K, V, attn_mask=causal_mask(30, 45)) * upstream).sum().backward()
    for a, b in zip(ours, (Q.grad, K.grad, V.grad), strict=True):
        torch.testing.assert_close(a, b, **F64)


def test_bad_arguments_name_themselves():
    Q, K, V = qkv(n_q=4, n_k=4)
    with pytest.raises(ValueError, match=r"block_size: expected an int >= 1, got 0"):
        tiled_attention(Q, K, V, block_size=0)
    with pytest.raises(TypeError, match=r"block_size: expected an int >= 1, got bool True"):
        tiled_attention(Q, K, V, block_size=True)
    with pytest.raises(TypeError, match=r"causal: expected a bool, got str"):
        tiled_attention(Q, K, V, causal="yes")
    with pytest.raises(TypeError, match=r"scale: expected True .* got str"):
        tiled_attention(Q, K, V, scale="no")
    with pytest.raises(ValueError, match=r"mask: expected a shape that broadcasts to the scores' \(4, 4\)"):
        tiled_attention(Q, K, V, mask=torch.ones(4, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"mask: ambiguous float mask"):
        tiled_attention(Q, K, V, mask=torch.tensor([0.0, 1.0, float("-inf"), 0.0]))


@pytest.mark.slow
def test_scores_memory_is_n_times_block_not_n_squared():
    # Real resident memory of one call in a fresh single-threaded process (benchmarks/bench_scratch.py
    # resets the peak-RSS mark through /proc/self/clear_refs before the call). N = 4096, d = 64,
    # float32: one [N, N] score matrix is 64 MiB, one [N, 128] block 2 MiB.
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from bench_scratch import peak_growth

    n = 4096
    untiled = peak_growth("untiled", n)["growth_bytes"]
    tiled = peak_growth("tiled", n, block=128)["growth_bytes"]
    tiled_big = peak_growth("tiled", n, block=1024)["growth_bytes"]
    # untiled holds at least the scores and the weights it returns: 2 x N^2 x 4 bytes (measured ~3x)
    assert untiled >= 2 * n * n * 4
    # tiled holds a few [N, block] buffers and [N, d] accumulators (measured ~3.5 blocks of 128, 2.3
    # of 1024); the bounds leave 2-3x room for allocator slack
    assert tiled <= 8 * n * 128 * 4
    assert tiled_big <= 4 * n * 1024 * 4
    # and it follows the block: 8x the block, at least 3x the memory (measured ~5x)
    assert tiled_big >= 3 * tiled
    assert untiled >= 10 * tiled  # measured ~27x
