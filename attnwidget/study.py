"""Studies over real sequences: 002's diagnostic summary and 004's long-context study.

* :func:`diagnostic_summary` prints what the per-head guide (handout 002) asks
  for next to a figure: where the sequence comes from and how long it is, each
  head's ``row_std`` and sharpness grade, the head average's (marked as an
  average), and how different the heads are (KL between heads).
* :func:`long_context_study` runs a model over ``num_samples`` sequences (any
  source of :mod:`attnwidget.inputs`) and measures the last query's attention
  to its *context*, as handout 004 defines it: the keys before the query, the
  query's own key excluded, renormalised to sum to 1 (so the mean context
  weight is ``1 / context tokens``, 0.0526 for 004's 19). Per sample, layer and
  head: mean and std of the context weights, entropy, the position attended
  most, the recency ratio; across samples their distributions, the history
  curves, the four compression hints with the recommended K, and 004's INSIGHT lines.

Every number comes from :mod:`attnwidget.metrics`; this module only chooses
what to measure and lays it out.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from attnwidget import metrics as M  # noqa: N812
from attnwidget.maps import AttentionMaps
from attnwidget.metrics._input import masked_mean, prepare
from attnwidget.metrics.patterns import onehot_std
from attnwidget.tokens import show_invisible

RULE = "=" * 80
THIN = "-" * 80

#: 004's console insight for each compression hint of :data:`attnwidget.metrics.history.HINT_RULES`.
INSIGHTS = {
    "keep_recent_window": "Strong recency bias detected! Consider compressing or removing distant history.",
    "sample_uniformly": "High attention entropy (uniform distribution)! Model attends broadly to context. "
                        "Be careful with compression.",
    "keep_top_k": "Sparse attention: a few positions hold most of the weight. Keep the top-k attended "
                  "positions only.",
    "group_clusters": "Clustered patterns: the attended positions form a few contiguous groups. Group "
                      "similar contexts (keep or summarise each group).",
}


def insight_lines(hints: Sequence[dict[str, Any]], name_of: Any = None) -> list[str]:
    """004's ``INSIGHT:`` lines, one per hint that fires, with where it fires and the recommended K.

    ``hints``: :func:`attnwidget.metrics.compression_hints`; ``name_of``: a function from a
    hint's ``index`` to its name (default: the index tuple, e.g. ``(layer, head)``).
    """
    name_of = name_of or (lambda index: str(tuple(index)))
    grouped: dict[str, list[dict[str, Any]]] = {}
    for h in hints:
        grouped.setdefault(h["hint"], []).append(h)
    out = []
    for hint, items in grouped.items():
        where = ", ".join(f"{name_of(h['index'])}: {h['value']:.2f}" for h in items[:8])
        more = f" and {len(items) - 8} more" if len(items) > 8 else ""
        ks = [h["recommended_k"] for h in items if "recommended_k" in h]
        keep = f"; recommended K for top-K retention: {max(ks)}" if ks and hint in (
            "keep_top_k", "group_clusters") else ""
        out.append(f"INSIGHT: {INSIGHTS[hint]}\n   {items[0]['measure']} > {items[0]['threshold']} "
                   f"at {where}{more}{keep}")
    return out


# --------------------------------------------------------------------------- 002
@dataclass(frozen=True)
class DiagnosticSummary:
    """002's diagnostic summary of one layer; ``print(summary)`` shows it.

    ``row_std``: per head, the mean over rows of the standard deviation of the
    row's weights (:func:`attnwidget.metrics.head_sharpness`), with ``grades``
    from the relative spread (:func:`attnwidget.metrics.sharpness_grade`);
    ``average_row_std``/``average_grade``: the same for the mean of the heads (an
    AVERAGE, not a head); ``kl``: KL divergence between heads ``[H, H]`` (nats).

    Our scale against the handout's numbers: a one-hot row over n keys has
    row_std ``sqrt(n - 1) / n``, the largest possible value: 0.088 at 128 keys,
    so 002's example values (0.234, 0.187 at 128 tokens) cannot occur without a
    mask (``max_row_std``: the bound of this layer's rows, each over the keys it
    may see; 0.152 for a causal record of 128 tokens). Grades
    therefore use the spread relative to that maximum (SHARP >= 0.5, UNIFORM <
    0.1), which means the same at every length. 002's "KL Matrix: row_std" line
    is reported as the mean KL between two different heads (how different the
    heads are) with its range.
    """

    caption: str
    layer: int
    n_tokens: int
    head_names: tuple[str, ...]
    row_std: np.ndarray
    relative: np.ndarray
    grades: tuple[str, ...]
    average_row_std: float
    average_relative: float
    average_grade: str
    kl: np.ndarray = field(repr=False)
    #: The largest row_std this layer's rows allow (each one-hot over the keys it may see), and
    #: how many keys those rows see, fewest and most (a causal or padded record: not all n_tokens).
    max_row_std: float = math.nan
    keys_seen: tuple[int, int] = (0, 0)

    @property
    def kl_mean(self) -> float:
        """Mean KL divergence between two different heads (nats)."""
        H = self.kl.shape[0]
        return float(self.kl[~np.eye(H, dtype=bool)].mean()) if H > 1 else 0.0

    def lines(self) -> list[str]:
        marks = {"SHARP": "✓ SHARP", "MEDIUM": "⚠ MEDIUM", "UNIFORM": "✗ UNIFORM", "EMPTY": "– EMPTY"}
        out = [RULE, "ATTENTION DIAGNOSTIC SUMMARY", RULE, f"Sequence: {self.caption}",
               f"Length: {self.n_tokens} tokens", f"Layer: {self.layer}",
               f"Attention heads: {len(self.head_names)}", THIN]
        for name, std, rel, grade in zip(self.head_names, self.row_std, self.relative, self.grades,
                                         strict=True):
            out.append(f"  {name}: row_std = {std:.4f} (relative {rel:.2f})  [{marks[grade]}]")
        out += ["", f"  AVERAGED (not a head): row_std = {self.average_row_std:.4f} "
                    f"(relative {self.average_relative:.2f})  [{marks[self.average_grade]}]",
                "    ^ averaging heads blurs their patterns together", ""]
        H = self.kl.shape[0]
        if H > 1:
            off = self.kl[~np.eye(H, dtype=bool)]
            out.append(f"  KL between heads: mean {off.mean():.3f} nats (min {off.min():.3f}, "
                       f"max {off.max():.3f})")
        fewest, most = self.keys_seen
        if fewest == most:
            out.append(f"  (row_std of a one-hot row over {most} keys: {self.max_row_std:.4f}, "
                       "the largest possible)")
        else:  # a causal row over few keys can reach far more than a full row (0.5 over 2 keys)
            out.append(f"  (largest possible row_std here: {self.max_row_std:.4f}, every row one-hot "
                       f"over the {fewest} to {most} keys it may see)")
        out.append(RULE)
        return out

    def __str__(self) -> str:
        return "\n".join(self.lines())

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:  # IPython shows the block
        printer.text(str(self))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready numbers."""
        return {"caption": self.caption, "layer": self.layer, "n_tokens": self.n_tokens,
                "heads": [{"name": n, "row_std": float(s), "relative": float(r), "grade": g}
                          for n, s, r, g in zip(self.head_names, self.row_std, self.relative, self.grades,
                                                strict=True)],
                "average": {"row_std": self.average_row_std, "relative": self.average_relative,
                            "grade": self.average_grade},
                "kl_mean": self.kl_mean, "kl": self.kl.tolist(), "max_row_std": self.max_row_std,
                "keys_seen": list(self.keys_seen)}


def sequence_block(maps: AttentionMaps, label: str | None = None, chars: int = 200, tokens: int = 16) -> str:
    """002's ``[SEQUENCE]`` block, printed before the summary: what the sequence is (``label``,
    else the record's source), its text (the first ``chars`` characters), its length and its
    first ``tokens`` tokens; invisible characters named."""
    from attnwidget.inputs.source import Source

    what = label if label else (maps.source or Source()).phrase()
    shown = " | ".join(maps.query_display[:tokens]) + (" ..." if maps.shape[2] > tokens else "")
    lines = [f"[SEQUENCE] {show_invisible(str(what))}"]
    if maps.text:
        more = "..." if len(maps.text) > chars else ""
        lines.append(f"  Decoded text: {show_invisible(maps.text[:chars])}{more}")
    lines += [f"  Length: {maps.shape[2]} tokens", f"  Tokens: {shown}"]
    return "\n".join(lines)


def diagnostic_summary(maps: AttentionMaps, layer: int = -1) -> DiagnosticSummary:
    """002's diagnostic summary of ``layer`` (negative from the end) of a record."""
    if not isinstance(maps, AttentionMaps):
        raise TypeError(f"maps: expected an AttentionMaps, got {type(maps).__name__}")
    w = maps.layer(layer)  # [H, Q, K], checks the index
    li = layer % maps.n_layers
    one = maps.select(layers=li)
    avg = one.head_mean()
    seen = prepare(one, "maps")  # which keys each row may see: causal mask and padding
    n = seen.n_keys.double()  # [1, H, Q]
    onehot = onehot_std(n)
    counted = n[seen.rows]
    return DiagnosticSummary(
        caption=show_invisible(maps.caption(li)), layer=li, n_tokens=maps.shape[2],
        head_names=tuple(show_invisible(n) for n in maps.head_names),
        row_std=np.asarray(M.head_sharpness(one))[0],
        relative=np.asarray(M.head_sharpness(one, relative=True))[0],
        grades=tuple(np.asarray(M.sharpness_grade(one))[0]),
        average_row_std=float(np.asarray(M.head_sharpness(avg))[0, 0]),
        average_relative=float(np.asarray(M.head_sharpness(avg, relative=True))[0, 0]),
        average_grade=str(np.asarray(M.sharpness_grade(avg))[0, 0]),
        kl=np.asarray(M.kl_divergence_matrix(w)),
        max_row_std=float(masked_mean(onehot, seen.rows, 1).max()),
        keys_seen=(int(counted.min()), int(counted.max())) if counted.numel() else (0, 0),
    )


# --------------------------------------------------------------------------- 004
#: The per-sample measures of the last query's context, in 004's words.
MEASURES = {
    "mean_context_attention": "mean weight per context token (1 / context tokens)",
    "attention_std": "std of the context weights (larger = more focused)",
    "attention_entropy": "entropy of the context weights, nats (ln(context) = uniform)",
    "recent_distant_ratio": "mean weight on the most recent 25% of the context over the most distant 25%",
    "max_attention_position": "context position attended most",
}


def context_of(attention: Any, name: str = "attention", *, causal: bool = False) -> np.ndarray:
    """The last query's weights over its context, ``[..., 1, n]`` (n = K - 1), renormalised.

    004's context: the keys before the query; the query's own key (the last) is left out
    and the rest scaled to sum to 1 (a row with no weight on its context stays 0: nothing
    attended: the last query looks only at itself). ``attention``: ``[..., Q, K]`` weights or
    an AttentionMaps, checked as every metric's input (``causal``: keys above the diagonal
    must hold 0); errors name ``name``.
    """
    # a record was checked when it was made (its own causal flag included); asked for a
    # causal reading of a record that is not causal, check that nothing lies above the diagonal
    if isinstance(attention, AttentionMaps) and (not causal or attention.causal):
        w = attention.weights
    else:
        w = prepare(attention, name, causal=causal).w
    K = w.shape[-1]
    if K < 2:
        raise ValueError(f"{name}: a context needs at least 2 tokens (a query and one earlier key), got {K}")
    last = w[..., -1, : K - 1].double().numpy()  # keys before the last query
    total = last.sum(-1, keepdims=True)
    return np.where(total > 0, last / np.where(total > 0, total, 1), 0.0)[..., None, :]


def context_profile(maps: AttentionMaps) -> np.ndarray:
    """:func:`context_of` a record: ``[L, H, 1, Q - 1]``."""
    if maps.shape[2] < 2:
        raise ValueError(f"maps: a context needs at least 2 tokens (a query and one earlier key), "
                         f"got {maps.shape[2]}")
    return context_of(maps, "maps")


def _with_empty(profile: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(profile with each empty context replaced by a uniform one, empty [...])``: the metrics
    need a row with weight; what they give for the stand-in is overwritten by the caller."""
    empty = profile.sum(-1)[..., 0] == 0  # [...]
    if not empty.any():
        return profile, empty
    n = profile.shape[-1]
    return np.where(empty[..., None, None], 1.0 / n, profile), empty


def context_measures(profile: np.ndarray, fraction: float = 0.25) -> dict[str, np.ndarray]:
    """004's per-sample numbers of context profiles ``[..., 1, n]`` (:func:`context_of`), each
    ``[...]`` (see :data:`MEASURES`); ``fraction``: the recent and distant shares of the ratio.

    A last query with no weight on its context (all of it on its own key) has NaN for every
    measure and -1 for the position: there is no context weight to measure.
    """
    from attnwidget.metrics._input import prepare

    prepare(profile, "profile")  # its own errors (all-zero rows pass): the measures name `attention`
    safe, empty = _with_empty(profile)
    stats = M.compute_attention_statistics(safe)
    out = {
        "mean_context_attention": np.asarray(stats["mean"], dtype=float),
        "attention_std": np.asarray(stats["std"], dtype=float),
        "attention_entropy": np.asarray(stats["mean_entropy"], dtype=float),
        "recent_distant_ratio": np.asarray(M.recency_ratio(safe, fraction), dtype=float),
        "max_attention_position": np.asarray(M.max_position(safe)),
    }
    if empty.any():
        for key, value in out.items():
            out[key] = np.where(empty, -1 if key == "max_attention_position" else np.nan, value)
    return out


def context_history(profiles: Sequence[np.ndarray], *, fraction: float = 0.25,
                    bins: int = 20) -> dict[str, Any]:
    """:func:`attnwidget.metrics.history_metrics` of context profiles (:func:`context_of`), one
    per sample; a matrix whose context was empty in some sample gets NaN (no hint fires there).

    Of one-row profiles, history_metrics' ``received`` would be the last query's own context
    weight per relative-position bin, not what each position receives from every query: it
    is given under that name, ``context_bins`` (mean and std ``[..., bins]``), and there is
    no ``received``.
    """
    safe, empties = zip(*(_with_empty(p) for p in profiles), strict=True)
    out = M.history_metrics(list(safe), fraction=fraction, bins=bins)
    out["context_bins"] = out.pop("received")
    empty = np.any(np.stack(empties), axis=0)  # [...]
    if empty.any():
        for value in out.values():
            if isinstance(value, dict):
                for part in ("mean", "std"):
                    v = np.asarray(value[part], dtype=float)
                    where = empty.reshape(empty.shape + (1,) * (v.ndim - empty.ndim))  # context_bins: bins
                    value[part] = np.where(where, np.nan, v)
    return out


def sample_measures(maps: AttentionMaps) -> dict[str, np.ndarray]:
    """004's per-sample numbers for every layer and head, each ``[L, H]`` (see :data:`MEASURES`)."""
    return context_measures(context_profile(maps))


@dataclass
class LongContextStudy:
    """004's study over several sequences; ``print(study)`` gives its console output.

    ``samples``: the records; ``layer``: the layer studied in the figures (None: all
    layers in the numbers, the last in the figures); ``per_sample``: each measure
    ``[S, L, H]``; ``history``: :func:`context_history` (history_metrics of the context
    profiles; ``context_bins`` for its ``received``); ``hints``: :func:`attnwidget.metrics.compression_hints`.
    """

    samples: list[AttentionMaps]
    layer: int | None
    per_sample: dict[str, np.ndarray]
    history: dict[str, Any]
    hints: list[dict[str, Any]]

    @property
    def insights(self) -> list[str]:
        """004's ``INSIGHT:`` lines for the layer studied (every layer's with ``layer=None``), as
        the rest of the console output; :attr:`hints` keeps every layer's."""
        hints = [h for h in self.hints if self.layer is None or h["index"][0] == self.layer]
        return insight_lines(hints, lambda index: f"layer {index[0]} head {index[1]}")

    def lines(self) -> list[str]:
        out = [RULE, "LONG-CONTEXT ATTENTION STUDY", RULE]
        shown = self.layer if self.layer is not None else self.samples[0].n_layers - 1
        for s, maps in enumerate(self.samples):
            n = maps.shape[2]
            out.append(f"Sample {s + 1}: {show_invisible(maps.caption(shown))}")
            out.append(f"  Sequence length: {n}   Context tokens: {n - 1}")
            for h in range(maps.n_heads):
                v = {k: self.per_sample[k][s, shown, h] for k in MEASURES}
                out.append(
                    f"  head {h}: mean {v['mean_context_attention']:.4f}  std {v['attention_std']:.4f}  "
                    f"max position {int(v['max_attention_position'])}  recent/distant "
                    f"{v['recent_distant_ratio']:.2f}  entropy {v['attention_entropy']:.4f}")
        out += [THIN, f"Across {len(self.samples)} samples (layer {shown}): mean ± std per head"]
        for h in range(self.samples[0].n_heads):
            parts = []
            for k in ("mean_context_attention", "attention_std", "attention_entropy", "recent_distant_ratio"):
                col = self.per_sample[k][:, shown, h]
                col = col[np.isfinite(col)]
                parts.append(f"{k} {col.mean():.3f} ± {col.std():.3f}" if col.size else f"{k} –")
            out.append(f"  head {h}: " + ", ".join(parts))
        out += [THIN, *(self.insights or ["No compression insight: no rule fired."]), RULE]
        return out

    def __str__(self) -> str:
        return "\n".join(self.lines())

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(str(self))

    def figures(self) -> list[tuple[str, str, Any]]:
        """``(file stem, title, bokeh figure)`` for the studied layer: 004's figures."""
        from attnwidget.plots.study import distribution_figure, history_figure

        li = self.layer if self.layer is not None else self.samples[0].n_layers - 1
        profiles = [context_profile(m)[li, :, 0, :] for m in self.samples]  # S x [H, n]
        out = [(f"history_layer{li}", f"Last query over its context, every head (layer {li})",
                history_figure(profiles, li))]
        for key, what in MEASURES.items():
            if key == "max_attention_position":
                continue
            out.append((f"{key}_layer{li}", f"{key}: {what}",
                        distribution_figure(self.per_sample[key][:, li, :], key, li)))
        return out

    def to_dict(self) -> dict[str, Any]:
        from attnwidget.report import _json

        return _json({"n_samples": len(self.samples), "layer": self.layer,
                      "samples": [m.caption(-1) for m in self.samples],
                      "per_sample": self.per_sample,
                      "history": {k: v for k, v in self.history.items() if isinstance(v, dict)},
                      "hints": [{**h, "index": list(h["index"])} for h in self.hints],
                      "insights": self.insights})

    def save(self, folder: str | Path, *, png: bool = True) -> list[Path]:
        """Write ``study.json``, ``insights.txt`` and every figure (``.html``; ``.png`` too when
        ``png`` and a browser is there) into ``folder``; returns the written paths."""
        from attnwidget import plots

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        written = [folder / "study.json", folder / "insights.txt"]
        written[0].write_text(json.dumps(self.to_dict(), indent=1, allow_nan=False) + "\n")
        written[1].write_text(str(self) + "\n", encoding="utf-8")
        figs = self.figures()
        for stem, title, fig in figs:
            written.append(plots.save_html(fig, folder / f"{stem}.html", title=title))
        if png:
            with plots.Exporter() as exporter:
                written += exporter.export_all([(fig, folder / f"{stem}.png") for stem, _, fig in figs])
        return written


def long_context_study(
    model: Any, tokenizer: Any = None, *, layer: int | None = -1, num_samples: int = 5, **source: Any
) -> LongContextStudy:
    """Run ``model`` over ``num_samples`` sequences and study the last query's context (004).

    ``source``: :func:`attnwidget.inputs.load_samples`' keywords (``mode``, ``dataset``,
    ``seq_len``, ``index``, ``seed``, ``text``...). ``layer``: the layer of the figures and
    the console (negative from the end; None: all layers in the numbers).
    """
    from attnwidget.inputs import extract_samples

    samples = extract_samples(model, tokenizer, num_samples=num_samples, **source)
    return study_samples(samples, layer=layer)


def study_samples(samples: Sequence[AttentionMaps], *, layer: int | None = -1) -> LongContextStudy:
    """:class:`LongContextStudy` of records already extracted (same layers and heads)."""
    samples = list(samples)
    if not samples or not all(isinstance(m, AttentionMaps) for m in samples):
        raise ValueError(f"samples: expected a non-empty list of AttentionMaps, got {samples!r:.80}")
    L, H = samples[0].shape[:2]
    for i, m in enumerate(samples):
        if m.shape[:2] != (L, H):
            raise ValueError(f"samples[{i}]: {m.shape[0]} layers x {m.shape[1]} heads, expected {L} x {H}")
    li = None
    if layer is not None:
        samples[0].layer(layer)  # checks the index, negative from the end
        li = layer % L
    measures = [sample_measures(m) for m in samples]
    per_sample = {k: np.stack([m[k] for m in measures]) for k in MEASURES}
    history = context_history([context_profile(m) for m in samples])
    return LongContextStudy(samples, li, per_sample, history, M.compression_hints(history))


__all__ = [
    "INSIGHTS", "MEASURES", "DiagnosticSummary", "LongContextStudy", "context_history", "context_measures",
    "context_of",
    "context_profile",
    "diagnostic_summary", "insight_lines", "long_context_study", "sample_measures", "sequence_block",
    "study_samples",
]
