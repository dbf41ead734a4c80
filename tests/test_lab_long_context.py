"""Handout 004 (long-context analysis): per-sample numbers, statistics across samples, insights, figures."""

from __future__ import annotations

import math

import numpy as np
import pytest
from bokeh.models import ColumnDataSource

from attnwidget import extract_attention
from attnwidget.lab.long_context import (
    insights,
    sample_statistics,
    save_figures,
    summary_statistics,
    visualize_attention_heatmap,
    visualize_attention_lines,
    visualize_summary_statistics,
)


def causal_recency(n, decay, seed=0):
    """A causal ``[n, n]`` map whose rows fall off with distance by ``decay`` per step (plus noise)."""
    rng = np.random.default_rng(seed)
    w = np.zeros((n, n))
    for i in range(n):
        for j in range(i + 1):
            w[i, j] = decay ** (i - j) * (1 + 0.1 * rng.random())
        w[i] /= w[i].sum()
    return w


def plain_sample_statistics(w, fraction=0.25):
    row = list(w[-1])
    n = len(row)
    span = max(1, math.ceil(n * fraction))
    mean = sum(row) / n
    return {
        "sequence_length": len(w),
        "context_tokens": n,
        "mean_context_attention": mean,
        "attention_std": math.sqrt(sum((p - mean) ** 2 for p in row) / n),
        "max_attention_position": row.index(max(row)),
        "recent_distant_ratio": (sum(row[-span:]) / span) / (sum(row[:span]) / span),
        "attention_entropy": -sum(p * math.log(p) for p in row if p > 0),
    }


def test_sample_statistics_equal_a_plain_computation():
    w = causal_recency(20, 0.7)
    stats = sample_statistics(w)  # causal inferred: nothing above the diagonal
    for key, value in plain_sample_statistics(w).items():
        assert stats[key] == pytest.approx(value, rel=1e-9), key
    assert stats["mean_context_attention"] == pytest.approx(1 / 20)  # "~5% per token on average"
    stack = np.stack([w, causal_recency(20, 0.95, seed=1)])  # [heads, Q, K]
    per_head = sample_statistics(stack)
    assert per_head["recent_distant_ratio"].shape == (2,)
    assert per_head["recent_distant_ratio"][1] == pytest.approx(
        plain_sample_statistics(stack[1])["recent_distant_ratio"], rel=1e-9)


def test_sample_statistics_on_a_model_and_a_bidirectional_encoder(minilm):
    from attnwidget.models import load_tiny_lm

    lm, chars = load_tiny_lm()
    maps = extract_attention(lm, "q8Zr2kLmxT" * 2, chars)
    stats = sample_statistics(maps)
    assert stats["max_attention_position"].shape == (2, 4)  # [layer, head]
    for layer, head in ((0, 1), (1, 3)):
        plain = plain_sample_statistics(maps.head(layer, head).astype(np.float64))
        assert stats["attention_entropy"][layer, head] == pytest.approx(plain["attention_entropy"], rel=1e-5)
        assert stats["max_attention_position"][layer, head] == plain["max_attention_position"]
    model, tokenizer = minilm
    encoder = extract_attention(model, "The cat sat on the mat.", tokenizer)
    assert not encoder.causal
    stats = sample_statistics(encoder.layer(0))  # not causal: every key counts, no error
    assert stats["context_tokens"] == encoder.shape[-1]
    with pytest.raises(ValueError, match=r"attention: weight .* on a masked key"):
        sample_statistics(encoder.layer(0), causal=True)


def test_summary_statistics_and_insights_across_samples(capsys):
    recent = [causal_recency(n, 0.6, seed=n) for n in (12, 16, 20)]
    summary = summary_statistics(recent)
    assert summary["n_samples"] == 3
    ratios = [plain_sample_statistics(w)["recent_distant_ratio"] for w in recent]
    assert summary["recency_ratio"]["mean"] == pytest.approx(np.mean(ratios), rel=1e-9)
    assert summary["recency_ratio"]["std"] == pytest.approx(np.std(ratios), rel=1e-6)
    found = insights(summary, verbose=True)
    assert len(found) == 1
    assert found[0].startswith("INSIGHT: Strong recency bias detected! Consider compressing or removing")
    assert "recency_ratio > 2.0 at ()" in found[0]
    assert "Strong recency bias" in capsys.readouterr().out

    uniform = [np.tril(np.ones((n, n))) / np.arange(1, n + 1)[:, None] for n in (30, 40)]
    found = insights(summary_statistics(uniform))
    assert len(found) == 1
    assert found[0].startswith("INSIGHT: High attention entropy (uniform distribution)!")
    with pytest.raises(ValueError, match="metrics: expected the output of history_metrics"):
        insights({"n_samples": 1})


@pytest.fixture(scope="module")
def maps():
    from attnwidget.models import load_tiny_lm

    lm, chars = load_tiny_lm()
    return extract_attention(lm, "q8Zr2kLmxT" * 2, chars)


def test_figures_show_the_heads_and_the_history(maps, tmp_path):
    grid = visualize_attention_heatmap(maps, layer_idx=-1, figsize=(16, 12))
    panels = [child[0] for child in grid.children]
    assert [p.title.text.split(" · ")[0] for p in panels] == ["L1 H0", "L1 H1", "L1 H2", "L1 H3"]
    weights = visualize_attention_heatmap(maps.layer(0), tokens=list("q8Zr2kLmxT" * 2))
    assert len(weights.children) == 4
    lines = visualize_attention_lines(maps, layer_idx=1, head_idx=-1)
    profile, received = lines.children
    line = next(r.data_source for r in profile.renderers if isinstance(r.data_source, ColumnDataSource))
    np.testing.assert_allclose(line.data["y"], maps.head(1, 3)[-1])  # the last query's row
    bars = next(r.data_source for r in received.renderers if isinstance(r.data_source, ColumnDataSource))
    np.testing.assert_allclose(bars.data["top"], maps.head(1, 3).mean(0), rtol=1e-6)  # column means

    folder = tmp_path / "figs" / "attention"
    paths = save_figures({"heads": grid, "lines": lines}, folder)
    assert paths == [folder / "heads.html", folder / "lines.html"]
    assert all(p.stat().st_size > 10_000 for p in paths)
    with pytest.raises(ValueError, match="fmt: expected 'html', 'png' or 'svg', got 'pdf'"):
        save_figures({"a": grid}, tmp_path, fmt="pdf")
    with pytest.raises(ValueError, match=r"figures: names must be plain file names .* got '\.\./x'"):
        save_figures({"../x": grid}, tmp_path)
    with pytest.raises(IndexError, match=r"layer_idx: expected -2\.\.1"):
        visualize_attention_heatmap(maps, layer_idx=2)


def test_the_summary_figure_shows_each_heads_recency_ratio_across_samples(tmp_path):
    from attnwidget.models import load_tiny_lm

    lm, chars = load_tiny_lm()
    texts = ("q8Zr2kLmxT" * 2, "abcdefgh" * 3, "x1y2z3" * 4)
    samples = [extract_attention(lm, text, chars) for text in texts]
    fig = visualize_summary_statistics(samples, layer_idx=-1, save_path=tmp_path / "summary.html")
    bars = next(r.data_source for r in fig.renderers if isinstance(r.data_source, ColumnDataSource)).data
    per_sample = np.array([sample_statistics(m)["recent_distant_ratio"][1] for m in samples])  # [3, heads]
    finite = np.where(np.isfinite(per_sample), per_sample, np.nan)
    np.testing.assert_allclose(bars["mean"], np.nanmean(finite, axis=0), rtol=1e-9)
    assert (tmp_path / "summary.html").exists()
    with pytest.raises(ValueError, match=r"samples\[0\]: expected \[layers, heads, Q, K\], got shape \(4,"):
        visualize_summary_statistics([samples[0].layer(0)])
