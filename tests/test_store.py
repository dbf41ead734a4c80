"""AttentionMaps.save / load: a record travels without its model, and a damaged file is named."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest
import torch

from attnwidget import AttentionMaps
from attnwidget.store import FORMAT_VERSION


def rows(rng, *shape):
    w = rng.random(shape)
    return w / w.sum(-1, keepdims=True)


def assert_same_record(a: AttentionMaps, b: AttentionMaps) -> None:
    # float32 written as float32: the file holds the very bits, so equality is exact here
    assert torch.equal(a.weights, b.weights)
    assert torch.equal(a.empty_rows, b.empty_rows)
    for field in ("query_tokens", "key_tokens", "query_display", "key_display", "layer_names",
                  "head_names", "model_name", "text", "causal", "averaged_heads", "shape"):
        assert getattr(a, field) == getattr(b, field), field
    np.testing.assert_array_equal(a.query_padding, b.query_padding)
    np.testing.assert_array_equal(a.key_padding, b.key_padding)


def test_round_trip_with_masks_empty_rows_and_unicode(tmp_path):
    rng = np.random.default_rng(0)
    w = rows(rng, 2, 3, 5, 5)
    w[..., 4] = 0  # key 4 is padding
    w /= w.sum(-1, keepdims=True)
    w[0, 1, 2] = np.nan  # a fully masked row, as naive softmax writes it
    tokens = ["[CLS]", "مرحبا", "👋\u200d", "a\u202eb", "\ud800"]  # RTL, emoji + ZWJ, bidi, a lone surrogate
    maps = AttentionMaps(w, tokens, model_name="gpu box <b>", text="مرحبا 👋 a\u202eb",
                         key_padding=[0, 0, 0, 0, 1], layer_names=["L0", "L1"],
                         head_names=["h0", "h1", "h2"], token_scheme="plain", special_tokens=["[CLS]"])
    path = maps.save(tmp_path / "record.npz")
    back = AttentionMaps.load(path)
    assert_same_record(maps, back)
    assert back.empty_rows[0, 1, 2]
    assert int(back.empty_rows.sum()) == 1
    assert back.query_display[3] == "a⟨RLO⟩b"
    # numpy reads the same file without attnwidget: the format is documented, not private
    with np.load(path) as npz:
        np.testing.assert_array_equal(npz["weights"], maps.weights.numpy())
    assert not (tmp_path / "record.npz.partial").exists()


def test_round_trip_of_cross_attention_averages_and_a_real_model(tmp_path, minilm):
    from attnwidget import extract_attention

    rng = np.random.default_rng(1)
    cross = AttentionMaps.from_tensor(rows(rng, 2, 3, 4), list("abc"), list("wxyz"), causal=False)
    assert_same_record(cross, AttentionMaps.load(cross.save(tmp_path / "cross.npz")))
    mean = cross.head_mean()
    assert_same_record(mean, AttentionMaps.load(mean.save(tmp_path / "mean.npz")))

    model, tok = minilm
    real = extract_attention(model, "The cat sat on the mat.", tok)
    back = AttentionMaps.load(real.save(tmp_path / "minilm.npz"))
    assert_same_record(real, back)
    assert back.query_display == real.query_display  # [CLS]/[SEP] and ## pieces as extracted


def test_damaged_files_are_refused_by_name(tmp_path):
    rng = np.random.default_rng(2)
    maps = AttentionMaps.from_tensor(rows(rng, 2, 6, 6), [str(i) for i in range(6)])
    good = maps.save(tmp_path / "good.npz").read_bytes()

    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(good[: len(good) // 2])
    with pytest.raises(ValueError, match=r"path: '.*truncated.npz' is not a readable attnwidget record"):
        AttentionMaps.load(truncated)

    flipped = bytearray(good)
    start = good.index(b"weights.npy") + 200  # inside the weight bytes: the CRC no longer matches
    flipped[start] ^= 0xFF
    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes(bytes(flipped))
    with pytest.raises(ValueError, match=r"corrupt.npz' is not a readable attnwidget record \(weights.npy"):
        AttentionMaps.load(corrupt)

    text = tmp_path / "notes.npz"
    text.write_text("not a record")
    with pytest.raises(ValueError, match=r"not a zip archive"):
        AttentionMaps.load(text)

    other = tmp_path / "other.npz"
    np.savez(other, weights=np.ones((1, 1, 2, 2), np.float32))  # an npz, but not ours
    with pytest.raises(ValueError, match=r"meta.json is missing"):
        AttentionMaps.load(other)

    newer = tmp_path / "newer.npz"
    with zipfile.ZipFile(tmp_path / "good.npz") as src, zipfile.ZipFile(newer, "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            if item.filename == "meta.json":
                meta = json.loads(data)
                meta["format_version"] = FORMAT_VERSION + 1
                data = json.dumps(meta).encode()
            dst.writestr(item, data)
    with pytest.raises(ValueError, match=r"format version 2, this attnwidget reads version 1"):
        AttentionMaps.load(newer)

    with pytest.raises(FileNotFoundError, match=r"path: no file at '.*missing.npz'"):
        AttentionMaps.load(tmp_path / "missing.npz")


def test_tampered_weights_fail_the_record_validation(tmp_path):
    maps = AttentionMaps.from_tensor(np.eye(3), list("abc"))
    path = tmp_path / "t.npz"
    with zipfile.ZipFile(maps.save(tmp_path / "ok.npz")) as src, zipfile.ZipFile(path, "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            if item.filename == "weights.npy":  # rows that no longer sum to 1, written consistently
                import io

                buf = io.BytesIO()
                np.lib.format.write_array(buf, np.full((1, 1, 3, 3), 0.5, np.float32))
                data = buf.getvalue()
            dst.writestr(item, data)
    with pytest.raises(ValueError, match=r"its contents do not make a valid record: weights: rows must sum"):
        AttentionMaps.load(path)
