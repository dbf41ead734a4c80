"""Size limits: a record or map too big for the view is refused with the limit and the remedy,
before anything large is allocated; extraction refuses before the model runs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import attnwidget.maps as maps_module
from attnwidget import AttentionMaps, AttentionView


def test_a_map_over_the_cell_limit_is_refused_with_the_remedy():
    w = torch.full((1, 1, 8193, 8192), 1 / 8192)  # 256 MiB, one row over the limit
    with pytest.raises(ValueError, match=r"maps: one map is 8193 x 8192 = 67,117,056 cells, more than "
                       r"the limit of 67,108,864 .*show a window of the tokens"):
        AttentionView.from_tensor(w)


def test_a_record_over_the_byte_limit_is_refused_naming_select(monkeypatch):
    monkeypatch.setattr(maps_module, "MAX_RECORD_BYTES", 2**20)
    ok = AttentionMaps.from_tensor(np.full((4, 4, 128, 128), 1 / 128, np.float32))  # exactly 1 MiB
    AttentionView(ok)
    big = AttentionMaps.from_tensor(np.full((4, 5, 128, 128), 1 / 128, np.float32))
    with pytest.raises(ValueError, match=r"maps: 4 layers x 5 heads x 128 x 128 tokens of float32 is "
                       r"1.2 MiB, more than the limit of 1.0 MiB .*maps.select\(layers="):
        AttentionView(big)
    AttentionView(big.select(heads=[0, 1, 2, 3]))  # the remedy works


def test_extraction_refuses_before_the_forward(minilm, monkeypatch):
    model, tok = minilm
    monkeypatch.setattr(maps_module, "MAX_RECORD_BYTES", 2**20)
    calls = []
    handle = model.register_forward_pre_hook(lambda *a: calls.append(1))
    try:
        with pytest.raises(ValueError, match=r"^text: 6 layers x 12 heads x 122 x 122 tokens"):
            AttentionView(model, "word " * 120, tokenizer=tok)
    finally:
        handle.remove()
    assert calls == []  # refused before the model ran
    AttentionView(model, "word " * 10, tokenizer=tok)  # 6 x 12 x 12 x 12 fits
