"""What kind of head is this: pattern labels with their scores, sharpness, and head scores.

All functions take attention ``[..., Q, K]`` and return one result per matrix.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from attnwidget.metrics._input import Prepared, as_output, check_int, masked_mean, prepare
from attnwidget.metrics.basic import (
    _band_sums,
    _diagonal,
    _mean_normalized_entropy,
    _moments,
    _n_visible,
)

#: The labels :func:`identify_attention_pattern` returns, and the rules behind
#: them, checked in this order (the first that holds wins).
PATTERN_RULES: tuple[tuple[str, str], ...] = (
    ("empty", "no query row has a visible key: nothing is attended (every row fully masked)"),
    ("diagonal", "diagonal mean > 0.5 and > 3 x the off-diagonal mean"),
    ("beginning_of_sequence", "first-column mean > 0.4"),
    ("broadcast", "largest column sum / queries > 0.6"),
    ("local", "share of the mass within 2 positions of the diagonal > 0.8"),
    ("uniform", "standard deviation of the weights < 0.1"),
    ("mixed", "none of the above"),
)
PATTERNS = tuple(label for label, _ in PATTERN_RULES)
#: The uniform rule that means the same at every length (``uniform="spread"``). 001's rule,
#: the std of all weights < 0.1, holds for any map over about 100 keys whatever its shape: a
#: one-hot row over n keys has std ``sqrt(n - 1) / n`` (0.044 at 512), so at 512 tokens every
#: head no earlier rule names would be "uniform". This one is the UNIFORM grade of
#: :func:`sharpness_grade`: the rows' spread relative to one-hot rows below 0.1.
SPREAD_UNIFORM_RULE = "relative row spread < 0.1 (the UNIFORM grade of sharpness_grade)"
UNIFORM_RULES = ("std", "spread")

#: Cut-offs on the relative row spread (see :func:`head_sharpness`).
SHARP_CUTOFF = 0.5
UNIFORM_CUTOFF = 0.1
#: ``EMPTY``: no row has a visible key, so there is no spread to grade.
GRADES = ("SHARP", "MEDIUM", "UNIFORM", "EMPTY")


def _scores(p: Prepared, window: int = 2) -> dict[str, torch.Tensor]:
    if "scores" in p.cache:
        return p.cache["scores"]
    w = p.w
    Q, K = w.shape[-2:]
    n_rows = p.rows.sum(dim=-1).to(w.dtype).clamp(min=1)
    total = p.sums.sum(-1).clamp(min=torch.finfo(w.dtype).tiny)
    diag, diag_keep = _diagonal(p)
    if diag_keep is None:
        diag_mean = diag.mean(-1)
        off_count = float(Q * K - diag.shape[-1])
    else:
        diag_mean = masked_mean(diag, diag_keep, 1)
        off_count = _n_visible(p) - diag_keep.sum(-1)
    off_mean = (total - diag.sum(-1)) / torch.as_tensor(off_count, dtype=w.dtype).clamp(min=1)
    col_sums = w.sum(dim=-2)
    band = _band_sums(w, window)
    prev = torch.diagonal(w, offset=-1, dim1=-2, dim2=-1)  # (i, i - 1) for i >= 1
    prev_keep = p.rows[..., 1 : 1 + prev.shape[-1]]
    _, std = _moments(p)
    scores = {
        "diagonal": diag_mean,
        "off_diagonal": off_mean,
        "beginning_of_sequence": masked_mean(w[..., :, 0], p.rows, 1),
        "broadcast": col_sums.amax(dim=-1) / n_rows,
        "local": band[0] / total,
        "std": std,
        "uniform": _mean_normalized_entropy(p),
        "block": _block_score(w, p.sums, col_sums, window, band),
        "previous_token": masked_mean(prev, prev_keep, 1) if prev.shape[-1] else torch.zeros_like(diag_mean),
        "attended_rows": p.rows.to(w.dtype).mean(dim=-1),
        "spread": _mean_spread(p)[1],
    }
    p.cache["scores"] = scores
    return scores


def _upper_sums(w: torch.Tensor, block: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """Row and column sums of the strict upper triangle ``j > i`` of square ``w`` ``[..., Q, Q]``.

    In row blocks ``[r0, r1)``: the part right of the block's diagonal square,
    ``w[r0:r1, r1:]``, is all above the diagonal and is summed as it lies (no
    copy); only the small ``block x block`` square on the diagonal is masked. A
    full ``triu`` copy (64 MB at 4096 tokens) would cost more than the sums.
    """
    Q = w.shape[-1]
    row = torch.empty(*w.shape[:-1], dtype=w.dtype)
    col = torch.zeros(*w.shape[:-2], Q, dtype=w.dtype)
    for r0 in range(0, Q, block):
        r1 = min(r0 + block, Q)
        right = w[..., r0:r1, r1:]  # [..., b, Q - r1]
        square = torch.triu(w[..., r0:r1, r0:r1], diagonal=1)  # [..., b, b]
        row[..., r0:r1] = right.sum(-1) + square.sum(-1)
        col[..., r1:] += right.sum(-2)
        col[..., r0:r1] += square.sum(-2)
    return row, col


def _block_score(
    w: torch.Tensor,
    row_sums: torch.Tensor,
    col_sums: torch.Tensor,
    window: int,
    band: tuple[torch.Tensor, ...],
) -> torch.Tensor:
    """How block-diagonal a square map is, in [0, 1]; 0 for non-square or tiny maps.

    For every split ``s`` into blocks ``[:s]`` and ``[s:]`` (each at least 2
    tokens), compare the density of weight inside the two diagonal blocks with
    the density across them, leaving out the band ``|i - j| <= window``
    (otherwise a diagonal or local head would look like many small blocks;
    ``band`` is :func:`_band_sums` of ``w`` for that window).
    The score is the best ``1 - density_across / density_inside``: 0 when
    weight is spread evenly, 1 when nothing crosses the split. A single column
    everyone attends to also scores well (its split puts most of it inside), so
    read it next to ``broadcast``.

    The top-left block sums come from one strictly-upper-triangular copy: the
    block ``[:s, :s]`` is the sum over t < s of row t up to the diagonal plus
    column t above it.
    """
    Q, K = w.shape[-2:]
    if Q != K or Q < 4:
        return torch.zeros(w.shape[:-2], dtype=w.dtype)
    up_row, up_col = _upper_sums(w)
    band_total, band_row, band_col, band_left, band_above = band

    def split(total, rows, cols, left, above):  # -> (inside, across) for s = 2..Q-2
        tl = (left + above).cumsum(-1)
        rows_before, cols_before = rows.cumsum(-1), cols.cumsum(-1)
        s = torch.arange(1, Q - 2)  # index s - 1 for s = 2..Q-2
        inside = tl[..., s] + (total.unsqueeze(-1) - rows_before[..., s] - cols_before[..., s] + tl[..., s])
        return inside, total.unsqueeze(-1) - inside

    off_total = row_sums.sum(-1) - band_total
    mass_in, mass_out = split(
        off_total, row_sums - band_row, col_sums - band_col,
        (row_sums - up_row) - band_left, up_col - band_above,
    )
    # the same sums over a matrix of ones count cells; a stride-0 view avoids a Q x K array
    ones = torch.ones(1, dtype=w.dtype).expand(Q, K)
    c_total, c_row, c_col, c_left, c_above = _band_sums(ones, window)
    upper_in_row = torch.arange(K - 1, -1, -1, dtype=w.dtype)  # cells j > i in row i (Q == K)
    upper_in_col = torch.arange(K, dtype=w.dtype)  # cells i < j in column j
    cells_in, cells_out = split(
        torch.tensor(float(Q * K)) - c_total, K - c_row, Q - c_col,
        (K - upper_in_row) - c_left, upper_in_col - c_above,
    )
    dens_in = mass_in / cells_in.clamp(min=1)
    dens_out = mass_out / cells_out.clamp(min=1)
    contrast = torch.where(dens_in > 0, 1 - dens_out / dens_in.clamp(min=1e-30), torch.zeros_like(dens_in))
    return contrast.clamp(0, 1).amax(dim=-1)


def _check_uniform(uniform: Any) -> str:
    if uniform not in UNIFORM_RULES:
        raise ValueError(f"uniform: expected one of {UNIFORM_RULES}, got {uniform!r}")
    return uniform


def _label(s: dict[str, torch.Tensor], uniform: str = "std") -> np.ndarray:
    rules = [
        s["attended_rows"] == 0,
        (s["diagonal"] > 0.5) & (s["diagonal"] > 3 * s["off_diagonal"]),
        s["beginning_of_sequence"] > 0.4,
        s["broadcast"] > 0.6,
        s["local"] > 0.8,
        s["std"] < 0.1 if uniform == "std" else s["spread"] < UNIFORM_CUTOFF,
    ]
    out = np.full(tuple(s["std"].shape), "mixed", dtype=object)
    decided = np.zeros(out.shape, dtype=bool)
    for (label, _), hit in zip(PATTERN_RULES, rules, strict=False):
        take = hit.numpy() & ~decided
        out[take] = label
        decided |= take
    return out


def identify_attention_pattern(
    attention: Any, *, mask: Any = None, causal: bool = False, normalize: bool = False,
    uniform: str = "std",
) -> Any:
    """The predominant pattern: one of :data:`PATTERNS`, by the rules in :data:`PATTERN_RULES`.

    Returns a str for a 2-D input, an object array of str ``[...]`` for a stack.
    The rules are read in order; see :func:`pattern_scores` for the numbers
    behind a label and :func:`explain_pattern` for a readable account.
    ``uniform``: ``"std"``, handout 001's rule (std of the weights < 0.1: true of
    every map over about 100 keys), or ``"spread"`` (:data:`SPREAD_UNIFORM_RULE`,
    the same at every length; the widget, the report and corpora use it).
    """
    uniform = _check_uniform(uniform)
    p = prepare(attention, "attention", mask=mask, causal=causal, normalize=normalize)
    labels = _label(_scores(p), uniform)
    return labels.item() if labels.ndim == 0 else labels


def pattern_scores(
    attention: Any, *, mask: Any = None, causal: bool = False, normalize: bool = False
) -> dict[str, Any]:
    """The measure behind each pattern, per matrix (floats for 2-D, arrays ``[...]`` for a stack).

    ``diagonal``: mean weight on the diagonal; ``off_diagonal``: mean weight
    elsewhere; ``beginning_of_sequence``: mean weight on the first key;
    ``broadcast``: largest column sum / queries (1 when every query looks at one
    key); ``local``: share of the mass within 2 positions of the diagonal;
    ``std``: standard deviation of the weights (001's uniform rule's measure);
    ``spread``: mean relative row spread (the ``"spread"`` uniform rule's measure:
    0 uniform rows, 1 one-hot rows); ``uniform``: mean normalised row entropy
    (1 = uniform rows); ``block``:
    block-diagonal contrast in [0, 1] (see ``_block_score``); ``previous_token``:
    mean weight from each query on the key just before it; ``attended_rows``:
    share of the query rows that have a visible key (0 = an empty map, labelled
    ``"empty"``: every row fully masked, nothing is attended).
    """
    p = prepare(attention, "attention", mask=mask, causal=causal, normalize=normalize)
    return {k: as_output(v) for k, v in _scores(p).items()}


def explain_pattern(attention: Any, *, mask: Any = None, causal: bool = False,
                    uniform: str = "std") -> list[str]:
    """One line per rule for a single ``[Q, K]`` matrix: its measure, its threshold and the verdict
    (``uniform``: which uniform rule, see :func:`identify_attention_pattern`)."""
    uniform = _check_uniform(uniform)
    p = prepare(attention, "attention", mask=mask, causal=causal)
    if p.w.ndim != 2:
        raise ValueError(f"attention: expected one [Q, K] matrix, got shape {tuple(p.w.shape)}")
    scores = _scores(p)
    label = _label(scores, uniform).item()
    s = {k: float(v) for k, v in scores.items()}
    lines = [
        f"diagonal: diagonal mean {s['diagonal']:.3f} (needs > 0.5 and > 3 x off-diagonal "
        f"{s['off_diagonal']:.3f})",
        f"beginning_of_sequence: first-column mean {s['beginning_of_sequence']:.3f} (needs > 0.4)",
        f"broadcast: largest column sum / queries {s['broadcast']:.3f} (needs > 0.6)",
        f"local: mass within 2 of the diagonal {s['local']:.3f} (needs > 0.8)",
        f"uniform: std {s['std']:.3f} (needs < 0.1)" if uniform == "std" else
        f"uniform: relative row spread {s['spread']:.3f} (needs < {UNIFORM_CUTOFF})",
    ]
    return [f"label: {label}", *lines]


# --------------------------------------------------------------------------- sharpness
def onehot_std(n_keys: torch.Tensor) -> torch.Tensor:
    """The std of a one-hot row over ``n_keys`` keys, ``sqrt(n - 1) / n``: the largest a row of
    weights summing to 1 can have (0 for one key or none)."""
    return (n_keys - 1).clamp(min=0).sqrt() / n_keys.clamp(min=1)


def _relative_spread(p: Prepared) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row ``[..., Q]``: std of the visible weights, and that std over a one-hot row's std.

    Uses ``var = sum(w^2) / n - (sum(w) / n)^2`` over the n visible keys;
    hidden keys are 0, so the sum of squares can run over the whole row.
    """
    if "spread" not in p.cache:
        n = p.n_keys.clamp(min=1)
        sq = torch.linalg.vector_norm(p.w, dim=-1) ** 2
        std = (sq / n - (p.sums / n) ** 2).clamp(min=0).sqrt()
        onehot = onehot_std(n)
        rel = torch.where(onehot > 0, std / onehot.clamp(min=1e-30), torch.zeros_like(std))
        p.cache["spread"] = (std.masked_fill(~p.rows, 0), rel.masked_fill(~p.rows, 0))
    return p.cache["spread"]


def _mean_spread(p: Prepared) -> tuple[torch.Tensor, torch.Tensor]:
    """Per matrix ``[...]``: mean row std and mean relative spread over the rows that count."""
    std, rel = _relative_spread(p)
    return masked_mean(std, p.rows, 1), masked_mean(rel, p.rows, 1)


def _empty(p: Prepared) -> np.ndarray:
    """bool ``[...]``: matrices in which no row counts (every query fully masked)."""
    return (~p.rows.any(dim=-1)).numpy()


def _grade(rel: np.ndarray, empty: np.ndarray | None = None) -> np.ndarray:
    """Relative spread -> ``"SHARP"``/``"MEDIUM"``/``"UNIFORM"``, ``"EMPTY"`` where ``empty``."""
    grade = np.where(rel >= SHARP_CUTOFF, "SHARP", np.where(rel < UNIFORM_CUTOFF, "UNIFORM", "MEDIUM"))
    if empty is not None:
        grade = np.where(empty, "EMPTY", grade)
    return grade.astype(object)


def head_sharpness(
    attention: Any, *, relative: bool = False, mask: Any = None, causal: bool = False
) -> Any:
    """Mean over rows of the standard deviation of the row's weights, per matrix ``[...]``.

    A sharp head puts its weight on few keys (large spread), a diffuse one
    spreads it evenly (spread near 0). The raw value shrinks with length (a
    one-hot row over n keys has std ``sqrt(n - 1) / n``), so ``relative=True``
    divides each row's std by that one-hot value: 1 = one-hot rows, 0 = uniform,
    comparable across lengths. Averaging heads first destroys this: sharp heads
    pointing at different keys average into a diffuse map.
    """
    p = prepare(attention, "attention", mask=mask, causal=causal)
    std, rel = _mean_spread(p)
    return as_output(rel if relative else std)


def sharpness_grade(attention: Any, *, mask: Any = None, causal: bool = False) -> Any:
    """``"SHARP"``, ``"MEDIUM"`` or ``"UNIFORM"`` per matrix, from the relative spread.

    Cut-offs on :func:`head_sharpness` with ``relative=True``:
    SHARP >= :data:`SHARP_CUTOFF` (0.5; rows about as peaked as weight split over
    four keys or fewer), UNIFORM < :data:`UNIFORM_CUTOFF` (0.1; e.g. weight spread
    evenly over half of 100+ keys), MEDIUM between; EMPTY when every row is fully
    masked (nothing is attended, so there is nothing to grade).
    """
    p = prepare(attention, "attention", mask=mask, causal=causal)
    grade = _grade(_mean_spread(p)[1].numpy(), _empty(p))
    return grade.item() if grade.ndim == 0 else grade


# --------------------------------------------------------------------------- head scores
def _offset_score(p: Prepared, offset: int, start: int) -> torch.Tensor:
    Q, K = p.w.shape[-2:]
    q = torch.arange(start, Q)
    k = q + offset
    ok = (k >= 0) & (k < K)
    q, k = q[ok], k[ok]
    if len(q) == 0:
        raise ValueError(f"attention: {Q} queries are too few for offset {offset} from row {start}")
    vals = p.w[..., q, k]
    keep = p.rows[..., q]
    return masked_mean(vals, keep, 1)


def previous_token_score(attention: Any, start: int = 1) -> Any:
    """Mean weight each query ``i >= start`` (default 1) puts on key ``i - 1`` (a previous-token
    head scores ~1); ``start=2`` skips a BOS prefix."""
    p = prepare(attention, "attention")
    start = check_int(start, "start", 1, p.w.shape[-2] - 1)
    return as_output(_offset_score(p, -1, start))


def duplicate_token_score(attention: Any, period: int, start: int | None = None) -> Any:
    """On a sequence whose tokens repeat with ``period``: mean weight from ``i`` to ``i - period``.

    That key holds the same token as the query (the earlier copy). Rows from
    ``start`` (default ``period``: the second copy; add 1 for a BOS prefix) count.
    """
    p = prepare(attention, "attention")
    Q = p.w.shape[-2]
    period = check_int(period, "period", 1, Q - 1)
    start = period if start is None else check_int(start, "start", period, Q - 1)
    return as_output(_offset_score(p, -period, start))


def induction_score(attention: Any, period: int, start: int | None = None) -> Any:
    """On a sequence repeating with ``period``: mean weight from ``i`` to ``i - period + 1``.

    That key is the token that *followed* the earlier copy of the query's token:
    what an induction head attends to in order to predict it again (Olsson et
    al. 2022; TransformerLens' induction score uses the same diagonal).
    """
    p = prepare(attention, "attention")
    Q = p.w.shape[-2]
    period = check_int(period, "period", 2, Q - 1)
    start = period if start is None else check_int(start, "start", period, Q - 1)
    return as_output(_offset_score(p, -period + 1, start))
