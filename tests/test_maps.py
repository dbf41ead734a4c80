import numpy as np
import pytest
import torch

from attnwidget import ROW_SUM_ATOL, AttentionMaps
from attnwidget.maps import CAPTION_TEXT_CHARS, average_label


def softmax_stack(rng, L=2, H=3, Q=5, K=5, causal=False):
    scores = rng.normal(size=(L, H, Q, K))
    if causal:
        scores = np.where(np.triu(np.ones((Q, K), bool), 1), -np.inf, scores)
    e = np.exp(scores - scores.max(-1, keepdims=True))
    return (e / e.sum(-1, keepdims=True)).astype(np.float32)


def test_record_holds_float32_stack_tokens_and_provenance():
    rng = np.random.default_rng(0)
    w = softmax_stack(rng).astype(np.float64)
    maps = AttentionMaps(w, ["a", "Ġb", "c", "d", "e"], model_name="m", text="a b")
    assert maps.weights.dtype == torch.float32
    assert maps.shape == (2, 3, 5, 5)
    assert maps.key_tokens == maps.query_tokens
    assert maps.query_display[1] == "b"
    assert maps.layer_names == ("layer 0", "layer 1")
    assert maps.head_names == ("head 0", "head 1", "head 2")
    assert not maps.causal
    assert not maps.empty_rows.any()
    np.testing.assert_allclose(maps.to_numpy(), w, rtol=1e-6)


def test_causal_is_inferred_from_the_upper_triangle():
    rng = np.random.default_rng(1)
    assert AttentionMaps(softmax_stack(rng, causal=True), list("abcde")).causal
    assert not AttentionMaps(softmax_stack(rng), list("abcde")).causal
    assert AttentionMaps(softmax_stack(rng), list("abcde"), causal=True).causal


@pytest.mark.parametrize(
    ("weights", "match"),
    [
        (np.ones((2, 2, 2)) / 2, r"weights: expected a 4-D array .* got 3-D"),
        (np.full((1, 1, 2, 2), -0.5), "weights: negative value"),
        (np.full((1, 1, 2, 2), 0.3), r"rows must sum to 1 \(within 0.005\)"),
        (np.array([[[[0.5, np.nan], [0.5, 0.5]]]]), "non-finite values .* layer 0, head 0, query 0"),
        (np.array([[[[0.5, 0.5], [np.inf, 0.0]]]]), "non-finite values .* query 1"),
        (np.zeros((1, 0, 2, 2)), "every axis needs at least one entry"),
    ],
)
def test_bad_weights_name_the_argument(weights, match):
    with pytest.raises(ValueError, match=match):
        AttentionMaps(weights, ["a", "b"])


def test_token_count_and_type_errors():
    w = np.full((1, 1, 2, 3), 1 / 3)
    with pytest.raises(ValueError, match=r"query_tokens: expected 2 tokens .* got 3"):
        AttentionMaps(w, ["a", "b", "c"], ["x", "y", "z"])
    with pytest.raises(ValueError, match=r"key_tokens: expected 3 tokens"):
        AttentionMaps(w, ["a", "b"])
    with pytest.raises(TypeError, match=r"query_tokens: expected a sequence of token strings"):
        AttentionMaps(w, "ab", ["x", "y", "z"])
    with pytest.raises(TypeError, match=r"weights\[0\]: expected a torch.Tensor or numpy.ndarray"):
        AttentionMaps([[[[1.0]]]], ["a"])
    with pytest.raises(TypeError, match=r"weights: expected a torch.Tensor or numpy.ndarray"):
        AttentionMaps("weights", ["a"])


def test_fully_masked_rows_become_zeros_and_are_flagged():
    w = np.array([[[[1.0, 0.0], [np.nan, np.nan]], [[0.5, 0.5], [0.0, 0.0]]]], dtype=np.float32)
    maps = AttentionMaps(w, ["a", "b"])
    assert torch.isfinite(maps.weights).all()
    assert maps.empty_rows.tolist() == [[[False, True], [False, True]]]
    assert maps.weights[0, 0, 1].tolist() == [0.0, 0.0]


def test_half_precision_rows_are_within_tolerance():
    rng = np.random.default_rng(2)
    w = torch.from_numpy(softmax_stack(rng, Q=64, K=64)).to(torch.bfloat16)
    sums = w.float().sum(-1)
    assert (sums - 1).abs().max() > 1e-4  # really off in bf16 ...
    assert (sums - 1).abs().max() <= ROW_SUM_ATOL  # ... but within the documented tolerance
    AttentionMaps(w, [str(i) for i in range(64)])


def test_slicing_helpers():
    rng = np.random.default_rng(3)
    w = softmax_stack(rng, L=3, H=4)
    maps = AttentionMaps(w, list("abcde"), layer_names=["x", "y", "z"])
    np.testing.assert_array_equal(maps.layer(1), w[1])
    np.testing.assert_array_equal(maps.head(2, 3), w[2, 3])
    sub = maps.select(layers=[2, 0], heads=1)
    assert sub.shape == (2, 1, 5, 5)
    assert sub.layer_names == ("z", "x")
    np.testing.assert_array_equal(sub.to_numpy()[0, 0], w[2, 1])
    with pytest.raises(IndexError, match=r"layer: expected 0..2 \(or -3..-1 from the end\), got 3"):
        maps.head(3, 0)
    with pytest.raises(IndexError, match=r"head: expected 0..3 \(or -4..-1 from the end\), got -5"):
        maps.head(0, -5)
    # negative indices count from the end, as in Python and in handout 001's layer_idx=-1
    np.testing.assert_array_equal(maps.head(-1, -1), w[2, 3])
    np.testing.assert_array_equal(maps.layer(-1), w[-1])
    assert maps.select(layers=-1, heads=[-2]).layer_names == ("z",)
    np.testing.assert_array_equal(maps.select(layers=-1, heads=[-2]).to_numpy()[0, 0], w[2, 2])
    assert maps.head_mean(heads=[-1, 0]).averaged_heads == (3, 0)


def test_head_mean_is_marked_as_an_average():
    rng = np.random.default_rng(4)
    w = softmax_stack(rng, L=2, H=4)
    avg = AttentionMaps(w, list("abcde")).head_mean()
    assert avg.is_average
    assert avg.averaged_heads == (0, 1, 2, 3)
    assert avg.head_names == ("mean of 4 heads",)
    assert "average of heads" in repr(avg)
    np.testing.assert_allclose(avg.to_numpy()[:, 0], w.mean(1), rtol=1e-6)


def test_one_provenance_line_calls_an_average_an_average():
    assert average_label(12) == "head average (mean of 12 heads, not a head)"
    w = softmax_stack(np.random.default_rng(5), L=2, H=4)
    w[..., 4] = 0.0  # the last key is padding: no weight on it
    w /= w.sum(-1, keepdims=True)
    maps = AttentionMaps(w, list("abcde"), model_name="toy", text="y" * 200, key_padding=[0, 0, 0, 0, 1])
    cut = "y" * (CAPTION_TEXT_CHARS - 1) + "…"  # the ellipsis counts: the text part is 80 characters
    assert maps.provenance(1, 2) == f"toy · layer 1 · head 2 · no causal mask, 1 padded key · “{cut}”"
    line = f"toy · layer 1 · {average_label(4)} · no causal mask, 1 padded key · “{cut}”"
    assert maps.provenance(1) == line
    assert maps.head_mean().provenance(1, 0) == line  # a head-average record is titled alike
    assert maps.head_mean(heads=[0, 2]).provenance(1, 0).startswith(f"toy · layer 1 · {average_label(2)} · ")
    assert maps.provenance(0, rollout=True).startswith("toy · layer 0 · attention rollout to here ")
    # with a known source the same length cuts the excerpt (whitespace runs read as one space)
    sourced = maps.with_source({"kind": "text", "name": "notes"}, text="z " * 100)
    excerpt = sourced.provenance(0, 1).split("'")[1]
    assert excerpt == ("z " * 40)[: CAPTION_TEXT_CHARS - 1].rstrip() + "…"
    assert sourced.provenance(0, 1).endswith(" (5 tokens) · no causal mask, 1 padded key")


@pytest.mark.parametrize("shape", [(5, 5), (3, 5, 5), (2, 3, 5, 5)])
def test_from_tensor_accepts_lower_ranks(shape):
    rng = np.random.default_rng(5)
    w = softmax_stack(rng, L=2, H=3).reshape(-1, 5, 5)[: int(np.prod(shape[:-2]))].reshape(shape)
    maps = AttentionMaps.from_tensor(torch.from_numpy(w))
    assert maps.shape[-2:] == (5, 5)
    assert maps.query_tokens == ("0", "1", "2", "3", "4")


def test_cross_attention_shapes_need_both_token_lists():
    w = np.full((1, 2, 3, 4), 0.25)
    maps = AttentionMaps.from_tensor(w)
    assert maps.key_tokens == ("0", "1", "2", "3")
    assert not maps.causal


def test_per_layer_input_is_kept_without_copy_and_stacked_once():
    rng = np.random.default_rng(6)
    layers = [torch.from_numpy(w) for w in softmax_stack(rng, L=3)]
    maps = AttentionMaps(layers, list("abcde"))
    assert maps.shape == (3, 3, 5, 5)
    assert maps.head(1, 2).ctypes.data == layers[1][2].data_ptr()  # a view, no copy
    stacked = maps.weights
    assert maps.weights is stacked  # built once
    assert maps.head(1, 2).ctypes.data == stacked[1, 2].data_ptr()  # layers now view the stack
    torch.testing.assert_close(stacked, torch.stack(layers))
    with pytest.raises(ValueError, match=r"weights\[1\]: expected \[heads, queries, keys\]"):
        AttentionMaps([layers[0], layers[1][:, :4, :4]], list("abcde"))


@pytest.mark.parametrize(("row", "col"), [(5, 150), (70, 71), (199, 198)])
def test_causal_scan_finds_any_weight_above_the_diagonal(row, col):
    rng = np.random.default_rng(7)
    w = softmax_stack(rng, L=1, H=2, Q=200, K=200, causal=True)
    assert AttentionMaps._looks_causal([torch.from_numpy(w[0])])
    w[0, 1, row, col] = 1e-3 if col > row else w[0, 1, row, col]
    expected = col < row
    assert AttentionMaps._looks_causal([torch.from_numpy(w[0])]) is expected


def test_unknown_token_scheme_is_refused_at_construction():
    with pytest.raises(ValueError, match="token_scheme: expected one of"):
        AttentionMaps(torch.ones(1, 1, 1, 1), ["a"], token_scheme="morse")


def test_a_record_sharing_another_records_layers_holds_their_very_tensors():
    a = AttentionMaps(torch.softmax(torch.randn(3, 2, 4, 4), -1), list("abcd"))
    b = AttentionMaps(torch.softmax(torch.randn(3, 2, 4, 4), -1), list("abcd"))
    mixed = b._sharing_layers(a, range(2))
    assert [mixed.shares_layer(a, i) for i in range(3)] == [True, True, False]
    assert mixed.shares_layer(b, 2)
    assert not b.shares_layer(a, 0)
    torch.testing.assert_close(mixed.weights, torch.cat([a.weights[:2], b.weights[2:]]), rtol=0, atol=0)
    assert b.weights.shape == (3, 2, 4, 4)  # b itself unchanged
    with pytest.raises(ValueError, match=r"other: expected a record of shape \(3, 2, 4, 4\)"):
        b._sharing_layers(AttentionMaps(torch.softmax(torch.randn(3, 2, 5, 5), -1), list("abcde")), range(1))
