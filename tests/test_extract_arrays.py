"""Raw arrays and the per-layer tuples transformers returns."""

import numpy as np
import pytest
import torch

from attnwidget import extract_attention


def test_tuple_from_transformers_with_padding(minilm):
    model, tok = minilm
    enc = tok(["a longer sentence with more words", "short"], return_tensors="pt", padding=True)
    with torch.no_grad():
        out = model(**enc, output_attentions=True)
    tokens = tok.convert_ids_to_tokens(enc["input_ids"][1])
    maps = extract_attention(out.attentions, tokens, attention_mask=enc["attention_mask"],
                             batch_index=1)
    assert maps.query_tokens == ("[CLS]", "short", "[SEP]")
    assert maps.shape == (6, 12, 3, 3)
    # on padded keys the model's weights are ~0, so the real rows still sum to 1
    np.testing.assert_allclose(maps.to_numpy().sum(-1), 1, atol=1e-5)
    single = extract_attention(model, "short", tok)
    torch.testing.assert_close(maps.weights, single.weights, atol=1e-5, rtol=1e-4)


def test_batch_needs_an_index():
    w = torch.full((2, 3, 1, 4, 4), 0.25)  # [L, B, H, Q, K]
    with pytest.raises(ValueError, match=r"batch_index: the batch holds 3 sequences"):
        extract_attention(w)
    with pytest.raises(IndexError, match=r"batch_index: expected 0..2, got 5"):
        extract_attention(w, batch_index=5)
    assert extract_attention(w, batch_index=2).shape == (2, 1, 4, 4)


@pytest.mark.parametrize("shape", [(4, 4), (2, 4, 4), (3, 2, 4, 4)])
def test_unbatched_ranks(shape):
    maps = extract_attention(np.full(shape, 0.25), list("abcd"))
    assert maps.shape[-2:] == (4, 4)
    assert maps.query_tokens == tuple("abcd")


def test_mask_shape_and_unbatched_mask_errors():
    w = (torch.full((1, 2, 4, 4), 0.25),)
    with pytest.raises(ValueError, match=r"attention_mask: expected \[batch, 4\] or \[4\]"):
        extract_attention(w, attention_mask=torch.ones(1, 5))
    with pytest.raises(ValueError, match=r"only apply to batched weights"):
        extract_attention(np.full((4, 4), 0.25), attention_mask=np.ones(4))
    with pytest.raises(ValueError, match=r"weights: expected each layer as \[batch, heads"):
        extract_attention((torch.full((4, 4), 0.25),))
