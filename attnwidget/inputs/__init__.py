"""Where a sequence comes from: a text, a window of a dataset, or random tokens (the modes of handout 002).

A figure of attention is only as good as what it says about its input. This
module turns the three input modes of the per-head guide into token ids plus a
:class:`Source` record that travels with the extracted :class:`~attnwidget.AttentionMaps`
(``maps.source``) and ends up in every caption:

* ``text``: the text you give (as ``extract_attention`` takes it today);
* ``validation``: window ``index`` of ``seq_len`` tokens from a dataset: a local
  text file, a JSON-lines file, a list of strings, or a ``datasets.Dataset``
  you loaded (recognised by its ``column_names``; attnwidget does not depend on
  ``datasets``). Records are tokenized without special tokens and concatenated;
  window ``i`` holds content tokens ``[i * c, (i + 1) * c)`` with ``c = seq_len``
  minus the tokenizer's special tokens, which are then added, so the model sees
  exactly ``seq_len`` tokens. A partial last window is dropped, as language-model
  data loaders do. ``unit="document"`` takes record ``i`` instead (its first
  ``c`` tokens), for corpora whose records are sequences of their own;
* ``random``: ``seq_len`` token ids drawn uniformly from the tokenizer's
  vocabulary (special tokens left out, then added as for any input), from
  ``numpy.random.default_rng([seed, index])``: the same ids for the same seed and
  index on every machine. For debugging only, as 002 says: random tokens show
  what a head does without language.

:func:`load_samples` is the one call behind every mode (``mode``, ``dataset``,
``seq_len``, ``index``, ``seed``, ``num_samples``, as the report's options name
them); :func:`extract_sample` runs the model on one :class:`Sample` and
returns the record with its source. Bad input raises :class:`InputError`
(a ``ValueError``) with one line that names the argument, what it got and what
it expects; a missing dataset file raises :class:`DatasetNotFoundError`, which
is also a ``FileNotFoundError``.

This module imports no model code at load time (the record imports :class:`Source`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from attnwidget.inputs.datasets import JSONL_SUFFIXES, TextDataset, reference_manual
from attnwidget.inputs.source import (
    EXCERPT_CHARS,
    MODES,
    UNITS,
    DatasetNotFoundError,
    InputError,
    Sample,
    Source,
    describe_sequence,
    excerpt,
)
from attnwidget.inputs.windows import (
    DEFAULT_SEQ_LEN,
    Windows,
    _int,
    _model_vocab,
    _Tokens,
    check_seq_len,
    max_tokens,
)

if TYPE_CHECKING:
    from attnwidget.maps import AttentionMaps

__all__ = [
    "DEFAULT_SEQ_LEN",
    "EXCERPT_CHARS",
    "JSONL_SUFFIXES",
    "MODES",
    "UNITS",
    "DatasetNotFoundError",
    "InputError",
    "Sample",
    "Source",
    "TextDataset",
    "Windows",
    "check_seq_len",
    "describe_sequence",
    "excerpt",
    "extract_sample",
    "extract_samples",
    "find_tokenizer",
    "load_samples",
    "max_tokens",
    "random_sample",
    "reference_manual",
    "resolve",
    "text_sample",
]


def text_sample(tokenizer: Any, text: str, *, seq_len: int | None = None, model: Any = None,
                name: str | None = None, diagonal_masked: bool = False) -> Sample:
    """The given text as a :class:`Sample`; ``seq_len`` (optional) keeps its first ``seq_len`` tokens.

    Without ``seq_len``, a text longer than the model takes raises InputError naming ``text``.
    """
    from attnwidget.extract._common import check_text

    try:
        check_text(text, "text")
    except (TypeError, ValueError) as exc:
        raise InputError(str(exc)) from None
    tokens = _Tokens(tokenizer)
    content = tokens.encode_many([text], "text")[0]
    if seq_len is not None:
        seq_len = check_seq_len(seq_len, tokens, model)
        cut = content[: seq_len - tokens.n_special]
        shown = text if len(cut) == len(content) else tokens.decode(cut)
        content = cut
    else:
        shown = text
        limit, where = max_tokens(model, tokenizer)
        if limit is not None and len(content) + tokens.n_special > limit:
            raise InputError(
                f"text: {len(content) + tokens.n_special} tokens, but the model takes at most {limit} "
                f"({where}); expected a shorter text, or seq_len={limit} to keep its first {limit} tokens"
            )
    ids = torch.tensor(tokens.wrap(content), dtype=torch.int64)
    return Sample(ids, shown, Source(kind="text", name=name, seq_len=int(ids.shape[0]),
                                     diagonal_masked=diagonal_masked))


def random_sample(tokenizer: Any, seq_len: int | None = None, *, seed: int = 0, index: int = 0,
                  model: Any = None, diagonal_masked: bool = False) -> Sample:
    """``seq_len`` tokens (special tokens included) drawn uniformly from the vocabulary, seeded.

    Ids come from ``numpy.random.default_rng([seed, index])`` over the ids below
    ``len(tokenizer)`` (and the model's embedding size, when ``model`` is given)
    that are not special tokens; the tokenizer then adds its special tokens.
    """
    tokens = _Tokens(tokenizer)
    seq_len = check_seq_len(seq_len, tokens, model)
    seed = _int(seed, "seed", 0, None)
    index = _int(index, "index", 0, None)
    size = tokens.size()
    model_size = _model_vocab(model) if model is not None else None
    if model_size is not None:
        size = min(size, model_size)
    special = tokens.special_ids()
    pool = np.array([i for i in range(size) if i not in special], dtype=np.int64)
    if len(pool) == 0:
        raise InputError("tokenizer: its vocabulary has no token that is not special; nothing to draw from")
    rng = np.random.default_rng([seed, index])
    content = pool[rng.integers(0, len(pool), size=seq_len - tokens.n_special)]
    ids = torch.tensor(tokens.wrap(content.tolist()), dtype=torch.int64)
    source = Source(kind="random", seed=seed, index=index, seq_len=int(ids.shape[0]),
                    diagonal_masked=diagonal_masked)
    return Sample(ids, tokens.decode(content), source)


def load_samples(
    tokenizer: Any,
    mode: str = "text",
    *,
    text: str | None = None,
    dataset: Any = None,
    seq_len: int | None = None,
    index: int = 0,
    seed: int = 0,
    num_samples: int = 1,
    field: str = "text",
    unit: str = "window",
    name: str | None = None,
    model: Any = None,
    diagonal_masked: bool = False,
) -> list[Sample]:
    """``num_samples`` sequences from one source, as a list of :class:`Sample`.

    ``mode``: ``"text"`` (needs ``text``; one sample; ``seq_len`` optional, cuts),
    ``"validation"`` (needs ``dataset``: windows ``index .. index + num_samples - 1``,
    see :class:`Windows`), ``"random"`` (samples ``index ..`` of ``seed``). ``model``
    (optional) bounds ``seq_len`` by what it takes and the random ids by its vocabulary.
    Errors: :class:`InputError` naming the argument (a missing dataset file:
    :class:`DatasetNotFoundError`).
    """
    if mode not in MODES:
        raise InputError(f"mode: expected one of {MODES}, got {mode!r}")
    if mode != "validation" and dataset is not None:
        raise InputError(f"dataset: only mode 'validation' reads a dataset, got mode {mode!r}")
    if mode != "text" and text is not None:
        raise InputError(f"text: only mode 'text' takes a text, got mode {mode!r}")
    if mode == "text":
        if text is None:
            raise InputError("text: mode 'text' needs the text, got None")
        if num_samples != 1:
            raise InputError(f"num_samples: mode 'text' has one sequence, expected 1, got {num_samples!r}")
        return [text_sample(tokenizer, text, seq_len=seq_len, model=model, name=name,
                            diagonal_masked=diagonal_masked)]
    if mode == "random":
        index = _int(index, "index", 0, None)
        num_samples = _int(num_samples, "num_samples", 1, None)
        return [random_sample(tokenizer, seq_len, seed=seed, index=i, model=model,
                              diagonal_masked=diagonal_masked) for i in range(index, index + num_samples)]
    if dataset is None:
        raise InputError("dataset: mode 'validation' needs a dataset (a text or JSON-lines file, a list "
                         "of strings or a datasets.Dataset), got None")
    windows = Windows(dataset, tokenizer, seq_len, unit=unit, field=field, name=name, model=model,
                      diagonal_masked=diagonal_masked)
    return [windows[i] for i in windows.check_range(index, num_samples)]


# --------------------------------------------------------------------------- extraction
def find_tokenizer(model: Any, tokenizer: Any = None) -> Any:
    """``tokenizer`` if given, else one found offline for ``model`` (transformers: its folder or an
    embedded model; TransformerLens: ``model.tokenizer``); InputError naming ``tokenizer`` if none."""
    if tokenizer is not None:
        return tokenizer
    from attnwidget.extract.huggingface import infer_tokenizer, is_hf_model
    from attnwidget.models import TINY_LM_NAME

    if getattr(model, "name_or_path", None) == TINY_LM_NAME:
        from attnwidget.tinylm import CharTokenizer

        return CharTokenizer()
    found = infer_tokenizer(model) if is_hf_model(model) else getattr(model, "tokenizer", None)
    if found is None:
        raise InputError(
            f"tokenizer: none given and none found offline for {type(model).__name__}; pass tokenizer=..."
        )
    return found


def extract_sample(model: Any, sample: Sample, tokenizer: Any = None, **options: Any) -> AttentionMaps:
    """Run ``model`` on one :class:`Sample`: its :class:`~attnwidget.AttentionMaps` ``[L, H, seq, seq]``
    with ``text`` the sample's text and ``source`` its :class:`Source`.

    ``options`` go to :func:`attnwidget.extract_attention`. Plain PyTorch models
    (the tiny LM) get the tokenizer's token strings as labels.
    """
    from attnwidget.extract import extract_attention
    from attnwidget.extract.huggingface import is_hf_model
    from attnwidget.extract.lens import is_hooked_transformer

    if not isinstance(sample, Sample):
        raise InputError(f"sample: expected an attnwidget.inputs.Sample, got {type(sample).__name__}")
    ids = sample.input_ids.unsqueeze(0)
    hf = is_hf_model(model)
    if not hf and not is_hooked_transformer(model) and tokenizer is not None and "tokens" not in options:
        options["tokens"] = list(tokenizer.convert_ids_to_tokens(sample.input_ids.tolist()))
    maps = extract_attention(model, ids, tokenizer if hf else None, **options)
    return maps.with_source(sample.source, text=sample.text)


def extract_samples(model: Any, tokenizer: Any = None, **source: Any) -> list[AttentionMaps]:
    """:func:`load_samples` then :func:`extract_sample` for each: one record per sequence.

    ``source``: :func:`load_samples`'s keywords (``mode``, ``text``, ``dataset``,
    ``seq_len``, ``index``, ``seed``, ``num_samples``, ...). The model bounds
    ``seq_len``; the tokenizer is found offline when not given.
    """
    tokenizer = find_tokenizer(model, tokenizer)
    return [extract_sample(model, s, tokenizer) for s in load_samples(tokenizer, model=model, **source)]


def resolve(source: Any, model: Any, tokenizer: Any = None) -> Sample:
    """One :class:`Sample` from what ``AttentionView(model, source=...)`` takes.

    ``source``: a :class:`Sample`, or a mapping of :func:`load_samples` keywords
    that selects one sequence (``{"mode": "validation", "dataset": "notes.txt",
    "index": 3}``, ``{"mode": "random", "seq_len": 64, "seed": 1}``).
    """
    if isinstance(source, Sample):
        return source
    if not isinstance(source, Mapping):
        raise InputError(
            "source: expected an attnwidget.inputs.Sample or a dict of load_samples arguments "
            f"(mode, text, dataset, seq_len, index, seed, ...), got {type(source).__name__}"
        )
    if source.get("num_samples", 1) != 1:
        raise InputError(
            f"source: a view shows one sequence, expected num_samples=1, got {source['num_samples']!r}"
        )
    tokenizer = find_tokenizer(model, tokenizer)
    return load_samples(tokenizer, model=model, **{k: v for k, v in source.items() if k != "num_samples"})[0]
