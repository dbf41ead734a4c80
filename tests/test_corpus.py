"""attnwidget.corpus: batched statistics equal one-at-a-time extraction, runs resume, dask equals local.

Data: the Python reference manual every CPython ships (``inputs.reference_manual()``,
read at run time), for MiniLM; its letters and digits for the tiny character model.
"""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
import torch

from attnwidget import AttentionMaps, AttentionView, corpus, extract_attention, inputs
from attnwidget.metrics import analyze_stack, duplicate_token_score, induction_score

pytest.importorskip("pyarrow")

#: Batched against one-at-a-time float32 forwards: the batch changes how matmul kernels block
#: and order their sums, which moves a weight by a few float32 ulps per layer (observed: at
#: most 1e-6 absolute, one ulp of 1.0 is 1.2e-7). Every statistic here is a smooth function
#: of the weights with derivatives of order 1-10 at these values (entropy: |log w| <= 17 for
#: w >= 1e-7), so 1e-4 absolute bounds the effect with room; ratios get the same relative bound.
ATOL, RTOL = 1e-4, 1e-4
#: analyze_stack key -> corpus column, for the numbers both compute
SAME_AS_ANALYZE = {
    ("heads", "mean_entropy"): "mean_entropy", ("heads", "normalized_entropy"): "normalized_entropy",
    ("heads", "effective_tokens"): "effective_tokens",
    ("heads", "max"): "max", ("heads", "diagonal_mean"): "diagonal_mean", ("heads", "sparsity"): "sparsity",
    ("heads", "max_attention"): "max_attention", ("heads", "sharpness_relative"): "sharpness",
    ("heads", "sharpness"): "row_std", ("history", "recency_ratio"): "recency_ratio",
    ("history", "max_position_relative"): "max_position_relative", ("history", "top_mass"): "top_mass",
}


@pytest.fixture(scope="module")
def manual():
    return inputs.reference_manual()


@pytest.fixture(scope="module")
def tiny():
    from attnwidget.models import load_tiny_lm

    return load_tiny_lm()


@pytest.fixture(scope="module")
def letters(manual, tiny):
    """The manual's characters that the tiny model knows (letters, digits, '-' and '.'), as records."""
    alphabet = set(tiny[1].alphabet)
    return ["".join(c for c in r if c in alphabet) for r in manual.records[:8]]


def column(table, name):
    return table[name].to_numpy(zero_copy_only=False)


def per_head(table, name, L, H):
    """A column as ``[sequence, layer, head]`` (the table's rows are in that order)."""
    return column(table, name).reshape(-1, L, H)


def test_padded_batches_equal_one_sequence_at_a_time(minilm, manual, tmp_path):
    model, tok = minilm
    # documents of different lengths (8..40 tokens), so every batch pads all but its longest
    docs = [" ".join(r.split()[: 4 + 4 * i]) for i, r in enumerate(manual.records[:9])]
    windows = inputs.Windows(docs, tok, 40, unit="document")
    lengths = [len(windows.ids(i)) for i in range(len(windows))]
    assert len(set(lengths)) >= 6
    assert max(lengths) == 40
    run = corpus.run(model, docs, tok, out=tmp_path / "run", seq_len=40, unit="document", batch_size=4,
                     shard_size=5, progress=False)
    table = run.table()
    assert table.num_rows == 9 * 6 * 12
    assert column(table, "sequence").tolist() == list(np.repeat(range(9), 72))
    L, H = 6, 12
    batch = corpus.batch_attention(model, [windows.ids(i).numpy() for i in range(4)])  # [4, L, H, 40, 40]
    for i in range(9):
        ids = windows.ids(i)
        n = len(ids)
        maps = extract_attention(model, ids[None], tok)
        if i < 4:  # the padded forward's real part is the one-sequence forward, to float32 rounding
            np.testing.assert_allclose(batch[i, ..., :n, :n], maps.weights, rtol=0, atol=1e-5)
            assert int(batch[i, ..., n:].count_nonzero()) == 0  # padded keys get no weight
        ref = analyze_stack(maps)
        for (part, key), name in SAME_AS_ANALYZE.items():
            np.testing.assert_allclose(per_head(table, name, L, H)[i], ref[part][key], rtol=RTOL, atol=ATOL,
                                       err_msg=f"{name} of sequence {i}")
        # the block score is left out here: it is 1 - (density across a split) / (density inside),
        # and at a few tokens the inside density is nearly 0, so a 1e-6 change in a weight moves it
        # by up to 0.04 (seen at 8 tokens); test_every_column_is_the_metrics_of_the_record checks it
        for key in ("diagonal", "beginning_of_sequence", "broadcast", "local", "uniform"):
            np.testing.assert_allclose(per_head(table, f"score_{key}", L, H)[i], ref["heads"]["scores"][key],
                                       rtol=RTOL, atol=ATOL, err_msg=f"score {key} of sequence {i}")
        np.testing.assert_allclose(per_head(table, "previous_token", L, H)[i],
                                   ref["heads"]["scores"]["previous_token"], rtol=RTOL, atol=ATOL)
        assert (per_head(table, "grade", L, H)[i] == ref["heads"]["grade"]).all()
        assert (per_head(table, "pattern", L, H)[i] == ref["heads"]["pattern"]).all()
        assert (per_head(table, "n_tokens", L, H)[i] == n).all()


def test_every_column_is_the_metrics_of_the_record(minilm, manual):
    """Given the same weights, each column equals attnwidget.metrics' own function on the record."""
    from attnwidget import AttentionMaps
    from attnwidget import metrics as M  # noqa: N812  (the metrics' short name, as in the README)
    from attnwidget.corpus._compute import shard_rows

    model, tok = minilm
    windows = inputs.Windows(manual, tok, 12, unit="document")
    seqs = [windows.ids(i).numpy() for i in (0, 1, 2)]
    cols = shard_rows(model, seqs, [0, 1, 2], batch_size=3, threshold=0.2, causal=None)
    weights = corpus.batch_attention(model, seqs)
    for i, seq in enumerate(seqs):
        n = len(seq)
        maps = AttentionMaps(weights[i, ..., :n, :n].clone(), [str(t) for t in seq])
        rows = slice(72 * i, 72 * (i + 1))
        stats = M.compute_attention_statistics(maps)
        scores = M.pattern_scores(maps)
        expected = {
            "mean_entropy": stats["mean_entropy"], "effective_tokens": stats["effective_tokens"],
            "normalized_entropy": stats["normalized_entropy"], "max": stats["max"],
            "diagonal_mean": stats["diagonal_mean"],
            "sparsity": M.compute_attention_sparsity(maps, 0.2),
            "sharpness": M.head_sharpness(maps, relative=True), "row_std": M.head_sharpness(maps),
            "score_block": scores["block"],
            "previous_token": M.previous_token_score(maps), "recency_ratio": M.recency_ratio(maps),
            "max_position_relative": M.max_position(maps) / (n - 1),
        }
        for name, value in expected.items():
            np.testing.assert_allclose(cols[name][rows], np.asarray(value, dtype=float).reshape(-1),
                                       rtol=1e-6, atol=1e-7, err_msg=name)
        labels = M.identify_attention_pattern(maps, uniform="spread")  # the same at any window length
        assert list(cols["pattern"][rows]) == list(labels.reshape(-1))
        assert list(cols["grade"][rows]) == list(M.sharpness_grade(maps).reshape(-1))


def test_token_match_scores_by_plain_loop_and_on_repeats(tiny):
    rng = np.random.default_rng(0)
    w = torch.from_numpy(rng.dirichlet(np.ones(12), size=(2, 1, 3, 12))).float().tril()
    w = w / w.sum(-1, keepdim=True)  # causal rows, [b=2, L=1, H=3, 12, 12]
    ids = torch.tensor([[5, 1, 5, 2, 1, 5, 7, 8, 2, 9, 9, 3], list(range(12))])
    got = corpus.token_match_scores(w, ids, torch.ones(2, 1, 3, 12, dtype=torch.bool))
    for h in range(3):
        dup, ind = [], []
        for i in range(12):
            earlier = [j for j in range(i) if ids[0, j] == ids[0, i]]
            if earlier:
                dup.append(sum(float(w[0, 0, h, i, j]) for j in earlier))
                ind.append(sum(float(w[0, 0, h, i, j + 1]) for j in earlier))
        assert float(got["duplicate_token"][0, 0, h]) == pytest.approx(np.mean(dup), rel=1e-6)
        assert float(got["induction"][0, 0, h]) == pytest.approx(np.mean(ind), rel=1e-6)
        assert math.isnan(float(got["induction"][1, 0, h]))  # no token repeats: undefined, not 0
    # a sequence of distinct tokens repeated once: the fixed-offset scores of attnwidget.metrics
    model, _ = tiny
    seg = torch.randperm(64, generator=torch.Generator().manual_seed(1))[:20]
    maps = extract_attention(model, torch.cat([seg, seg])[None])
    scores = corpus.token_match_scores(maps.weights[None], torch.cat([seg, seg])[None],
                                       torch.ones(1, 2, 4, 40, dtype=torch.bool))
    np.testing.assert_allclose(scores["induction"][0], induction_score(maps, 20), rtol=1e-6)
    np.testing.assert_allclose(scores["duplicate_token"][0], duplicate_token_score(maps, 20), rtol=1e-6)
    assert float(scores["induction"][0, 1].max()) > 0.5  # the shipped model's induction head


def test_interrupted_run_resumes_without_recomputing_finished_shards(minilm, manual, tmp_path):
    model, tok = minilm
    args = {"seq_len": 24, "num_samples": 10, "shard_size": 3, "batch_size": 2, "progress": False}
    whole = corpus.run(model, manual, tok, out=tmp_path / "whole", **args)
    assert whole.computed == [0, 1, 2, 3]
    assert whole.skipped == []
    seen = []

    def stop_after_two(info):
        seen.append(info.shard)
        assert info.path.is_file()
        assert info.rows == 3 * 72
        assert list(info.sequences) == [3 * info.shard + k for k in range(3)]
        if len(seen) == 2:
            raise KeyboardInterrupt  # what Ctrl-C in a notebook raises

    with pytest.raises(KeyboardInterrupt):
        corpus.run(model, manual, tok, out=tmp_path / "cut", on_shard=stop_after_two, **args)
    finished = {s: os.stat(tmp_path / "cut" / f"shard-{s:05d}.parquet") for s in (0, 1)}
    assert not (tmp_path / "cut" / "shard-00002.parquet").exists()
    with pytest.raises(ValueError, match=r"^path: 2 of 4 shards of '.*cut' are missing \(an interrupted"):
        corpus.read(tmp_path / "cut")
    assert corpus.read(tmp_path / "cut", allow_partial=True).num_rows == 6 * 72
    # a shard file cut short by a crash is recomputed, like a missing one
    (tmp_path / "cut" / "shard-00003.parquet").write_bytes(b"PAR1 truncated")
    again = []
    resumed = corpus.run(model, manual, tok, out=tmp_path / "cut", on_shard=lambda i: again.append(i.shard),
                         **args)
    assert resumed.skipped == [0, 1]
    assert resumed.computed == [2, 3]
    assert again == [2, 3]
    for s, before in finished.items():  # the finished shards' files were not written again
        after = os.stat(tmp_path / "cut" / f"shard-{s:05d}.parquet")
        assert (after.st_ino, after.st_mtime_ns, after.st_size) == (before.st_ino, before.st_mtime_ns,
                                                                     before.st_size)
    assert resumed.table().equals(whole.table())  # same shards, same batches: the very same numbers
    assert not list((tmp_path / "cut").glob("*.partial"))
    with pytest.raises(ValueError, match=r"^out: '.*cut' holds a corpus run with other settings "
                                         r"\(seq_len: 24 there, 32 now\); expected the same settings"):
        corpus.run(model, manual, tok, out=tmp_path / "cut", **{**args, "seq_len": 32})


def test_head_summary_by_plain_computation(minilm, manual, tmp_path):
    model, tok = minilm
    run = corpus.run(model, manual, tok, out=tmp_path / "s", seq_len=32, num_samples=7, shard_size=4,
                     progress=False, name="manual")
    table = run.table()
    summary = corpus.summarize(tmp_path / "s")
    assert summary.shape == (6, 12)
    assert summary.n_sequences == 7
    assert summary.meta["name"] == "manual"
    assert summary.meta["seq_len"] == 32
    rows = list(zip(column(table, "layer"), column(table, "head"), column(table, "sharpness"),
                    column(table, "grade"), strict=True))
    for layer, head in ((0, 0), (2, 7), (5, 11)):
        values = [v for li, hi, v, _ in rows if (li, hi) == (layer, head)]
        assert len(values) == 7
        agg = summary["sharpness"]
        assert agg["mean"][layer, head] == pytest.approx(sum(values) / 7, rel=1e-12)
        mean = sum(values) / 7
        assert agg["std"][layer, head] == pytest.approx(math.sqrt(sum((v - mean) ** 2 for v in values) / 6),
                                                        rel=1e-9)
        ordered = sorted(values)  # linear interpolation between order statistics: q at rank q * (n - 1)
        assert agg["median"][layer, head] == pytest.approx(ordered[3], rel=1e-12)
        q25 = ordered[1] + 0.5 * (ordered[2] - ordered[1])  # rank 1.5
        assert agg["q25"][layer, head] == pytest.approx(q25, rel=1e-12)
        assert agg["count"][layer, head] == 7
        grades = [g for li, hi, _, g in rows if (li, hi) == (layer, head)]
        assert summary.grades["SHARP"][layer, head] == pytest.approx(grades.count("SHARP") / 7)
        typical = summary.typical(layer, head)
        assert typical["sharpness"]["median"] == agg["median"][layer, head]
        assert typical["n_sequences"] == 7
        assert typical["corpus"] == "manual"
    flat = summary.to_table()
    assert flat.num_rows == 72
    assert flat["sharpness_q95"].to_pylist()[5] == summary["sharpness"]["q95"][0, 5]
    with pytest.raises(ValueError, match=r"^table: 431 rows for 6 sequences x 6 layers x 12 heads; expected"):
        corpus.summarize(table.slice(0, 431))


def test_view_shows_what_is_typical_for_each_head(minilm, manual, tmp_path):
    model, tok = minilm
    run = corpus.run(model, manual, tok, out=tmp_path / "v", seq_len=32, num_samples=5, progress=False)
    summary = run.summary()
    view = AttentionView(model, source={"mode": "validation", "dataset": manual, "seq_len": 32, "index": 40},
                         tokenizer=tok, corpus=run.path, layer=4, head=3)
    typical = view.metrics["typical"]
    assert typical == summary.typical(4, 3)
    entropy = typical["mean_entropy"]
    assert entropy["q25"] <= entropy["median"] <= entropy["q75"]
    for badge in view.atlas["badges"]:
        t = summary.typical(4, badge["head"])
        assert badge["typical"] == {"entropy": t["mean_entropy"], "sharpness": t["sharpness"],
                                    "n_sequences": 5}
    view.mode = "average"
    assert "typical" not in view.metrics  # an average is no head: nothing typical to show
    view.close()
    plain = AttentionView(model, "A text of its own.", tokenizer=tok)
    assert "typical" not in plain.metrics
    assert "typical" not in plain.atlas["badges"][0]
    with pytest.raises(ValueError, match=r"^corpus: summarises 6 layers x 12 heads, but the record has 2 "):
        AttentionView(AttentionMaps.from_tensor(np.full((2, 4, 3, 3), 1 / 3)), corpus=summary)


def test_bad_corpus_arguments(minilm, manual, tmp_path):
    model, tok = minilm
    with pytest.raises(ValueError, match=r"^scheduler: expected one of \('local', 'dask'\), got 'ray'$"):
        corpus.run(model, manual, tok, out=tmp_path / "x", scheduler="ray")
    with pytest.raises(ValueError, match=r"^batch_size: expected an int >= 1, got 0$"):
        corpus.run(model, manual, tok, out=tmp_path / "x", batch_size=0)
    with pytest.raises(ValueError, match=r"^client: only scheduler='dask' uses a client"):
        corpus.run(model, manual, tok, out=tmp_path / "x", client="tcp://127.0.0.1:1")
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match=r"^out: '.*file' is a file; expected a folder"):
        corpus.run(model, manual, tok, out=tmp_path / "file", seq_len=16, num_samples=1)
    with pytest.raises(inputs.InputError, match=r"^num_samples: got 99999 from index 0, but 'Python "
                                                r"reference manual' has \d+ windows of 128 tokens; "
                                                r"expected 1\.\.\d+$"):
        corpus.run(model, manual, tok, out=tmp_path / "y", num_samples=99999)
    with pytest.raises(inputs.InputError, match=r"^seq_len: expected an int 3\.\.512 .*got 1024$"):
        corpus.run(model, manual, tok, out=tmp_path / "y", seq_len=1024)


# --------------------------------------------------------------------------- dask
@pytest.fixture(scope="module")
def cluster():
    distributed = pytest.importorskip("distributed")
    # processes: the workers are separate interpreters, as on a real cluster (each loads the model)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                                  silence_logs=40) as lc, distributed.Client(lc) as client:
        yield client


def test_dask_cluster_gives_the_local_table(cluster, tiny, letters, tmp_path):
    model, chars = tiny
    args = {"seq_len": 48, "num_samples": 12, "shard_size": 3, "batch_size": 2, "progress": False}
    local = corpus.run(model, letters, chars, out=tmp_path / "local", **args).table()
    # by name: each worker loads the tiny model itself; as an object: scattered to the workers
    by_name = corpus.run("tiny", letters, out=tmp_path / "name", scheduler="dask", client=cluster, **args)
    by_object = corpus.run(model, letters, chars, out=tmp_path / "object", scheduler="dask",
                           client=cluster.scheduler.address, **args)
    assert sorted(by_name.computed) == [0, 1, 2, 3]
    workers = cluster.run(lambda: os.getpid())
    assert len(set(workers.values()) | {os.getpid()}) == 3  # two worker processes besides this one
    for run in (by_name, by_object):
        table = run.table()
        assert table.schema.names == local.schema.names
        assert table.num_rows == 12 * 8
        for name in corpus.COLUMN_NAMES:
            a, b = column(local, name), column(table, name)
            if a.dtype.kind == "f":  # other processes, other thread counts: float32 rounding only
                np.testing.assert_allclose(b, a, rtol=RTOL, atol=ATOL, err_msg=name)
            else:
                assert (a == b).all(), name
    assert by_name.manifest["fingerprint"] == by_object.manifest["fingerprint"]
