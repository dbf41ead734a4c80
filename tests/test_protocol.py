"""attnwidget/protocol.json: the reply key and the choice lists, the same in Python and in js/
(js/tests/state.test.ts reads the same file)."""

import json
from pathlib import Path

import numpy as np
import pytest
import traitlets

from attnwidget import AttentionView, _messages
from attnwidget._codec import COLORMAP_PALETTES

PROTOCOL = json.loads((Path(_messages.__file__).parent / "protocol.json").read_text("utf-8"))


def weights(L=2, H=2, Q=4):
    rng = np.random.default_rng(0)
    w = rng.random((L, H, Q, Q)) + 0.01
    return (w / w.sum(-1, keepdims=True)).astype(np.float32)


def test_choice_lists_come_from_the_golden_file():
    assert PROTOCOL["modes"] == ["head", "grid", "average", "rollout"]
    assert list(_messages.VIEW_MODES) == PROTOCOL["modes"]
    assert list(_messages.COLORMAPS) == PROTOCOL["colormaps"]
    assert list(_messages.SCALES) == PROTOCOL["scales"]
    assert set(PROTOCOL["colormaps"]) <= set(COLORMAP_PALETTES)  # figures and snapshots can draw each
    view = AttentionView.from_tensor(weights())
    for name, choices in (("mode", "modes"), ("colormap", "colormaps"), ("scale", "scales")):
        for value in PROTOCOL[choices]:
            setattr(view, name, value)
        with pytest.raises(traitlets.TraitError, match=f"{name}: expected one of"):
            setattr(view, name, "nope")


@pytest.mark.parametrize("mode", ["head", "grid", "average", "rollout"])
def test_every_reply_carries_the_key_of_the_golden_file(mode):
    view = AttentionView.from_tensor(weights(), mode=mode, layer=1, head=1, query=2, threshold=0.2)
    reply = view.metrics["view"]
    extra = [k for k in PROTOCOL["reply_key"] if k not in PROTOCOL["panel_key"]]
    assert list(reply) == [k for k in PROTOCOL["panel_key"] if k in PROTOCOL["reply_key"]] + extra
    assert set(reply) == set(PROTOCOL["reply_key"])
    head = 1 if mode in PROTOCOL["head_modes"] else None
    assert reply == {"mode": mode, "layer": 1, "head": head, "ablated": [], "threshold": 0.2, "query": 2,
                     "top_k": 5}
    # the picture carries the panel part of the same key, and the colour scale it is drawn on
    assert view.panel["view"] == {k: reply.get(k, view.scale) for k in PROTOCOL["panel_key"]}
    assert "scale" not in reply  # the numbers do not depend on it
    # the browser's state key (js/src/state.ts stateKey) is this list, in this order
    key = json.dumps([reply[k] for k in PROTOCOL["reply_key"]], separators=(",", ":"))
    assert key == json.dumps([mode, 1, head, 0.2, 2, 5, []], separators=(",", ":"))
