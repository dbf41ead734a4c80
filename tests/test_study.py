"""002's diagnostic summary and 004's long-context study, checked against plain numpy."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest

from attnwidget import AttentionMaps
from attnwidget.study import diagnostic_summary, sample_measures, study_samples


def test_diagnostic_summary_numbers_and_text():
    # head 0 one-hot on the previous token, head 1 uniform: their average is neither
    Q = 8
    sharp = np.eye(Q, k=-1)
    sharp[0, 0] = 1
    flat = np.full((Q, Q), 1 / Q)
    maps = AttentionMaps(np.stack([sharp, flat])[None], list("abcdefgh"), text="abcdefgh", model_name="m")
    s = diagnostic_summary(maps, layer=-1)
    onehot = math.sqrt(Q - 1) / Q  # std of a one-hot row: the largest possible row_std
    np.testing.assert_allclose(s.row_std, [onehot, 0.0], atol=1e-7)
    assert s.grades == ("SHARP", "UNIFORM")
    avg = (sharp + flat) / 2
    assert s.average_row_std == pytest.approx(np.std(avg, axis=1).mean(), rel=1e-6)
    rel = np.std(avg, axis=1).mean() / onehot
    assert s.average_relative == pytest.approx(rel, rel=1e-6)
    assert rel < s.relative[0]  # the average is less sharp than the sharp head
    assert s.average_grade == ("SHARP" if rel >= 0.5 else "MEDIUM" if rel >= 0.1 else "UNIFORM")
    assert s.kl.shape == (2, 2)
    text = str(s)
    assert "Length: 8 tokens" in text
    assert "AVERAGED (not a head)" in text
    assert "[✓ SHARP]" in text
    assert "[✗ UNIFORM]" in text
    assert "text sequence: 'abcdefgh' (8 tokens)" in text
    assert s.max_row_std == pytest.approx(onehot)
    assert s.keys_seen == (8, 8)
    assert f"(row_std of a one-hot row over 8 keys: {onehot:.4f}, the largest possible)" in text
    json.dumps(s.to_dict(), allow_nan=False)


def test_the_summary_bound_of_a_causal_layer_counts_the_keys_each_row_sees():
    # one-hot on the previous token: row i sees i + 1 keys, whose one-hot std is sqrt(i) / (i + 1)
    Q = 20
    sharp = np.eye(Q, k=-1)
    sharp[0, 0] = 1
    maps = AttentionMaps(sharp[None, None], [str(i) for i in range(Q)], causal=True)
    s = diagnostic_summary(maps)
    by_hand = np.mean([math.sqrt(n - 1) / n for n in range(1, Q + 1)])  # 0.2978: above a full row's
    assert s.row_std[0] == pytest.approx(by_hand, rel=1e-6)  # the head reaches it: one-hot rows
    assert s.max_row_std == pytest.approx(by_hand, rel=1e-12)
    assert s.keys_seen == (1, Q)
    assert s.row_std[0] > math.sqrt(Q - 1) / Q  # what the footnote used to call the largest
    assert f"largest possible row_std here: {by_hand:.4f}, every row one-hot over the 1 to 20 keys" in str(s)


def _plain_context(w):
    """004 by hand: the last query's weights on the keys before it, renormalised."""
    row = w[-1, :-1].astype(float)
    return row / row.sum()


def test_study_measures_equal_a_plain_computation():
    rng = np.random.default_rng(3)
    samples = []
    for _ in range(3):
        w = rng.random((2, 3, 20, 20)) ** 3
        w = np.tril(w)
        w /= w.sum(-1, keepdims=True)
        samples.append(AttentionMaps(w, [str(i) for i in range(20)], causal=True))
    study = study_samples(samples, layer=-1)
    assert study.layer == 1
    for s, maps in enumerate(samples):
        got = sample_measures(maps)
        for layer in range(2):
            for h in range(3):
                ctx = _plain_context(maps.to_numpy()[layer, h])
                n = ctx.size  # 19 context tokens, as in 004's example of 20
                assert n == 19
                assert got["mean_context_attention"][layer, h] == pytest.approx(1 / 19)
                assert got["attention_std"][layer, h] == pytest.approx(ctx.std(), rel=1e-5)
                ent = -(ctx[ctx > 0] * np.log(ctx[ctx > 0])).sum()
                assert got["attention_entropy"][layer, h] == pytest.approx(ent, rel=1e-5)
                span = math.ceil(n * 0.25)
                ratio = ctx[-span:].mean() / ctx[:span].mean()
                assert got["recent_distant_ratio"][layer, h] == pytest.approx(ratio, rel=1e-5)
                assert got["max_attention_position"][layer, h] == int(np.argmax(ctx))
                assert study.per_sample["attention_std"][s, layer, h] == got["attention_std"][layer, h]
    # the last query's context weight per relative-position bin, under its own name (19 context
    # keys on 20 bins: key i in bin floor(20 i / 19))
    ctx = np.stack([[[_plain_context(m.to_numpy()[layer, h]) for h in range(3)] for layer in range(2)]
                    for m in samples])  # [S, L, H, 19]
    edges = np.minimum(np.arange(19) * 20 // 19, 19)
    binned = np.stack([ctx[..., edges == b].sum(-1) for b in range(20)], -1)
    assert "received" not in study.history
    np.testing.assert_allclose(study.history["context_bins"]["mean"], binned.mean(0), rtol=1e-6)
    text = str(study)
    assert "Sample 3:" in text
    assert "Context tokens: 19" in text
    assert "Across 3 samples (layer 1)" in text
    stems = [stem for stem, _, _ in study.figures()]
    assert stems == ["history_layer1", "mean_context_attention_layer1", "attention_std_layer1",
                     "attention_entropy_layer1", "recent_distant_ratio_layer1"]


def test_a_recency_biased_model_gets_the_insight_and_clusters_get_k():
    Q = 24
    recent = np.tril(np.ones((Q, Q)))
    recent[:, :] *= np.exp(np.arange(Q) * 0.4)[None, :]  # later keys weigh more
    recent = np.tril(recent)
    recent /= recent.sum(-1, keepdims=True)
    study = study_samples([AttentionMaps(recent[None, None], [str(i) for i in range(Q)], causal=True)])
    lines = study.insights
    assert any(line.startswith("INSIGHT: Strong recency bias detected!") for line in lines)
    assert "layer 0 head 0" in lines[0]
    # a second layer that spreads evenly: the insight belongs to layer 0 only, as the numbers do
    flat = np.tril(np.ones((Q, Q)))
    flat /= flat.sum(-1, keepdims=True)
    two = AttentionMaps(np.stack([recent, flat])[:, None], [str(i) for i in range(Q)], causal=True)
    assert "layer 0 head 0" in study_samples([two], layer=0).insights[0]
    upper = study_samples([two], layer=1).insights
    assert upper  # layer 1's own: its entropy
    assert all(" at layer 1 head 0: " in line and "recency" not in line for line in upper)
    every = study_samples([two], layer=None).insights  # no layer chosen: every layer's
    assert any(line.startswith("INSIGHT: Strong recency") and "layer 0 head 0" in line for line in every)
    assert any(line.startswith("INSIGHT: High attention entropy") and "layer 1 head 0" in line
               for line in every)


@pytest.mark.slow
def test_report_on_validation_windows_with_the_study(tmp_path):
    data = tmp_path / "corpus.txt"
    data.write_text("abcabcabcXYZ-" * 60)  # characters the tiny LM's tokenizer has
    out = tmp_path / "r"
    res = subprocess.run(
        [sys.executable, "-m", "attnwidget", "report", "--mode", "validation", "--dataset", str(data),
         "--seq-len", "32", "--index", "1", "--num-samples", "4", "--layer", "1", "--model", "tiny",
         "--no-png", "--out", str(out)],
        capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    assert "ATTENTION DIAGNOSTIC SUMMARY" in res.stdout
    assert "Length: 32 tokens" in res.stdout
    # 002's [SEQUENCE] block first: what the sequence is, its text and its tokens
    block = res.stdout.split("[SEQUENCE] ")[1].split("ATTENTION DIAGNOSTIC SUMMARY")[0]
    assert block.startswith("corpus.txt validation sequence (window 1)")
    assert "  Decoded text: " in block
    assert "abc" in block
    assert "  Tokens: " in block
    assert block.rstrip().rstrip("=").rstrip().endswith("...")
    study = json.loads((out / "study" / "study.json").read_text())
    assert study["n_samples"] == 4
    assert study["layer"] == 1
    assert all("validation sequence" in c or "corpus.txt" in c for c in study["samples"])
    assert (out / "study" / "history_layer1.html").exists()
    assert (out / "diagnostic.txt").read_text().startswith("=" * 80)
    numbers = json.loads((out / "metrics.json").read_text())
    assert numbers["shape"] == [2, 4, 32, 32]
    assert numbers["diagnostic"]["layer"] == 1
    page = (out / "index.html").read_text()
    assert "Diagnostic summary" in page
    assert "Long-context study (4 sequences)" in page
    bad = subprocess.run(
        [sys.executable, "-m", "attnwidget", "report", "--mode", "validation", "--dataset", str(data),
         "--seq-len", "32", "--index", "1000", "--model", "tiny", "--no-png", "--out", str(tmp_path / "x")],
        capture_output=True, text=True, timeout=600)
    assert bad.returncode == 2
    assert bad.stderr.strip().startswith("error: index: ")


def test_context_measures_names_its_profile_and_offers_no_normalize():
    from attnwidget.study import context_measures

    with pytest.raises(ValueError, match=r"profile: rows must sum to 1") as err:
        context_measures(np.full((2, 1, 4), 0.15))
    assert "normalize" not in str(err.value)
    with pytest.raises(ValueError, match=r"profile: expected at least 2 dimensions"):
        context_measures(np.array([0.5, 0.5]))
    # an empty context (all weight on the query's own key) is not an error: NaN measures
    got = context_measures(np.array([[[0.0, 0.0, 0.0]], [[0.5, 0.25, 0.25]]]))
    assert np.isnan(got["attention_entropy"][0])
    assert got["max_attention_position"].tolist() == [-1, 0]
