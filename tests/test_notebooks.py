"""Notebooks run top to bottom with the real kernel; we check the values they compute."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

NOTEBOOKS = Path(__file__).parents[1] / "notebooks"


def run_notebook(name: str) -> list[dict]:
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    return nb.cells


def last_json(cells: list[dict]) -> dict:
    for cell in reversed(cells):
        for out in cell.get("outputs", []):
            if out.get("name") == "stdout" and out["text"].lstrip().startswith("{"):
                return json.loads(out["text"])
    raise AssertionError("the notebook printed no JSON summary")


def test_committed_notebooks_carry_no_outputs():
    nbformat = pytest.importorskip("nbformat")
    for path in sorted(NOTEBOOKS.glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        stale = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and c.outputs]
        assert not stale, f"{path.name}: cells {stale} carry outputs; strip them before committing"


def test_quickstart(minilm):
    from attnwidget import extract_attention

    cells = run_notebook("01-quickstart.ipynb")
    summary = last_json(cells)
    model, tok = minilm
    maps = extract_attention(model, "The quick brown fox jumps over the unbelievably lazy dog.", tok)
    w = maps.to_numpy()
    assert summary["shape"] == list(w.shape)
    assert summary["max_row_error"] < 1e-5
    prev = np.stack([w[..., i, i - 1] for i in range(1, w.shape[-1])], -1).mean(-1)
    assert summary["best_previous_token_head"] == list(np.unravel_index(prev.argmax(), prev.shape))
    assert summary["best_previous_token_score"] == pytest.approx(float(prev.max()), abs=1e-6)
    layer, head = summary["best_previous_token_head"]
    assert f"layer {layer} · head {head}" in summary["caption"]
    assert summary["special_share_spread"] > 0.2  # heads really differ, the average hides it
    from attnwidget.metrics import panel_metrics

    # the widget's numbers for the state the notebook left it in
    assert summary["mode"] == "head"
    assert summary["metrics_view"] == {"mode": "head", "layer": layer, "head": head,
                                       "threshold": 0.2, "query": None, "top_k": 5,
                                       "ablated": []}
    expected = panel_metrics(maps.head(layer, head), 0.2)
    assert summary["metrics_sparsity"] == pytest.approx(expected["sparsity"], abs=1e-7)
    assert summary["grade"] == expected["grade"]
    widget_outputs = [o for c in cells for o in c.get("outputs", [])
                      if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
    assert widget_outputs, "the AttentionView cell displayed no widget"


def test_attention_from_scratch():
    import torch
    import torch.nn.functional as F  # noqa: N812

    summary = last_json(run_notebook("02-attention-from-scratch.ipynb"))
    Q = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    K = torch.tensor([[1.0, 0.0], [0.0, 2.0], [0.5, 0.5]])
    V = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    weights = torch.softmax(Q @ K.T / 2**0.5, dim=-1)  # independent of attnwidget
    np.testing.assert_allclose(summary["weights"], weights.numpy(), rtol=1e-6)
    fused = F.scaled_dot_product_attention(Q[None], K[None], V[None])[0]
    np.testing.assert_allclose(summary["output"], fused, rtol=1e-5)
    assert summary["matches_fused"]
    assert summary["sharper_with_2k"]
    entropy = float(-(weights * weights.log()).sum(-1).mean())
    assert summary["view_metrics_entropy"] == pytest.approx(entropy, rel=1e-5)


def test_masks_and_the_reverse_cheat():
    summary = last_json(run_notebook("03-masks-and-the-reverse-cheat.ipynb"))
    causal, reverse = summary["results"]["causal"], summary["results"]["reverse"]
    assert reverse["loss_with_its_mask"] < 0.15  # it reads the answer
    assert reverse["honest_loss"] > 2.0  # and knows nothing without it
    assert causal["honest_loss"] == pytest.approx(causal["loss_with_its_mask"], rel=1e-4)
    assert causal["honest_loss"] < 1.0
    assert summary["row3_naive_nan"]
    assert summary["row3_weights"] == [0.0] * 6
    assert summary["max_next_token_weight"] > 0.5  # some head of the cheat reads the next character


def test_scaling_experiment_notebook():
    from attnwidget.scratch import scaling_experiment

    summary = last_json(run_notebook("04-the-scaling-experiment.ipynb"))
    assert summary["table"] == json.loads(json.dumps(scaling_experiment(d_k=(16, 64, 256, 1024))))
    big = summary["big"]  # columns, one row per (d_k, scaled)
    raw = big["scaled"].index(False)
    assert big["d_k"][raw] == 4096
    assert big["max_weight"][raw] > 0.9


def test_induction_heads_notebook():
    summary = last_json(run_notebook("09-induction-heads.ipynb"))
    assert summary["induction_heads"]  # found by the scores
    assert all(summary["scores"]["induction"][1][h] > 0.5 for h in summary["induction_heads"])
    assert summary["accuracy_before"] > 0.9
    assert summary["accuracy_after"] < 0.5
    assert summary["accuracy_without_prev"] < summary["accuracy_before"] - 0.2


def test_heads_are_not_averages(minilm):
    from attnwidget import extract_attention
    from attnwidget import metrics as M  # noqa: N812 (the notebooks' name)

    summary = last_json(run_notebook("05-heads-are-not-averages.ipynb"))
    model, tok = minilm
    maps = extract_attention(
        model, "The quick brown fox jumps over the lazy dog because the dog was asleep.", tok)
    layer = summary["layer"]
    np.testing.assert_allclose(summary["per_head"], M.head_sharpness(maps.layer(layer), relative=True),
                               rtol=1e-5)
    # the lesson: the average is less sharp than the typical head it averages
    assert summary["average"] < np.median(summary["per_head"])
    kl = np.asarray(summary["kl"])
    assert np.allclose(np.diag(kl), 0, atol=1e-6)
    i, j = summary["pair"]
    assert kl[i, j] + kl[j, i] == pytest.approx((kl + kl.T).max())


def test_pattern_gallery():
    summary = last_json(run_notebook("06-pattern-gallery.ipynb"))
    labels = summary["synthetic"]
    assert labels["diagonal"] == "diagonal"
    assert labels["local"] == "local"
    assert labels["bos"] == "beginning_of_sequence"
    assert labels["uniform"] == "uniform"
    assert sum(summary["real_counts"].values()) == 72


def test_rollout_and_flow_notebook():
    summary = last_json(run_notebook("07-rollout-and-flow.ipynb"))
    assert sum(summary["rollout_row"]) == pytest.approx(1.0, abs=1e-5)
    assert max(summary["flow_row"]) <= 1.0 + 1e-6  # capacities are float32 weights
    assert -1.0 <= summary["rho"] <= 1.0


def test_long_contexts_notebook():
    summary = last_json(run_notebook("08-long-contexts.ipynb"))
    max_pos = np.asarray(summary["max_position_mean"])
    assert max_pos.shape == (2, 4)
    # the induction heads of layer 1 read the earlier copy, in the middle of the history
    assert ((max_pos[1] > 0.3) & (max_pos[1] < 0.7)).sum() >= 2
    assert all(isinstance(h, str) for _, h in summary["hints"])


def test_ablation_notebook(minilm):
    from attnwidget.ablate import ablation_sweep

    summary = last_json(run_notebook("10-ablation.ipynb"))
    model, tok = minilm
    sweep = ablation_sweep(model, "The cat sat on the mat because it was warm.", tok, progress=False)
    np.testing.assert_allclose(summary["score"], sweep["score"], rtol=1e-9, atol=1e-12)
    assert summary["top"] == list(np.unravel_index(np.argmax(sweep["score"]), sweep["score"].shape))
    assert summary["effect_score"] == pytest.approx(float(sweep["score"].max()), rel=1e-9)
    assert summary["view_effect_score"] == pytest.approx(summary["effect_score"], rel=1e-9)
