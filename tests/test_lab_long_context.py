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
    """The handout's numbers by hand: the last query's context is the keys before it, renormalised."""
    context = list(w[-1][:-1])
    total = sum(context)
    row = [p / total for p in context]
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
    # the handout's example: 20 positions, 19 context tokens, mean 0.0526, the most attended
    # position 18 (the last context token) for a recency-biased head
    assert (stats["sequence_length"], stats["context_tokens"]) == (20, 19)
    assert stats["mean_context_attention"] == pytest.approx(0.0526, abs=5e-5)
    assert stats["max_attention_position"] == 18
    assert isinstance(stats["max_attention_position"], int)
    stack = np.stack([w, causal_recency(20, 0.95, seed=1)])  # [heads, Q, K]
    per_head = sample_statistics(stack)
    assert per_head["recent_distant_ratio"].shape == (2,)
    assert per_head["recent_distant_ratio"][1] == pytest.approx(
        plain_sample_statistics(stack[1])["recent_distant_ratio"], rel=1e-9)


def test_sample_statistics_on_a_model_and_a_bidirectional_encoder(minilm):
    from attnwidget.models import load_tiny_lm
    from attnwidget.study import study_samples

    lm, chars = load_tiny_lm()
    maps = extract_attention(lm, "q8Zr2kLmxT" * 2, chars)
    stats = sample_statistics(maps)
    assert stats["max_attention_position"].shape == (2, 4)  # [layer, head]
    for layer, head in ((0, 1), (1, 3)):
        plain = plain_sample_statistics(maps.head(layer, head).astype(np.float64))
        assert stats["attention_entropy"][layer, head] == pytest.approx(plain["attention_entropy"], rel=1e-5)
        assert stats["max_attention_position"][layer, head] == plain["max_attention_position"]
    # the same numbers as the study (and the report) print for this sample
    study = study_samples([maps], layer=None)
    for key in ("mean_context_attention", "attention_std", "recent_distant_ratio", "attention_entropy"):
        np.testing.assert_allclose(stats[key], study.per_sample[key][0], rtol=1e-12, err_msg=key)
    model, tokenizer = minilm
    encoder = extract_attention(model, "The cat sat on the mat.", tokenizer)
    assert not encoder.causal
    stats = sample_statistics(encoder.layer(0))  # not causal: no error; the keys before the last
    assert stats["context_tokens"] == encoder.shape[-1] - 1
    with pytest.raises(ValueError, match=r"attention: weight .* on a masked key"):
        sample_statistics(encoder.layer(0), causal=True)


def test_summary_statistics_and_insights_across_samples(capsys):
    recent = [causal_recency(n, 0.6, seed=n) for n in (12, 16, 20)]
    summary = summary_statistics(recent)
    assert summary["n_samples"] == 3
    plain = [plain_sample_statistics(w) for w in recent]
    ratios = [p["recent_distant_ratio"] for p in plain]
    assert summary["recency_ratio"]["mean"] == pytest.approx(np.mean(ratios), rel=1e-9)
    assert summary["recency_ratio"]["std"] == pytest.approx(np.std(ratios), rel=1e-6)
    # the handout's summary measures, mean and std over the samples
    for key in ("mean_context_attention", "attention_std", "attention_entropy", "recent_distant_ratio"):
        values = [p[key] for p in plain]
        assert summary[key]["mean"] == pytest.approx(np.mean(values), rel=1e-9), key
        assert summary[key]["std"] == pytest.approx(np.std(values), rel=1e-6, abs=1e-15), key
    found = insights(summary)  # printed, as the handout's tool does
    assert len(found) == 1
    assert found[0].startswith("INSIGHT: Strong recency bias detected! Consider compressing or removing")
    assert "recency_ratio > 2.0 at the matrix" in found[0]
    assert "Strong recency bias" in capsys.readouterr().out

    uniform = [np.tril(np.ones((n, n))) / np.arange(1, n + 1)[:, None] for n in (30, 40)]
    found = insights(summary_statistics(uniform), verbose=False)
    assert capsys.readouterr().out == ""
    assert len(found) == 1
    assert found[0].startswith("INSIGHT: High attention entropy (uniform distribution)!")
    heads = summary_statistics([np.stack([u, u]) for u in uniform])  # [heads, Q, K]: named by head
    assert "head 0: " in insights(heads, verbose=False)[0]
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
    line = next(r.data_source for r in profile.renderers
                if isinstance(r.data_source, ColumnDataSource) and len(r.data_source.data.get("y", [])) > 2)
    # the last query's context, as sample_statistics reads it: the keys before it, renormalised
    row = maps.head(1, 3)[-1].astype(np.float64)
    np.testing.assert_allclose(line.data["y"], row[:-1] / row[:-1].sum(), rtol=1e-6)
    stats = sample_statistics(maps.head(1, 3))
    assert f"recent / distant {stats['recent_distant_ratio']:.2f}" in profile.title.text
    assert int(np.argmax(line.data["y"])) == stats["max_attention_position"]
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


def test_the_summary_figure_shows_the_four_measures_of_each_head_across_samples(tmp_path):
    from attnwidget.models import load_tiny_lm

    lm, chars = load_tiny_lm()
    texts = ("q8Zr2kLmxT" * 2, "abcdefgh" * 3, "x1y2z3" * 4)
    samples = [extract_attention(lm, text, chars) for text in texts]
    grid = visualize_summary_statistics(samples, layer_idx=-1, save_path=tmp_path / "summary.html")
    panels = [child[0] for child in grid.children]
    assert [p.title.text.split(" across")[0] for p in panels] == [
        "mean_context_attention", "attention_std", "attention_entropy", "recent_distant_ratio"]
    per_sample = [sample_statistics(m) for m in samples]
    for panel in panels:
        key = panel.title.text.split(" across")[0]
        values = np.array([s[key][1] for s in per_sample], dtype=float)  # [3 samples, heads], layer 1
        box = next(r.data_source for r in panel.renderers if isinstance(r.data_source, ColumnDataSource)).data
        np.testing.assert_allclose(box["med"], np.nanmedian(np.where(np.isfinite(values), values, np.nan), 0),
                                   rtol=1e-9, err_msg=key)
    assert (tmp_path / "summary.html").exists()
    with pytest.raises(ValueError, match=r"samples\[0\]: expected \[layers, heads, Q, K\], got shape \(4,"):
        visualize_summary_statistics([samples[0].layer(0)])


def test_extract_and_visualize_attention_runs_the_handouts_whole_tool(tmp_path, capsys):
    import torch

    from attnwidget.lab.long_context import extract_and_visualize_attention
    from attnwidget.models import load_tiny_lm

    lm, chars = load_tiny_lm()
    texts = ["q8Zr2kLmxT" * 2, "abcdefgh" * 3, "x1y2z3" * 4]
    config = {"n_transit": 20}  # the handout's call passes its config; nothing in it is needed
    study = extract_and_visualize_attention(config, lm, texts, num_samples=2, layer_idx=0,
                                            save_dir=tmp_path / "figs", png=False)
    out = capsys.readouterr().out
    assert len(study.samples) == 2  # the first num_samples sequences
    assert "Sample 1:" in out
    assert "Sequence length: 20   Context tokens: 19" in out
    folder = tmp_path / "figs" / "layer0"
    assert f"Saved {len(list(folder.iterdir()))} files in {folder}" in out
    assert (folder / "insights.txt").read_text().startswith(out.split("\nSaved")[0][:200])
    assert any(p.suffix == ".html" for p in folder.iterdir())
    for s, maps in enumerate(study.samples):  # the numbers are sample_statistics' of each sequence
        stats = sample_statistics(maps)
        np.testing.assert_allclose(study.per_sample["recent_distant_ratio"][s], stats["recent_distant_ratio"])

    # a data loader of token ids, two sequences per batch: every row is a sample, none dropped
    ids = torch.tensor([chars.encode(texts[0]), chars.encode(texts[0][::-1])])
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(ids, ids), batch_size=2)
    study = extract_and_visualize_attention(None, lm, loader, num_samples=5, save_dir=None, verbose=False)
    assert len(study.samples) == 2
    np.testing.assert_allclose(study.samples[0].weights, extract_attention(lm, texts[0], chars).weights,
                               atol=1e-6)
    assert study.layer is None  # no layer_idx: every layer in the numbers
    # token ids say where they came from, not "text sequence"; the texts above are text
    assert "Sample 1: blocks.1.attn on test_dataloader sequence (20 tokens)" in str(study)
    assert "Sample 1: blocks.0.attn on text sequence: " in out
    with pytest.raises(ValueError, match="num_samples: expected a positive int, got 0"):
        extract_and_visualize_attention(None, lm, texts, num_samples=0)
    with pytest.raises(TypeError, match="test_dataloader: expected an iterable of samples"):
        extract_and_visualize_attention(None, lm, 3)
    with pytest.raises(ValueError, match="test_dataloader: it yielded no sample"):
        extract_and_visualize_attention(None, lm, [])


def test_a_last_query_that_only_attends_to_itself_has_no_context_to_measure():
    recency = causal_recency(6, 0.6)
    stack = np.stack([np.eye(6), recency])  # head 0: all weight on the own key
    stats = sample_statistics(stack)
    assert stats["max_attention_position"][0] == -1
    for key in ("mean_context_attention", "attention_std", "recent_distant_ratio", "attention_entropy"):
        assert np.isnan(stats[key][0]), key
        assert stats[key][1] == pytest.approx(plain_sample_statistics(recency)[key], rel=1e-9), key
    summary = summary_statistics([stack, np.stack([causal_recency(8, 0.6, seed=2)] * 2)])
    assert np.isnan(summary["recency_ratio"]["mean"][0])  # empty in one sample: no number, no hint
    assert summary["recency_ratio"]["mean"][1] > 2
    assert [h.split(" at ")[1].split(":")[0] for h in insights(summary, verbose=False)] == ["head 1"]


def test_summary_statistics_agree_on_an_infinite_recency_ratio():
    # a local window: the distant keys get exactly 0, every sample's ratio is infinite
    local = [np.tril(np.triu(np.ones((n, n)), -1)) for n in (9, 12)]
    local = [w / w.sum(-1, keepdims=True) for w in local]
    summary = summary_statistics(local)
    assert summary["recency_ratio"]["mean"] == np.inf
    assert summary["recent_distant_ratio"]["mean"] == np.inf
    assert summary["recent_distant_ratio"]["std"] == 0


def test_a_records_causal_reading_is_checked(minilm):
    model, tokenizer = minilm
    encoder = extract_attention(model, "The cat sat on the mat.", tokenizer)  # bidirectional
    with pytest.raises(ValueError, match=r"on a masked key"):
        sample_statistics(encoder, causal=True)
    with pytest.raises(ValueError, match=r"on a masked key"):
        summary_statistics([encoder], causal=True)


def test_the_summary_figure_names_a_sample_that_does_not_match(maps):
    with pytest.raises(ValueError, match=r"samples\[1\]: 1 layers x 4 heads, expected 2 x 4 like "):
        visualize_summary_statistics([maps, maps.select(layers=[0])], layer_idx=-1)


def test_data_loaders_of_every_usual_shape_give_every_sequence(tmp_path, capsys):
    import torch

    from attnwidget.lab.long_context import extract_and_visualize_attention
    from attnwidget.models import load_tiny_lm

    lm, chars = load_tiny_lm()
    texts = ["q8Zr2kLmxT" * 2, "abcdefgh" * 2, "x1y2z3" * 3]
    ids = [torch.tensor(chars.encode(t)) for t in texts]
    pairs = list(zip(texts, [0, 1, 2], strict=True))
    loaders = {
        "collate_fn=list of 1-D ids (lengths differ)": torch.utils.data.DataLoader(ids, batch_size=2,
                                                                                  collate_fn=list),
        "(text, label) pairs, default collate": torch.utils.data.DataLoader(pairs, batch_size=2),
        "lists of ints": [[chars.encode(t) for t in texts[:2]], [chars.encode(texts[2])]],
        "mappings of nested lists": [{"input_ids": [chars.encode(t)]} for t in texts],
    }
    for what, loader in loaders.items():
        study = extract_and_visualize_attention(None, lm, loader, num_samples=3, save_dir=None, verbose=False)
        assert [m.shape[2] for m in study.samples] == [20, 16, 18], what
    study = extract_and_visualize_attention(None, lm, texts, num_samples=2, layer_idx=-1, save_dir=tmp_path,
                                            png=False)
    folder = tmp_path / "layer1"  # one folder per layer studied: a loop over layers keeps them all
    names = sorted(p.name for p in folder.iterdir())
    assert {"study.json", "insights.txt", "sample1_heads.html", "sample1_lines.html", "sample2_heads.html",
            "sample2_lines.html", "history_layer1.html"} <= set(names)
    assert f"Saved {len(names)} files in {folder}" in capsys.readouterr().out
    with pytest.raises(IndexError, match=r"layer_idx: expected -2\.\.1"):
        extract_and_visualize_attention(None, lm, texts, num_samples=1, layer_idx=2, save_dir=None)

