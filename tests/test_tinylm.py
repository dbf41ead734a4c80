"""The tiny models: the shipped induction model, reproducible training, and its use everywhere."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from attnwidget import AttentionView, extract_attention
from attnwidget.ablate import ablate_heads, attention_sites
from attnwidget.metrics import panel_metrics
from attnwidget.models import TINY_LM_WEIGHTS, load_tiny_lm
from attnwidget.probes import repeated_token_scores
from attnwidget.tinylm import (
    INDUCTION_RECIPE,
    CharTokenizer,
    TinyConfig,
    TinyLM,
    induction_batch,
    next_token_loss,
    train_induction,
)

SEGMENT = "q8Zr2kLmxT"


@pytest.fixture(scope="module")
def tiny_lm():
    return load_tiny_lm()


def test_shipped_model_has_a_previous_token_head_and_induction_heads(tiny_lm):
    model, _ = tiny_lm
    scores = repeated_token_scores(model, period=16, n_samples=8, vocab_size=64, seed=5)
    prev, induction = scores["previous_token"], scores["induction"]
    # layer 0 has a previous-token head, layer 1 reads through it: induction heads
    assert prev[0].max() > 0.5
    assert induction[1].max() > 0.7
    assert int(np.argmax(induction.max(axis=1))) == 1  # the induction heads sit in layer 1
    assert induction[0].max() < 0.2


def test_it_predicts_the_repeat_and_ablating_the_induction_heads_breaks_it(tiny_lm):
    model, _ = tiny_lm
    gen = torch.Generator().manual_seed(11)
    ids = induction_batch(32, 48, 64, gen, periods=(16, 16))
    with torch.no_grad():
        logits = model(ids)
    second = logits[:, 16:31].argmax(-1) == ids[:, 17:32]  # predictions inside the copy
    assert second.float().mean() > 0.9
    sites = attention_sites(model)
    assert [(s.name, s.n_heads, s.head_dim) for s in sites] == [
        ("blocks.0.attn", 4, 16), ("blocks.1.attn", 4, 16)]
    induction = repeated_token_scores(model, period=16, vocab_size=64)["induction"][1]
    heads = [int(h) for h in np.flatnonzero(induction > 0.5)]
    with torch.no_grad():
        base = float(next_token_loss(model, ids))
        with ablate_heads(model, {1: heads}):
            broken = float(next_token_loss(model, ids))
            broken_acc = (model(ids)[:, 16:31].argmax(-1) == ids[:, 17:32]).float().mean()
        assert float(next_token_loss(model, ids)) == base  # restored
    assert broken > base + 0.5
    assert broken_acc < 0.5


def test_widget_and_extraction_on_the_tiny_model(tiny_lm):
    model, tok = tiny_lm
    text = SEGMENT * 2
    maps = extract_attention(model, text, tok)
    assert maps.shape == (2, 4, 20, 20)
    assert maps.causal
    assert maps.model_name.startswith("attnwidget tiny induction LM")
    assert list(maps.query_tokens) == list(text)
    view = AttentionView(model, text, tokenizer=tok, layer=1)
    assert view.caption.startswith("attnwidget tiny induction LM")
    assert without_view(view.metrics) == panel_metrics(maps.head(1, 0), 0.1, causal=True)
    view.ablated = [[0, 2]]  # the widget re-runs the tiny model too
    with ablate_heads(model, {0: [2]}):
        expected = extract_attention(model, text, tok)
    torch.testing.assert_close(view.maps.weights, expected.weights)


def without_view(metrics):
    return {k: v for k, v in metrics.items() if k not in ("view", "kind")}


def test_tokenizer_and_model_errors():
    tok = CharTokenizer()
    assert tok.vocab_size == 64
    assert tok.decode(tok.encode("aZ9.")) == "aZ9."
    with pytest.raises(ValueError, match=r"text: characters \[' ', '!'\] are not in the tokenizer's"):
        tok.encode("a b!")
    with pytest.raises(ValueError, match="input_ids: 49 tokens, but the model takes at most 48"):
        TinyLM(TinyConfig(max_len=48))(torch.zeros(1, 49, dtype=torch.long))
    with pytest.raises(ValueError, match=r"mask: expected one of \('causal', 'reverse'\)"):
        TinyConfig(mask="bidirectional")
    with pytest.raises(ValueError, match=r"periods: expected 1 <= lo <= hi <= length / 2"):
        induction_batch(2, 10, 64, torch.Generator(), periods=(3, 6))


def test_induction_batch_repeats_the_first_p_tokens_of_each_sequence():
    ids = induction_batch(16, 48, 64, torch.Generator().manual_seed(3), periods=(6, 24))
    # by hand, from the same draws: the random tokens, then each sequence's period
    gen = torch.Generator().manual_seed(3)
    tokens = torch.randint(0, 64, (16, 48), generator=gen)
    periods = torch.randint(6, 25, (16,), generator=gen).tolist()
    assert len(set(periods)) > 3
    for row, drawn, p in zip(ids, tokens, periods, strict=True):
        expected = drawn.clone()
        expected[p:2 * p] = drawn[:p]
        assert torch.equal(row, expected)


def test_training_is_seeded():
    a, la = train_induction(progress=False, steps=15)
    b, lb = train_induction(progress=False, steps=15)
    assert la == lb
    pairs = zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    assert all(torch.equal(x, y) for x, y in pairs)


def _training_script():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).parents[1] / "scripts" / "train_tiny_lm.py"
    spec = importlib.util.spec_from_file_location("train_tiny_lm", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


#: Tolerances are this many times the noise the training script measured (two trainings that
#: differ only in reduction order, which is what another CPU changes), with a floor for a
#: measured noise that happens to be tiny. On the CPU the weights were made on, the noise was
#: 0.007 in final loss and 0.025 in head scores, while every role score is at least 0.2 from
#: the role cut-off (0.5), so roles cannot flip within these bounds; ablating the induction
#: heads, a real change of behaviour, moves the loss by more than 0.5.
NOISE_MARGIN = 5
LOSS_FLOOR, SCORE_FLOOR, ACCURACY_FLOOR = 0.02, 0.05, 0.02


@pytest.mark.slow
def test_training_script_reproduces_the_shipped_model():
    script = _training_script()
    saved = torch.load(TINY_LM_WEIGHTS, weights_only=True)
    meta = saved["meta"]
    recipe = {k: list(v) if isinstance(v, tuple) else v for k, v in INDUCTION_RECIPE.items()}
    assert saved["recipe"] == recipe
    model, losses = train_induction(progress=False)
    assert dataclasses.asdict(model.config) == saved["config"]

    # Behaviour reproduces on any CPU: the same heads do the same jobs, as well
    shipped, here = meta["behaviour"], script.behaviour(model)
    assert here["roles"] == shipped["roles"]
    assert here["roles"]["previous_token"] == [[0, 2]]
    assert [layer for layer, _ in here["roles"]["induction"]] == [1, 1]
    noise = meta["noise"]
    assert abs(losses[-1] - meta["final_loss"]) <= max(NOISE_MARGIN * noise["final_loss"], LOSS_FLOOR)
    for name in ("previous_token", "induction"):
        np.testing.assert_allclose(here[name], shipped[name], rtol=0,
                                   atol=max(NOISE_MARGIN * noise["head_score"], SCORE_FLOOR))
    assert here["copy_accuracy"] > 0.9
    assert abs(here["copy_accuracy"] - shipped["copy_accuracy"]) <= max(
        NOISE_MARGIN * noise["copy_accuracy"], ACCURACY_FLOOR)

    # Bits reproduce only where the floating-point path is provably the same
    fingerprint = {k: meta[k] for k in script.platform_fingerprint()}
    if script.platform_fingerprint() == fingerprint:
        for name, value in model.state_dict().items():
            assert torch.equal(value, saved["state_dict"][name]), name
    else:  # another CPU: weights move far (up to 40 % in one tensor) while behaviour holds
        print(f"bitwise check skipped: made on {fingerprint}, here {script.platform_fingerprint()}")


def test_the_measured_noise_is_recorded_with_the_weights():
    meta = torch.load(TINY_LM_WEIGHTS, weights_only=True)["meta"]
    noise = meta["noise"]
    assert set(noise) == {"final_loss", "copy_accuracy", "head_score", "weight_relative"}
    # a real measurement, not zeros: reduction order alone moved the weights
    assert noise["weight_relative"] > 1e-3
    assert 0 < noise["final_loss"] < LOSS_FLOOR  # and the loss hardly at all
    assert {"torch", "threads", "machine", "cpu", "cpu_capability"} <= set(meta)


def test_reverse_mask_cheats_and_the_causal_model_learns():
    from attnwidget.tinylm import generated_corpus, honest_loss, train_text_model

    text = generated_corpus()
    assert text == generated_corpus()  # seeded
    held_out = generated_corpus(5, seed=99)
    results = {}
    for mask in ("causal", "reverse"):
        model, tok, losses = train_text_model(text, mask=mask, steps=300, progress=False)
        ids = torch.tensor(tok.encode(held_out))[:32]
        with torch.no_grad():
            train_like = float(next_token_loss(model, ids[None]))
        results[mask] = (losses[0], train_like, honest_loss(model, ids), model, tok)
    c0, c_train, c_honest, causal, tok = results["causal"]
    r0, r_train, r_honest, _, _ = results["reverse"]
    assert c0 > 3.0  # both start at about ln(28)
    assert r0 > 3.0
    assert r_train < 0.15  # it reads the answer from the future
    assert c_train > 2 * r_train
    assert c_honest == pytest.approx(c_train, rel=1e-4)  # a causal model never saw the future
    assert r_honest > 2.0 > 1.0 > c_honest  # without the future, the cheat knows nothing
    sample = tok.decode(causal.generate(torch.tensor(tok.encode("the cat ")), 30).tolist())
    words = {w for s in text.split(".") for w in s.split()}
    assert sum(w in words for w in sample.split()) >= 3  # real words
