"""What is typical for each head: mean, std and quantiles of every statistic over a corpus.

One sequence is an anecdote: a head that looks sharp on one text may be diffuse
on the next. :func:`summarize` turns a corpus table (one row per sequence,
layer and head) into per-head distributions, which the widget shows as
"typical for this head" next to the value on the text at hand.
"""

from __future__ import annotations

import json
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from attnwidget.corpus._compute import STAT_COLUMNS

#: Quantiles every summary reports (and their names).
QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
_Q_NAMES = {0.05: "q05", 0.25: "q25", 0.5: "median", 0.75: "q75", 0.95: "q95"}
AGGREGATES = ("mean", "std", *(_Q_NAMES[q] for q in QUANTILES), "count")
#: The statistics the widget puts next to its own numbers (metrics-panel key -> corpus column).
WIDGET_STATS = {
    "mean_entropy": "mean_entropy", "normalized_entropy": "normalized_entropy",
    "effective_tokens": "effective_tokens", "max": "max",
    "diagonal_mean": "diagonal_mean", "sharpness": "sharpness",
}


class HeadSummary:
    """Per-head distributions of the statistics of a corpus run.

    ``values[stat][agg]`` is an array ``[layer, head]`` for every numeric column
    of the corpus table (:data:`attnwidget.corpus.STAT_COLUMNS`) and every
    aggregate of :data:`AGGREGATES`: ``mean``; ``std`` (sample std over sequences,
    ``ddof=1``; NaN with one sequence); ``q05``, ``q25``, ``median``, ``q75``,
    ``q95`` (linear interpolation); ``count`` (sequences with a finite value: the
    text-based induction score is NaN where no token repeats). NaNs are left out
    of every aggregate. ``grades[grade]`` and ``pattern_share`` are ``[layer, head]``
    shares of sequences; ``pattern`` the most frequent label per head.
    ``meta``: the run's manifest (model, dataset, seq_len, ...).
    """

    def __init__(self, values: dict[str, dict[str, np.ndarray]], grades: dict[str, np.ndarray],
                 pattern: np.ndarray, pattern_share: np.ndarray, n_sequences: int,
                 meta: dict[str, Any]) -> None:
        self.values = values
        self.grades = grades
        self.pattern = pattern
        self.pattern_share = pattern_share
        self.n_sequences = int(n_sequences)
        self.meta = meta
        self.layers, self.heads = pattern.shape

    @property
    def shape(self) -> tuple[int, int]:
        """``(layers, heads)``."""
        return self.layers, self.heads

    @property
    def stats(self) -> tuple[str, ...]:
        return tuple(self.values)

    def __getitem__(self, stat: str) -> dict[str, np.ndarray]:
        if stat not in self.values:
            raise KeyError(f"stat: expected one of {self.stats}, got {stat!r}")
        return self.values[stat]

    def __repr__(self) -> str:
        return (f"HeadSummary({self.layers} layers x {self.heads} heads over {self.n_sequences} sequences "
                f"of {self.meta.get('name') or self.meta.get('dataset')!r})")

    def _check(self, layer: int, head: int) -> tuple[int, int]:
        for name, value, size in (("layer", layer, self.layers), ("head", head, self.heads)):
            is_int = isinstance(value, (int, np.integer)) and not isinstance(value, bool)
            if not is_int or not -size <= value < size:
                raise IndexError(f"{name}: expected 0..{size - 1} (or -{size}..-1), got {value!r}")
        return int(layer) % self.layers, int(head) % self.heads

    def head(self, layer: int, head: int) -> dict[str, dict[str, float]]:
        """Every statistic's aggregates for one head, as plain floats."""
        li, hi = self._check(layer, head)
        return {stat: {agg: float(a[li, hi]) for agg, a in aggs.items()}
                for stat, aggs in self.values.items()}

    def typical(self, layer: int, head: int) -> dict[str, Any]:
        """What the widget shows next to a head's own numbers: median, q25 and q75 of
        :data:`WIDGET_STATS` (None where not finite), the sequence count and the corpus name."""
        li, hi = self._check(layer, head)

        def clean(v: float) -> float | None:
            return float(v) if np.isfinite(v) else None

        out: dict[str, Any] = {
            key: {agg: clean(self.values[col][agg][li, hi]) for agg in ("median", "q25", "q75")}
            for key, col in WIDGET_STATS.items()
        }
        out["n_sequences"] = self.n_sequences
        out["corpus"] = str(self.meta.get("name") or self.meta.get("dataset") or "corpus")
        return out

    def to_table(self) -> Any:
        """A ``pyarrow.Table`` with one row per (layer, head) and a column per ``<stat>_<aggregate>``."""
        from attnwidget.corpus._shards import require_pyarrow

        pa = require_pyarrow()
        L, H = self.shape
        cols: dict[str, Any] = {"layer": np.repeat(np.arange(L), H), "head": np.tile(np.arange(H), L)}
        for stat, aggs in self.values.items():
            for agg, a in aggs.items():
                cols[f"{stat}_{agg}"] = a.reshape(-1)
        for grade, share in self.grades.items():
            cols[f"share_{grade}"] = share.reshape(-1)
        cols["pattern"] = self.pattern.reshape(-1).astype(str)
        cols["pattern_share"] = self.pattern_share.reshape(-1)
        return pa.table(cols, metadata={"attnwidget": json.dumps(self.meta)})


def _as_table(data: Any) -> Any:
    from attnwidget.corpus._shards import read_table, require_pyarrow

    pa = require_pyarrow()
    if isinstance(data, (str, Path)):
        return read_table(data)
    if hasattr(data, "table") and callable(data.table):  # a CorpusRun
        return data.table()
    if isinstance(data, pa.Table):
        return data
    raise TypeError(
        f"table: expected a corpus table (pyarrow.Table), a CorpusRun or the folder of a run, "
        f"got {type(data).__name__}"
    )


def summarize(data: Any, quantiles: tuple[float, ...] = QUANTILES) -> HeadSummary:
    """Per-head mean, std and quantiles of every statistic of a corpus run: a :class:`HeadSummary`.

    ``data``: the table of :func:`attnwidget.corpus.read`, a :class:`~attnwidget.corpus.CorpusRun`
    or the run's folder. The table needs every (sequence, layer, head) once.
    """
    if tuple(quantiles) != QUANTILES:
        raise ValueError(f"quantiles: this version reports {QUANTILES}, got {quantiles!r}")
    table = _as_table(data)
    missing = [c for c in ("sequence", "layer", "head", "grade", "pattern", *STAT_COLUMNS)
               if c not in table.column_names]
    if missing:
        raise ValueError(f"table: columns {missing} are missing; expected a table from attnwidget.corpus")
    if table.num_rows == 0:
        raise ValueError("table: no rows; expected at least one sequence")
    seq = table["sequence"].to_numpy()
    layer = table["layer"].to_numpy().astype(np.int64)
    head = table["head"].to_numpy().astype(np.int64)
    order = np.lexsort((head, layer, seq))  # [N * L * H] in (sequence, layer, head) order
    sequences = np.unique(seq)
    N, L, H = len(sequences), int(layer.max()) + 1, int(head.max()) + 1
    grid = (np.arange(L)[:, None] * H + np.arange(H)[None, :]).reshape(-1)  # layer * H + head, in order
    if table.num_rows != N * L * H or not (
        (seq[order].reshape(N, L * H) == sequences[:, None]).all()
        and ((layer * H + head)[order].reshape(N, L * H) == grid).all()
    ):
        raise ValueError(
            f"table: {table.num_rows} rows for {N} sequences x {L} layers x {H} heads; expected one row "
            "per (sequence, layer, head)"
        )

    def cube(name: str, dtype: Any = float) -> np.ndarray:
        return table[name].to_numpy(zero_copy_only=False).astype(dtype)[order].reshape(N, L, H)

    values: dict[str, dict[str, np.ndarray]] = {}
    with warnings.catch_warnings():
        # all-NaN heads (e.g. the induction score where no token ever repeats) give NaN, as intended
        warnings.simplefilter("ignore", RuntimeWarning)
        for stat in STAT_COLUMNS:
            x = cube(stat)
            finite_count = np.isfinite(x).sum(0)
            qs = np.nanquantile(np.where(np.isnan(x), np.nan, x), quantiles, axis=0)
            values[stat] = {
                "mean": np.nanmean(x, axis=0),
                "std": np.nanstd(x, axis=0, ddof=1) if N > 1 else np.full((L, H), np.nan),
                **{_Q_NAMES[q]: qs[i] for i, q in enumerate(quantiles)},
                "count": finite_count,
            }
    grades = cube("grade", object)
    labels = cube("pattern", object)
    grade_share = {g: (grades == g).mean(0) for g in ("SHARP", "MEDIUM", "UNIFORM", "EMPTY")}
    pattern = np.empty((L, H), dtype=object)
    pattern_share = np.zeros((L, H))
    for li in range(L):
        for hi in range(H):
            label, count = Counter(labels[:, li, hi]).most_common(1)[0]
            pattern[li, hi], pattern_share[li, hi] = label, count / N
    meta_raw = (table.schema.metadata or {}).get(b"attnwidget")
    meta = json.loads(meta_raw) if meta_raw else {}
    return HeadSummary(values, grade_share, pattern, pattern_share, N, meta)
