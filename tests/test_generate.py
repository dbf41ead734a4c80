"""Attention while a causal LM writes: exact records, cache or not, and the step view."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tiny_models import tiny

from attnwidget import extract_attention
from attnwidget.generate import generate_attention
from attnwidget.models import load_tiny_lm
from attnwidget.tinylm import CharTokenizer

SEGMENT = "q8Zr2kLmxT"


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_cached_generation_equals_one_forward_and_transformers_generate(kind):
    model = tiny(kind, vocab=50, attn_implementation="sdpa")  # switched to eager for the run
    prompt = torch.tensor([3, 17, 5, 9, 22, 41, 7])
    rec = generate_attention(model, prompt, n_new=12)
    assert rec.prompt_length == 7
    assert rec.n_new == 12
    assert rec.cached
    assert rec.maps.shape == (2, 4, 19, 19)
    assert rec.maps.causal
    # the same tokens as transformers' own greedy generation
    with torch.no_grad():
        ref = model.generate(prompt[None], max_new_tokens=12, do_sample=False, pad_token_id=0)[0]
    torch.testing.assert_close(rec.token_ids, ref)
    # the record equals one forward over the final sequence: a cached step computes the same
    # softmax over the same keys; float32 rounding of the reordered sums, ~1e-7 per weight
    whole = extract_attention(model, rec.token_ids)
    torch.testing.assert_close(rec.maps.weights, whole.weights, rtol=0, atol=1e-5)
    # and the slow way (a full forward per token) gives the same record
    plain = generate_attention(model, prompt, n_new=12, use_cache=False)
    torch.testing.assert_close(plain.token_ids, rec.token_ids)
    torch.testing.assert_close(plain.maps.weights, rec.maps.weights, rtol=0, atol=1e-5)
    assert model.config._attn_implementation == "sdpa"  # restored


def test_sampling_is_seeded():
    model = tiny("gpt2", vocab=50)
    prompt = torch.tensor([1, 2, 3])
    a = generate_attention(model, prompt, n_new=10, greedy=False, seed=4)
    b = generate_attention(model, prompt, n_new=10, greedy=False, seed=4)
    c = generate_attention(model, prompt, n_new=10, greedy=False, seed=5)
    torch.testing.assert_close(a.token_ids, b.token_ids)
    assert not torch.equal(a.token_ids, c.token_ids)


def test_the_tiny_lm_copies_and_its_induction_heads_look_at_the_earlier_copy():
    model, tok = load_tiny_lm()
    prompt = SEGMENT + SEGMENT[:3]  # the repeat has begun: the model should continue it
    rec = generate_attention(model, prompt, tok, n_new=7)
    assert rec.generated_text == SEGMENT[3:]  # the copy is right
    assert rec.maps.query_tokens == tuple(SEGMENT * 2)
    torch.testing.assert_close(rec.maps.weights, extract_attention(model, SEGMENT * 2, tok).weights)
    # step i was chosen by row P + i - 1; an induction head (layer 1, heads 0 and 2) puts its
    # weight on the token after the earlier occurrence, which is the very token it writes
    for step in range(rec.n_new):
        s = rec.step(step, layer=1, head=0, k=1)
        assert s["query"] == rec.prompt_length + step - 1
        assert s["position"] == s["query"] + 1
        assert s["token"] == SEGMENT[3 + step]
        assert s["top_k"] == [3 + step]  # the earlier copy, in the prompt
        assert s["prompt_share"] + s["generated_share"] == pytest.approx(1, abs=1e-6)
    shares = rec.shares(layer=1)
    assert shares.shape == (4, 7)
    assert shares[0, 0] == pytest.approx(1, abs=1e-6)  # step 0 is chosen by a prompt row
    np.testing.assert_allclose(shares[:, -1], rec.maps.layer(1)[:, -2, :13].sum(-1), rtol=1e-6)


def test_bad_input_is_refused_before_any_forward():
    model, tok = load_tiny_lm()
    calls = []
    handle = model.register_forward_pre_hook(lambda *_: calls.append(1))
    try:
        with pytest.raises(ValueError, match=r"n_new: expected an int >= 1 \(tokens to generate\), got 0"):
            generate_attention(model, "abc", tok, n_new=0)
        with pytest.raises(TypeError, match=r"n_new: expected an int >= 1"):
            generate_attention(model, "abc", tok, n_new=2.5)
        with pytest.raises(ValueError, match=r"n_new: the prompt's 40 tokens plus 9 new ones make 49, "
                                             r"but the model takes at most 48 \(TinyConfig.max_len\)"):
            generate_attention(model, "a" * 40, tok, n_new=9)
        with pytest.raises(ValueError, match=r"prompt: expected token ids as integers"):
            generate_attention(model, torch.zeros(3), tok, n_new=2)
    finally:
        handle.remove()
    assert calls == []
    bert = tiny("bart", vocab=50)
    with pytest.raises(ValueError, match=r"model: BartForConditionalGeneration is an encoder-decoder model"):
        generate_attention(bert, torch.tensor([1, 2]), n_new=2)
    gpt = tiny("gpt2", vocab=50)  # n_positions = 64
    with pytest.raises(ValueError, match=r"the model takes at most 64 \(config.max_position_embeddings\)"):
        generate_attention(gpt, torch.arange(60) % 50, n_new=5)
    with pytest.raises(TypeError, match=r"model: generation needs a transformers causal LM"):
        generate_attention(torch.nn.Linear(2, 2), torch.tensor([1]), n_new=1)


def test_encoder_only_models_are_refused(minilm):
    model, tok = minilm
    with pytest.raises(ValueError, match=r"model: BertModel is an encoder-only model"):
        generate_attention(model, "The cat", tok, n_new=3)


def test_step_index_errors():
    model, tok = load_tiny_lm()
    rec = generate_attention(model, "abcd", tok, n_new=3)
    assert rec.step_row(-1) == rec.step_row(2) == 5
    with pytest.raises(IndexError, match=r"step: expected 0..2 \(or negative from the end\), got 3"):
        rec.step(3)
    assert isinstance(CharTokenizer().decode(rec.token_ids.tolist()), str)
