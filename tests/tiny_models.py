"""Tiny random-weight transformers models and the texts the tests share (no download)."""

from __future__ import annotations

import torch

CORPUS = [
    "The cat sat on the mat and looked at the dog.",
    "Attention is all you need, said the paper in 2017.",
    "Heads attend to previous tokens, to the first token, or to repeated text.",
    "A small model learns induction: it copies what followed the last time.",
] * 4

TEXT = "The cat sat on the mat."



def tiny(kind: str, vocab: int, attn_implementation: str = "sdpa"):
    """A tiny random-weight transformers model of the given family, seeded."""
    import transformers as tr

    torch.manual_seed(0)
    common = {"vocab_size": vocab, "attn_implementation": attn_implementation}
    if kind == "gpt2":
        cfg = tr.GPT2Config(n_embd=32, n_layer=2, n_head=4, n_positions=64, **common)
        return tr.GPT2LMHeadModel(cfg).eval()
    if kind == "llama":
        cfg = tr.LlamaConfig(
            hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=64, **common,
        )
        return tr.LlamaForCausalLM(cfg).eval()
    if kind == "bart":
        cfg = tr.BartConfig(
            d_model=32, encoder_layers=2, decoder_layers=3, encoder_attention_heads=4,
            decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64,
            max_position_embeddings=64, pad_token_id=2, bos_token_id=0, eos_token_id=1,
            decoder_start_token_id=1, forced_eos_token_id=None, **common,
        )
        return tr.BartForConditionalGeneration(cfg).eval()
    if kind == "t5":
        cfg = tr.T5Config(
            d_model=32, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=2, num_heads=4,
            pad_token_id=2, eos_token_id=1, decoder_start_token_id=2, **common,
        )
        return tr.T5ForConditionalGeneration(cfg).eval()
    if kind == "bert":
        cfg = tr.BertConfig(
            hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
            max_position_embeddings=64, **common,
        )
        return tr.BertModel(cfg).eval()
    raise ValueError(kind)
