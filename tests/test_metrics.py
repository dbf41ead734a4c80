"""attnwidget.metrics: hand-computed cases, independent implementations, properties."""

import itertools
import json
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from lab_reference import lab_pattern, lab_statistics
from scipy.spatial.distance import jensenshannon
from scipy.stats import entropy as scipy_entropy

from attnwidget import AttentionMaps
from attnwidget import metrics as M  # noqa: N812 (short name used throughout)
from attnwidget.probes import repeated_token_scores
from attnwidget.synthetic import SYNTHETIC_PATTERNS, create_synthetic_attention


def softmax_rows(shape, seed=0, scale=3.0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=shape) * scale
    e = np.exp(x - x.max(-1, keepdims=True))
    return (e / e.sum(-1, keepdims=True)).astype(dtype)


def causal_rows(Q, seed=0):
    w = softmax_rows((Q, Q), seed)
    w = np.tril(w)
    return w / w.sum(-1, keepdims=True)


def plain_gini(values):
    """Sorted-cumsum Gini, float64: G = (n + 1 - 2 sum(cumsum) / total) / n."""
    x = np.sort(np.asarray(values, dtype=np.float64).ravel())
    n = len(x)
    cum = np.cumsum(x)
    return (n + 1 - 2 * cum.sum() / cum[-1]) / n


# --------------------------------------------------------------------------- entropy
def test_entropy_hand_cases():
    w = np.array([[1.0, 0, 0, 0], [0.5, 0.5, 0, 0], [0.25] * 4])
    np.testing.assert_allclose(M.compute_attention_entropy(w), [0.0, math.log(2), math.log(4)], atol=1e-15)
    assert M.compute_attention_entropy(w)[0] == 0.0  # 0 log 0 = 0 exactly, no epsilon bias


def test_entropy_matches_scipy_and_accepts_torch():
    w = softmax_rows((5, 7, 9))
    ours = M.compute_attention_entropy(w)
    ref = np.apply_along_axis(scipy_entropy, -1, w)
    np.testing.assert_allclose(ours, ref, rtol=1e-12)
    np.testing.assert_allclose(M.compute_attention_entropy(torch.from_numpy(w).float()), ref, rtol=1e-5)


def test_normalized_entropy_divides_by_visible_keys_for_causal_maps():
    w = causal_rows(6)
    norm = M.normalized_entropy(w, causal=True)
    assert math.isnan(norm[0])  # one visible key: no choice to spread over
    h = M.compute_attention_entropy(w, causal=True)
    np.testing.assert_allclose(norm[1:], h[1:] / np.log(np.arange(2, 7)))


# --------------------------------------------------------------------------- top-k
def test_top_k_strongest_first_ties_to_lower_position():
    w = np.array([[0.25, 0.25, 0.5], [0.2, 0.4, 0.4]], dtype=np.float32)
    assert M.find_top_k_attended(w, 0, k=3) == [2, 0, 1]
    idx, weights = M.find_top_k_attended(w, -1, k=2, return_weights=True)
    assert idx == [1, 2]
    np.testing.assert_allclose(weights, [0.4, 0.4])
    assert M.find_top_k_attended(w.astype(np.float64), 0, k=3) == [2, 0, 1]


def test_top_k_uniform_rows_and_stack_shape():
    w = np.full((2, 3, 4, 4), 0.25, dtype=np.float32)
    idx = M.find_top_k_attended(w, 1, k=3)
    assert idx.shape == (2, 3, 3)
    assert (idx == [0, 1, 2]).all()
    all_idx, all_w = M.top_k_keys(w, 2)
    assert all_idx.shape == (2, 3, 4, 2)
    assert (all_idx == [0, 1]).all()
    np.testing.assert_allclose(all_w, 0.25)


def test_top_k_matches_stable_argsort_on_random_stack():
    w = softmax_rows((3, 4, 16, 16), seed=3, dtype=np.float32)
    w[0, 0, 5] = np.float32(1 / 16)  # a uniform row: all tied
    idx, _ = M.top_k_keys(w, 5)
    ref = np.argsort(-w, axis=-1, kind="stable")[..., :5]
    np.testing.assert_array_equal(idx, ref)


def test_top_k_never_picks_masked_keys():
    w = causal_rows(5).astype(np.float32)
    idx, weights = M.top_k_keys(w, 3, causal=True)
    assert list(idx[0]) == [0, -1, -1]
    assert list(weights[0]) == [1.0, 0.0, 0.0]
    with pytest.raises(ValueError, match=r"k: expected an int in 1\.\.1"):
        M.find_top_k_attended(w, 0, k=2, causal=True)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"query_idx": 4}, "query_idx: expected an int in -4..3, got 4"),
    ({"query_idx": 0, "k": 0}, "k: expected an int in 1..4, got 0"),
    ({"query_idx": 0, "k": 5}, "k: expected an int in 1..4, got 5"),
])
def test_top_k_range_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        M.find_top_k_attended(np.full((4, 4), 0.25), **kwargs)


# --------------------------------------------------------------------------- sparsity, gini
def test_sparsity_hand_case_strictly_below():
    w = np.array([[0.1, 0.2, 0.7], [0.05, 0.05, 0.9]])
    assert M.compute_attention_sparsity(w, 0.1) == pytest.approx(2 / 6)  # 0.1 itself is not below
    assert M.compute_attention_sparsity(w, 0.0) == 0.0
    assert M.compute_attention_sparsity(w, 1.0) == 1.0


def test_sparsity_counts_only_visible_keys():
    w = causal_rows(4)
    visible = w[np.tril(np.ones((4, 4), bool))]
    assert M.compute_attention_sparsity(w, 0.2, causal=True) == pytest.approx(np.mean(visible < 0.2))


def test_sparsity_threshold_errors():
    with pytest.raises(ValueError, match=r"threshold: expected a number in \[0, 1\], got 1.5"):
        M.compute_attention_sparsity(np.eye(2), 1.5)


def test_gini_hand_cases_and_plain_implementation():
    assert M.gini_coefficient(np.full((4, 4), 0.25)) == pytest.approx(0.0, abs=1e-7)
    onehot = np.eye(4)
    assert M.gini_coefficient(onehot) == pytest.approx(plain_gini(onehot))  # 0.75 = 1 - 4/16
    assert M.gini_coefficient(onehot) == pytest.approx(0.75)
    w = softmax_rows((3, 2, 64, 64), seed=5, dtype=np.float32)
    ours = M.gini_coefficient(w)
    ref = np.array([[plain_gini(m) for m in layer] for layer in w])
    np.testing.assert_allclose(ours, ref, atol=2e-6)


def test_gini_float32_accumulation_at_stack_size():
    w = softmax_rows((2, 512, 512), seed=6, dtype=np.float32)
    np.testing.assert_allclose(M.gini_coefficient(w), [plain_gini(m) for m in w], atol=2e-6)


def test_one_large_map_sorts_in_two_halves_and_merges_exactly():
    from attnwidget.metrics import basic

    rng = np.random.default_rng(7)
    # ties, zeros and a sorted tail: the merge must keep every value
    x = np.concatenate([rng.random(basic.PARALLEL_SORT_CELLS, dtype=np.float32),
                        np.zeros(1000, np.float32), np.full(5000, 0.5, np.float32),
                        np.linspace(0, 1, 7001, dtype=np.float32)])
    for single in (False, True):  # two threads, or one (the widget's prefetches)
        got = x.copy()
        with basic.single_thread_sorts(single):
            basic._sort_large(got)
        np.testing.assert_array_equal(got, np.sort(x))
    # the widget's path: one map over BLOCK_CELLS, sorted in the scratch buffer
    w = softmax_rows((1, 2048, 2048), seed=8, dtype=np.float32)[0]
    assert w.size >= basic.PARALLEL_SORT_CELLS
    assert M.gini_coefficient(w) == pytest.approx(plain_gini(w), abs=2e-6)
    # near uniform, the two terms of G cancel: the ranked sum is accumulated in float64
    # (float32 was off by 5.6e-5 on this Gini of 0.008); what is left is the float32 result
    near_uniform = np.asarray(create_synthetic_attention(2048, "uniform", seed=1), np.float32)
    assert M.gini_coefficient(near_uniform) == pytest.approx(plain_gini(near_uniform), abs=1e-8)


def test_one_maps_sort_is_the_same_array_whichever_exact_sort_runs(monkeypatch):
    # numpy's float32 sort, or torch's radix sort of the bit patterns (taken where it is faster,
    # measured once): for weights >= 0 the same array, with zeros (-0.0 too), ties, subnormals
    from attnwidget.metrics import basic

    trial = basic._radix_is_faster.__wrapped__  # the measurement itself, uncached
    monkeypatch.setattr(basic, "RADIX_MIN_CELLS", 4)  # the test's small maps may take it too
    rng = np.random.default_rng(9)
    x = np.concatenate([rng.random(5000, dtype=np.float32) ** 6, np.zeros(300, np.float32),
                        np.full(7, -0.0, np.float32), np.full(50, 0.25, np.float32),
                        np.full(9, 1e-40, np.float32), np.ones(1, np.float32)])
    x = rng.permutation(x).reshape(1, -1)
    w = softmax_rows((1, 96, 96), seed=10, dtype=np.float32)
    results = []
    for radix in (True, False):
        monkeypatch.setattr(basic, "_radix_is_faster", lambda radix=radix: radix)
        got = basic._sort_one_map(x).numpy()
        np.testing.assert_array_equal(got, np.sort(x, axis=-1))
        if radix:  # its bit pattern is the smallest int32: first, among the zeros
            assert np.signbit(got[0, :7]).all()
        results.append(M.gini_coefficient(w[0]))
    assert results[0] == results[1]  # the same sorted array: the same Gini, bit for bit
    assert results[0] == pytest.approx(plain_gini(w[0]), abs=2e-6)
    monkeypatch.setattr(basic, "_radix_is_faster", lambda: True)
    signed = np.array([[0.5, -0.25, 0.0, 0.125]], np.float32)  # not weights: numpy's sort
    np.testing.assert_array_equal(basic._sort_one_map(signed).numpy(), np.sort(signed, axis=-1))
    assert isinstance(trial(), bool)
    # which maps may take it: one map up to BLOCK_CELLS (its indices are twice the map); a
    # stack's rows, and a map larger than the scratch buffer takes, stay on numpy's sort
    taken = []
    real = basic._sort_one_map
    monkeypatch.setattr(basic, "_sort_one_map", lambda flat: taken.append(flat.shape) or real(flat))
    monkeypatch.setattr(basic, "BLOCK_CELLS", 64)
    monkeypatch.setattr(basic, "SCRATCH_SORT_CELLS", 256)
    for shape in ((8, 8), (2, 8, 8), (32, 32)):
        weights = softmax_rows(shape, seed=11, dtype=np.float32)
        expected = plain_gini(weights) if len(shape) == 2 else [plain_gini(m) for m in weights]
        np.testing.assert_allclose(M.gini_coefficient(weights), expected, atol=2e-6)
    assert taken == [(1, 64)]


def test_gini_of_masked_matrix_uses_visible_entries_only():
    w = causal_rows(6)
    visible = w[np.tril(np.ones((6, 6), bool))]
    assert M.gini_coefficient(w, causal=True) == pytest.approx(plain_gini(visible))


# --------------------------------------------------------------------------- statistics
def test_statistics_keys_and_lab_values():
    w = softmax_rows((12, 12), seed=1)
    ours = M.compute_attention_statistics(w)
    assert tuple(ours) == M.STATISTICS_KEYS
    assert set(ours) == {"mean", "std", "max", "min", "diagonal_mean", "diagonal_std", "mean_entropy",
                         "max_entropy", "normalized_entropy", "sparsity_gini", "effective_tokens"}
    lab = lab_statistics(w)
    for key in ours:
        # the lab's entropy adds 1e-10 inside the log; ours is exact, so allow that bias
        assert ours[key] == pytest.approx(lab[key], rel=1e-6, abs=1e-8), key
        assert isinstance(ours[key], float)


def test_statistics_skip_fully_masked_rows():
    w = softmax_rows((5, 5), seed=2)
    with_empty = np.vstack([w, np.zeros((1, 5))])  # a fully masked query row
    a = M.compute_attention_statistics(w[:, :5])
    b = M.compute_attention_statistics(with_empty)
    for key in ("mean_entropy", "normalized_entropy", "effective_tokens", "mean", "std", "max", "min"):
        assert b[key] == pytest.approx(a[key]), key
    assert not any(math.isnan(v) for v in b.values())


def test_stack_call_equals_loop_of_single_calls():
    w = softmax_rows((2, 3, 10, 10), seed=4)
    stack = M.compute_attention_statistics(w)
    for layer in range(2):
        for h in range(3):
            single = M.compute_attention_statistics(w[layer, h])
            for key, value in single.items():
                assert stack[key][layer, h] == pytest.approx(value, rel=1e-9, abs=1e-12), key


def test_attention_maps_input_brings_its_causal_mask():
    w = torch.from_numpy(causal_rows(5)).float()
    maps = AttentionMaps.from_tensor(w, list("abcde"))
    assert maps.causal
    np.testing.assert_allclose(
        M.normalized_entropy(maps)[0, 0], M.normalized_entropy(w, causal=True), equal_nan=True, rtol=1e-6
    )


# --------------------------------------------------------------------------- patterns
@pytest.mark.parametrize(("pattern", "label"), [
    ("diagonal", "diagonal"), ("local", "local"), ("broadcast", "broadcast"),
    ("bos", "beginning_of_sequence"), ("uniform", "uniform"),
])
def test_synthetic_patterns_are_identified(pattern, label):
    # light noise: at 16 tokens the default 0.05 spreads a broadcast column below the 0.6 rule
    w = create_synthetic_attention(16, pattern, noise_level=0.01, seed=0)
    assert M.identify_attention_pattern(w) == label
    assert lab_pattern(w.numpy()) == label


def test_pattern_labels_match_lab_rules_on_random_and_real_like_maps():
    rng = np.random.default_rng(0)
    mats = [softmax_rows((n, n), seed=s, scale=sc) for s, (n, sc) in
            enumerate((int(rng.integers(4, 30)), float(rng.uniform(0.1, 6))) for _ in range(60))]
    mats += [create_synthetic_attention(n, p, noise_level=nl, seed=i).double().numpy()
             for i, (n, p, nl) in enumerate((8 + i % 20, SYNTHETIC_PATTERNS[i % 6], 0.3 * (i % 4))
                                            for i in range(60))]
    for m in mats:
        assert M.identify_attention_pattern(m) == lab_pattern(m)


def test_pattern_stack_and_scores():
    stack = np.stack([create_synthetic_attention(12, p, seed=1).numpy() for p in ("diagonal", "uniform")])
    assert list(M.identify_attention_pattern(stack)) == ["diagonal", "uniform"]
    scores = M.pattern_scores(stack)
    assert {"diagonal", "beginning_of_sequence", "broadcast", "local", "uniform", "std", "block",
            "previous_token", "off_diagonal"} <= set(scores)
    assert scores["diagonal"].shape == (2,)
    lines = M.explain_pattern(stack[0])
    assert lines[0] == "label: diagonal"
    assert len(lines) == 6


def test_the_spread_uniform_rule_means_the_same_at_every_length():
    n = 512
    # every query splits its weight over 4 keys far from itself: a sharp head, not a uniform one
    far = np.zeros((n, n))
    for q in range(n):
        far[q, [(q + 100 + 37 * j) % n for j in range(4)]] = 0.25
    flat = np.full((n, n), 1 / n)
    assert M.pattern_scores(far)["std"] < 0.1  # 001's rule cannot tell them apart at 512 keys
    assert M.identify_attention_pattern(far) == "uniform"
    assert M.identify_attention_pattern(far, uniform="spread") == "mixed"
    # by hand: a row's std, sqrt(4 * 0.25^2 / n - 1 / n^2), over a one-hot row's, sqrt(n - 1) / n
    relative = math.sqrt(4 * 0.25**2 / n - 1 / n**2) / (math.sqrt(n - 1) / n)
    assert M.pattern_scores(far)["spread"] == pytest.approx(relative, rel=1e-6)
    assert M.identify_attention_pattern(flat, uniform="spread") == "uniform"
    assert M.explain_pattern(far, uniform="spread")[-1].startswith("uniform: relative row spread 0.4")
    # the widget's panel and a whole-stack summary label with the spread rule
    assert M.panel_metrics(far.astype(np.float32), 0.1)["pattern"] == "mixed"
    with pytest.raises(ValueError, match=r"uniform: expected one of \('std', 'spread'\), got 'entropy'"):
        M.identify_attention_pattern(flat, uniform="entropy")


def test_block_and_previous_token_scores():
    block = create_synthetic_attention(20, "block")
    uniform = create_synthetic_attention(20, "uniform", noise_level=0)
    diag = create_synthetic_attention(20, "diagonal", noise_level=0)
    assert M.pattern_scores(block)["block"] > 0.95
    assert M.pattern_scores(uniform)["block"] < 0.01
    assert M.pattern_scores(diag)["block"] < 0.01  # the band is left out: no fake blocks
    prev = np.eye(6, k=-1)
    prev[0, 0] = 1
    assert M.pattern_scores(prev)["previous_token"] == pytest.approx(1.0)
    assert M.previous_token_score(prev) == pytest.approx(1.0)


def test_sharpness_and_grades():
    onehot = np.eye(8)
    uniform = np.full((8, 8), 1 / 8)
    assert M.head_sharpness(onehot, relative=True) == pytest.approx(1.0)
    assert M.head_sharpness(onehot) == pytest.approx(math.sqrt(7) / 8)  # std of [1, 0 x 7]
    assert M.head_sharpness(uniform) == pytest.approx(0.0, abs=1e-6)  # var = E[w^2] - E[w]^2 cancels
    grades = M.sharpness_grade(np.stack([onehot, uniform, create_synthetic_attention(8, "local").double()]))
    assert list(grades) == ["SHARP", "UNIFORM", "MEDIUM"]
    # averaging two sharp heads that look at different keys gives a diffuse map
    a, b = np.eye(8), np.roll(np.eye(8), 3, axis=1)
    assert M.head_sharpness((a + b) / 2, relative=True) < M.head_sharpness(a, relative=True)


def test_induction_and_duplicate_scores_on_an_ideal_head():
    period, n = 5, 10
    ind = np.zeros((n, n))
    dup = np.zeros((n, n))
    for i in range(n):
        ind[i, i - period + 1 if i >= period else 0] = 1
        dup[i, i - period if i >= period else 0] = 1
    assert M.induction_score(ind, period) == pytest.approx(1.0)
    assert M.duplicate_token_score(ind, period) == pytest.approx(0.0)
    assert M.duplicate_token_score(dup, period) == pytest.approx(1.0)


def test_repeated_token_scores_runs_a_real_model(bpe_tokenizer):
    from tiny_models import tiny

    model = tiny("gpt2", len(bpe_tokenizer))
    scores = repeated_token_scores(model, period=6, n_samples=2, seed=1)
    assert set(scores) == {"previous_token", "duplicate_token", "induction"}
    n_layers, n_heads = model.config.n_layer, model.config.n_head
    for v in scores.values():
        assert v.shape == (n_layers, n_heads)
        assert ((v >= 0) & (v <= 1)).all()


# --------------------------------------------------------------------------- compare
def test_kl_and_js_match_scipy_row_by_row():
    w = softmax_rows((3, 6, 7), seed=8)
    w[1, 2] = [0.5, 0.5, 0, 0, 0, 0, 0]  # zeros: KL needs its epsilon, JS does not
    kl = M.kl_divergence_matrix(w)
    js = M.js_distance_matrix(w)
    for a in range(3):
        for b in range(3):
            ref_kl = np.mean([scipy_entropy(w[a, q], w[b, q] + M.compare.KL_EPS) for q in range(6)])
            ref_js = np.mean([jensenshannon(w[a, q], w[b, q], base=2) for q in range(6)])
            assert kl[a, b] == pytest.approx(ref_kl, rel=1e-4, abs=1e-9)
            assert js[a, b] == pytest.approx(ref_js, rel=1e-9, abs=1e-12)
    assert np.allclose(np.diag(js), 0)
    assert np.allclose(js, js.T)


def test_head_similarity_per_layer_and_across_layers():
    w = softmax_rows((2, 3, 5, 5), seed=9)
    assert M.head_similarity(w).shape == (2, 3, 3)
    across = M.head_similarity(w, "kl", across_layers=True)
    assert across.shape == (6, 6)
    np.testing.assert_allclose(across[3:, 3:], M.kl_divergence_matrix(w[1]), rtol=1e-6)
    with pytest.raises(ValueError, match="method: expected 'js' or 'kl'"):
        M.head_similarity(w, "cosine")


# --------------------------------------------------------------------------- rollout, flow
def test_rollout_hand_computed_two_layers():
    a1 = np.array([[0.2, 0.8], [0.6, 0.4]])
    a2 = np.array([[1.0, 0.0], [0.5, 0.5]])
    w = np.stack([np.stack([a1, a1]), np.stack([a2, a2])])  # two identical heads per layer
    eye = np.eye(2)
    m1, m2 = 0.5 * a1 + 0.5 * eye, 0.5 * a2 + 0.5 * eye
    out = M.attention_rollout(w)
    np.testing.assert_allclose(out[0], m1)
    np.testing.assert_allclose(out[1], m2 @ m1)
    np.testing.assert_allclose(M.attention_rollout(w, residual=False)[1], a2 @ a1)


def test_rollout_fusions_and_discard():
    w = softmax_rows((3, 4, 6, 6), seed=10)
    for fusion in ("mean", "max", "min"):
        r = M.attention_rollout(w, head_fusion=fusion, discard_ratio=0.5)
        np.testing.assert_allclose(r.sum(-1), 1, atol=1e-12)
    with pytest.raises(ValueError, match="head_fusion: expected one of"):
        M.attention_rollout(w, head_fusion="median")


def _rollout_loop(w, fusion, discard_ratio, residual):
    """Plain per-row loop of rollout's definition (numpy), independent of the row-block code."""
    L, _, Q, _ = w.shape
    fuse = {"mean": np.mean, "max": np.max, "min": np.min}[fusion]
    out, acc = [], None
    for layer in range(L):
        a = fuse(w[layer], axis=0)
        mix = np.zeros((Q, Q))
        for i in range(Q):
            row = a[i].copy()
            n_drop = int(discard_ratio * Q)
            if n_drop:
                others = [j for j in np.argsort(row, kind="stable") if j != i][:n_drop]
                row[others] = 0
            if residual:
                row = 0.5 * row
                row[i] += 0.5
            mix[i] = row / row.sum() if row.sum() > 0 else np.eye(Q)[i]
        acc = mix if acc is None else mix @ acc
        out.append(acc)
    return np.stack(out)


@pytest.mark.parametrize("block_cells", [7, 2**22])  # 7 cells: one row per block, 13 blocks
def test_rollout_in_row_blocks_equals_the_definition(monkeypatch, block_cells):
    import attnwidget.metrics.flow as flow

    monkeypatch.setattr(flow, "MIXING_BLOCK_CELLS", block_cells)
    rng = np.random.default_rng(31)
    w = rng.random((3, 4, 13, 13)) ** 4  # distinct weights: no ties in the discard order
    w[:, :, 5] = 0  # a fully masked query row in every layer
    w /= np.where(w.sum(-1, keepdims=True) > 0, w.sum(-1, keepdims=True), 1)
    for fusion in ("mean", "max", "min"):
        for discard, residual in ((0.0, True), (0.3, True), (0.0, False)):
            got = M.attention_rollout(w, head_fusion=fusion, discard_ratio=discard, residual=residual)
            # float64 in, float64 through: differences are rounding of a few products per cell
            np.testing.assert_allclose(got, _rollout_loop(w, fusion, discard, residual), atol=1e-12)


def test_flow_hand_solved_graph():
    a1 = np.array([[0.2, 0.8], [0.6, 0.4]])
    a2 = np.array([[0.9, 0.1], [0.3, 0.7]])
    w = np.stack([a1[None], a2[None]])
    flow = M.attention_flow(w, residual=False)
    # two disjoint paths j -> (1, m) -> i, each limited by its weaker edge
    for i in range(2):
        for j in range(2):
            expected = sum(min(a1[m, j], a2[i, m]) for m in range(2))
            assert flow[i, j] == pytest.approx(expected)
    one = M.attention_flow(w[:1], residual=False)
    np.testing.assert_allclose(one, a1)  # one layer: the flow is the edge itself


def test_flow_in_worker_processes_equals_in_process():
    rng = np.random.default_rng(21)
    e = np.exp(rng.normal(size=(3, 2, 7, 7)) * 2)
    w = e / e.sum(-1, keepdims=True)
    here = M.attention_flow(w, workers=1)
    np.testing.assert_allclose(M.attention_flow(w, workers=3), here, rtol=1e-12)
    np.testing.assert_allclose(M.attention_flow(w, outputs=[6, 0], workers=2), here[[6, 0]], rtol=1e-12)
    with pytest.raises(ValueError, match=r"workers: expected an int in 1..1024, got 0"):
        M.attention_flow(w, workers=0)


# --------------------------------------------------------------------------- history
def test_history_hand_case():
    row = np.array([[1.0, 0, 0, 0], [0.5, 0.5, 0, 0], [0.2, 0.3, 0.5, 0], [0.1, 0.1, 0.3, 0.5]])
    assert M.recency_ratio(row, causal=True) == pytest.approx(5.0)
    assert M.max_position(row, causal=True) == 3
    np.testing.assert_allclose(M.last_query_profile(row), row[-1])
    np.testing.assert_allclose(M.attention_received(row), row.mean(0))


def test_history_metrics_aggregate_and_hints():
    a = np.array([[1.0, 0, 0, 0], [0.1, 0.1, 0.3, 0.5]])
    b = np.array([[1.0, 0, 0, 0], [0.2, 0.2, 0.2, 0.4]])
    h = M.history_metrics([a, b], bins=4)
    assert h["n_samples"] == 2
    assert h["recency_ratio"]["mean"] == pytest.approx((5.0 + 2.0) / 2)
    assert h["recency_ratio"]["std"] == pytest.approx(1.5)
    np.testing.assert_allclose(h["received"]["mean"], (a.mean(0) + b.mean(0)) / 2)
    hints = M.compression_hints(h)
    assert [x["hint"] for x in hints] == ["keep_recent_window"]
    assert hints[0]["value"] == pytest.approx(3.5)
    assert hints[0]["threshold"] == 2.0
    wide = np.full((2, 64), 1 / 64)
    assert "sample_uniformly" in [x["hint"] for x in M.compression_hints(M.history_metrics([wide]))]
    spiky = np.zeros((1, 50))
    spiky[0, 7] = 1
    assert "keep_top_k" in [x["hint"] for x in M.compression_hints(M.history_metrics([spiky]))]


# --------------------------------------------------------------------------- heatmap, analyze, panel
def test_heatmap_dict_and_label_errors():
    w = create_synthetic_attention(3, "uniform", seed=0)
    d = M.create_attention_heatmap(w, ["a", "b", "c"], ["x", "y", "z"])
    assert d["shape"] == (3, 3)
    assert d["key_labels"] == ["x", "y", "z"]
    assert d["range"] == (0.0, 1.0)
    assert d["vmin"] == pytest.approx(float(w.min()))
    assert d["vmax"] == pytest.approx(float(w.max()))
    with pytest.raises(ValueError, match="query_labels: expected 3 labels"):
        M.create_attention_heatmap(w, ["a"], None)


def test_analyze_attention_patterns_hand_case():
    w = np.eye(5)
    out = M.analyze_attention_patterns(w)
    assert out == {"max_attention": 1.0, "entropy": 0.0, "diagonal_mass": 1.0, "local_vs_global": 1.0}
    far = np.zeros((5, 5))
    far[:, 4] = 1
    assert M.analyze_attention_patterns(far, window=1)["local_vs_global"] == pytest.approx(2 / 5)


def test_panel_metrics_is_json_and_matches_statistics():
    w = softmax_rows((20, 20), seed=11, dtype=np.float32)
    panel = M.panel_metrics(w, 0.05, query=3, k=4)
    json.dumps(panel)  # plain Python values only
    stats = M.compute_attention_statistics(w)
    for key, value in stats.items():
        assert panel[key] == pytest.approx(value)
    assert panel["query"]["top_k"] == M.find_top_k_attended(w, 3, k=4)
    assert panel["pattern"] == M.identify_attention_pattern(w, uniform="spread")


def test_analyze_stack_agrees_with_single_functions():
    w = softmax_rows((2, 3, 12, 12), seed=12, dtype=np.float32)
    out = M.analyze_stack(w)
    np.testing.assert_allclose(out["heads"]["sparsity_gini"], M.gini_coefficient(w), rtol=1e-6)
    np.testing.assert_allclose(out["heads"]["sparsity"], M.compute_attention_sparsity(w, 0.1))
    np.testing.assert_allclose(out["kl"], M.kl_divergence_matrix(w), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out["rollout"], M.attention_rollout(w), rtol=1e-6)
    np.testing.assert_allclose(out["history"]["recency_ratio"], M.recency_ratio(w), rtol=1e-6)


# --------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(("weights", "match"), [
    (np.array([[np.nan, 1.0]]), "attention_weights: expected finite weights"),
    (np.array([[np.inf, 0.0]]), "attention_weights: expected finite weights"),
    (np.array([[1.5, -0.5]]), "attention_weights: expected probabilities >= 0"),
    (np.array([0.5, 0.5]), "attention_weights: expected at least 2 dimensions"),
    (np.array([[0.5, 0.2]]), "attention_weights: rows must sum to 1"),
    (np.zeros((0, 3)), "attention_weights: every axis needs at least one entry"),
])
def test_bad_input_names_the_argument(weights, match):
    with pytest.raises(ValueError, match=match):
        M.compute_attention_entropy(weights)


def test_the_row_sum_error_offers_normalize_only_where_it_is_an_option():
    with pytest.raises(ValueError, match="pass normalize=True to rescale rows"):
        M.compute_attention_entropy(np.array([[0.5, 0.2]]))
    with pytest.raises(ValueError, match="divide each row by its sum first") as info:
        M.head_similarity(np.full((2, 2, 2), 0.3))  # no normalize argument
    assert "normalize" not in str(info.value)


def test_a_sparsity_is_an_exact_fraction_and_a_one_hot_entropy_is_plus_zero():
    w = np.array([[1, 0, 0, 0, 0]] * 2 + [[0.2] * 5] * 3, dtype=np.float32)
    # 8 of 25 weights below 0.1: a ratio of counts, exactly what 8 / 25 is in Python (not
    # float32's 0.3199999928, which made a student's `== 0.32` fail)
    assert M.compute_attention_sparsity(w, 0.1) == 8 / 25
    for dtype in (np.float32, np.float64):
        h = M.compute_attention_entropy(np.eye(3, dtype=dtype))
        assert not np.signbit(h).any()  # 0.0, never printed as -0.


def test_normalize_true_rescales_rows():
    np.testing.assert_allclose(
        M.compute_attention_entropy(np.array([[2.0, 2.0]]), normalize=True), [math.log(2)]
    )


def test_weight_on_masked_key_is_refused():
    with pytest.raises(ValueError, match="masked key"):
        M.compute_attention_entropy(np.full((3, 3), 1 / 3), causal=True)


def test_synthetic_errors_seed_and_normalisation():
    with pytest.raises(ValueError, match="pattern: expected one of"):
        create_synthetic_attention(5, "spiral")
    with pytest.raises(ValueError, match="seq_len: expected an int >= 1"):
        create_synthetic_attention(0)
    for p in SYNTHETIC_PATTERNS:
        a = create_synthetic_attention(9, p, seed=3)
        torch.testing.assert_close(a.sum(1), torch.ones(9))
        torch.testing.assert_close(a, create_synthetic_attention(9, p, seed=3))
        assert (a >= 0).all()


# --------------------------------------------------------------------------- properties
def _rows(draw, n_lead, Q, K):
    raw = draw(st.lists(st.floats(0, 10, allow_nan=False), min_size=n_lead * Q * K, max_size=n_lead * Q * K))
    x = np.asarray(raw).reshape(n_lead, Q, K) + 1e-3
    return x / x.sum(-1, keepdims=True)


@st.composite
def stacks(draw):
    Q = draw(st.integers(1, 6))
    K = draw(st.integers(1, 6))
    return _rows(draw, draw(st.integers(1, 3)), Q, K)


@settings(max_examples=60, deadline=None)
@given(stacks())
def test_entropy_bounds(w):
    h = M.compute_attention_entropy(w)
    assert (h >= -1e-12).all()
    assert (h <= math.log(w.shape[-1]) + 1e-9).all()


@settings(max_examples=60, deadline=None)
@given(stacks(), st.floats(0, 1), st.floats(0, 1))
def test_sparsity_monotone_in_threshold(w, t1, t2):
    lo, hi = sorted((t1, t2))
    assert (M.compute_attention_sparsity(w, lo) <= M.compute_attention_sparsity(w, hi)).all()


@settings(max_examples=60, deadline=None)
@given(stacks())
def test_gini_in_unit_interval_and_equals_plain(w):
    g = M.gini_coefficient(w)
    assert ((g >= 0) & (g < 1)).all()
    np.testing.assert_allclose(g, [plain_gini(m) for m in w], atol=1e-9)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 3), st.integers(1, 3), st.integers(1, 6), st.data())
def test_rollout_rows_sum_to_one(L, H, Q, data):
    w = _rows(data.draw, L * H, Q, Q).reshape(L, H, Q, Q)
    np.testing.assert_allclose(M.attention_rollout(w).sum(-1), 1, atol=1e-9)


@settings(max_examples=30, deadline=None)
@given(stacks())
def test_stack_equals_loop_property(w):
    stack = M.compute_attention_statistics(w)
    for i, m in enumerate(w):
        for key, value in M.compute_attention_statistics(m).items():
            assert stack[key][i] == pytest.approx(value, rel=1e-9, abs=1e-12)


def test_an_empty_map_says_nothing_is_attended():
    import json

    from attnwidget import AttentionMaps, AttentionView

    # head 0: every row fully masked (all NaN, as naive softmax gives); head 1: a real map
    w = np.full((1, 2, 3, 3), np.nan)
    w[0, 1] = np.eye(3)
    maps = AttentionMaps(w, list("abc"))
    assert maps.empty_rows[0, 0].all()
    assert list(M.identify_attention_pattern(maps)[0]) == ["empty", "diagonal"]
    assert list(M.sharpness_grade(maps)[0]) == ["EMPTY", "SHARP"]
    stats = M.compute_attention_statistics(maps)
    for key, value in stats.items():  # undefined for the empty head, not 0
        assert np.isnan(value[0, 0]), key
        assert not np.isnan(value[0, 1]), key
    assert stats["mean_entropy"][0, 1] == 0.0  # one-hot rows
    assert np.isnan(M.compute_attention_sparsity(maps)[0, 0])
    assert M.pattern_scores(maps)["attended_rows"].tolist() == [[0.0, 1.0]]
    shown = M.panel_metrics(maps.head(0, 0), 0.1, query=1)
    json.dumps(shown, allow_nan=False)  # None, never NaN, for the browser
    assert (shown["pattern"], shown["grade"], shown["mean_entropy"], shown["sparsity"]) == (
        "empty", "EMPTY", None, None)
    assert shown["query"]["masked"] is True
    assert M.head_badges(maps)["grade"].tolist() == [["EMPTY", "SHARP"]]
    view = AttentionView(maps)
    try:
        assert (view.metrics["pattern"], view.metrics["grade"]) == ("empty", "EMPTY")
        view.head = 1
        assert (view.metrics["pattern"], view.metrics["grade"]) == ("diagonal", "SHARP")
    finally:
        view.close()


def _k90_runs_loop(row):
    """Plain loop: fewest keys (heaviest first, lower position on ties) holding 90%, and their runs."""
    order = sorted(range(len(row)), key=lambda j: (-row[j], j))
    total, acc, chosen = sum(row), 0.0, []
    for j in order:
        chosen.append(j)
        acc += row[j]
        if acc >= 0.9 * total - 1e-12:
            break
    chosen = sorted(chosen)
    runs = 1 + sum(1 for a, b in itertools.pairwise(chosen) if b != a + 1)
    return len(chosen), runs


def test_clustered_history_and_the_recommended_k():
    # the last query puts its weight on two separate blocks of 5 keys: clustered, K = 10
    K = 40
    last = np.full(K, 0.002)
    last[5:10] = last[25:30] = 0.0938
    last /= last.sum()
    w = np.tile(last, (K, 1))  # not causal: every row sees every key
    out = M.history_metrics([w])
    assert out["k90"]["mean"] == 10
    assert out["cluster_run"]["mean"] == 5.0  # 10 keys in 2 runs
    hints = {h["hint"]: h for h in M.compression_hints(out)}
    assert hints["group_clusters"]["recommended_k"] == 10
    assert hints["group_clusters"]["value"] == 5.0
    # one block (a recent window) is not a cluster pattern
    window = np.full(K, 0.001)
    window[-6:] = 1
    window /= window.sum()
    single = M.history_metrics([np.tile(window, (K, 1))])
    assert single["cluster_run"]["mean"] == 0.0
    assert "group_clusters" not in {h["hint"] for h in M.compression_hints(single)}
    # random rows against the loop, and a stack [2, 3, Q, K] in one call
    rng = np.random.default_rng(40)
    stack = rng.random((2, 3, 16, 16)) ** 6
    stack /= stack.sum(-1, keepdims=True)
    got = M.history_metrics([stack])
    for i in range(2):
        for j in range(3):
            k, runs = _k90_runs_loop(list(stack[i, j, -1]))
            assert got["k90"]["mean"][i, j] == k
            assert got["cluster_run"]["mean"][i, j] == pytest.approx(k / runs if runs >= 2 else 0.0)


def test_panel_metrics_visible_row_is_a_row_of_visible():
    from attnwidget.metrics import PanelMetrics

    rng = np.random.default_rng(0)
    mask = np.array([True, True, True, True, True, False])  # the last key is padding
    w = np.tril(rng.random((6, 6))).astype(np.float32)
    w[:, ~mask] = 0
    w /= w.sum(-1, keepdims=True)
    pm = PanelMetrics(w, mask=mask, causal=True)
    full = pm.visible()
    for q in range(-6, 6):
        np.testing.assert_array_equal(pm.visible_row(q), full[q])
    assert PanelMetrics(np.full((3, 3), 1 / 3, dtype=np.float32)).visible_row(1) is None  # all cells count
    with pytest.raises(ValueError, match="query"):
        pm.visible_row(6)
