"""Handout 002 (per-head visualisation): row_std, grades, the marked head average, KL, the figure."""

from __future__ import annotations

import math

import numpy as np
import pytest
from bokeh.models import Div

from attnwidget import AttentionMaps, extract_attention
from attnwidget.lab.per_head import (
    caption,
    head_average,
    kl_divergence_matrix,
    per_head_figure,
    row_std,
    sharpness_grade,
)
from attnwidget.maps import average_label
from attnwidget.metrics.compare import KL_EPS

# the guide's "Averaging destroys this" example: two heads, one query over three keys
HEADS = np.array([[[0.1, 0.1, 0.8]], [[0.8, 0.1, 0.1]]])


def test_the_guides_averaging_example():
    stds = row_std(HEADS)
    np.testing.assert_allclose(stds, [np.std([0.1, 0.1, 0.8]), np.std([0.8, 0.1, 0.1])], rtol=1e-6)
    average = head_average(HEADS)
    assert isinstance(average, AttentionMaps)
    assert average.is_average
    assert average.head_names == ("mean of 2 heads",)
    np.testing.assert_allclose(average.head(0, 0), [[0.45, 0.1, 0.45]], rtol=1e-6)  # "Looks uniform!"
    assert float(row_std(average.head(0, 0))) == pytest.approx(np.std([0.45, 0.1, 0.45]), rel=1e-6)
    # averaging halves the spread here: the sharp heads look half as sharp, like a diffuse one
    assert float(row_std(average.head(0, 0))) == pytest.approx(float(stds.min()) / 2, rel=1e-5)


def test_row_std_follows_the_definition_and_the_guides_0234_cannot_occur():
    rng = np.random.default_rng(0)
    w = rng.dirichlet(np.ones(7) * 0.3, size=(3, 5))  # [heads, queries, keys]
    plain = [np.mean([np.std(w[h, q]) for q in range(5)]) for h in range(3)]
    np.testing.assert_allclose(row_std(w), plain, rtol=1e-9)
    onehot = np.zeros((128, 128))
    onehot[np.arange(128), np.arange(128)] = 1.0
    largest = math.sqrt(127) / 128  # a one-hot row over 128 keys: the largest possible row std
    assert float(row_std(onehot)) == pytest.approx(largest, rel=1e-6)
    assert largest < 0.089 < 0.234  # the guide's "Head 0: row_std = 0.234" over 128 keys
    assert float(row_std(onehot, relative=True)) == pytest.approx(1.0)
    assert sharpness_grade(onehot) == "SHARP"
    assert sharpness_grade(np.full((128, 128), 1 / 128)) == "UNIFORM"


def test_kl_between_heads_equals_a_plain_loop():
    rng = np.random.default_rng(1)
    w = rng.dirichlet(np.ones(6), size=(4, 6))  # [heads, queries, keys]
    kl = kl_divergence_matrix(w)
    assert kl.shape == (4, 4)
    for a in range(4):
        for b in range(4):
            rows = [sum(p * (math.log(p) - math.log(q + KL_EPS))
                        for p, q in zip(w[a, i], w[b, i], strict=True)) for i in range(6)]
            assert kl[a, b] == pytest.approx(np.mean(rows), abs=1e-9)


@pytest.fixture(scope="module")
def tiny_maps():
    from attnwidget.models import load_tiny_lm

    model, tokenizer = load_tiny_lm()
    return extract_attention(model, "q8Zr2kLmxT" * 2, tokenizer)


def test_caption_says_what_the_sequence_is(tiny_maps):
    text = caption(tiny_maps, -1, None, sequence_label="a repeated random segment")
    assert text.startswith("a repeated random segment (20 tokens) · attnwidget tiny induction LM")
    assert "blocks.1.attn" in text
    assert f" · {average_label(4)} · " in text
    assert "causal mask" in text
    assert "“q8Zr2kLmxTq8Zr2kLmxT”" in text
    assert " · head 2 · " in caption(tiny_maps, 0, 2)
    with pytest.raises(IndexError, match=r"layer: expected -2\.\.1"):
        caption(tiny_maps, 2)
    with pytest.raises(TypeError, match="maps: expected an AttentionMaps"):
        caption(HEADS)


def test_the_guides_figure_has_its_four_rows(tiny_maps, tmp_path):
    fig = per_head_figure(tiny_maps, layer=-1, sequence_label="<b>repeated</b>",
                          save_path=tmp_path / "f.html")
    header, heads, middle, kl = fig.children
    assert isinstance(header, Div)
    assert "&lt;b&gt;repeated&lt;/b&gt;" in header.text  # text, never HTML
    assert "Tokens: q | 8 | Z" in header.text
    assert "every head (4) and their average" in header.text  # the figure's, not one map's words
    assert "mean of" not in header.text
    assert len(heads.children) == 4  # each head on its own, no average among them
    titles = sorted(str((c[0] if isinstance(c, tuple) else c).title.text) for c in heads.children)
    assert [t.split(" · ")[0] for t in titles] == [f"L1 H{h}" for h in range(4)]  # the layer shown, not 0
    average_fig, stats = middle.children
    assert average_fig.title.text.replace("\n", " ") == f"blocks.1.attn · {average_label(4)}"
    w = tiny_maps.layer(1)
    stds = row_std(w, causal=True)
    grades = sharpness_grade(w, causal=True)
    assert f"head 0: row_std = {float(stds[0]):.4f}  [{grades[0]}]" in stds_text(stats)
    avg = float(row_std(w.mean(0), causal=True))
    assert f"AVERAGED: row_std = {avg:.4f}" in stds_text(stats)
    assert kl.title.text.startswith("KL divergence (nats) between heads")
    assert (kl.yaxis[0].axis_label, kl.xaxis[0].axis_label[:6]) == ("head a", "head b")
    assert (tmp_path / "f.html").stat().st_size > 10_000


def stds_text(div):
    return div.text.replace("<br>", "\n")


def test_generate_interpretability_outputs_from_a_real_batch(minilm, tmp_path, capsys):
    import torch

    from attnwidget.lab.per_head import diagnostic_summary, generate_interpretability_outputs
    from attnwidget.models import load_tiny_lm

    model, tokenizer = minilm
    batch = tokenizer(["The cat sat on the mat.", "A dog ran in the park all day long."], return_tensors="pt",
                      padding=True)  # element 0 is padded to the longer one
    out = generate_interpretability_outputs(model=model, sample_batch=batch, tokenizer=tokenizer,
                                            sequence_label="validation excerpt",
                                            save_path=tmp_path / "attention_with_context.html")
    printed = capsys.readouterr().out
    alone = extract_attention(model, "The cat sat on the mat.", tokenizer)  # element 0, without padding
    assert out["maps"].query_tokens == alone.query_tokens
    np.testing.assert_allclose(out["summary"].row_std, diagnostic_summary(alone, -1).row_std, rtol=1e-4)
    # the label names the sequence everywhere it is quoted, once: caption, figure and summary
    assert out["caption"].startswith("batch element 0 of 2 ")
    assert "on validation excerpt sequence: 'the cat sat on the mat.' (9 tokens)" in out["caption"]
    assert out["caption"].count("validation excerpt") == 1
    assert "[SEQUENCE] validation excerpt (batch element 0 of 2)" in printed
    assert "Sequence: layer 5 on validation excerpt sequence: 'the cat sat" in printed  # not "text sequence"
    assert "ATTENTION DIAGNOSTIC SUMMARY" in printed
    assert f"✓ Saved: {tmp_path / 'attention_with_context.html'}" in printed
    assert out["path"].stat().st_size > 10_000

    lm, chars = load_tiny_lm()  # ids only, as a validation loader yields them: (input_ids, target_ids)
    ids = torch.tensor([chars.encode("q8Zr2kLmxT" * 2)])
    out = generate_interpretability_outputs(lm, (ids, ids), save_path=None, verbose=False)
    assert out["maps"].query_tokens == tuple("q8Zr2kLmxT" * 2)  # the tokenizer's tokens, not positions
    assert "q8Zr2kLmxT" in out["caption"]
    assert "on sample_batch sequence: " in out["caption"]  # token ids, so not a "text sequence"
    with pytest.raises(ValueError, match=r"sample_batch: expected token ids \[seq_len\] or \[batch, "):
        generate_interpretability_outputs(lm, torch.zeros(1, 2, 3, dtype=torch.long), save_path=None)


def test_the_caption_quotes_the_text_as_it_is(tiny_maps):
    maps = tiny_maps.with_source(None, text="x  =  1   <b>y</b>")
    text = caption(maps, 0, 1, sequence_label="two  spaces")
    assert text.startswith("two  spaces (")
    assert "x  =  1   <b>y</b>" in text  # plain text: nothing collapsed, nothing escaped here

