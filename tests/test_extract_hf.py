"""Extraction from transformers models, checked against independent recomputation."""

import math

import numpy as np
import pytest
import torch
from tiny_models import TEXT, tiny

from attnwidget import NoAttentionFoundError, extract_attention
from attnwidget.extract.huggingface import eager_attention

transformers = pytest.importorskip("transformers")


def reference_bert_layer(model, enc, layer):
    """Softmax of scaled q·k plus the padding mask, from the layer's own projections."""
    with torch.no_grad():
        hidden = model(**enc, output_hidden_states=True).hidden_states[layer]
        attn = model.encoder.layer[layer].attention.self
        B, S, D = hidden.shape
        nh = model.config.num_attention_heads
        q = attn.query(hidden).view(B, S, nh, D // nh).transpose(1, 2)
        k = attn.key(hidden).view(B, S, nh, D // nh).transpose(1, 2)
        scores = q @ k.transpose(-1, -2) / math.sqrt(D // nh)
        scores = scores.masked_fill(enc["attention_mask"][:, None, None, :] == 0, -torch.inf)
        return scores.softmax(-1)


def test_minilm_matches_independent_recomputation(minilm):
    model, tok = minilm
    texts = ["The quick brown fox jumps over the lazy dog.", "Short one."]
    enc = tok(texts, return_tensors="pt", padding=True)
    maps = extract_attention(model, enc, tok, batch_index=1)
    n_real = int(enc["attention_mask"][1].sum())
    assert maps.shape == (6, 12, n_real, n_real)  # padding dropped
    assert maps.query_tokens == ("[CLS]", "short", "one", ".", "[SEP]")
    for layer in (0, 3, 5):
        ref = reference_bert_layer(model, enc, layer)[1, :, :n_real, :n_real]
        torch.testing.assert_close(maps.weights[layer], ref, atol=2e-6, rtol=1e-5)


def test_minilm_text_has_tokens_display_and_provenance(minilm):
    model, tok = minilm
    maps = extract_attention(model, "Unbelievable tokens", tok)
    assert maps.query_tokens == ("[CLS]", "unbelievable", "token", "##s", "[SEP]")
    assert maps.query_display == ("[CLS]", "unbelievable", "token", "s", "[SEP]")
    assert maps.model_name == "sentence-transformers/all-MiniLM-L6-v2"
    assert maps.text == "Unbelievable tokens"
    assert not maps.causal
    assert maps.layer_names[0] == "layer 0"


def test_tokenizer_is_inferred_for_the_embedded_model(minilm):
    model, tok = minilm
    inferred = extract_attention(model, TEXT)
    given = extract_attention(model, TEXT, tok)
    assert inferred.query_tokens == given.query_tokens
    torch.testing.assert_close(inferred.weights, given.weights, atol=0, rtol=0)


def test_sdpa_is_switched_to_eager_and_restored(minilm, bpe_tokenizer):
    model, tok = minilm
    eager = extract_attention(model, TEXT, tok)
    model.set_attn_implementation("sdpa")
    try:
        switched = extract_attention(model, TEXT, tok)
        assert model.config._attn_implementation == "sdpa"
    finally:
        model.set_attn_implementation("eager")
    torch.testing.assert_close(switched.weights, eager.weights, atol=0, rtol=0)


@pytest.mark.parametrize("kind", ["gpt2", "llama", "bart", "t5"])
def test_setting_restored_when_the_forward_raises(kind, bpe_tokenizer):
    model = tiny(kind, len(bpe_tokenizer), "sdpa")
    configs = [m.config for m in model.modules() if hasattr(m, "config")]
    before = {id(c): c._attn_implementation for c in configs}

    def boom(*_args, **_kwargs):
        raise RuntimeError("injected failure")

    handle = model.register_forward_pre_hook(boom)
    try:
        with pytest.raises(RuntimeError, match="injected failure"):
            extract_attention(model, TEXT, bpe_tokenizer)
    finally:
        handle.remove()
    assert {id(c): c._attn_implementation for c in configs} == before
    assert not model.training
    assert set(before.values()) == {"sdpa"}


def test_eager_context_restores_sub_configs(bpe_tokenizer):
    model = tiny("bart", len(bpe_tokenizer), "sdpa")
    with eager_attention(model):
        assert model.model.encoder.config._attn_implementation == "eager"
    assert model.model.encoder.config._attn_implementation == "sdpa"


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_decoder_only_is_causal_and_equals_eager_model(kind, bpe_tokenizer):
    sdpa = tiny(kind, len(bpe_tokenizer), "sdpa")
    eager = tiny(kind, len(bpe_tokenizer), "eager")
    maps = extract_attention(sdpa, TEXT, bpe_tokenizer)
    enc = bpe_tokenizer(TEXT, return_tensors="pt")
    with torch.no_grad():
        ref = torch.cat(eager(**enc, output_attentions=True).attentions)
    torch.testing.assert_close(maps.weights, ref, atol=0, rtol=0)
    assert maps.causal
    assert maps.query_display[1] == "cat"  # Ġcat shown as text
    # raw tokens are taken from the fast tokenizer's encoding: same as a vocabulary lookup
    assert maps.query_tokens == tuple(bpe_tokenizer.convert_ids_to_tokens(enc["input_ids"][0]))


def test_grouped_query_attention_gives_one_map_per_query_head(bpe_tokenizer):
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    model = tiny("llama", len(bpe_tokenizer), "sdpa")
    cfg = model.config
    assert cfg.num_key_value_heads < cfg.num_attention_heads
    captured = {}

    def grab(module, args, kwargs):
        captured["hidden"] = kwargs.get("hidden_states", args[0] if args else None)
        captured["rope"] = kwargs["position_embeddings"]

    layer = model.model.layers[1].self_attn
    handle = layer.register_forward_pre_hook(grab, with_kwargs=True)
    try:
        maps = extract_attention(model, TEXT, bpe_tokenizer)
    finally:
        handle.remove()
    assert maps.n_heads == cfg.num_attention_heads
    h = captured["hidden"]
    d = cfg.hidden_size // cfg.num_attention_heads
    B, S, _ = h.shape
    with torch.no_grad():
        q = layer.q_proj(h).view(B, S, -1, d).transpose(1, 2)
        k = layer.k_proj(h).view(B, S, -1, d).transpose(1, 2)
        q, k = apply_rotary_pos_emb(q, k, *captured["rope"])
    group = cfg.num_attention_heads // cfg.num_key_value_heads
    causal = torch.ones(S, S, dtype=torch.bool).triu(1)
    for head in range(cfg.num_attention_heads):
        kv = head // group  # query head -> its shared key/value head
        scores = (q[0, head] @ k[0, kv].T) / math.sqrt(d)
        ref = scores.masked_fill(causal, -torch.inf).softmax(-1)
        torch.testing.assert_close(maps.weights[1, head], ref, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("kind", ["bart", "t5"])
def test_encoder_decoder_stacks(kind, bpe_tokenizer):
    model = tiny(kind, len(bpe_tokenizer), "sdpa")
    target = "A cat sat."
    enc = extract_attention(model, TEXT, bpe_tokenizer, decoder_text=target)
    dec = extract_attention(model, TEXT, bpe_tokenizer, decoder_text=target, stack="decoder")
    cross = extract_attention(model, TEXT, bpe_tokenizer, decoder_text=target, stack="cross")
    n_enc = len(bpe_tokenizer(TEXT)["input_ids"])
    n_dec = len(bpe_tokenizer(target)["input_ids"])
    assert enc.shape[2:] == (n_enc, n_enc)
    assert dec.shape[2:] == (n_dec, n_dec)
    assert cross.shape[2:] == (n_dec, n_enc)
    assert cross.key_tokens == enc.query_tokens
    assert cross.query_tokens == dec.query_tokens
    assert dec.causal
    assert not enc.causal
    assert not cross.causal
    assert dec.layer_names[0] == "decoder.0"
    # decoder input is the target shifted right behind the decoder start token
    start = model.config.decoder_start_token_id
    assert dec.query_tokens[0] == bpe_tokenizer.convert_ids_to_tokens(start)
    # the same as an eager model's own outputs
    eager = tiny(kind, len(bpe_tokenizer), "eager")
    ids = bpe_tokenizer(TEXT, return_tensors="pt")["input_ids"]
    labels = bpe_tokenizer(target, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        out = eager(input_ids=ids, decoder_input_ids=eager.prepare_decoder_input_ids_from_labels(
            labels=labels), output_attentions=True)
    torch.testing.assert_close(cross.weights, torch.cat(out.cross_attentions), atol=0, rtol=0)


def test_empty_text_is_refused(minilm):
    model, tok = minilm
    with pytest.raises(ValueError, match="text: expected a non-empty string, got '  '"):
        extract_attention(model, "  ", tok)


def test_too_long_text_names_the_limit_and_truncation_is_opt_in(minilm):
    model, tok = minilm
    long_text = "word " * 600
    with pytest.raises(ValueError, match=r"602 tokens .* at most 512 \(config.max_position_emb"):
        extract_attention(model, long_text, tok)
    maps = extract_attention(model, long_text, tok, truncation=True)
    assert maps.shape[2] == 512


def test_model_without_tokenizer_is_refused(bpe_tokenizer):
    model = tiny("gpt2", len(bpe_tokenizer))
    with pytest.raises(ValueError, match="tokenizer: GPT2LMHeadModel needs a tokenizer"):
        extract_attention(model, TEXT)
    ids = bpe_tokenizer(TEXT, return_tensors="pt")["input_ids"]
    maps = extract_attention(model, ids)  # ids need no tokenizer; tokens shown as ids
    assert maps.query_tokens[0] == f"#{int(ids[0, 0])}"


def test_stack_only_for_encoder_decoder(minilm):
    model, tok = minilm
    with pytest.raises(ValueError, match="stack: only encoder-decoder models"):
        extract_attention(model, TEXT, tok, stack="cross")


def test_model_that_cannot_return_weights(bpe_tokenizer, monkeypatch):
    model = tiny("gpt2", len(bpe_tokenizer), "eager")
    original = model.forward

    def no_weights(*args, **kwargs):
        out = original(*args, **kwargs)
        out.attentions = None
        return out

    monkeypatch.setattr(model, "forward", no_weights)
    with pytest.raises(NoAttentionFoundError, match="returned no attention weights"):
        extract_attention(model, TEXT, bpe_tokenizer)


def test_training_mode_restored(minilm):
    model, tok = minilm
    model.train()
    try:
        a = extract_attention(model, TEXT, tok)
        b = extract_attention(model, TEXT, tok)
        assert model.training
        torch.testing.assert_close(a.weights, b.weights, atol=0, rtol=0)  # no dropout noise
    finally:
        model.eval()
    assert np.isfinite(a.to_numpy()).all()


def test_batch_encoding_input_equals_text_input(minilm):
    model, tok = minilm
    from_text = extract_attention(model, TEXT, tok)
    enc = tok(TEXT, return_tensors="pt")
    from_inputs = extract_attention(model, enc, tok)
    assert from_inputs.query_tokens == from_text.query_tokens  # reused from the encoding
    torch.testing.assert_close(from_inputs.weights, from_text.weights)
    batch = tok([TEXT, "A much longer second sentence than the first one."], return_tensors="pt",
                padding=True)
    second = extract_attention(model, batch, tok, batch_index=1)
    assert second.query_tokens == tuple(tok.convert_ids_to_tokens(
        tok("A much longer second sentence than the first one.")["input_ids"]))
