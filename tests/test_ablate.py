"""Head ablation: equal to zeroing the head by hand, restored on exit, effects and sweeps."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tiny_models import TEXT, tiny
from torch import nn

from attnwidget.ablate import ablate_heads, ablation_effect, ablation_sweep, attention_sites

FAMILIES = ("bert", "gpt2", "llama")


def ids(vocab=100, n=9, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(3, vocab, (1, n), generator=g)


def forward(model, x):
    with torch.no_grad():
        out = model(input_ids=x)
    return out.logits if hasattr(out, "logits") and out.logits is not None else out.last_hidden_state


def surgery(site, heads):
    """Zero the weights that carry the heads' outputs into the residual stream: the by-hand reference."""
    proj = site.projection
    saved = proj.weight.detach().clone()
    d = site.head_dim
    with torch.no_grad():
        for h in heads:
            if type(proj).__name__ == "Conv1D":  # GPT-2 stores [in, out]
                proj.weight[h * d : (h + 1) * d] = 0
            else:
                proj.weight[:, h * d : (h + 1) * d] = 0
    return saved


@pytest.mark.parametrize("kind", FAMILIES)
def test_zero_ablation_equals_zeroing_the_heads_weights(kind):
    model = tiny(kind, 100, "eager")
    x = ids()
    sites = attention_sites(model)
    assert len(sites) == 2
    assert [s.n_heads for s in sites] == [4, 4]
    with ablate_heads(model, {1: [0, 2]}):
        ablated = forward(model, x)
    saved = surgery(sites[1], [0, 2])
    try:
        by_hand = forward(model, x)
    finally:
        with torch.no_grad():
            sites[1].projection.weight.copy_(saved)
    torch.testing.assert_close(ablated, by_hand, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(ablated, forward(model, x))  # the heads mattered


@pytest.mark.parametrize("kind", FAMILIES)
def test_restored_on_exit_and_after_an_error_and_nothing_changes_nothing(kind):
    model = tiny(kind, 100, "eager")
    x = ids()
    before = forward(model, x)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with ablate_heads(model, {}):
        assert torch.equal(forward(model, x), before)  # bit for bit
    changed = []

    def run_and_fail():
        with ablate_heads(model, {0: [1], 1: 3}, mode="mean"):
            changed.append(not torch.equal(forward(model, x), before))
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        run_and_fail()
    assert changed == [True]
    assert torch.equal(forward(model, x), before)
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    assert all(not m._forward_pre_hooks and not m._forward_hooks for m in model.modules())


def test_mean_ablation_replaces_the_heads_output_by_its_position_mean():
    model = tiny("llama", 100, "eager")  # grouped-query attention: 4 query heads, 2 key/value heads
    site = attention_sites(model)[0]
    x = ids(n=7)
    seen = {}
    def record(_module, args, output):
        seen["abl" if "base" in seen else "base"] = (args[0].clone(), output.clone())

    hook = site.projection.register_forward_hook(record)
    try:
        forward(model, x)
        with ablate_heads(model, {0: [3]}, mode="mean"):
            forward(model, x)
    finally:
        hook.remove()
    x_in, _ = seen["base"]
    _, y_abl = seen["abl"]
    d = site.head_dim
    by_hand = x_in.clone()
    by_hand[..., 3 * d :] = x_in[..., 3 * d :].mean(dim=1, keepdim=True)
    torch.testing.assert_close(y_abl, site.projection(by_hand), rtol=1e-5, atol=1e-6)


def mha_by_hand(mha: nn.MultiheadAttention, x: torch.Tensor, heads, mode, mask=None):
    """nn.MultiheadAttention's forward written out (batch first), with heads replaced."""
    E, H = mha.embed_dim, mha.num_heads
    d = E // H
    q, k, v = nn.functional.linear(x, mha.in_proj_weight, mha.in_proj_bias).split(E, dim=-1)
    B, T, _ = x.shape
    q, k, v = (t.reshape(B, T, H, d).transpose(1, 2) for t in (q, k, v))
    scores = q @ k.transpose(-1, -2) / d**0.5
    if mask is not None:
        scores = scores.masked_fill(mask, float("-inf"))
    c = torch.softmax(scores, dim=-1) @ v  # [B, H, T, d]
    for h in heads:
        c[:, h] = 0 if mode == "zero" else c[:, h].mean(dim=1, keepdim=True)
    return mha.out_proj(c.transpose(1, 2).reshape(B, T, E))


@pytest.mark.parametrize("mode", ["zero", "mean"])
@pytest.mark.parametrize("batch_first", [True, False])
def test_multihead_attention_equals_the_forward_written_out(mode, batch_first):
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(16, 4, 32, dropout=0.0, batch_first=batch_first).eval()
    mha = layer.self_attn
    x = torch.randn(2, 6, 16)
    causal = torch.ones(6, 6, dtype=torch.bool).triu(1)
    xin = x if batch_first else x.transpose(0, 1)
    with torch.no_grad(), ablate_heads(layer, {0: [1, 3]}, mode=mode):
        out, _ = mha(xin, xin, xin, attn_mask=causal, need_weights=False)
    out = out if batch_first else out.transpose(0, 1)
    with torch.no_grad():
        expected = mha_by_hand(mha, x, [1, 3], mode, causal)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    assert torch.backends.mha.get_fastpath_enabled()  # restored
    with torch.no_grad():  # the whole layer runs through the hooks too (fast path off inside)
        base = layer(xin)
        with ablate_heads(layer, {0: [1]}):
            assert not torch.allclose(layer(xin), base)
        assert torch.equal(layer(xin), base)


def test_bad_arguments_name_themselves():
    model = tiny("bert", 100, "eager")
    with pytest.raises(ValueError, match=r"heads: layer 2 is not one of 0\.\.1"), \
            ablate_heads(model, {2: [0]}):
        pass
    with pytest.raises(ValueError, match=r"heads: head 4 of layer 0 is not one of 0\.\.3"), \
            ablate_heads(model, {0: [4]}):
        pass
    with pytest.raises(ValueError, match=r"mode: expected one of \('zero', 'mean'\), got 'half'"), \
            ablate_heads(model, {0: [0]}, mode="half"):
        pass
    with pytest.raises(TypeError, match="heads: expected a mapping"), ablate_heads(model, [0]):
        pass
    with pytest.raises(ValueError, match="encoder-decoder"):
        attention_sites(tiny("bart", 100, "eager"))
    with pytest.raises(ValueError, match="found no attention layer"):
        attention_sites(nn.Linear(3, 3))


def test_effects_on_a_causal_lm(bpe_tokenizer):
    model = tiny("gpt2", len(bpe_tokenizer), "eager")
    text = "The cat sat on the mat and looked at the dog."
    res = ablation_effect(model, text, {1: [0, 1, 2, 3]}, bpe_tokenizer, top_k=3)
    enc = bpe_tokenizer(text, return_tensors="pt")
    with torch.no_grad():
        loss = model(**enc, labels=enc["input_ids"]).loss  # transformers' own shifted loss
    assert res["loss"] == pytest.approx(float(loss), rel=1e-5)
    assert res["score"] == pytest.approx(res["loss_ablated"] - res["loss"])
    assert len(res["top_predictions"]) == 3
    assert res["top_predictions"][0][1] >= res["top_predictions"][1][1]
    # attention below the ablated layer cannot change; layer 1's own weights neither
    np.testing.assert_array_equal(res["attention_change"], np.zeros((2, 4)))
    assert res["hidden_change"][0] == 0
    assert res["hidden_change"][-1] > 0


def test_effects_and_sweep_on_the_real_encoder(minilm):
    model, tok = minilm
    res = ablation_effect(model, TEXT, {2: [5]}, tok)
    assert res["metric"] == "1 - cosine of the sentence embedding"
    assert 0 < res["score"] < 1
    change = res["attention_change"]
    assert change.shape == (6, 12)
    assert (change[:3] == 0).all()  # only later layers move
    assert (change[3:] > 0).all()
    sweep = ablation_sweep(model, TEXT, tok, heads={0: [0, 1], 4: [7]}, progress=False)
    assert np.isnan(sweep["score"][1]).all()
    for layer, head in [(0, 0), (0, 1), (4, 7)]:  # a sweep's cell equals the single run
        single = ablation_effect(model, TEXT, {layer: [head]}, tok, attention=False)
        # float32 forwards: MKL may split a matmul over another number of threads from one call
        # to the next on a loaded machine, which moves a 1 - cosine score by ~1e-7
        assert sweep["score"][layer, head] == pytest.approx(single["score"], abs=2e-6)


@pytest.mark.parametrize("which", ["gpt2", "tinylm", "minilm"])
def test_ablated_record_measures_the_effect_on_its_own_forward(which, bpe_tokenizer, minilm):
    # ablated_record takes the effect from the forward that extracts the ablated record (and a
    # kept unablated run): it must equal ablation_effect's two separate forwards. The two runs
    # may use different attention kernels (eager for the record), so hidden states agree to
    # float32 rounding: 1e-5 relative on the loss, 1e-6 absolute on 1 - cosine and the changes.
    from attnwidget.ablate import ablated_record, unablated_run
    from attnwidget.models import load_tiny_lm

    if which == "gpt2":
        model, tok, text = tiny("gpt2", len(bpe_tokenizer), "eager"), bpe_tokenizer, "The cat sat on the mat."
    elif which == "tinylm":
        model, tok = load_tiny_lm()
        text = "abcabcab"
    else:
        (model, tok), text = minilm, TEXT
    heads = {1: [0, 1]}
    expected = ablation_effect(model, text, heads, tok, attention=False)
    base = unablated_run(model, text, tok)
    for kept in (None, base):  # without and with the kept unablated run
        _, summary = ablated_record(model, text, heads, tok, base=kept)
        assert summary["metric"] == expected["metric"]
        assert summary["score"] == pytest.approx(expected["score"], rel=1e-5, abs=1e-6)
        np.testing.assert_allclose(summary["hidden_change"], expected["hidden_change"], rtol=1e-4, atol=1e-6)
        for key in ("loss", "loss_ablated", "embedding_cosine"):
            if key in expected:
                assert summary[key] == pytest.approx(expected[key], rel=1e-5, abs=1e-6)


# Calls a plain run keeps per block, and those before the block's output projection, counted
# from the models' code: GPT-2 c_attn | c_proj, c_fc, c_proj; Llama q, k, v | o, gate, up, down;
# the tiny LM qkv | o_proj; BERT keeps its self-attention whole besides its linear layers:
# self-attention, query, key, value | output, FFN in, FFN out. A replay gives back the same,
# except that BERT's self-attention comes back whole (query, key and value never run).
KEPT = {"minilm": (7, 4), "gpt2": (4, 1), "llama": (7, 3), "tinylm": (2, 1)}
REPLAYED = {"minilm": (4, 1), "gpt2": (4, 1), "llama": (7, 3), "tinylm": (2, 1)}


def model_of(which, bpe_tokenizer, minilm):
    from attnwidget.models import load_tiny_lm

    if which == "minilm":
        return (*minilm, TEXT)
    if which == "tinylm":
        return (*load_tiny_lm(), "abcabcabcab")
    return tiny(which, len(bpe_tokenizer), "eager"), bpe_tokenizer, "The cat sat on the mat and looked."


@pytest.mark.parametrize("which", sorted(KEPT))
def test_an_ablated_run_replays_the_plain_run_below_its_head_and_changes_no_number(
        which, bpe_tokenizer, minilm, monkeypatch):
    # Below the first ablated head every layer sees exactly the plain run's input, so the
    # ablated run is given the plain run's outputs there: every block below, and the ablated
    # block's projections (BERT: its attention weights) before its output projection. The
    # record and the effect equal those of a run that computes everything. Same ops on the same inputs in one
    # process: only the BLAS's choice of kernel could round differently (1e-6 on weights in
    # [0, 1]); below the ablated layer the change is exactly 0 either way.
    from attnwidget import _replay
    from attnwidget.ablate import ablated_record, unablated_run
    from attnwidget.extract import extract_attention

    model, tok, text = model_of(which, bpe_tokenizer, minilm)
    per_block, before_projection = REPLAYED[which]
    original = extract_attention(model, text, tok)
    base = unablated_run(model, text, tok)
    monkeypatch.setattr(_replay, "REPLAY_BYTES", 0)  # turned off: everything computed
    plain = unablated_run(model, text, tok)
    assert plain.replay.calls == []
    assert plain.replay.nbytes == 0
    n_layers = original.n_layers
    # kept: up to the last layer's output projection, nothing after it (FFN, LM head)
    assert len(base.replay.calls) == (n_layers - 1) * KEPT[which][0] + KEPT[which][1]
    for layer in range(n_layers):
        for mode in ("zero", "mean"):
            fast = ablated_record(model, text, {layer: [1]}, tok, mode=mode, original=original, base=base)
            assert base.replay.replayed == layer * per_block + before_projection
            slow = ablated_record(model, text, {layer: [1]}, tok, mode=mode, original=original, base=plain)
            assert plain.replay.replayed == 0
            torch.testing.assert_close(fast[0].weights, slow[0].weights, rtol=0, atol=1e-6)
            assert fast[1]["score"] == pytest.approx(slow[1]["score"], rel=1e-5, abs=1e-9)
            np.testing.assert_allclose(fast[1]["hidden_change"], slow[1]["hidden_change"],
                                       rtol=1e-5, atol=1e-9)
            change = np.asarray(fast[1]["attention_change"])
            np.testing.assert_allclose(change, slow[1]["attention_change"], atol=1e-7)
            assert not change[:layer + 1].any()  # the ablated layer's own weights neither
            assert change[layer + 1:].all()


@pytest.mark.parametrize(("which", "ablations"), [
    ("minilm", ({1: [0]}, {4: [1], 2: [3]})), ("gpt2", ({0: [1]}, {1: [0], 0: [3]})),
    ("llama", ({0: [1]}, {1: [0]})), ("tinylm", ({0: [1]}, {1: [0]}))])
def test_an_ablated_record_shares_the_layers_it_cannot_change_with_the_original(
        which, ablations, bpe_tokenizer, minilm):
    # up to the first ablated layer, that one included, the weights are the original's own
    # tensors (the view keeps what it computed from them); every later layer is the re-run's,
    # and equals a record extracted with the heads ablated by hand
    from attnwidget.ablate import ablate_heads, ablated_record, unablated_run
    from attnwidget.extract import extract_attention

    model, tok, text = model_of(which, bpe_tokenizer, minilm)
    original = extract_attention(model, text, tok)
    base = unablated_run(model, text, tok)
    for heads in ablations:
        maps, effect = ablated_record(model, text, heads, tok, original=original, base=base)
        first = min(heads)
        assert [maps.shares_layer(original, i) for i in range(maps.n_layers)] == [
            i <= first for i in range(maps.n_layers)]
        with ablate_heads(model, heads):
            by_hand = extract_attention(model, text, tok)
        torch.testing.assert_close(maps.weights, by_hand.weights, rtol=0, atol=1e-6)
        change = np.asarray(effect["attention_change"])
        assert not change[:first + 1].any()
        assert change[first + 1:].all()


def test_an_ablated_record_takes_no_layer_from_an_original_of_another_input(minilm):
    # the original a caller passes is checked on the first ablated layer before anything is
    # shared: one of another text of the same length shares nothing (and measures the change
    # against what it was given, as before)
    from attnwidget.ablate import ablated_record
    from attnwidget.extract import extract_attention

    model, tok = minilm
    other_text = TEXT.replace("cat", "dog")
    original = extract_attention(model, TEXT, tok)
    other = extract_attention(model, other_text, tok)
    assert other.shape == original.shape
    maps, effect = ablated_record(model, TEXT, {3: [2]}, tok, original=other)
    assert not any(maps.shares_layer(other, i) or maps.shares_layer(original, i)
                   for i in range(maps.n_layers))
    torch.testing.assert_close(maps.weights[:4], original.weights[:4], rtol=0, atol=1e-6)
    assert np.asarray(effect["attention_change"])[:4].all()  # measured against `other`


def test_ablating_no_head_shares_and_changes_nothing(minilm):
    from attnwidget.ablate import ablated_record
    from attnwidget.extract import extract_attention

    model, tok = minilm
    original = extract_attention(model, TEXT, tok)
    for heads in ({}, {3: []}):
        maps, effect = ablated_record(model, TEXT, heads, tok, original=original)
        assert effect["heads"] == []
        assert effect["score"] == pytest.approx(0, abs=1e-6)
        assert np.asarray(effect["attention_change"]).max() < 1e-6
        torch.testing.assert_close(maps.weights, original.weights, rtol=0, atol=1e-6)


def test_a_record_whose_layers_are_views_into_a_stack_is_not_shared(minilm):
    # a shared layer that is a view into the original's stack would keep all of it alive
    from attnwidget.ablate import ablated_record
    from attnwidget.extract import extract_attention

    model, tok = minilm
    original = extract_attention(model, TEXT, tok)
    original.weights  # noqa: B018  (builds the stack; the layers become views into it)
    maps, effect = ablated_record(model, TEXT, {3: [2]}, tok, original=original)
    assert not any(maps.shares_layer(original, i) for i in range(maps.n_layers))
    assert np.asarray(effect["attention_change"])[:4].max() <= 1e-6  # measured, and ~0


def test_a_replay_stops_at_a_changed_weight_or_another_input(bpe_tokenizer):
    # what a replay gives back is only ever the output this module gave for this input
    from attnwidget.ablate import ablated_record, unablated_run

    model, tok = tiny("gpt2", len(bpe_tokenizer), "eager"), bpe_tokenizer
    text = "The cat sat on the mat and looked."
    base = unablated_run(model, text, tok)
    ablated_record(model, text, {1: [0]}, tok, base=base)
    assert base.replay.replayed == 5  # layer 0's four calls, layer 1's c_attn
    with torch.no_grad():  # an in-place change bumps the version counter (as an optimizer step does)
        model.transformer.h[0].mlp.c_fc.weight.mul_(1.5)
    maps, effect = ablated_record(model, text, {1: [0]}, tok, base=base)
    assert base.replay.replayed == 2  # c_attn and c_proj of layer 0; computed from c_fc on
    fresh_maps, fresh = ablated_record(model, text, {1: [0]}, tok)  # a new plain run
    torch.testing.assert_close(maps.weights, fresh_maps.weights, rtol=0, atol=1e-6)
    assert effect["loss_ablated"] == pytest.approx(fresh["loss_ablated"], rel=1e-6)
    other = unablated_run(model, text, tok)
    ablated_record(model, "A dog sat on the mat and looked.", {1: [0]}, tok, base=other)
    assert other.replay.replayed == 0  # the very first input differs


def test_a_replay_keeps_within_its_budget_and_leaves_the_model_as_it_was(minilm, monkeypatch):
    from attnwidget import _replay
    from attnwidget.ablate import ablated_record, unablated_run

    model, tok = minilm

    def hooks():
        return [(name, tuple(m._forward_pre_hooks), tuple(m._forward_hooks))
                for name, m in model.named_modules()]

    before = hooks()
    full = unablated_run(model, TEXT, tok)
    monkeypatch.setattr(_replay, "REPLAY_BYTES", full.replay.nbytes // 2)
    half = unablated_run(model, TEXT, tok)
    assert 0 < half.replay.nbytes <= full.replay.nbytes // 2
    assert half.replay.cut
    assert not full.replay.cut
    # cut: something below the last layer's output projection was not kept; a budget that
    # holds all of that is not cut, whatever ran out after it
    exact = unablated_run(model, TEXT, tok, replay_bytes=full.replay.nbytes)
    assert not exact.replay.cut
    assert len(exact.replay.calls) == len(full.replay.calls)
    assert unablated_run(model, TEXT, tok, replay_bytes=full.replay.nbytes - 1).replay.cut
    assert len(half.replay.calls) < len(full.replay.calls)
    maps, effect = ablated_record(model, TEXT, {5: [0]}, tok, base=half)
    # all it kept an output of (the calls inside a self-attention given back whole never run;
    # the call at which the budget ran out runs), then computed
    kept = [c for c in half.replay.calls if c.replayable]
    assert len(kept) < len(half.replay.calls)
    assert half.replay.replayed == len(kept) - sum(c.span for c in kept)
    monkeypatch.setattr(_replay, "REPLAY_BYTES", 0)
    computed_maps, computed = ablated_record(model, TEXT, {5: [0]}, tok, base=unablated_run(model, TEXT, tok))
    torch.testing.assert_close(maps.weights, computed_maps.weights, rtol=0, atol=1e-6)
    assert effect["score"] == pytest.approx(computed["score"], rel=1e-5, abs=1e-9)
    # nothing of the replay stays on the model: no forward patched on an instance, no hook
    assert not [name for name, m in model.named_modules() if "forward" in vars(m)]
    assert hooks() == before


def test_a_self_attention_kept_whole_runs_again_when_a_hook_inside_it_changed(bpe_tokenizer):
    # BERT's self-attention is given back whole, so its query, key and value do not run: a
    # hook added on one of them since the plain run must make it run again
    from attnwidget.ablate import ablated_record, unablated_run

    model, tok = tiny("bert", len(bpe_tokenizer), "eager"), bpe_tokenizer
    text = "The cat sat on the mat and looked."
    base = unablated_run(model, text, tok)
    ablated_record(model, text, {1: [0]}, tok, base=base)
    assert base.replay.replayed == 5  # layer 0: self-attention, output, FFN in, FFN out; layer 1's
    handle = model.encoder.layer[0].attention.self.key.register_forward_hook(lambda _m, _a, out: 2 * out)
    try:
        maps, _ = ablated_record(model, text, {1: [0]}, tok, base=base)
        assert base.replay.replayed == 0
        fresh_maps, _ = ablated_record(model, text, {1: [0]}, tok)
    finally:
        handle.remove()
    torch.testing.assert_close(maps.weights, fresh_maps.weights, rtol=0, atol=1e-6)
    plain_maps, _ = ablated_record(model, text, {1: [0]}, tok)
    assert (plain_maps.weights[0] - maps.weights[0]).abs().max() > 1e-3  # the hook did change layer 0


def replayed_and_computed(model, tok, text, heads, monkeypatch):
    """ablated_record with a kept plain run (replayed), and with one recorded with the replay off."""
    from attnwidget import _replay
    from attnwidget.ablate import ablated_record, unablated_run

    base = unablated_run(model, text, tok)
    replayed = ablated_record(model, text, heads, tok, base=base)
    with monkeypatch.context() as m:
        m.setattr(_replay, "REPLAY_BYTES", 0)
        computed = ablated_record(model, text, heads, tok, base=unablated_run(model, text, tok))
    torch.testing.assert_close(replayed[0].weights, computed[0].weights, rtol=0, atol=1e-6)
    for key in ("score", "loss_ablated", "embedding_cosine"):
        if key in computed[1]:
            assert replayed[1][key] == pytest.approx(computed[1][key], rel=1e-5, abs=1e-9), key
    return base.replay.replayed


def test_hooks_on_replayed_modules_run_once_around_what_is_given_back(bpe_tokenizer, monkeypatch):
    # the replay keeps what forward itself gave: a hook that changes a module's output is
    # applied to the given-back output once, as to a computed one (not to its own result again)
    model, tok = tiny("gpt2", len(bpe_tokenizer), "eager"), bpe_tokenizer
    text = "The cat sat on the mat and looked."
    fc = model.transformer.h[0].mlp.c_fc
    calls = []
    handle = fc.register_forward_hook(lambda _m, _a, out: calls.append(1) or 2 * out)
    try:
        assert replayed_and_computed(model, tok, text, {1: [0]}, monkeypatch) == 5
    finally:
        handle.remove()
    # six forwards (two plain runs, two extractions of the original, two ablated runs): the
    # hook ran once in each, the replayed one included
    assert len(calls) == 6


def test_a_self_attention_with_hooks_inside_runs_and_its_projections_replay(bpe_tokenizer, monkeypatch):
    # hooks inside BERT's self-attention must run, so it is not given back whole: it runs, and
    # its query, key and value are given back one by one (each hook running around them)
    model, tok = tiny("bert", len(bpe_tokenizer), "eager"), bpe_tokenizer
    text = "The cat sat on the mat and looked."
    seen = []
    handle = model.encoder.layer[0].attention.self.key.register_forward_hook(
        lambda _m, _a, out: seen.append(out.clone()))
    try:
        # layer 0: self-attention (runs), query, key, value, output, FFN in, FFN out; layer 1's self
        assert replayed_and_computed(model, tok, text, {1: [0]}, monkeypatch) == 7
    finally:
        handle.remove()
    assert len(seen) == 6  # once in each of the six forwards, the replayed one included
    for out in seen[1:]:
        torch.testing.assert_close(out, seen[0], rtol=0, atol=0)


def test_weights_replaced_through_data_are_seen(bpe_tokenizer, monkeypatch):
    # `p.data = ...` keeps the parameter and its version counter, not its storage
    from attnwidget.ablate import ablated_record, unablated_run

    model, tok = tiny("gpt2", len(bpe_tokenizer), "eager"), bpe_tokenizer
    text = "The cat sat on the mat and looked."
    base = unablated_run(model, text, tok)
    fc = model.transformer.h[0].mlp.c_fc
    fc.weight.data = fc.weight.data * 20
    maps, _ = ablated_record(model, text, {1: [0]}, tok, base=base)
    assert base.replay.replayed == 2  # c_attn and c_proj of layer 0
    fresh, _ = ablated_record(model, text, {1: [0]}, tok)
    torch.testing.assert_close(maps.weights, fresh.weights, rtol=0, atol=1e-6)


class EncoderLM(nn.Module):
    """Token embeddings, a 3-layer nn.TransformerEncoder and a vocabulary head: a model whose
    attention is nn.MultiheadAttention, which the extraction reads through hooks."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.emb = nn.Embedding(50, 16)
        layer = nn.TransformerEncoderLayer(16, 4, 32, dropout=0.0, batch_first=True)
        self.enc = nn.TransformerEncoder(layer, num_layers=3, enable_nested_tensor=False)
        self.head = nn.Linear(16, 50)

    def forward(self, input_ids, **_):
        return self.head(self.enc(self.emb(input_ids)))


def test_an_ablated_multihead_attention_layer_still_shows_its_weights():
    # the encoder layer asks its attention for no weights, the extraction's hook for per-head
    # ones: the ablation answers in the form finally asked, so the ablated record has every
    # layer (it had lost the ablated one), equal to the original below the first ablated layer
    from attnwidget.ablate import ablated_record
    from attnwidget.extract import extract_attention

    model = EncoderLM().eval()
    ids = torch.randint(0, 50, (1, 7), generator=torch.Generator().manual_seed(1))
    original = extract_attention(model, ids)
    assert original.n_layers == 3
    for first in range(3):
        maps, effect = ablated_record(model, ids, {first: [1]}, original=original)
        assert maps.shape == original.shape
        torch.testing.assert_close(maps.weights[:first + 1], original.weights[:first + 1],
                                   rtol=0, atol=1e-6)
        change = np.asarray(effect["attention_change"])
        assert not change[:first + 1].any()
        assert change[first + 1:].all()
        with torch.no_grad():  # and the layer itself still returns what it did, ablated
            x = model.emb(ids)
            with ablate_heads(model, {first: [1]}):
                y, w = model.enc.layers[first].self_attn(x, x, x, need_weights=True)
            assert w.shape == (1, 7, 7)  # averaged over heads, as asked by default
            y2, none = model.enc.layers[first].self_attn(x, x, x, need_weights=False)
            assert none is None
            assert not torch.allclose(y, y2)
