"""Corpus statistics: every head's numbers on every sequence of a dataset, at scale.

::

    from attnwidget import corpus
    run = corpus.run("minilm", "valid.txt", out="stats/", seq_len=128)   # local, resumable
    table = run.table()                      # pyarrow.Table: one row per (sequence, layer, head)
    summary = corpus.summarize(table)        # per head: mean, std, quantiles of each statistic
    AttentionView(model, text, tokenizer=tok, corpus=summary)   # "typical for this head" badges

What a row holds is :data:`COLUMNS` (entropy, sharpness, pattern label and
scores, previous-token, duplicate-token and induction scores, the last query's
recency ratio, ...), computed by :mod:`attnwidget.metrics` on each sequence's
own ``[layer, head, n, n]`` maps.

* **Batched**: sequences go through the model ``batch_size`` at a time, padded
  and masked (see :mod:`attnwidget.corpus._compute`); the numbers equal a
  one-at-a-time ``extract_attention`` + ``metrics.analyze_stack`` up to float32 rounding.
* **Streamed and resumable**: rows go to one Parquet file per shard of
  ``shard_size`` sequences in the ``out`` folder (see :mod:`attnwidget.corpus._shards`),
  each written whole or not at all; rerunning the same call after an interruption
  computes only the missing shards. A progress bar counts sequences.
* **Scales out**: ``scheduler="dask"`` sends the shards to a ``dask.distributed``
  cluster (``pip install 'attnwidget[distributed]'``): ``client=`` a ``Client``
  or a scheduler address (``"tcp://scheduler-host:8786"``, where ``dask scheduler``
  runs, with ``dask worker tcp://scheduler-host:8786`` on each machine that has
  attnwidget installed). Pass the model by name (``"minilm"``, ``"tiny"`` or a
  folder every worker can read) so each worker loads it once; a model object is
  scattered to the workers instead.

Needs ``pyarrow`` (``pip install 'attnwidget[corpus]'``).
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from attnwidget.corpus._compute import (
    COLUMN_NAMES,
    COLUMNS,
    STAT_COLUMNS,
    batch_attention,
    token_match_scores,
)
from attnwidget.corpus._shards import read_table
from attnwidget.corpus.summary import AGGREGATES, QUANTILES, HeadSummary, summarize

__all__ = [
    "AGGREGATES",
    "COLUMNS",
    "COLUMN_NAMES",
    "QUANTILES",
    "SCHEDULERS",
    "STAT_COLUMNS",
    "CorpusRun",
    "HeadSummary",
    "ShardInfo",
    "batch_attention",
    "read",
    "run",
    "summarize",
    "token_match_scores",
]

SCHEDULERS = ("local", "dask")


@dataclasses.dataclass(frozen=True)
class ShardInfo:
    """One finished shard, as ``run(on_shard=...)`` reports it."""

    shard: int
    sequences: range  # dataset indices of its sequences
    path: Path
    rows: int
    seconds: float  # since the run started


@dataclasses.dataclass
class CorpusRun:
    """What :func:`run` did: the folder, the shards it computed and those it found finished."""

    path: Path
    n_sequences: int
    n_shards: int
    computed: list[int]
    skipped: list[int]
    seconds: float
    manifest: dict[str, Any]

    def table(self) -> Any:
        """Every row as one ``pyarrow.Table`` (see :func:`read`)."""
        return read(self.path)

    def summary(self) -> HeadSummary:
        """:func:`summarize` of the table."""
        return summarize(self.table())


def read(path: str | Path, allow_partial: bool = False) -> Any:
    """The table of the run in folder ``path``: one row per (sequence, layer, head), columns
    :data:`COLUMNS`, the run's settings in the schema metadata (key ``attnwidget``).

    Missing shards (an interrupted run) raise ValueError unless ``allow_partial``.
    """
    return read_table(path, allow_partial)


def _positive(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name}: expected an int >= 1, got {value!r}")
    return int(value)


def _model_and_tokenizer(model: Any, tokenizer: Any) -> tuple[Any, Any, str | None]:
    """The model object, its tokenizer, and its name for dask workers (None: scatter the object)."""
    if isinstance(model, (str, os.PathLike)):
        from attnwidget.models import load

        loaded, tok = load(str(model), "model")
        return loaded, tokenizer if tokenizer is not None else tok, str(model)
    from attnwidget.inputs import find_tokenizer

    return model, find_tokenizer(model, tokenizer), None


def run(
    model: Any,
    dataset: Any,
    tokenizer: Any = None,
    *,
    out: str | Path,
    seq_len: int | None = None,
    index: int = 0,
    num_samples: int | None = None,
    unit: str = "window",
    field: str = "text",
    name: str | None = None,
    batch_size: int = 16,
    shard_size: int = 64,
    threshold: float = 0.1,
    scheduler: str = "local",
    client: Any = None,
    progress: bool = True,
    on_shard: Callable[[ShardInfo], Any] | None = None,
) -> CorpusRun:
    """Statistics of every head on ``num_samples`` sequences of ``dataset``, written to the folder ``out``.

    ``model``: a model object, or ``"minilm"``, ``"tiny"`` or a local transformers
    folder (loaded offline; with ``scheduler="dask"`` the workers load it by that
    name). ``dataset``, ``seq_len``, ``unit``, ``field``, ``name``: as
    :class:`attnwidget.inputs.Windows` takes them; the sequences are windows
    ``index .. index + num_samples - 1`` (default: all from ``index``).
    ``batch_size``: sequences per forward pass; ``shard_size``: sequences per
    Parquet file (the unit of resumption and of dask tasks); ``threshold``: for
    the ``sparsity`` column. ``scheduler``: ``"local"`` (this process) or ``"dask"``
    (``client``: a ``distributed.Client``, a scheduler address, or None for the
    default client). ``on_shard(ShardInfo)`` is called after each shard is written
    (raise from it to stop; finished shards stay).

    Returns a :class:`CorpusRun`. Rerunning with the same arguments and ``out``
    computes only missing shards; other settings in a used folder raise ValueError naming ``out``.
    """
    from tqdm.auto import tqdm

    from attnwidget import __version__
    from attnwidget.corpus import _shards
    from attnwidget.corpus._compute import causal_hint, shard_rows
    from attnwidget.inputs import Windows
    from attnwidget.metrics._input import check_threshold

    _shards.require_pyarrow()
    if scheduler not in SCHEDULERS:
        raise ValueError(f"scheduler: expected one of {SCHEDULERS}, got {scheduler!r}")
    if scheduler == "local" and client is not None:
        raise ValueError("client: only scheduler='dask' uses a client; pass scheduler='dask' or no client")
    batch_size = _positive(batch_size, "batch_size")
    shard_size = _positive(shard_size, "shard_size")
    threshold = check_threshold(threshold)
    if not isinstance(out, (str, os.PathLike)):
        raise TypeError(f"out: expected a folder path, got {type(out).__name__}")
    out = Path(out)
    started = time.perf_counter()
    model, tokenizer, spec = _model_and_tokenizer(model, tokenizer)
    windows = Windows(dataset, tokenizer, seq_len, unit=unit, field=field, name=name, model=model)
    if num_samples is None:
        num_samples = len(windows) - windows.check_index(index)
    positions = windows.check_range(index, num_samples)
    shards = [positions[s : s + shard_size] for s in range(0, len(positions), shard_size)]
    manifest = {
        "format": _shards.FORMAT, "format_version": _shards.FORMAT_VERSION,
        "model": str(getattr(model, "name_or_path", "") or type(model).__name__),
        "dataset": windows.dataset.description, "name": windows.dataset.name,
        "fingerprint": windows.fingerprint(), "seq_len": windows.seq_len, "unit": unit,
        "index": positions.start, "num_samples": len(positions), "shard_size": shard_size,
        "threshold": threshold, "columns": list(COLUMN_NAMES), "n_shards": len(shards),
        "batch_size": batch_size, "written_by": f"attnwidget {__version__}",
    }
    _shards.prepare_folder(out, manifest)
    done = [k for k, seqs in enumerate(shards) if _shards.shard_done(out, k, len(seqs))]
    todo = [k for k in range(len(shards)) if k not in set(done)]
    options = {"batch_size": batch_size, "threshold": threshold, "causal": causal_hint(model),
               "pad_id": int(getattr(tokenizer, "pad_token_id", None) or 0)}
    payloads = {k: ([windows.ids(i).numpy() for i in shards[k]], list(shards[k])) for k in todo}

    bar = tqdm(total=len(positions), initial=sum(len(shards[k]) for k in done), desc="corpus",
               unit="seq", disable=not progress)
    computed: list[int] = []
    opened, dask_client = False, None
    if scheduler == "local":
        results: Any = ((k, shard_rows(model, *payloads[k], **options)) for k in todo)
    else:
        from attnwidget.corpus import _dask

        dask_client, opened = _dask.connect(client)
        results = _dask.run_shards(dask_client, model, spec, payloads, options)
    try:
        for k, columns in results:
            path = _shards.write_shard(out, k, columns, manifest)
            computed.append(k)
            bar.update(len(shards[k]))
            if on_shard is not None:
                elapsed = time.perf_counter() - started
                on_shard(ShardInfo(k, shards[k], path, len(columns["sequence"]), elapsed))
    finally:
        results.close()  # dask: cancels the shards not finished yet
        bar.close()
        if opened:
            dask_client.close()
    return CorpusRun(out, len(positions), len(shards), sorted(computed), done,
                     time.perf_counter() - started, manifest)

