"""AttentionMaps: the one record of attention that every later stage reads.

Extraction (``attnwidget.extract``) is the only stage that knows about models;
it produces an :class:`AttentionMaps`. Metrics, the widget and the plots read
this record and nothing else.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from attnwidget.inputs.source import Source, describe_sequence
from attnwidget.masks import padding_key_mask, visible_cells
from attnwidget.tokens import SCHEMES, Scheme, display_tokens, show_invisible

#: Largest allowed ``|row sum - 1|`` for a row that is not fully masked.
#: Softmax rows in float32 sum to 1 within ~1e-6; models run in float16 or
#: bfloat16 round each weight to 8-11 significant bits, which moves a row sum
#: by up to ~4e-3 in the worst case. 5e-3 accepts those and still rejects
#: un-normalised scores, which miss by far more.
ROW_SUM_ATOL = 5e-3

#: Largest record, in bytes of float32 weights, that extraction builds and a view shows
#: (8 GiB: a 32-layer x 32-head stack at 2048 tokens is 16 GiB). Raise it when the
#: machine has the memory; the usual remedy is to select layers and heads first.
MAX_RECORD_BYTES = 8 * 2**30
#: Largest single map, in cells, that a view shows (8192 x 8192 = 256 MiB of float32);
#: its metrics need several times that while they are computed.
MAX_MAP_CELLS = 8192 * 8192
#: Input text in a provenance line is shortened to at most this many characters, the ``…`` included
#: (the record keeps it all). The one length: the widget's caption, figure titles and the report.
CAPTION_TEXT_CHARS = 80


def average_label(n_heads: int) -> str:
    """What a head average is called wherever it is titled (provenance lines, grid panels):
    ``"head average (mean of 12 heads, not a head)"``."""
    return f"head average (mean of {n_heads} heads, not a head)"


def _size(n_bytes: float) -> str:
    return f"{n_bytes / 2**30:.1f} GiB" if n_bytes >= 2**30 else f"{n_bytes / 2**20:.1f} MiB"


def check_size(layers: int, heads: int, queries: int, keys: int, name: str,
               max_bytes: int | None = None, max_cells: int | None = None) -> None:
    """Refuse a record over :data:`MAX_RECORD_BYTES` or a map over :data:`MAX_MAP_CELLS`.

    The message names the argument, the size, the limit and how to get under it.
    ``None`` limits mean the module's current values (read at call time).
    """
    max_bytes = MAX_RECORD_BYTES if max_bytes is None else max_bytes
    max_cells = MAX_MAP_CELLS if max_cells is None else max_cells
    size = 4 * layers * heads * queries * keys
    if size > max_bytes:
        raise ValueError(
            f"{name}: {layers} layers x {heads} heads x {queries} x {keys} tokens of float32 is "
            f"{_size(size)}, more than the limit of {_size(max_bytes)} (attnwidget.maps.MAX_RECORD_BYTES); "
            "select layers and heads first, e.g. maps.select(layers=[0, 5], heads=[2, 3]) "
            "or raw weights[[0, 5]][:, [2, 3]], or raise the limit if the machine has the memory"
        )
    if queries * keys > max_cells:
        raise ValueError(
            f"{name}: one map is {queries} x {keys} = {queries * keys:,} cells, more than the limit "
            f"of {max_cells:,} (attnwidget.maps.MAX_MAP_CELLS, 8192 x 8192); show a window of "
            "the tokens, e.g. AttentionView.from_tensor(w[..., :8192, :8192])"
        )


def _as_float32_tensor(weights: Any, name: str) -> torch.Tensor:
    if isinstance(weights, torch.Tensor):
        t = weights.detach()
    elif isinstance(weights, np.ndarray):
        if weights.dtype.kind not in "fiub":
            raise TypeError(f"{name}: expected a numeric array, got dtype {weights.dtype}")
        t = torch.from_numpy(np.ascontiguousarray(weights))
    else:
        raise TypeError(
            f"{name}: expected a torch.Tensor or numpy.ndarray, got {type(weights).__name__}"
        )
    if t.is_complex():
        raise TypeError(f"{name}: expected real values, got dtype {t.dtype}")
    # float16/bfloat16/float64 and integer arrays all become float32 (the record's one dtype)
    return t.to(device="cpu", dtype=torch.float32).contiguous()


def _bool_vector(value: Any, length: int, name: str) -> np.ndarray:
    if value is None:
        return np.zeros(length, dtype=bool)
    arr = np.asarray(value.cpu() if isinstance(value, torch.Tensor) else value)
    if arr.shape != (length,):
        raise ValueError(f"{name}: expected a boolean vector of length {length}, got shape {arr.shape}")
    if arr.dtype != bool:
        if not np.isin(arr, (0, 1)).all():
            raise ValueError(f"{name}: expected booleans (or 0/1), got values {np.unique(arr)[:5]}")
        arr = arr.astype(bool)
    arr = arr.copy()
    arr.flags.writeable = False
    return arr


def _token_tuple(tokens: Any, length: int, name: str) -> tuple[str, ...]:
    if isinstance(tokens, str):
        raise TypeError(f"{name}: expected a sequence of token strings, got one str")
    try:
        out = tuple(tokens)
    except TypeError:
        raise TypeError(f"{name}: expected a sequence of strings, got {type(tokens).__name__}") from None
    bad = [t for t in out if not isinstance(t, str)]
    if bad:
        raise TypeError(f"{name}: expected strings, got {type(bad[0]).__name__} {bad[0]!r}")
    if len(out) != length:
        raise ValueError(
            f"{name}: expected {length} tokens to match the weights' {name.split('_')[0]} axis, "
            f"got {len(out)}"
        )
    return out


def _locate(layer: int, mask: torch.Tensor) -> str:
    head, query = (int(i) for i in mask.nonzero()[0][:2])
    return f"layer {layer}, head {head}, query {query}"


class AttentionMaps:
    """Attention weights of one sequence, for every layer and head, with their tokens.

    Attributes
    ----------
    weights : torch.Tensor
        float32, CPU, ``[layer, head, query_pos, key_pos]`` (also accepted as a
        sequence of per-layer ``[head, query_pos, key_pos]`` tensors, kept
        without copying); each row is a
        probability distribution over keys (sums to 1 within
        :data:`ROW_SUM_ATOL`) or, for a fully masked row, all zeros.
    query_tokens, key_tokens : tuple[str, ...]
        Raw tokens as the tokenizer wrote them (``Ġcat``, ``##s``), length Q and K.
    query_display, key_display : tuple[str, ...]
        Readable forms (see :mod:`attnwidget.tokens`). Plain text, never HTML.
    layer_names, head_names : tuple[str, ...]
        One name per layer (L) and per head (H).
    model_name, text : str or None
        Provenance: what produced the weights and from which input.
    causal : bool
        True when no query attends to a later key (inferred from the weights
        when not given: every weight above the diagonal is exactly 0).
    query_padding, key_padding : numpy bool ``[Q]``, ``[K]``
        Positions that are padding or masked for every row.
    empty_rows : torch.Tensor
        bool ``[layer, head, query_pos]``: rows where every key was masked.
        Naive softmax gives NaN there (0/0); the record stores zeros and this flag.
    averaged_heads : tuple[int, ...] or None
        Set when the record is a head *average* (see :meth:`head_mean`): the
        heads that were averaged. Averages hide per-head patterns; say so when showing one.
    source : attnwidget.inputs.Source or None
        Where the sequence came from (text, a dataset's validation window, random
        tokens; index, seed, ``seq_len``, whether the diagonal was masked), see
        :mod:`attnwidget.inputs`; a mapping of its fields is accepted. Kept by
        :meth:`select` and :meth:`head_mean`, saved by :meth:`save`; :meth:`caption` quotes it.

    Validation (``ValueError``/``TypeError`` naming the argument): rank must be
    4; token counts must match; no negative weights; no NaN or inf outside
    fully masked rows (a row that is all NaN is taken as fully masked); every
    other row sums to 1 within :data:`ROW_SUM_ATOL`.
    """

    def __init__(
        self,
        weights: torch.Tensor | np.ndarray,
        query_tokens: Sequence[str],
        key_tokens: Sequence[str] | None = None,
        *,
        layer_names: Sequence[str] | None = None,
        head_names: Sequence[str] | None = None,
        model_name: str | None = None,
        text: str | None = None,
        causal: bool | None = None,
        query_padding: Any = None,
        key_padding: Any = None,
        token_scheme: Scheme | None = None,
        special_tokens: Sequence[str] = (),
        query_display: Sequence[str] | None = None,
        key_display: Sequence[str] | None = None,
        averaged_heads: Sequence[int] | None = None,
        source: Source | dict[str, Any] | None = None,
    ) -> None:
        layers, stacked = self._layers_of(weights)
        H, Q, K = layers[0].shape
        L = len(layers)
        if min(L, H, Q, K) == 0:
            raise ValueError(
                f"weights: every axis needs at least one entry, got shape {(L, H, Q, K)}"
            )
        self._layers, self._empty_rows = self._validate_rows(layers)
        if stacked is not None and any(a is not b for a, b in zip(self._layers, layers, strict=True)):
            stacked = None  # a layer was repaired (NaN rows -> 0): restack from the repaired copies
        self._stack = stacked

        self.query_tokens = _token_tuple(query_tokens, Q, "query_tokens")
        self.key_tokens = (
            self.query_tokens if key_tokens is None and Q == K
            else _token_tuple(key_tokens if key_tokens is not None else (), K, "key_tokens")
        )
        # Display forms are built on first use: at 512 tokens they cost ~0.5 ms,
        # a visible share of an extraction that may never show them.
        if token_scheme is not None and token_scheme not in SCHEMES:
            raise ValueError(f"token_scheme: expected one of {SCHEMES} or None, got {token_scheme!r}")
        self._token_scheme = token_scheme
        self._special_tokens = tuple(special_tokens)
        self._query_display = (
            None if query_display is None else _token_tuple(query_display, Q, "query_display")
        )
        self._key_display = None if key_display is None else _token_tuple(key_display, K, "key_display")

        self.layer_names = _token_tuple(
            layer_names if layer_names is not None else [f"layer {i}" for i in range(L)],
            L, "layer_names",
        )
        self.head_names = _token_tuple(
            head_names if head_names is not None else [f"head {i}" for i in range(H)],
            H, "head_names",
        )
        self.model_name = model_name
        self.text = text
        self.query_padding = _bool_vector(query_padding, Q, "query_padding")
        self.key_padding = _bool_vector(key_padding, K, "key_padding")
        self.causal = self._looks_causal(self._layers) if causal is None else bool(causal)
        self.averaged_heads = None if averaged_heads is None else tuple(int(h) for h in averaged_heads)
        self.source = source if source is None or isinstance(source, Source) else Source.from_dict(source)

    @property
    def query_display(self) -> tuple[str, ...]:
        """Readable query tokens (markers such as ``Ġ``/``##`` resolved), one per query."""
        if self._query_display is None:
            self._fill_display()
        return self._query_display

    @property
    def key_display(self) -> tuple[str, ...]:
        """Readable key tokens, one per key."""
        if self._key_display is None:
            self._fill_display()
        return self._key_display

    def _fill_display(self) -> None:
        same = self.key_tokens is self.query_tokens
        shown = display_tokens(
            self.query_tokens + (() if same else self.key_tokens), self._token_scheme, self._special_tokens
        )
        Q = len(self.query_tokens)
        if self._query_display is None:
            self._query_display = shown[:Q]
        if self._key_display is None:
            self._key_display = shown[:Q] if same else shown[Q:]

    # ----------------------------------------------------------------- validation
    @staticmethod
    def _layers_of(weights: Any) -> tuple[list[torch.Tensor], torch.Tensor | None]:
        """Per-layer float32 ``[H, Q, K]`` tensors (views where possible) and the stack if given."""
        if isinstance(weights, (list, tuple)):
            if not weights:
                raise ValueError("weights: expected at least one layer, got an empty sequence")
            layers = [_as_float32_tensor(w, f"weights[{i}]") for i, w in enumerate(weights)]
            for i, w in enumerate(layers):
                if w.ndim == 3 and 0 in w.shape:
                    raise ValueError(
                        f"weights[{i}]: every axis needs at least one entry, got shape {tuple(w.shape)}"
                    )
                if w.ndim != 3 or w.shape != layers[0].shape:
                    raise ValueError(
                        f"weights[{i}]: expected [heads, queries, keys] like layer 0's "
                        f"{tuple(layers[0].shape)}, got shape {tuple(w.shape)}"
                    )
            return layers, None
        w = _as_float32_tensor(weights, "weights")
        if w.ndim != 4:
            raise ValueError(
                "weights: expected a 4-D array [layers, heads, queries, keys], "
                f"got {w.ndim}-D with shape {tuple(w.shape)} "
                "(use AttentionMaps.from_tensor for [Q,K] or [H,Q,K])"
            )
        if 0 in w.shape:
            raise ValueError(
                f"weights: every axis needs at least one entry, got shape {tuple(w.shape)}"
            )
        return list(w.unbind(0)), w

    @staticmethod
    def _validate_rows(
        layers: list[torch.Tensor],
    ) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
        """Check every row; return the layers (NaN rows zeroed) and empty-row flags ``[L, H, Q]``."""
        # Fast path first: finite row sums imply no NaN/inf anywhere, and a
        # non-negative minimum rules out negatives, so a clean stack costs two
        # reductions per layer and no extra memory of its size.
        sums = torch.stack([w.sum(dim=-1) for w in layers])  # [L, H, Q]
        lowest = torch.stack([w.amin() for w in layers])  # [L]
        # NaN compares False, so this one test also rules out NaN/inf rows
        if bool((sums - 1).abs().le(ROW_SUM_ATOL).all()) and float(lowest.min()) >= 0:
            return tuple(layers), torch.zeros(sums.shape, dtype=torch.bool)
        if not torch.isfinite(sums).all():
            layers = list(layers)
            for i, w in enumerate(layers):
                if torch.isfinite(sums[i]).all():
                    continue
                all_nan = torch.isnan(w).all(dim=-1)
                bad = ~torch.isfinite(w) & ~all_nan.unsqueeze(-1)
                if bad.any():
                    raise ValueError(
                        f"weights: non-finite values (NaN or inf) at {_locate(i, bad.any(-1))}; "
                        "expected finite values except in fully masked rows (all NaN)"
                    )
                layers[i] = torch.nan_to_num(w, nan=0.0)
                sums[i] = layers[i].sum(dim=-1)
                lowest[i] = layers[i].amin()
        if (lowest < 0).any():
            i = int((lowest < 0).nonzero()[0])
            raise ValueError(
                f"weights: negative value {float(lowest[i]):.4g} at "
                f"{_locate(i, (layers[i] < 0).any(-1))}; "
                "expected probabilities >= 0 (softmax output, not scores)"
            )
        empty = sums == 0
        error = (sums - 1).abs()
        off = (error > ROW_SUM_ATOL) & ~empty
        if off.any():
            i = int(off.any(-1).any(-1).nonzero()[0])
            worst = float(error.masked_fill(~off, 0).max())
            raise ValueError(
                f"weights: rows must sum to 1 (within {ROW_SUM_ATOL}), but the row at "
                f"{_locate(i, off[i])} is off by up to {worst:.4g}; pass softmax probabilities, "
                "not scores (attnwidget.scratch or torch.softmax normalise them)"
            )
        return tuple(layers), empty

    @staticmethod
    def _looks_causal(layers: Sequence[torch.Tensor], block: int = 64) -> bool:
        """True when every weight above the diagonal is exactly 0 (square maps, Q > 1).

        Walks the upper triangle in row blocks: the rectangle right of each
        block's diagonal square is read through a view (no copy); only the
        small diagonal squares are copied by ``triu``. Stops at the first nonzero.
        """
        Q, K = layers[0].shape[-2:]
        if Q != K or Q < 2:
            return False
        for w in layers:
            for r0 in range(0, Q, block):
                r1 = min(r0 + block, Q)
                if w[:, r0:r1, r1:].any() or w[:, r0:r1, r0:r1].triu(1).any():
                    return False
        return True

    # ----------------------------------------------------------------- accessors
    @property
    def weights(self) -> torch.Tensor:
        """float32 ``[layer, head, query_pos, key_pos]`` (read it, do not write it).

        Extraction keeps each layer as the model returned it (no copy); the
        contiguous stack is built on first access, and the layers then become
        views into it, so the stack is held in memory once.
        """
        if self._stack is None:
            self._stack = torch.stack(self._layers)
            self._layers = tuple(self._stack.unbind(0))
        return self._stack

    @property
    def empty_rows(self) -> torch.Tensor:
        """bool ``[layer, head, query_pos]``: fully masked rows, stored as zeros."""
        return self._empty_rows

    def visible_cells(self) -> np.ndarray:
        """bool ``[query_pos, key_pos]``: cells the record's masking leaves visible.

        False where the key or the query is padding, and above the causal
        diagonal (aligned at the last key) when the record is causal.
        """
        return visible_cells(self.query_padding, self.key_padding, bool(self.causal))

    def key_mask(self) -> torch.Tensor | None:
        """bool ``[query_pos, key_pos]``: False on padded keys; None when nothing is padded."""
        return padding_key_mask(self.key_padding, self.shape[2])

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """``(layers, heads, queries, keys)``."""
        H, Q, K = self._layers[0].shape
        return len(self._layers), int(H), int(Q), int(K)

    @property
    def n_layers(self) -> int:
        return self.shape[0]

    @property
    def n_heads(self) -> int:
        return self.shape[1]

    @property
    def is_average(self) -> bool:
        """True when the heads axis holds a head average, not real heads."""
        return self.averaged_heads is not None

    def __repr__(self) -> str:
        L, H, Q, K = self.shape
        kind = f", average of heads {list(self.averaged_heads)}" if self.is_average else ""
        return (
            f"AttentionMaps(layers={L}, heads={H}, queries={Q}, keys={K}, "
            f"model={self.model_name!r}, causal={self.causal}{kind})"
        )

    def _check_index(self, value: int, name: str, size: int) -> int:
        """``value`` as an index in ``0..size-1``; negative values count from the end, as in Python."""
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise TypeError(
                f"{name}: expected an int in 0..{size - 1} (or -{size}..-1 from the end), "
                f"got {type(value).__name__}"
            )
        if not -size <= value < size:
            raise IndexError(f"{name}: expected 0..{size - 1} (or -{size}..-1 from the end), got {value}")
        return int(value) % size

    def save(self, path: Any) -> Any:
        """Write the record to one file (weights, masks, tokens, provenance); see :mod:`attnwidget.store`.

        ``AttentionMaps.load(path)`` gives it back on any machine, without the model.
        Returns the path.
        """
        from attnwidget.store import save_maps

        return save_maps(self, path)

    @classmethod
    def load(cls, path: Any) -> AttentionMaps:
        """Read a record written by :meth:`save` (validated; a damaged file raises ValueError naming it)."""
        from attnwidget.store import load_maps

        return load_maps(path)

    def layer(self, layer: int) -> np.ndarray:
        """One layer's heads as numpy float32 ``[head, query_pos, key_pos]`` (a view); ``-1`` is the last."""
        layer = self._check_index(layer, "layer", self.n_layers)
        return self._layers[layer].numpy()

    def head(self, layer: int, head: int) -> np.ndarray:
        """One head's map as numpy float32 ``[query_pos, key_pos]`` (a view); negatives count from the end."""
        layer = self._check_index(layer, "layer", self.n_layers)
        head = self._check_index(head, "head", self.n_heads)
        return self._layers[layer][head].numpy()

    def to_numpy(self) -> np.ndarray:
        """The whole stack as numpy float32 ``[layer, head, query_pos, key_pos]`` (a view)."""
        return self.weights.numpy()

    def _replace(self, weights: Any, **changes: Any) -> AttentionMaps:
        fields: dict[str, Any] = {
            "query_tokens": self.query_tokens, "key_tokens": self.key_tokens,
            "query_display": self.query_display, "key_display": self.key_display,
            "layer_names": self.layer_names, "head_names": self.head_names,
            "model_name": self.model_name, "text": self.text, "causal": self.causal,
            "query_padding": self.query_padding, "key_padding": self.key_padding,
            "averaged_heads": self.averaged_heads, "source": self.source,
        }
        fields.update(changes)
        return AttentionMaps(weights, **fields)

    def _sharing_layers(self, other: AttentionMaps, layers: range) -> AttentionMaps:
        """This record with ``other``'s layers (the same tensors, not copies) at ``layers``.
        Both records were checked when made, so only their shapes are compared here. For an
        ablated re-run, whose layers up to the first ablated one are the original's: sharing
        them lets the view keep what it computed from them
        (:meth:`attnwidget._panels.PanelStore.replace`)."""
        import copy

        if other.shape != self.shape:
            raise ValueError(f"other: expected a record of shape {self.shape}, got {other.shape}")
        out = copy.copy(self)
        own = list(self._layers)
        rows = self._empty_rows.clone()
        for i in layers:
            own[i] = other._layers[i]
            rows[i] = other._empty_rows[i]
        out._layers, out._empty_rows, out._stack = tuple(own), rows, None
        return out

    def shares_layer(self, other: AttentionMaps, layer: int) -> bool:
        """Whether ``layer`` is the very same memory in both records (so, the same numbers)."""
        layer = self._check_index(layer, "layer", self.n_layers)
        if other.shape != self.shape:
            return False
        a, b = self._layers[layer], other._layers[layer]
        return (a.data_ptr() == b.data_ptr() and a.shape == b.shape and a.stride() == b.stride()
                and a.dtype == b.dtype)

    def with_source(self, source: Source | dict[str, Any] | None, text: str | None = None) -> AttentionMaps:
        """A new record with ``source`` (and ``text``, when given) as its provenance; weights shared."""
        return self._replace(list(self._layers), source=source, **({} if text is None else {"text": text}))

    def caption(self, layer: int | None = None, head: int | None = None) -> str:
        """002's caption: ``"layer 0, head 2 on <source> sequence: '<first 50 characters>…' (128 tokens)"``.

        ``layer``/``head`` name the map (either may be left out; negatives count
        from the end); with no head, a head average says so. The source comes from
        :attr:`source` ("text sequence" when unknown), the characters from
        :attr:`text`, the count is the number of query tokens, and a masked diagonal
        is stated. Plain text (invisible characters named), for titles and captions.
        """
        parts = [] if layer is None else [self.layer_names[self._check_index(layer, "layer", self.n_layers)]]
        head = None if head is None else self._check_index(head, "head", self.n_heads)
        if head is not None or self.is_average:
            parts.append(self._what(head))
        who = ", ".join(parts) if parts else "attention"
        return show_invisible(who) + " on " + describe_sequence(self.source, self.text, self.shape[2])

    def _what(self, head: int | None) -> str:
        """The head's name, or :func:`average_label` for the layer's head mean (``head=None``) and
        for a record of head averages (:attr:`is_average`)."""
        if self.is_average:
            return average_label(len(self.averaged_heads or ()))
        return average_label(self.n_heads) if head is None else self.head_names[head]

    def masking(self) -> str:
        """What hides cells of every map: ``"causal mask, 3 padded keys"`` or ``"no causal mask"``."""
        masking = "causal mask" if self.causal else "no causal mask"
        padded = int(np.asarray(self.key_padding).sum())
        if padded:
            masking += f", {padded} padded key{'s' if padded != 1 else ''}"
        return masking

    def provenance(self, layer: int, head: int | None = None, *, rollout: bool = False,
                   what: str | None = None, text_chars: int = CAPTION_TEXT_CHARS) -> str:
        """The one provenance line of a map, as the widget, figures and report title it.

        ``"<model> · <layer> · <what> · <masking> · “<text>”"``, or with a known
        :attr:`source` ``"<model> · <layer> · <what> on <sequence> · <masking>"``.
        ``what`` is the head's name, or with ``head=None`` the layer's head mean
        (:func:`average_label`, as is every head of a head-average record), or with
        ``rollout=True`` the rollout up to the layer (``what`` overrides these
        labels); masking is :meth:`masking`. The text is cut to at most
        ``text_chars`` characters, ``…`` included; invisible and bidi characters
        are named.
        """
        if what is None and rollout:
            what = "attention rollout to here (all heads averaged, residual 0.5)"
        elif what is None:
            what = self._what(head)
        model = f"{self.model_name or 'unknown model'} · {self.layer_names[layer]}"
        if self.source is not None:  # 002's form: which head on which sequence, and its length
            sequence = describe_sequence(self.source, self.text, self.shape[2], chars=text_chars - 1)
            return show_invisible(f"{model} · {what} on {sequence} · {self.masking()}")
        text = show_invisible(self.text or "")
        if len(text) > text_chars:
            text = text[: text_chars - 1] + "…"
        # names are caller data too: no bidi control may reorder the line
        return show_invisible(f"{model} · {what} · {self.masking()}" + (f" · “{text}”" if text else ""))

    def select(
        self, layers: Sequence[int] | int | None = None, heads: Sequence[int] | int | None = None
    ) -> AttentionMaps:
        """A new record with only the given layers and/or heads (names kept; negative indices allowed)."""
        def pick(sel: Any, size: int, name: str) -> list[int]:
            if sel is None:
                return list(range(size))
            items = [sel] if isinstance(sel, (int, np.integer)) else list(sel)
            if not items:
                raise ValueError(f"{name}: expected at least one index, got none")
            return [self._check_index(i, name, size) for i in items]

        li = pick(layers, self.n_layers, "layers")
        hi = pick(heads, self.n_heads, "heads")
        w = [self._layers[i][hi] for i in li]
        return self._replace(
            w,
            layer_names=[self.layer_names[i] for i in li],
            head_names=[self.head_names[i] for i in hi],
        )

    def head_mean(self, heads: Sequence[int] | None = None) -> AttentionMaps:
        """The mean over heads, per layer, as a record with one "head" ``[L, 1, Q, K]``.

        This is an AVERAGE, not a head: sharp per-head patterns (previous
        token, induction) blur together in it. The result says so in its
        head name and in :attr:`averaged_heads`.
        """
        hi = list(range(self.n_heads)) if heads is None else [
            self._check_index(h, "heads", self.n_heads) for h in heads
        ]
        if not hi:
            raise ValueError("heads: expected at least one head to average, got none")
        w = [layer[hi].mean(dim=0, keepdim=True) for layer in self._layers]
        return self._replace(w, head_names=[f"mean of {len(hi)} heads"], averaged_heads=hi)

    @classmethod
    def from_tensor(
        cls,
        weights: torch.Tensor | np.ndarray,
        tokens: Sequence[str] | None = None,
        key_tokens: Sequence[str] | None = None,
        **kwargs: Any,
    ) -> AttentionMaps:
        """Build from ``[Q,K]``, ``[H,Q,K]`` or ``[L,H,Q,K]``; tokens default to positions."""
        w = _as_float32_tensor(weights, "weights")
        if w.ndim not in (2, 3, 4):
            raise ValueError(
                "weights: expected [Q,K], [H,Q,K] or [L,H,Q,K], "
                f"got {w.ndim}-D with shape {tuple(w.shape)}"
            )
        while w.ndim < 4:
            w = w.unsqueeze(0)
        Q, K = w.shape[-2:]
        if tokens is None:
            tokens = [str(i) for i in range(Q)]
        if key_tokens is None and Q != K:
            key_tokens = [str(i) for i in range(K)]
        return cls(w, tokens, key_tokens, **kwargs)
