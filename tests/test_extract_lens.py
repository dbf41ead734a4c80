"""TransformerLens HookedTransformer, built from a config (no download)."""

import math

import pytest
import torch

from attnwidget import extract_attention

pytestmark = pytest.mark.filterwarnings(
    # TL 3.x warns that HookedTransformer goes away in 4.0; we test the 3.x API on purpose
    "ignore:HookedTransformer is deprecated:DeprecationWarning"
)
tl = pytest.importorskip("transformer_lens", reason="transformer-lens is not installed (extra: lens)")


@pytest.fixture(scope="module")
def hooked():
    torch.manual_seed(0)
    cfg = tl.HookedTransformerConfig(
        n_layers=2, d_model=32, n_ctx=16, d_head=8, n_heads=4, d_vocab=50,
        act_fn="gelu", attn_only=True, normalization_type=None, n_key_value_heads=2,
    )
    return tl.HookedTransformer(cfg).eval()


def test_patterns_equal_softmax_of_cached_queries_and_keys(hooked):
    ids = torch.randint(0, 50, (1, 9))
    maps = extract_attention(hooked, ids)
    assert maps.shape == (2, 4, 9, 9)
    assert maps.causal
    assert maps.layer_names[1] == "blocks.1.attn.hook_pattern"
    _, cache = hooked.run_with_cache(ids)
    for layer in range(2):
        q = cache[f"blocks.{layer}.attn.hook_q"][0]  # [pos, head, d_head]
        k = cache[f"blocks.{layer}.attn.hook_k"][0]  # [pos, kv_head, d_head] (GQA)
        group = q.shape[1] // k.shape[1]
        for head in range(4):
            scores = q[:, head] @ k[:, head // group].T / math.sqrt(8)
            causal = torch.ones(9, 9, dtype=torch.bool).triu(1)
            ref = scores.masked_fill(causal, -torch.inf).softmax(-1)
            torch.testing.assert_close(maps.weights[layer, head], ref, atol=1e-6, rtol=1e-5)
    assert all(not hp.fwd_hooks for hp in hooked.hook_dict.values())


def test_too_long_and_text_without_tokenizer(hooked):
    with pytest.raises(ValueError, match=r"20 tokens .* at most 16 \(cfg.n_ctx\)"):
        extract_attention(hooked, torch.randint(0, 50, (1, 20)))
    assert extract_attention(hooked, torch.randint(0, 50, (1, 20)), truncation=True).shape[2] == 16
    with pytest.raises(ValueError, match="tokenizer: this HookedTransformer has no tokenizer"):
        extract_attention(hooked, "some text")
