"""Handout 001 (attention fundamentals): the extractor, HF extraction, the heat map, statistics, patterns.

Calls are the handout's; values are checked against transformers' own
``output_attentions``, against weights recomputed by hand from a layer's
parameters, and against the handout's published numpy code (tests/lab_reference.py).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from bokeh.models import ColumnDataSource
from lab_reference import lab_pattern, lab_statistics
from torch import nn

from attnwidget.extract import NoAttentionFoundError
from attnwidget.lab.fundamentals import (
    AttentionExtractor,
    compute_attention_statistics,
    create_synthetic_attention,
    example_attention_fundamentals,
    extract_huggingface_attention,
    identify_attention_pattern,
    plot_attention_heatmap,
)

TEXT = "The quick brown fox jumps over the lazy dog"


def hook_count(model):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def transformers_attentions(model, tokenizer, text):
    """The independent reference: transformers' own output_attentions, per layer [B, H, Q, K]."""
    inputs = tokenizer(text, return_tensors="pt")
    with torch.no_grad():
        return inputs, model(**inputs, output_attentions=True).attentions


# --------------------------------------------------------------------------- AttentionExtractor
def test_extractor_as_the_handout_uses_it_matches_transformers(minilm):
    model, tokenizer = minilm
    inputs, reference = transformers_attentions(model, tokenizer, TEXT)
    input_ids, attention_mask = inputs["input_ids"], inputs["attention_mask"]
    before = hook_count(model)

    extractor = AttentionExtractor(model)
    extractor.register_hooks()
    attention = extractor.get_attention(input_ids, attention_mask)
    assert len(attention) == 6  # one per layer: BERT's attention wrapper passes weights through
    assert extractor.layer_names == [f"encoder.layer.{i}.attention.self" for i in range(6)]
    for got, want in zip(attention, reference, strict=True):
        assert got.shape == (1, 12, input_ids.shape[1], input_ids.shape[1])
        torch.testing.assert_close(got, want)
    extractor.clear_hooks()
    assert hook_count(model) == before
    assert extractor.attention_weights == []
    assert len(attention) == 6  # the list handed out stays as it was

    extractor.register_hooks(["encoder.layer.2.attention.self"])
    (only,) = extractor.get_attention(input_ids)
    torch.testing.assert_close(only, reference[2])
    extractor.clear_hooks()


def test_extractor_is_a_context_manager_that_removes_its_hooks_even_after_an_error(minilm):
    model, tokenizer = minilm
    ids = tokenizer("a b c", return_tensors="pt")["input_ids"]
    before = hook_count(model)
    with AttentionExtractor(model) as extractor:
        assert hook_count(model) > before
        weights = extractor.get_attention(ids)
    assert hook_count(model) == before
    assert len(extractor.attention_weights) == 6
    assert extractor.attention_weights is weights
    with pytest.raises(RuntimeError, match="boom"), AttentionExtractor(model):
        raise RuntimeError("boom")
    assert hook_count(model) == before
    model.train()
    with AttentionExtractor(model) as extractor:
        extractor.get_attention(ids)
    assert model.training  # restored (the handout's version leaves the model in eval mode)
    model.eval()


def test_extractor_on_a_pytorch_encoder_layer_equals_weights_recomputed_by_hand():
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(d_model=8, nhead=2, dim_feedforward=16, batch_first=True).eval()
    x = torch.randn(1, 5, 8)
    with AttentionExtractor(layer) as extractor:
        (w,) = extractor.get_attention(x)
    assert extractor.layer_names == ["self_attn"]
    # by hand: q, k from the packed in-projection, per head softmax(q k^T / sqrt(4))
    mha = layer.self_attn
    q, k, _ = (x[0] @ mha.in_proj_weight.T + mha.in_proj_bias).detach().split(8, dim=-1)
    expected = np.zeros((2, 5, 5))
    for h in range(2):
        qh, kh = q[:, 4 * h : 4 * h + 4].numpy(), k[:, 4 * h : 4 * h + 4].numpy()
        for i in range(5):
            scores = [float(qh[i] @ kh[j]) / 2.0 for j in range(5)]
            top = max(scores)
            exp = [math.exp(s - top) for s in scores]
            expected[h, i] = [e / sum(exp) for e in exp]
    np.testing.assert_allclose(w[0].numpy(), expected, atol=1e-6)


def test_extractor_errors():
    with pytest.raises(TypeError, match=r"model: expected a torch\.nn\.Module, got str"):
        AttentionExtractor("bert-base-uncased")
    lin = nn.Linear(3, 3)
    extractor = AttentionExtractor(lin)
    with pytest.raises(RuntimeError, match=r"no hooks are registered; call register_hooks\(\) first"):
        extractor.get_attention(torch.zeros(1, 3))
    with pytest.raises(NoAttentionFoundError, match="layer_names: auto-detection found no attention module"):
        extractor.register_hooks()
    with pytest.raises(ValueError, match="layer_names: no submodule named 'attn'"):  # the handout's word
        extractor.register_hooks(["attn"])
    with pytest.raises(TypeError, match="layer_names: expected a list of module names or None, got the str"):
        extractor.register_hooks("encoder")
    seq = nn.Sequential()
    seq.add_module("attn", nn.Linear(3, 3))  # named like attention, returns no weights
    with AttentionExtractor(seq) as ex, pytest.raises(NoAttentionFoundError, match=r"\['attn'\] ran without"):
        ex.get_attention(torch.zeros(1, 3))
    with AttentionExtractor(seq) as ex, pytest.raises(TypeError, match="input_ids: expected a torch tensor"):
        ex.get_attention([[1, 2, 3]])


# --------------------------------------------------------------------------- extract_huggingface_attention
def test_extract_huggingface_attention_as_the_handout_calls_it(minilm):
    model, tokenizer = minilm
    inputs, reference = transformers_attentions(model, tokenizer, TEXT)
    attention, tokens = extract_huggingface_attention(model_name="minilm", text=TEXT, layer_idx=-1,
                                                      head_idx=None)  # the handout's keywords
    assert isinstance(attention, torch.Tensor)
    assert attention.shape == (12, 11, 11)  # [num_heads, seq_len, seq_len]
    torch.testing.assert_close(attention, reference[-1][0])
    assert tokens == tokenizer.convert_ids_to_tokens(inputs["input_ids"][0])
    assert tokens[0] == "[CLS]"
    assert tokens[-1] == "[SEP]"

    one, _ = extract_huggingface_attention(model, TEXT, layer_idx=2, head_idx=5)
    assert one.shape == (11, 11)
    torch.testing.assert_close(one, reference[2][0, 5])
    last, _ = extract_huggingface_attention(model, TEXT, -1, -1)
    torch.testing.assert_close(last, reference[5][0, 11])


def test_extract_huggingface_attention_from_a_local_folder_and_the_tiny_model(minilm):
    from attnwidget.models import load_tiny_lm, minilm_path

    model, tokenizer = minilm
    _, reference = transformers_attentions(model, tokenizer, "hello world")
    from_folder, _ = extract_huggingface_attention(str(minilm_path()), "hello world", layer_idx=0)
    torch.testing.assert_close(from_folder, reference[0][0])

    attention, tokens = extract_huggingface_attention("tiny", "abcabc")
    assert attention.shape == (4, 6, 6)
    assert tokens == list("abcabc")
    lm, chars = load_tiny_lm()
    with AttentionExtractor(lm) as extractor:
        expected = extractor.get_attention(torch.tensor([chars.encode("abcabc")]))[-1][0]
    torch.testing.assert_close(attention, expected)
    assert float(attention.triu(1).abs().max()) == 0.0  # a causal model


def test_extract_huggingface_attention_refuses_hub_names_and_bad_arguments(minilm, tmp_path):
    offline = r"model_name: 'bert-base-uncased' .* works offline and never downloads"
    with pytest.raises(ValueError, match=offline) as err:
        extract_huggingface_attention("bert-base-uncased", TEXT)
    assert "'minilm'" in str(err.value)
    assert "'tiny'" in str(err.value)
    assert "local folder" in str(err.value)
    with pytest.raises(ValueError, match=r"model_name: the folder .* has no config\.json"):
        extract_huggingface_attention(str(tmp_path), TEXT)
    with pytest.raises(TypeError, match="model_name: expected a loaded model"):
        extract_huggingface_attention(3, TEXT)
    model, _ = minilm
    with pytest.raises(IndexError,
                       match=r"layer_idx: expected -6\.\.5 \(negative counts from the end\), got 6"):
        extract_huggingface_attention(model, TEXT, layer_idx=6)
    with pytest.raises(IndexError, match=r"head_idx: expected -12\.\.11"):
        extract_huggingface_attention(model, TEXT, head_idx=12)
    with pytest.raises(TypeError, match="text: expected a str, got list"):
        extract_huggingface_attention(model, ["a"])


# --------------------------------------------------------------------------- plot_attention_heatmap
def figure_data(fig):
    return next(r.data_source for r in fig.renderers if isinstance(r.data_source, ColumnDataSource)).data


def test_plot_attention_heatmap_with_the_handouts_arguments(tmp_path, capsys):
    tokens = TEXT.split()
    attention = create_synthetic_attention(len(tokens), pattern="local")
    fig = plot_attention_heatmap(attention, tokens, y_tokens=None, title="Attention Weights", figsize=(10, 8),
                                 cmap="viridis", show_values=False, save_path=tmp_path / "heat.html")
    assert capsys.readouterr().out == f"Figure saved to: {tmp_path / 'heat.html'}\n"  # as the handout prints
    assert fig.title.text == "Attention Weights"
    assert (fig.width, fig.height) == (640, 512)
    assert fig.xaxis[0].axis_label == "Key Tokens (attended to)"
    assert fig.yaxis[0].axis_label == "Query Tokens (attending from)"
    data = figure_data(fig)
    np.testing.assert_allclose(np.asarray(data["weight"]).reshape(9, 9), attention.numpy(), rtol=1e-6)
    assert list(data["query"][::9]) == tokens
    assert list(data["key"][:9]) == tokens
    assert (tmp_path / "heat.html").stat().st_size > 10_000

    small = np.array([[0.25, 0.75], [0.5, 0.5]])
    rect = plot_attention_heatmap(small, ["k1", "k2"], ["q1", "q2"], cmap="plasma", show_values=True)
    assert list(figure_data(rect)["text"]) == ["0.25", "0.75", "0.50", "0.50"]
    assert list(figure_data(rect)["query"]) == ["q1", "q1", "q2", "q2"]


@pytest.mark.parametrize(("cmap", "low_is_light"), [("Blues", True), ("Blues_r", False), ("Greys", True),
                                                   ("viridis", False), ("Reds", True), ("VIRIDIS_R", True)])
def test_plot_attention_heatmap_takes_matplotlib_colormap_names(cmap, low_is_light):
    from attnwidget._codec import LEVELS

    fig = plot_attention_heatmap(np.eye(3), ["a", "b", "c"], cmap=cmap)
    # the image's colour per uint8 level (select() would also find the colour bar's mapper)
    levels = next(r.glyph.color_mapper for r in fig.renderers if type(r.glyph).__name__ == "Image").palette
    lightness = [sum(int(c[i:i + 2], 16) for i in (1, 3, 5)) for c in (levels[0], levels[LEVELS])]
    assert (lightness[0] > lightness[1]) == low_is_light  # matplotlib's sequential maps start light


def test_plot_attention_heatmap_saves_png(tmp_path):
    from PIL import Image

    pytest.importorskip("selenium")
    plot_attention_heatmap(np.eye(3), ["a", "b", "c"], save_path=tmp_path / "heat.png")
    image = Image.open(tmp_path / "heat.png")
    assert image.size[0] > 600  # 640 CSS pixels (10 inches) at the export's scale 2


def test_plot_attention_heatmap_errors():
    three_d = r"attention: expected 2 dimensions \[query_len, key_len\], got shape \(2, 3, 3\)"
    with pytest.raises(ValueError, match=three_d):
        plot_attention_heatmap(np.ones((2, 3, 3)) / 3, ["a", "b", "c"])
    with pytest.raises(ValueError, match=r"x_tokens: expected 3 tokens, one per key \(column\), got 2"):
        plot_attention_heatmap(np.eye(3), ["a", "b"])
    with pytest.raises(ValueError, match=r"y_tokens: expected 2 tokens, one per query \(row\), got 3"):
        plot_attention_heatmap(np.ones((2, 3)) / 3, ["a", "b", "c"])
    with pytest.raises(ValueError, match=r"cmap: expected a colormap name, one of \('viridis'.*got 'jet'"):
        plot_attention_heatmap(np.eye(3), ["a", "b", "c"], cmap="jet")
    with pytest.raises(ValueError, match="show_values: values fit in the cells of at most 400 cells, got 21"):
        plot_attention_heatmap(np.eye(21), [str(i) for i in range(21)], show_values=True)
    with pytest.raises(ValueError, match=r"figsize: expected \(width, height\) in inches"):
        plot_attention_heatmap(np.eye(3), ["a", "b", "c"], figsize=(10,))


# --------------------------------------------------------------------------- statistics and patterns
@pytest.mark.parametrize("pattern", ["diagonal", "local", "broadcast", "bos", "uniform", "block"])
def test_statistics_and_pattern_equal_the_handouts_published_code(pattern):
    attention = create_synthetic_attention(12, pattern=pattern, noise_level=0.05, seed=3)
    stats = compute_attention_statistics(attention)
    reference = lab_statistics(attention.numpy().astype(np.float64))
    assert set(stats) == set(reference)
    for key, value in reference.items():
        # the handout adds 1e-10 inside the log: its entropies are larger by at most ~1e-8
        assert stats[key] == pytest.approx(value, rel=1e-5, abs=1e-6), key
    assert identify_attention_pattern(attention) == lab_pattern(attention.numpy())


def test_synthetic_patterns_have_the_handouts_values():
    attention = create_synthetic_attention(5, pattern="local")
    assert isinstance(attention, torch.Tensor)
    assert attention.shape == (5, 5)
    row0 = np.array([0.4, 0.25, 0.1, 0.01, 0.01])  # the handout's weights by distance, normalised
    np.testing.assert_allclose(attention[0].numpy(), row0 / row0.sum(), rtol=1e-6)
    for pattern in ("diagonal", "local", "broadcast", "bos", "uniform", "block"):
        a = create_synthetic_attention(7, pattern=pattern)
        np.testing.assert_allclose(a.sum(1).numpy(), 1, rtol=1e-6)
    assert int(create_synthetic_attention(9, "broadcast", 0.0).sum(0).argmax()) == 3  # seq_len // 3
    with pytest.raises(ValueError, match="pattern: expected one of"):
        create_synthetic_attention(5, pattern="stripes")


def test_the_complete_example_detects_what_it_created(capsys):
    result = example_attention_fundamentals()
    assert result["detected"] == {"diagonal": "diagonal", "local": "local", "broadcast": "broadcast",
                                  "bos": "beginning_of_sequence"}
    out = capsys.readouterr().out
    assert "Created: diagonal     -> Detected: diagonal" in out
    panels = [child[0] for child in result["figure"].children]
    assert panels[0].title.text.startswith("Diagonal Pattern · Entropy: ")
    stats = result["statistics"]["local"]
    assert panels[1].title.text == (f"Local Pattern · Entropy: {stats['normalized_entropy']:.2f}, "
                                    f"Diag: {stats['diagonal_mean']:.2f}")
