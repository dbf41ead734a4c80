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


def _kind(x: Any) -> str | None:
    """What one element of a list batch is, when it is one sequence: "ids" (a 1-D tensor or
    array, or a list of ints), "text", "inputs" (a mapping); else None."""
    import torch

    if isinstance(x, str):
        return "text"
    if isinstance(x, Mapping):
        return "inputs"
    if isinstance(x, (torch.Tensor, np.ndarray)) and x.ndim == 1:
        return "ids"
    if isinstance(x, (list, tuple)) and x and all(
            isinstance(i, (int, np.integer)) and not isinstance(i, bool) for i in x):
        return "ids"
    return None


def sequences(item: Any, name: str) -> list[Any]:
    """One item of a data loader (a batch) -> the model inputs of each sequence in it, in order:
    a batch is split into its rows, none is dropped. Each is a text, ids ``[1, seq_len]``, or a
    mapping of model inputs with the batch axis kept at 1; errors name ``name``.

    Takes texts; token ids (``[seq_len]``, ``[batch, seq_len]``, torch or numpy, a list of
    ints); a mapping of model inputs (``{"input_ids": ..., "attention_mask": ...}``, tensors,
    arrays or nested lists, split by row); a list of sequences of one kind (texts, 1-D ids,
    lists of ints, mappings: what ``collate_fn=list`` gives); and ``(inputs, targets, ...)``
    as a DataLoader collates a dataset of pairs (the first element is read: a batch of texts
    as a tuple of strings, a ``[batch, seq_len]`` tensor, a mapping).

    One shape is ambiguous: a list of 1-D id tensors is what ``collate_fn=list`` makes of
    sequences, and also what ``DataLoader(batch_size=None)`` makes of an ``(inputs,
    targets)`` pair; it is read as sequences, each studied. For pairs, keep a batch axis
    (``batch_size=1``: the targets are then left out).
    """
    import torch

    if isinstance(item, (tuple, list)) and item:
        kinds = {_kind(x) for x in item}
        if kinds == {"text"}:
            return list(item)  # a batch of texts
        if all(isinstance(x, (int, np.integer)) and not isinstance(x, bool) for x in item):
            return [torch.tensor([list(item)])]  # one sequence of ids
        if len(kinds) == 1 and None not in kinds:  # a list of sequences of one kind
            return [seq for x in item for seq in sequences(x, name)]
        return sequences(item[0], name)  # (inputs, targets, ...)
    if isinstance(item, str):
        return [item]
    if isinstance(item, np.ndarray):
        if item.dtype.kind in "US":  # an array of texts
            return [str(x) for x in item.reshape(-1)]
        if item.dtype.kind not in "iu":
            raise TypeError(f"{name}: expected integer token ids, got a numpy array of dtype {item.dtype}")
        item = torch.from_numpy(item)
    if isinstance(item, torch.Tensor):
        if item.is_floating_point() or item.is_complex():
            raise TypeError(f"{name}: expected integer token ids, got a tensor of dtype {item.dtype}")
        if item.ndim == 1:
            return [item[None]]
        if item.ndim == 2:
            return [item[b : b + 1] for b in range(item.shape[0])]
        raise ValueError(f"{name}: expected token ids [seq_len] or [batch, seq_len], got shape "
                         f"{tuple(item.shape)}")
    if isinstance(item, Mapping):
        tensors = {k: (torch.as_tensor(v) if isinstance(v, (np.ndarray, list)) else v)
                   for k, v in item.items()}
        first = next((v for v in tensors.values() if isinstance(v, torch.Tensor) and v.ndim >= 1), None)
        if first is None:
            return [dict(item)]
        if first.ndim == 1:  # one sequence without its batch axis
            return [{k: (v[None] if isinstance(v, torch.Tensor) and v.ndim == 1 else v)
                     for k, v in tensors.items()}]
        n = first.shape[0]
        return [{k: (v[b : b + 1] if isinstance(v, torch.Tensor) and v.ndim >= 1 and v.shape[0] == n else v)
                 for k, v in tensors.items()} for b in range(n)]
    raise TypeError(f"{name}: expected items that are texts, token id tensors, mappings of model "
                    f"inputs or (inputs, targets) tuples, got {type(item).__name__}")


def named(maps: Any, name: str | None) -> Any:
    """``maps`` (an AttentionMaps) with ``name`` as its source where it has none and ``name`` is
    given: captions call a record with no source a "text sequence", which a loader's token ids
    or a labelled validation excerpt are not."""
    from attnwidget.inputs import Source

    if maps.source is not None or not name:
        return maps
    return maps.with_source(Source(kind="text", name=str(name)))
