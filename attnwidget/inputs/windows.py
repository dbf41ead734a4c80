"""Token windows of a dataset for one tokenizer, and the checks on ``seq_len`` against the model."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from attnwidget.inputs.datasets import TextDataset
from attnwidget.inputs.source import UNITS, InputError, Sample, Source

#: ``seq_len`` when none is given (002's examples use 128), capped at what the model takes.
DEFAULT_SEQ_LEN = 128
#: Records tokenized per call: a fast tokenizer batches them natively; the bound keeps lists small.
_TOKENIZE_CHUNK = 1000


class _Tokens:
    """The little a source needs from a tokenizer: encode without specials, add them, decode, vocabulary.

    transformers tokenizers and the tiny model's ``CharTokenizer`` (``encode``/``decode``,
    no special tokens) both fit. Where a transformers tokenizer puts its special
    tokens is read off one probe text encoded with and without them (transformers
    5 dropped ``build_inputs_with_special_tokens`` from fast tokenizers):
    ``[CLS] ... [SEP]`` for BERT, ``<s> ...`` for Llama, nothing for GPT-2.
    """

    _PROBE = "attention heads"

    def __init__(self, tokenizer: Any) -> None:
        if tokenizer is None:
            raise InputError(
                "tokenizer: needed to turn a source into tokens, got None; pass the model's "
                "tokenizer (e.g. from attnwidget.models.load_minilm())"
            )
        self.tok = tokenizer
        self.hf = hasattr(tokenizer, "num_special_tokens_to_add") and callable(tokenizer)
        if not self.hf and not (hasattr(tokenizer, "encode") and hasattr(tokenizer, "decode")):
            raise InputError(
                f"tokenizer: a {type(tokenizer).__name__} has neither a transformers interface nor "
                "encode/decode; expected a transformers tokenizer or a CharTokenizer"
            )
        self.prefix: list[int] = []
        self.suffix: list[int] = []
        if self.hf:
            bare = list(tokenizer(self._PROBE, add_special_tokens=False)["input_ids"])
            full = list(tokenizer(self._PROBE, add_special_tokens=True)["input_ids"])
            starts = [i for i in range(len(full) - len(bare) + 1) if full[i : i + len(bare)] == bare]
            if not bare or not starts:
                raise InputError(
                    f"tokenizer: cannot tell where {type(tokenizer).__name__} puts its special tokens "
                    f"({bare} without them, {full} with them)"
                )
            self.prefix, self.suffix = full[: starts[0]], full[starts[0] + len(bare) :]
        self.n_special = len(self.prefix) + len(self.suffix)

    def encode_many(self, texts: Sequence[str], name: str = "dataset") -> list[list[int]]:
        out: list[list[int]] = []
        for start in range(0, len(texts), _TOKENIZE_CHUNK):
            chunk = list(texts[start : start + _TOKENIZE_CHUNK])
            if self.hf:
                # verbose=False: records longer than the model are expected here (they are windowed)
                out.extend(self.tok(chunk, add_special_tokens=False, verbose=False)["input_ids"])
                continue
            for i, text in enumerate(chunk):
                try:
                    out.append(list(self.tok.encode(text)))
                except ValueError as exc:
                    raise InputError(f"{name}: record {start + i} cannot be tokenized: {exc}") from None
        return out

    def wrap(self, ids: Sequence[int]) -> list[int]:
        return [*self.prefix, *(int(i) for i in ids), *self.suffix]

    def decode(self, ids: Sequence[int]) -> str:
        return str(self.tok.decode([int(i) for i in ids]))

    def size(self) -> int:
        try:
            return len(self.tok)  # transformers: the vocabulary plus added tokens
        except TypeError:
            return int(self.tok.vocab_size)

    def special_ids(self) -> set[int]:
        return {int(i) for i in (getattr(self.tok, "all_special_ids", None) or [])}


def max_tokens(model: Any, tokenizer: Any = None) -> tuple[int | None, str]:
    """The longest input ``model`` takes, and where the number comes from (None, "" when unknown).

    transformers models: their position embeddings and the tokenizer's
    ``model_max_length`` (the smaller); TransformerLens: ``cfg.n_ctx``; the tiny
    LM: ``config.max_len``; no model: the tokenizer's limit.
    """
    if model is not None:
        from attnwidget.extract.huggingface import is_hf_model, max_positions
        from attnwidget.extract.lens import is_hooked_transformer

        if is_hf_model(model):
            return max_positions(model, tokenizer)
        if is_hooked_transformer(model):
            return int(model.cfg.n_ctx), "cfg.n_ctx"
        limit = getattr(getattr(model, "config", None), "max_len", None)
        if isinstance(limit, int) and limit > 0:
            return limit, "config.max_len"
    tok_max = getattr(tokenizer, "model_max_length", None)
    if isinstance(tok_max, int) and 0 < tok_max < 1_000_000:  # "no limit" is stored as 1e30
        return tok_max, "tokenizer.model_max_length"
    return None, ""


def _model_vocab(model: Any) -> int | None:
    cfg = getattr(model, "config", None) or getattr(model, "cfg", None)
    size = getattr(cfg, "vocab_size", None) or getattr(cfg, "d_vocab", None)
    return size if isinstance(size, int) and size > 0 else None


# --------------------------------------------------------------------------- argument checks
def _int(value: Any, name: str, low: int, high: int | None, why: str = "") -> int:
    span = f"{low}..{high}" if high is not None else f">= {low}"
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise InputError(f"{name}: expected an int {span}{why}, got {type(value).__name__} {value!r}")
    if value < low or (high is not None and value > high):
        raise InputError(f"{name}: expected an int {span}{why}, got {value}")
    return int(value)


def check_seq_len(seq_len: Any, tokens: _Tokens, model: Any = None) -> int:
    """``seq_len`` (None: :data:`DEFAULT_SEQ_LEN` capped at the model's limit) as a checked int.

    At least the tokenizer's special tokens plus one content token; at most what
    the model takes (InputError naming ``seq_len``, the limit and where it comes from).
    """
    limit, where = max_tokens(model, tokens.tok)
    low = tokens.n_special + 1
    if seq_len is None:
        return DEFAULT_SEQ_LEN if limit is None else min(DEFAULT_SEQ_LEN, limit)
    why = "" if limit is None else f" (the model takes at most {limit} tokens, {where})"
    return _int(seq_len, "seq_len", low, limit, why)


# --------------------------------------------------------------------------- windows
class Windows:
    """The validation sequences of a dataset for one tokenizer: ``len(windows)`` of them, indexable.

    ``windows[i]`` is a :class:`Sample` of exactly ``seq_len`` tokens (special tokens
    included) for ``unit="window"``, at most ``seq_len`` for ``unit="document"``.
    The dataset is tokenized once, here. ``model`` (optional) bounds ``seq_len``
    by what the model takes.
    """

    def __init__(
        self,
        dataset: Any,
        tokenizer: Any,
        seq_len: int | None = None,
        *,
        unit: str = "window",
        field: str = "text",
        name: str | None = None,
        model: Any = None,
        diagonal_masked: bool = False,
    ) -> None:
        if unit not in UNITS:
            raise InputError(f"unit: expected one of {UNITS}, got {unit!r}")
        self.tokens = _Tokens(tokenizer)
        self.dataset = dataset if isinstance(dataset, TextDataset) and name is None else TextDataset(
            dataset, field=field, name=name)
        self.seq_len = check_seq_len(seq_len, self.tokens, model)
        self.unit = unit
        self.diagonal_masked = bool(diagonal_masked)
        content = self.seq_len - self.tokens.n_special
        per_record = self.tokens.encode_many(self.dataset.records)
        n_tokens = sum(len(r) for r in per_record)
        if unit == "window":
            stream = np.concatenate([np.asarray(r, dtype=np.int64) for r in per_record])
            n = len(stream) // content
            # [windows, content]: a view of the stream, each row one window's content tokens
            self._content: Any = stream[: n * content].reshape(n, content)
        else:
            self._content = [np.asarray(r[:content], dtype=np.int64) for r in per_record if r]
            n = len(self._content)
        if n == 0:
            raise InputError(
                f"dataset: {self.dataset.description!r} has {n_tokens} tokens, fewer than one window of "
                f"seq_len={self.seq_len} ({content} text tokens + {self.tokens.n_special} special); "
                "expected a longer dataset or a smaller seq_len"
            )
        self.n_tokens = n_tokens

    def __len__(self) -> int:
        return len(self._content)

    def __repr__(self) -> str:
        return (f"Windows({self.dataset.name!r}, {len(self)} {self.unit}s of "
                f"{'' if self.unit == 'window' else 'up to '}{self.seq_len} tokens)")

    def _what(self) -> str:
        return f"{self.dataset.name!r} has {len(self)} {self.unit}s of {self.seq_len} tokens"

    def check_index(self, index: Any) -> int:
        """``index`` as a checked window index (InputError naming ``index`` when past the end)."""
        n = len(self)
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
            raise InputError(f"index: expected an int in 0..{n - 1}, got {type(index).__name__} {index!r}")
        if not 0 <= index < n:
            raise InputError(f"index: got {index}, but {self._what()}; expected 0..{n - 1}")
        return int(index)

    def check_range(self, index: Any, num_samples: Any) -> range:
        """The windows ``index .. index + num_samples - 1``, checked (errors name the argument)."""
        index = self.check_index(index)
        n = len(self)
        if isinstance(num_samples, bool) or not isinstance(num_samples, (int, np.integer)):
            raise InputError(f"num_samples: expected an int in 1..{n - index}, got "
                             f"{type(num_samples).__name__} {num_samples!r}")
        if not 1 <= num_samples <= n - index:
            raise InputError(
                f"num_samples: got {num_samples} from index {index}, but {self._what()}; "
                f"expected 1..{n - index}"
            )
        return range(index, index + int(num_samples))

    def content_ids(self, i: int) -> np.ndarray:
        """Window ``i``'s tokens without special tokens, int64 ``[c]``."""
        return self._content[self.check_index(i)]

    def ids(self, i: int) -> torch.Tensor:
        """Window ``i`` as the model sees it: int64 ``[seq]``, special tokens included."""
        return torch.tensor(self.tokens.wrap(self.content_ids(i).tolist()), dtype=torch.int64)

    def source(self, i: int) -> Source:
        """The :class:`Source` of window ``i``."""
        return Source(kind="validation", name=self.dataset.name, dataset=self.dataset.description,
                      index=self.check_index(i), seq_len=int(self.ids(i).shape[0]), unit=self.unit,
                      diagonal_masked=self.diagonal_masked)

    def __getitem__(self, i: int) -> Sample:
        return Sample(self.ids(i), self.tokens.decode(self.content_ids(i)), self.source(i))

    def fingerprint(self) -> str:
        """SHA-256 over every window's token ids, the unit and the special tokens: equal iff same inputs."""
        h = hashlib.sha256(f"{self.unit}:{self.seq_len}:{self.tokens.wrap([])}".encode())
        if self.unit == "window":
            h.update(np.ascontiguousarray(self._content).tobytes())
        else:
            for doc in self._content:
                h.update(len(doc).to_bytes(8, "little"))
                h.update(doc.tobytes())
        return h.hexdigest()


