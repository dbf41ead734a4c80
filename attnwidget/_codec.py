"""Binary encoding of one attention panel for the browser.

A panel is one ``[query_pos, key_pos]`` map. It crosses the widget comm as raw
bytes inside a dict ``{"buffer", "dtype", "shape"}`` (ipywidgets sends the
memoryview as a binary websocket frame), never as JSON numbers.
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: Largest panel payload sent in one message. A 4096 x 4096 uint8 panel is
#: 16 MiB; above that the browser would hold more than one full-resolution
#: 4K-token head per view, so bigger panels are refused (select fewer tokens).
MAX_PANEL_BYTES = 16 * 2**20

DTYPES = ("uint8", "float32")


def encode_panel(panel: np.ndarray, dtype: str = "uint8") -> dict[str, Any]:
    """``[Q, K]`` weights in ``[0, 1]`` -> ``{"buffer", "dtype", "shape"}``.

    ``uint8``: ``round(w * 255)``, enough for colour (256 colormap steps) at a
    quarter of the bytes; ``float32``: exact little-endian values.
    """
    if dtype not in DTYPES:
        raise ValueError(f"dtype: expected one of {DTYPES}, got {dtype!r}")
    panel = np.asarray(panel)
    if panel.ndim != 2:
        raise ValueError(f"panel: expected a 2-D [queries, keys] array, got shape {panel.shape}")
    itemsize = 1 if dtype == "uint8" else 4
    size = panel.size * itemsize
    if size > MAX_PANEL_BYTES:
        raise ValueError(
            f"panel: {panel.shape[0]} x {panel.shape[1]} as {dtype} is {size / 2**20:.1f} MiB, "
            f"over the {MAX_PANEL_BYTES / 2**20:.0f} MiB limit per panel; select fewer tokens"
        )
    if dtype == "uint8":
        data = np.rint(np.clip(panel, 0.0, 1.0) * 255.0).astype(np.uint8)
    else:
        data = np.ascontiguousarray(panel, dtype="<f4")
    return {"buffer": memoryview(data.tobytes()), "dtype": dtype, "shape": list(panel.shape)}


def decode_panel(message: dict[str, Any]) -> np.ndarray:
    """Inverse of :func:`encode_panel`: float32 ``[Q, K]`` (uint8 scaled back to ``[0, 1]``)."""
    dtype = message.get("dtype")
    if dtype not in DTYPES:
        raise ValueError(f"message['dtype']: expected one of {DTYPES}, got {dtype!r}")
    shape = tuple(int(s) for s in message["shape"])
    raw = np.frombuffer(bytes(message["buffer"]), dtype=np.uint8 if dtype == "uint8" else "<f4")
    if raw.size != shape[0] * shape[1]:
        raise ValueError(
            f"message['buffer']: expected {shape[0] * shape[1]} values for shape {shape}, "
            f"got {raw.size}"
        )
    out = raw.reshape(shape).astype(np.float32)
    return out / 255.0 if dtype == "uint8" else out
