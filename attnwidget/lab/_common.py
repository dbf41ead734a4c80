"""Small helpers the lab modules share: argument checks in the handouts' words, saving figures, and
the sequences of a data loader's batch."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from attnwidget.metrics._input import prepare, to_tensor

#: Screen pixels per inch of a handout's matplotlib ``figsize`` (inches): the handouts' usual
#: (10, 8) becomes a 640 x 512 figure, about the size bokeh figures default to here.
PIXELS_PER_INCH = 64


def save(fig: Any, save_path: str | Path | None) -> Any:
    """Write ``fig`` to ``save_path`` when one is given (``.html``, ``.png`` or ``.svg``) and return ``fig``.

    Goes through :func:`attnwidget.plots.export`: HTML is standalone and offline,
    PNG/SVG need Chromium and chromedriver (``scripts/install-browser.sh``).
    """
    if save_path is not None:
        from attnwidget.plots import export

        if not isinstance(save_path, (str, Path)):
            raise TypeError(f"save_path: expected a file name (str or Path), got {type(save_path).__name__}")
        export(fig, save_path)
    return fig


def figure_size(figsize: Any, name: str = "figsize") -> tuple[int, int]:
    """A matplotlib ``(width, height)`` in inches -> bokeh pixels (:data:`PIXELS_PER_INCH`)."""
    ok = (isinstance(figsize, (tuple, list)) and len(figsize) == 2
          and all(isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in figsize))
    if not ok:
        raise ValueError(f"{name}: expected (width, height) in inches, two positive numbers, got {figsize!r}")
    return int(figsize[0] * PIXELS_PER_INCH), int(figsize[1] * PIXELS_PER_INCH)


def matrix(x: Any, name: str, ndim: int, what: str) -> np.ndarray:
    """``x`` (numpy, torch, nested lists) as a float numpy array of exactly ``ndim`` dims.

    ``what`` spells the expected axes for the error, e.g. ``"[seq_len, seq_len]"``.
    """
    t = to_tensor(x, name)
    if t.ndim != ndim:
        raise ValueError(f"{name}: expected {ndim} dimensions {what}, got shape {tuple(t.shape)}")
    if 0 in t.shape:
        raise ValueError(
            f"{name}: expected {what} with at least one entry per axis, got shape {tuple(t.shape)}"
        )
    return t.numpy()


def distributions(x: Any, name: str) -> None:
    """The metrics' input checks (finite, >= 0, rows summing to 1), with errors naming ``name``."""
    prepare(x, name)


def square(x: Any, name: str, ndim: int, what: str) -> np.ndarray:
    """Like :func:`matrix`, and the last two axes must be equal (self-attention)."""
    w = matrix(x, name, ndim, what)
    if w.shape[-1] != w.shape[-2]:
        raise ValueError(
            f"{name}: expected square {what} (self-attention: as many keys as queries), got shape {w.shape}"
        )
    return w


def labels(tokens: Any, n: int, name: str, axis: str) -> list[str]:
    """``tokens`` as ``n`` strings, one per position of ``axis`` ("queries"/"keys")."""
    if isinstance(tokens, str) or not isinstance(tokens, Sequence):
        raise TypeError(f"{name}: expected a list of {n} token strings, got {type(tokens).__name__}")
    if len(tokens) != n:
        raise ValueError(f"{name}: expected {n} tokens, one per {axis}, got {len(tokens)}")
    return [str(t) for t in tokens]


def index(value: Any, size: int, name: str) -> int:
    """An int in ``-size..size-1`` (negative counts from the end, as in Python) -> ``0..size-1``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name}: expected an int in {-size}..{size - 1}, got {type(value).__name__}")
    if not -size <= int(value) < size:
        raise IndexError(f"{name}: expected {-size}..{size - 1} (negative counts from the end), got {value}")
    return int(value) % size


def positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name}: expected an int >= 1, got {value!r}")
    return int(value)


def sequences(item: Any, name: str) -> list[Any]:
    """One item of a data loader (a batch) -> the model inputs of each sequence in it, in order:
    a batch is split into its rows, none is dropped. Texts, token ids (``[seq_len]``,
    ``[batch, seq_len]``, numpy, a list of ints), mappings of model inputs (tensors split by
    row) and ``(inputs, targets, ...)`` tuples; errors name ``name``."""
    import torch

    if isinstance(item, (tuple, list)) and item:
        if all(isinstance(x, str) for x in item):
            return list(item)  # a batch of texts
        if all(isinstance(x, (int, np.integer)) and not isinstance(x, bool) for x in item):
            item = torch.tensor([list(item)])  # one sequence of ids
        else:
            item = item[0]  # (inputs, targets, ...) as datasets yield them
    if isinstance(item, str):
        return [item]
    if isinstance(item, np.ndarray):
        item = torch.from_numpy(item)
    if isinstance(item, torch.Tensor):
        if item.ndim == 1:
            return [item[None]]
        if item.ndim == 2:
            return [item[b : b + 1] for b in range(item.shape[0])]
        raise ValueError(f"{name}: expected token ids [seq_len] or [batch, seq_len], got shape "
                         f"{tuple(item.shape)}")
    if isinstance(item, Mapping):
        first = next((v for v in item.values() if isinstance(v, torch.Tensor) and v.ndim >= 2), None)
        if first is None:
            return [dict(item)]
        n = first.shape[0]
        return [{k: (v[b : b + 1] if isinstance(v, torch.Tensor) and v.ndim >= 1 and v.shape[0] == n else v)
                 for k, v in item.items()} for b in range(n)]
    raise TypeError(f"{name}: expected items that are texts, token id tensors, mappings of model "
                    f"inputs or (inputs, targets) tuples, got {type(item).__name__}")
