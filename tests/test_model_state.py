"""Extraction and ablation leave the model exactly as they found it, also when the forward fails.

A failure is injected in the middle of a forward pass (a forward hook on the second
attention layer raises, optionally only on the n-th call so that a sweep fails
half-way). Afterwards every piece of state a user could notice is compared with a
snapshot taken before: the attention implementation of every (sub-)config, every
module's training flag (mixed on purpose), every hook dict, every parameter's
``requires_grad`` (some frozen on purpose) and value, the buffers, autograd's
global switch and PyTorch's fused-attention fast path.
"""

from __future__ import annotations

import pytest
import torch
from tiny_models import tiny
from torch import nn

from attnwidget import AttentionView, extract_attention
from attnwidget.ablate import ablate_heads, ablated_record, ablation_effect, ablation_sweep

HOOK_DICTS = ("_forward_hooks", "_forward_pre_hooks", "_forward_hooks_with_kwargs",
              "_forward_pre_hooks_with_kwargs", "_backward_hooks", "_backward_pre_hooks",
              "_state_dict_hooks", "_load_state_dict_pre_hooks")


class InjectedError(Exception):
    """The failure the tests inject; nothing in attnwidget raises it."""


def snapshot(model: nn.Module) -> dict:
    configs = {id(m.config): m.config for m in model.modules() if hasattr(m, "config")}
    return {
        "impl": sorted((name, c._attn_implementation) for name, c in
                       ((type(c).__name__ + str(i), c) for i, c in enumerate(configs.values()))),
        "training": [(name, m.training) for name, m in model.named_modules()],
        "hooks": [(name, d, tuple(getattr(m, d))) for name, m in model.named_modules() for d in HOOK_DICTS],
        # an ablated re-run replays the plain run by setting `forward` on linear layers
        "instance_forwards": [name for name, m in model.named_modules() if "forward" in vars(m)],
        "requires_grad": [(name, p.requires_grad) for name, p in model.named_parameters()],
        "params": {name: p.detach().clone() for name, p in model.named_parameters()},
        "buffers": {name: b.clone() for name, b in model.named_buffers()},
        "grad_enabled": torch.is_grad_enabled(),
        "fastpath": torch.backends.mha.get_fastpath_enabled(),
    }


def assert_same(before: dict, after: dict) -> None:
    for key in ("impl", "training", "hooks", "requires_grad", "grad_enabled", "fastpath"):
        assert after[key] == before[key], key
    for key in ("params", "buffers"):
        assert after[key].keys() == before[key].keys()
        for name, value in before[key].items():
            assert torch.equal(after[key][name], value), f"{key}: {name} changed"


def unusual_state(model: nn.Module) -> nn.Module:
    """Training mode with one submodule in eval, and the embeddings frozen: must all survive."""
    model.train()
    list(model.modules())[3].eval()
    emb = next(m for m in model.modules() if isinstance(m, nn.Embedding))
    emb.weight.requires_grad_(False)
    return model


def fail_mid_forward(model: nn.Module, on_call: int = 1, exc: type[BaseException] = InjectedError):
    """Make the second attention layer raise on its ``on_call``-th forward; returns the hook handle."""
    layers = [m for m in model.modules()
              if isinstance(m, nn.MultiheadAttention) or type(m).__name__.endswith("Attention")]
    calls = []

    def hook(*_args):
        calls.append(1)
        if len(calls) == on_call:
            raise exc("injected mid-forward")

    return layers[1].register_forward_hook(hook)


def checked(model: nn.Module, action, on_call: int = 1, exc: type[BaseException] = InjectedError) -> None:
    """Run ``action`` with a failure injected; the model must equal its snapshot afterwards."""
    before = snapshot(model)
    handle = fail_mid_forward(model, on_call, exc)
    try:
        with pytest.raises(exc, match="injected mid-forward"):
            action()
    finally:
        handle.remove()
    assert_same(before, snapshot(model))


IDS = {"input_ids": torch.tensor([[5, 17, 42, 8, 99, 3, 21]])}
SEQ2SEQ_IDS = {**IDS, "decoder_input_ids": torch.tensor([[1, 5, 17, 42]])}


def inputs(model: nn.Module) -> dict:
    return SEQ2SEQ_IDS if model.config.is_encoder_decoder else IDS


def warmed(model: nn.Module) -> nn.Module:
    """Let transformers install its own output-capturing hooks first.

    transformers 5 adds forward hooks to a model the first time anyone asks it for
    attentions, and keeps them for the model's life (its flag
    ``_output_capturing_hooks_installed``); a user's own ``output_attentions=True``
    call does the same. They are the library's, not ours, so the baseline includes them.
    """
    impl = model.config._attn_implementation
    model.set_attn_implementation("eager")  # sdpa would only warn that it returns no weights
    with torch.no_grad():
        model(**inputs(model), output_attentions=True)
    model.set_attn_implementation(impl)
    return model


@pytest.fixture(params=["gpt2", "llama", "bart", "bert"])
def model(request):
    impl = "sdpa"  # extraction switches to eager: the switch must be undone
    return unusual_state(warmed(tiny(request.param, 100, impl)))


def test_extraction_failing_mid_forward_changes_nothing(model):
    ids = inputs(model)
    checked(model, lambda: extract_attention(model, ids))
    checked(model, lambda: extract_attention(model, ids), exc=KeyboardInterrupt)  # Ctrl+C, too
    # and a clean run afterwards still changes nothing
    before = snapshot(model)
    extract_attention(model, ids)
    assert_same(before, snapshot(model))


@pytest.mark.parametrize("mode", ["zero", "mean"])
def test_ablation_failing_mid_forward_changes_nothing(model, mode):
    if model.config.is_encoder_decoder:
        pytest.skip("ablation takes encoder-only and decoder-only models")
    def forward_inside():
        with ablate_heads(model, {0: [1], 1: [0]}, mode=mode), torch.no_grad():
            model(**IDS)

    checked(model, forward_inside)
    checked(model, lambda: ablation_effect(model, IDS, {0: [1]}, mode=mode))
    # the ablated run is the second forward: fail there, after the baseline succeeded
    checked(model, lambda: ablation_effect(model, IDS, {0: [1]}, mode=mode), on_call=2)
    checked(model, lambda: ablated_record(model, IDS, {0: [1]}, mode=mode), on_call=2)
    checked(model, lambda: ablation_sweep(model, IDS, mode=mode, progress=False), on_call=4)


def test_plain_pytorch_hooks_path_failing_mid_forward_changes_nothing():
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(16, 4, 32, dropout=0.1, batch_first=True)
    model = nn.Sequential(nn.Embedding(50, 16), nn.TransformerEncoder(layer, 3, enable_nested_tensor=False))
    model = unusual_state(model)
    ids = torch.tensor([[1, 2, 3, 4, 5]])
    checked(model, lambda: extract_attention(model, ids))
    checked(model, lambda: extract_attention(model, ids), exc=KeyboardInterrupt)

    def forward_inside():
        with ablate_heads(model, {2: [3]}), torch.no_grad():
            model(ids)

    checked(model, forward_inside)


def test_widget_ablation_failing_mid_forward_keeps_model_and_view(bpe_tokenizer):
    model = tiny("gpt2", len(bpe_tokenizer), "eager")
    warmed(model)
    view = AttentionView(model, "The cat sat on the mat.", tokenizer=bpe_tokenizer, layer=1)
    shown = (dict(view.metrics), view.panel["buffer"].tobytes(), view.maps)
    before = snapshot(model)
    handle = fail_mid_forward(model)
    try:
        with pytest.raises(InjectedError):
            view.ablated = [[1, 2]]
    finally:
        handle.remove()
    assert_same(before, snapshot(model))
    # the view says what failed and shows no number of a state it never reached
    assert view.status == "InjectedError: injected mid-forward"
    assert view.maps is shown[2]
    assert view.panel["buffer"].tobytes() == shown[1]
    assert view.metrics == shown[0]
    assert view.ablated == []  # the controls say what is shown: no head is ablated
    # the next move works and clears the message
    view.ablated = []
    view.head = 3
    assert view.status == ""
    assert view.metrics["view"]["head"] == 3
