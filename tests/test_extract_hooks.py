"""Plain PyTorch models: nn.MultiheadAttention and custom modules through forward hooks."""

import math

import pytest
import torch
from torch import nn

from attnwidget import NoAttentionFoundError, extract_attention


def no_hooks_left(model):
    return all(
        not m._forward_hooks and not m._forward_pre_hooks and not m._forward_hooks_with_kwargs
        for m in model.modules()
    )


def reference_mha(mha: nn.MultiheadAttention, x: torch.Tensor, mask=None):
    """Per-head softmax(q k^T / sqrt(d)) from the module's packed input projection."""
    E, H = mha.embed_dim, mha.num_heads
    q, k, _ = nn.functional.linear(x, mha.in_proj_weight, mha.in_proj_bias).chunk(3, dim=-1)
    B, S, _ = q.shape
    q = q.view(B, S, H, E // H).transpose(1, 2)
    k = k.view(B, S, H, E // H).transpose(1, 2)
    scores = q @ k.transpose(-1, -2) / math.sqrt(E // H)
    if mask is not None:
        scores = scores.masked_fill(mask, -torch.inf)
    return scores.softmax(-1)


class TinyEncoder(nn.Module):
    def __init__(self, layers=3, d=16, heads=4):
        super().__init__()
        self.embed = nn.Embedding(50, d)
        layer = nn.TransformerEncoderLayer(d, heads, 32, dropout=0.1, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)

    def forward(self, ids, mask=None):
        return self.encoder(self.embed(ids), mask=mask)


def test_transformer_encoder_fast_path_is_bypassed_and_heads_are_per_head():
    torch.manual_seed(0)
    model = TinyEncoder().eval()
    ids = torch.randint(0, 50, (1, 7))
    maps = extract_attention(model, ids)
    assert maps.shape == (3, 4, 7, 7)
    assert maps.layer_names == tuple(f"encoder.layers.{i}.self_attn" for i in range(3))
    with torch.no_grad():
        x = model.embed(ids)
        for i, layer in enumerate(model.encoder.layers):
            ref = reference_mha(layer.self_attn, x)[0]
            torch.testing.assert_close(maps.weights[i], ref, atol=1e-6, rtol=1e-5)
            x = layer(x)
    assert no_hooks_left(model)
    assert torch.backends.mha.get_fastpath_enabled()


def test_causal_mask_and_model_output_unchanged():
    torch.manual_seed(1)
    model = TinyEncoder(layers=2).eval()
    ids = torch.randint(0, 50, (1, 6))
    mask = nn.Transformer.generate_square_subsequent_mask(6)
    with torch.no_grad():
        before = model(ids, mask)
    maps = extract_attention(model, ids, forward_kwargs={"mask": mask}, tokens=list("abcdef"))
    with torch.no_grad():
        after = model(ids, mask)
    assert maps.causal
    assert maps.query_tokens == tuple("abcdef")
    torch.testing.assert_close(before, after, atol=0, rtol=0)


def test_unbatched_mha_and_positional_need_weights():
    torch.manual_seed(2)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.mha = nn.MultiheadAttention(8, 2)

        def forward(self, x):
            return self.mha(x, x, x, None, False)[0]  # need_weights=False positionally

    net = Net().eval()
    x = torch.randn(5, 8)  # unbatched [seq, embed]
    maps = extract_attention(net, x)
    assert maps.shape == (1, 2, 5, 5)
    ref = reference_mha(net.mha, x.unsqueeze(0))[0]
    torch.testing.assert_close(maps.weights[0], ref, atol=1e-6, rtol=1e-5)


class CustomAttention(nn.Module):
    def __init__(self, d=8, heads=2):
        super().__init__()
        self.qk = nn.Linear(d, 2 * d)
        self.heads = heads

    def forward(self, x):
        B, S, D = x.shape
        q, k = self.qk(x).view(B, S, 2, self.heads, D // self.heads).unbind(2)
        w = torch.einsum("bqhd,bkhd->bhqk", q, k).softmax(-1)
        return x + torch.einsum("bhqk,bkhd->bqhd", w, k).reshape(B, S, D), w


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.attention = CustomAttention()
        self.mlp = nn.Linear(8, 8)

    def forward(self, x):
        x, _w = self.attention(x)
        return self.mlp(x)


class Custom(nn.Module):
    def __init__(self, n=2):
        super().__init__()
        self.blocks = nn.ModuleList(Block() for _ in range(n))

    def forward(self, x):
        for b in self.blocks:
            x = b(x)
        return x


def test_custom_modules_found_by_name():
    torch.manual_seed(3)
    model = Custom()
    x = torch.randn(1, 4, 8)
    maps = extract_attention(model, x)
    assert maps.layer_names == ("blocks.0.attention", "blocks.1.attention")
    assert maps.shape == (2, 2, 4, 4)
    _, w0 = model.blocks[0].attention(x)
    torch.testing.assert_close(maps.weights[0], w0[0].detach())


def test_custom_modules_named_explicitly_and_wrong_names():
    torch.manual_seed(4)
    model = Custom(n=3)
    x = torch.randn(1, 4, 8)
    maps = extract_attention(model, x, attention_modules=["blocks.2.attention"])
    assert maps.layer_names == ("blocks.2.attention",)
    maps = extract_attention(model, x, attention_modules=[model.blocks[1].attention])
    assert maps.layer_names == ("blocks.1.attention",)
    with pytest.raises(ValueError, match=r"attention_modules: no submodule named 'blocks.9.attn'"):
        extract_attention(model, x, attention_modules=["blocks.9.attn"])
    # a one-letter typo inside the path is still matched to the real name
    with pytest.raises(ValueError, match=r"'blocks.2.atention'; similar names: \['blocks.2.attention'"):
        extract_attention(model, x, attention_modules=["blocks.2.atention"])
    with pytest.raises(NoAttentionFoundError, match=r"\['blocks.0.mlp'\] ran without returning"):
        extract_attention(model, x, attention_modules=["blocks.0.mlp"])
    assert no_hooks_left(model)


def test_no_attention_found_says_what_was_searched():
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU())
    with pytest.raises(NoAttentionFoundError, match=r"searched nn.MultiheadAttention modules and"):
        extract_attention(model, torch.randn(1, 3, 4))
    assert no_hooks_left(model)


def test_hooks_and_flags_restored_when_forward_raises():
    model = Custom()
    model.train()

    def boom(*_):
        raise RuntimeError("injected")

    handle = model.blocks[1].register_forward_pre_hook(boom)
    with pytest.raises(RuntimeError, match=r"injected"):
        extract_attention(model, torch.randn(1, 4, 8))
    handle.remove()
    assert no_hooks_left(model)
    assert model.training
    assert all(m.training for m in model.modules())
    assert torch.backends.mha.get_fastpath_enabled()


def test_text_needs_a_tokenizer_for_plain_models():
    with pytest.raises(ValueError, match=r"tokenizer: Custom is a plain PyTorch model"):
        extract_attention(Custom(), "some text")


def test_all_modules_matches_torch_modules():
    from attnwidget.extract._common import all_modules

    model = TinyEncoder()
    shared = nn.Linear(2, 2)
    model.a, model.b = shared, shared  # a module reachable twice is listed once
    assert all_modules(model) == list(model.modules())


def test_the_multihead_attention_argument_order_is_torchs():
    # hooks and the ablation wrapper name nn.MultiheadAttention's positional arguments by it
    import inspect

    from torch import nn

    from attnwidget.extract._common import MHA_FORWARD_ARGS

    assert tuple(inspect.signature(nn.MultiheadAttention.forward).parameters)[1:] == MHA_FORWARD_ARGS


def test_ids_with_a_tokenizer_are_labelled_with_the_rows_tokens():
    from attnwidget.models import load_tiny_lm

    lm, chars = load_tiny_lm()
    ids = torch.tensor([chars.encode("abcdef"), chars.encode("uvwxyz")])
    assert extract_attention(lm, ids, chars, batch_index=0).query_tokens == tuple("abcdef")
    second = extract_attention(lm, ids, chars, batch_index=1)
    assert second.query_tokens == tuple("uvwxyz")  # the row whose weights these are
    torch.testing.assert_close(second.weights, extract_attention(lm, ids[1:2], chars).weights)
    assert extract_attention(lm, ids[:1]).query_tokens == tuple("012345")  # no tokenizer: positions

