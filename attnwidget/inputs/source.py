"""The provenance of a sequence (:class:`Source`), one sequence ready for a model (:class:`Sample`),
the caption text of handout 002, and the errors of bad input."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

MODES = ("text", "validation", "random")
UNITS = ("window", "document")
#: A caption quotes this many characters of the sequence (002: "the decoded text (first 50 chars)").
EXCERPT_CHARS = 50


class InputError(ValueError):
    """A bad input-source argument; the message is one line naming the argument."""


class DatasetNotFoundError(InputError, FileNotFoundError):
    """The dataset path does not exist (an :class:`InputError` and a ``FileNotFoundError``)."""


# --------------------------------------------------------------------------- the record
@dataclasses.dataclass(frozen=True)
class Source:
    """What a sequence is: kept in :attr:`attnwidget.AttentionMaps.source` and quoted in captions.

    ``kind``: ``"text"``, ``"validation"`` or ``"random"``. ``name``: how captions
    call the source (a dataset's name, e.g. ``"WikiText-103"``, or a file name).
    ``dataset``: the dataset's path, or a description of an in-memory one.
    ``index``: the window (or document) index, or the random sample's index.
    ``seed``: the random seed (random mode). ``seq_len``: tokens the model saw,
    special tokens included. ``unit``: ``"window"`` or ``"document"`` (validation).
    ``diagonal_masked``: the model was run with each token's attention to itself
    masked (002's models do this; none of attnwidget's embedded ones do).
    """

    kind: str = "text"
    name: str | None = None
    dataset: str | None = None
    index: int | None = None
    seed: int | None = None
    seq_len: int | None = None
    unit: str | None = None
    diagonal_masked: bool = False

    def __post_init__(self) -> None:
        if self.kind not in MODES:
            raise InputError(f"source.kind: expected one of {MODES}, got {self.kind!r}")
        if self.unit is not None and self.unit not in UNITS:
            raise InputError(f"source.unit: expected one of {UNITS} or None, got {self.unit!r}")
        for field in ("name", "dataset"):
            value = getattr(self, field)
            if value is not None and not isinstance(value, str):
                raise InputError(f"source.{field}: expected a str or None, got {type(value).__name__}")
        for field in ("index", "seed", "seq_len"):
            value = getattr(self, field)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer))):
                raise InputError(f"source.{field}: expected an int or None, got {type(value).__name__}")
            if value is not None:
                object.__setattr__(self, field, int(value))
        object.__setattr__(self, "diagonal_masked", bool(self.diagonal_masked))

    def phrase(self) -> str:
        """The source as 002's captions name it, e.g. ``"WikiText-2 validation sequence (window 3)"``."""
        if self.kind == "validation":
            where = "" if self.index is None else f" ({self.unit or 'window'} {self.index})"
            return f"{self.name or 'dataset'} validation sequence{where}"
        if self.kind == "random":
            bits = ([] if self.seed is None else [f"seed {self.seed}"]) + (
                [f"sample {self.index}"] if self.index else [])
            return "random sequence" + (f" ({', '.join(bits)})" if bits else "")
        return f"{self.name} sequence" if self.name else "text sequence"

    def describe(self, text: str | None, n_tokens: int) -> str:
        """``"<source> sequence: '<first 50 characters>…' (N tokens)"``, plus the masking when set.

        Plain text with invisible characters named (:func:`attnwidget.tokens.show_invisible`);
        whitespace runs show as one space, so the caption stays on one line.
        """
        return describe_sequence(self, text, n_tokens)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every field (what :mod:`attnwidget.store` writes)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], name: str = "source") -> Source:
        """The inverse of :meth:`to_dict`; unknown keys raise InputError naming ``name``."""
        if not isinstance(data, Mapping):
            raise InputError(
                f"{name}: expected a Source or a mapping of its fields, got {type(data).__name__}"
            )
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InputError(f"{name}: unknown fields {unknown}; expected some of {sorted(known)}")
        return cls(**data)


def excerpt(text: str | None, chars: int = EXCERPT_CHARS) -> str:
    """The first ``chars`` characters of ``text`` on one line (whitespace runs as one space), ``…`` if cut."""
    flat = re.sub(r"\s+", " ", text or "").strip()
    return flat if len(flat) <= chars else flat[:chars].rstrip() + "…"


def describe_sequence(source: Source | None, text: str | None, n_tokens: int,
                      chars: int = EXCERPT_CHARS) -> str:
    """``"<source> sequence: '<excerpt>' (N tokens)"`` for any record; no source reads "text sequence".

    The excerpt is the text's first ``chars`` characters (:func:`excerpt`)."""
    from attnwidget.tokens import show_invisible

    source = source or Source()
    quoted = f": '{excerpt(text, chars)}'" if text else ""
    masked = "; self-attention (diagonal) masked" if source.diagonal_masked else ""
    count = f"{n_tokens} token{'s' if n_tokens != 1 else ''}"
    return show_invisible(f"{source.phrase()}{quoted} ({count}){masked}")


@dataclasses.dataclass(frozen=True)
class Sample:
    """One sequence ready for the model.

    ``input_ids``: int64 ``[seq]``, special tokens included (what the model sees);
    ``text``: the given text, or the decoded tokens of a window or random draw
    (what captions quote); ``source``: where it came from.
    """

    input_ids: torch.Tensor
    text: str
    source: Source

    def __len__(self) -> int:
        return int(self.input_ids.shape[-1])


