"""The one definition of each mask the stages share: True where a query may see a key.

``metrics`` (validating and measuring maps), ``maps`` (which cells a record
shows), ``scratch`` (attention written out) and the widget all take their
causal and padding masks from here, so they cannot disagree about the diagonal
or about which keys are padding.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


def causal_key_mask(Q: int, K: int) -> torch.Tensor:
    """bool ``[Q, K]``: query i sees keys ``<= i + (K - Q)`` (aligned at the last key, as with a cache)."""
    return torch.ones(Q, K, dtype=torch.bool).tril(K - Q)


def padding_key_mask(key_padding: Any, Q: int) -> torch.Tensor | None:
    """bool ``[Q, K]`` from ``key_padding`` (bool ``[K]``, True = padding): None when nothing is padded."""
    pad = np.asarray(key_padding, dtype=bool)
    return torch.from_numpy(~pad).expand(Q, pad.shape[0]) if pad.any() else None


def visible_cells(query_padding: Any, key_padding: Any, causal: bool) -> np.ndarray:
    """bool ``[Q, K]``: cells neither padding (query or key) nor above the causal diagonal."""
    qp, kp = np.asarray(query_padding, dtype=bool), np.asarray(key_padding, dtype=bool)
    vis = ~qp[:, None] & ~kp[None, :]
    if causal:
        vis = vis & causal_key_mask(qp.shape[0], kp.shape[0]).numpy()
    return vis
