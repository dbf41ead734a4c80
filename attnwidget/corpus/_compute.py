"""One shard of a corpus run: padded batches through the model, every head's numbers as rows.

The model runs on a padded batch ``[B, T]`` (right padding, ``attention_mask``
for transformers models, so no real token attends to padding and padded keys
get weight exactly 0). Each sequence's real part ``[:n, :n]`` is then cut out
of the batch's weights, and sequences of the same length are analysed together
as one stack ``[b, L, H, n, n]`` by the same functions that
:func:`attnwidget.metrics.analyze_stack` uses: the numbers equal those of
``extract_attention`` + ``analyze_stack`` run one sequence at a time, up to the
float32 rounding of a batched forward (see ``tests/test_corpus.py``).

Models without an ``attention_mask`` (plain PyTorch, such as the tiny LM, and
TransformerLens) cannot hide padding from their attention, so their batches
hold sequences of one length only (windows all have one length anyway).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import torch

from attnwidget.metrics._input import masked_mean, prepare
from attnwidget.metrics.basic import (
    _diagonal,
    _mean_normalized_entropy,
    _mean_row_max,
    _row_entropy,
    _sparsity,
)
from attnwidget.metrics.history import _profile_measures
from attnwidget.metrics.patterns import _empty, _grade, _label, _mean_spread, _scores

#: Columns of a corpus table, in order: (name, Arrow type, meaning). One row per (sequence, layer, head).
#: No Gini coefficient: it sorts every map, which took two thirds of the metrics' time here; where
#: it matters, :func:`attnwidget.metrics.gini_coefficient` gives it for the sequences of interest.
COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("sequence", "int64", "window (or document) index in the dataset"),
    ("layer", "int16", "layer index"),
    ("head", "int16", "head index"),
    ("n_tokens", "int32", "tokens of the sequence (special tokens included)"),
    ("mean_entropy", "float64", "mean row entropy, nats"),
    ("normalized_entropy", "float64", "mean row entropy over ln(visible keys), 0..1"),
    ("effective_tokens", "float64", "mean exp(row entropy): keys a row spreads over"),
    ("max", "float64", "largest weight"),
    ("diagonal_mean", "float64", "mean weight of a token on itself"),
    ("sparsity", "float64", "share of weights below the run's threshold"),
    ("max_attention", "float64", "mean of each row's largest weight"),
    ("sharpness", "float64", "mean row std relative to a one-hot row's, 0 (uniform)..1 (one-hot)"),
    ("row_std", "float64", "mean row std of the weights (handout 002's row_std)"),
    ("grade", "string", "SHARP / MEDIUM / UNIFORM / EMPTY from sharpness"),
    ("pattern", "string", "pattern label (metrics.PATTERN_RULES; uniform: metrics.SPREAD_UNIFORM_RULE)"),
    ("score_diagonal", "float64", "pattern score: diagonal mean"),
    ("score_off_diagonal", "float64", "pattern score: off-diagonal mean"),
    ("score_beginning_of_sequence", "float64", "pattern score: first-column mean"),
    ("score_broadcast", "float64", "pattern score: largest column sum per query"),
    ("score_local", "float64", "pattern score: mass within 2 positions of the diagonal"),
    ("score_std", "float64", "pattern score: std of the weights"),
    ("score_uniform", "float64", "pattern score: normalised entropy"),
    ("score_block", "float64", "pattern score: block-diagonal contrast"),
    ("previous_token", "float64", "mean weight of query i on key i - 1"),
    ("duplicate_token", "float64", "mean mass on earlier copies of the query's token (NaN: no repeat)"),
    ("induction", "float64", "mean mass on tokens that followed earlier copies of the query's token"),
    ("recency_ratio", "float64", "last query: recent / distant quarter mean weight"),
    ("max_position_relative", "float64", "last query: position of its largest weight, 0 (first)..1 (last)"),
    ("top_mass", "float64", "last query: mass on its top 10% of keys"),
)
COLUMN_NAMES = tuple(name for name, _, _ in COLUMNS)
#: The numeric per-head statistics (what a head-level summary aggregates).
STAT_COLUMNS = tuple(name for name, kind, _ in COLUMNS if kind == "float64")
_SCORE_KEYS = ("diagonal", "off_diagonal", "beginning_of_sequence", "broadcast", "local", "std",
               "uniform", "block")


# --------------------------------------------------------------------------- the forward
def _is_hf(model: Any) -> bool:
    from attnwidget.extract.huggingface import is_hf_model

    return is_hf_model(model)


def causal_hint(model: Any) -> bool | None:
    """Whether the model says its attention is causal (transformers' ``is_causal``); None: infer."""
    if not _is_hf(model):
        return None
    from attnwidget.extract._common import all_modules
    from attnwidget.extract.huggingface import _is_causal

    return _is_causal(all_modules(model))


@contextlib.contextmanager
def hf_ready(model: Any) -> Iterator[None]:
    """A transformers model in eval mode with eager attention (which returns weights), restored after.

    Entered once around many forwards, so that threads running them in parallel
    never switch the model's settings under each other.
    """
    from attnwidget.extract._common import all_modules, eval_mode
    from attnwidget.extract.huggingface import eager_attention

    if getattr(model.config, "is_encoder_decoder", False):
        raise ValueError(
            f"model: {type(model).__name__} is an encoder-decoder; corpus statistics take encoders "
            "and decoder-only models (extract the stacks one text at a time instead)"
        )
    modules = all_modules(model)
    with eval_mode(model, modules), eager_attention(model, modules):
        yield


def _forward_hf(model: Any, ids: torch.Tensor, keep: torch.Tensor, ready: bool) -> list[torch.Tensor]:
    inputs: dict[str, Any] = {"input_ids": ids, "attention_mask": keep.long()}
    if getattr(model.config, "use_cache", False):
        inputs["use_cache"] = False
    with contextlib.nullcontext() if ready else hf_ready(model), torch.inference_mode():
        out = model(**inputs, output_attentions=True, return_dict=True)
    if not out.attentions:
        raise ValueError(f"model: {type(model).__name__} returned no attention weights")
    return list(out.attentions)


def _forward_hooks(model: Any, ids: torch.Tensor) -> list[torch.Tensor]:
    from attnwidget.extract._common import NoAttentionFoundError, eval_mode, no_mha_fastpath
    from attnwidget.extract.hooks import attention_candidates, hook_module, is_passed_through, layer_weights

    candidates, _ = attention_candidates(model, None)
    captured: list[torch.Tensor] = []

    def hook(mod: Any, args: Any, kwargs: Any, output: Any) -> None:
        weights = layer_weights(mod, args, kwargs, output)
        if weights is not None and not is_passed_through(weights, captured):
            captured.append(weights.detach())

    handles = [h for _, module in candidates for h in hook_module(module, hook)]
    try:
        with eval_mode(model), no_mha_fastpath(), torch.no_grad():
            model(ids)
    finally:
        for handle in handles:
            handle.remove()
    if not captured:
        raise NoAttentionFoundError(f"model: no attention weights found in {type(model).__name__}")
    return captured


def _forward_lens(model: Any, ids: torch.Tensor) -> list[torch.Tensor]:
    from attnwidget.extract._common import eval_mode

    names = [f"blocks.{layer}.attn.hook_pattern" for layer in range(model.cfg.n_layers)]
    wanted = set(names)
    with eval_mode(model), torch.no_grad():
        _, cache = model.run_with_cache(ids, names_filter=lambda name: name in wanted)
    return [cache[name] for name in names]


def batch_attention(
    model: Any, sequences: Sequence[np.ndarray], pad_id: int = 0, *, ready: bool = False
) -> torch.Tensor:
    """The model's attention for a batch of token-id sequences, ``[B, L, H, T, T]`` float32.

    ``T`` is the longest sequence; shorter ones are right-padded with ``pad_id``
    and, for transformers models, hidden by ``attention_mask`` (their padded keys
    get weight 0). Other models need sequences of one length (ValueError otherwise).
    ``ready``: the caller holds :func:`hf_ready` already (threads share one model).
    """
    from attnwidget.extract.lens import is_hooked_transformer

    lengths = [len(s) for s in sequences]
    T = max(lengths)
    ids = torch.full((len(sequences), T), int(pad_id), dtype=torch.int64)
    keep = torch.zeros((len(sequences), T), dtype=torch.bool)
    for b, seq in enumerate(sequences):
        ids[b, : len(seq)] = torch.as_tensor(seq, dtype=torch.int64)
        keep[b, : len(seq)] = True
    if _is_hf(model):
        layers = _forward_hf(model, ids, keep, ready)
    elif len(set(lengths)) > 1:
        raise ValueError(
            f"sequences: {type(model).__name__} takes no attention_mask, so a batch needs one length, "
            f"got lengths {sorted(set(lengths))}"
        )
    elif is_hooked_transformer(model):
        layers = _forward_lens(model, ids)
    else:
        layers = _forward_hooks(model, ids)
    return torch.stack([w.float() for w in layers], dim=1)  # [B, L, H, T, T]


# --------------------------------------------------------------------------- the numbers
def token_match_scores(w: torch.Tensor, ids: torch.Tensor, rows: torch.Tensor) -> dict[str, torch.Tensor]:
    """Duplicate-token and induction scores on any text, ``[b, L, H]`` for ``w`` ``[b, L, H, n, n]``.

    ``ids``: ``[b, n]`` token ids; ``rows``: bool ``[b, L, H, n]``, the rows that
    count. For query ``i``, the earlier copies of its token are the keys ``j < i``
    with ``ids[j] == ids[i]``; ``duplicate_token`` is the mean, over queries that
    have one, of the weight on them; ``induction`` the mean weight on the keys
    ``j + 1`` right after them (the token an induction head copies). On a
    sequence of distinct tokens repeated once these equal the fixed-offset
    :func:`attnwidget.metrics.duplicate_token_score` and
    :func:`~attnwidget.metrics.induction_score`; on natural text they follow
    wherever tokens repeat. NaN for a sequence with no repeated token.
    """
    b, n = ids.shape
    earlier = (ids[:, :, None] == ids[:, None, :]) & torch.ones(n, n, dtype=torch.bool).tril(-1)
    after = torch.zeros_like(earlier)
    after[:, :, 1:] = earlier[:, :, :-1]  # key j + 1 for every earlier copy j
    by_query = w.permute(0, 3, 4, 1, 2)  # [b, n, n, L, H] (a view)
    out = {}
    for name, keys in (("duplicate_token", earlier), ("induction", after)):
        # the pairs are few (repeats), so gather them instead of multiplying every [n, n] map by a mask
        bi, qi, ki = keys.nonzero(as_tuple=True)
        mass = torch.zeros(b, n, *w.shape[1:3], dtype=w.dtype)
        mass.index_put_((bi, qi), by_query[bi, qi, ki], accumulate=True)  # [b, n, L, H]
        has = keys.any(-1)[:, None, None, :] & rows  # [b, L, H, n]
        score = masked_mean(mass.permute(0, 2, 3, 1), has, 1)
        out[name] = torch.where(has.any(-1), score, torch.full_like(score, float("nan")))
    return out


def _looks_causal(w: torch.Tensor) -> bool:
    """Every weight above the diagonal is exactly 0 (what AttentionMaps infers per record)."""
    n = w.shape[-1]
    return n >= 2 and not bool(w.triu(1).any())


def group_numbers(
    w: torch.Tensor, ids: torch.Tensor, causal: bool, threshold: float
) -> dict[str, np.ndarray]:
    """Every column of :data:`COLUMNS` after ``n_tokens`` for a stack ``[b, L, H, n, n]``: ``[b, L, H]`` each.

    ``ids``: ``[b, n]``. Validated once (:func:`attnwidget.metrics._input.prepare`,
    ``causal`` as the record would have it), then the functions behind
    :func:`attnwidget.metrics.analyze_stack` and :func:`~attnwidget.metrics.head_summary`.
    """
    p = prepare(w, "attention", causal=causal)
    # the statistics compute_attention_statistics reports, from the same helpers, but for the Gini
    # coefficient: it sorts every map, two thirds of the metrics' time here (see COLUMNS)
    entropy = _row_entropy(p)  # [b, L, H, n]
    diag, diag_keep = _diagonal(p)
    stats = {
        "mean_entropy": masked_mean(entropy, p.rows, 1), "normalized_entropy": _mean_normalized_entropy(p),
        "effective_tokens": masked_mean(entropy.exp(), p.rows, 1), "max": p.w.amax(dim=(-2, -1)),
        "diagonal_mean": diag.mean(-1) if diag_keep is None else masked_mean(diag, diag_keep, 1),
    }
    scores = _scores(p)
    row_std, sharp = _mean_spread(p)
    history = _profile_measures(p, 0.25)
    matches = token_match_scores(p.w, ids, p.rows)
    out: dict[str, Any] = dict(stats)
    out.update(
        sparsity=_sparsity(p, threshold), max_attention=_mean_row_max(p), sharpness=sharp, row_std=row_std,
        grade=_grade(sharp.numpy(), _empty(p)), pattern=_label(scores, "spread"),
        **{f"score_{key}": scores[key] for key in _SCORE_KEYS},
        previous_token=scores["previous_token"], **matches,
        recency_ratio=history["recency_ratio"], max_position_relative=history["max_position_relative"],
        top_mass=history["top_mass"],
    )
    return {k: v if isinstance(v, np.ndarray) else v.double().numpy() for k, v in out.items()}


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run torch ops of the calling thread on ``n`` intra-op threads inside the block, then restore.

    With OpenMP (PyTorch's CPU backend) the count belongs to the calling thread,
    so a worker thread can run on one while the main thread keeps its own.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _numbers(
    stack: torch.Tensor, batch: list[int], sequences: Sequence[np.ndarray], causal: bool | None,
    threshold: float,
) -> dict[int, dict[str, np.ndarray]]:
    """Every sequence's numbers from its batch's weights ``[B, L, H, T, T]``, grouped by length."""
    out: dict[int, dict[str, np.ndarray]] = {}
    for n in sorted({len(sequences[i]) for i in batch}):
        members = [b for b, i in enumerate(batch) if len(sequences[i]) == n]
        w = stack[members][..., :n, :n].contiguous()  # the real tokens only: [b, L, H, n, n]
        ids = torch.as_tensor(np.stack([sequences[batch[b]] for b in members]), dtype=torch.int64)
        numbers_of = group_numbers(w, ids, _looks_causal(w) if causal is None else causal, threshold)
        for j, b in enumerate(members):
            out[batch[b]] = {k: v[j] for k, v in numbers_of.items()}
    return out


#: Bytes of attention maps that the threads of one shard may hold at once: each thread holds
#: its batch's maps ``[B, L, H, T, T]`` float32 and the metrics' intermediates, about 4 copies.
WORK_BYTES = 2 * 2**30


def _one_thread() -> None:
    torch.set_num_threads(1)


def _batch_job(model: Any, sequences: Sequence[np.ndarray], pad_id: int, causal: bool | None,
               threshold: float, batch: list[int]) -> dict[int, dict[str, np.ndarray]]:
    stack = batch_attention(model, [sequences[i] for i in batch], pad_id, ready=True)
    return _numbers(stack, batch, sequences, causal, threshold)


def _workers(model: Any, batches: list[list[int]], sequences: Sequence[np.ndarray]) -> int:
    """Threads for a shard: one per torch thread for transformers models, within :data:`WORK_BYTES`.

    Hook-based models (the tiny LM, TransformerLens) register hooks on shared
    modules per forward, so their forwards run one at a time.
    """
    threads = torch.get_num_threads()
    if threads == 1 or len(batches) == 1 or not _is_hf(model):
        return 1
    cfg = model.config
    maps = getattr(cfg, "num_hidden_layers", 1) * getattr(cfg, "num_attention_heads", 1)
    longest = max(len(s) for s in sequences)
    per_thread = 4 * 4 * maps * longest**2 * max(len(b) for b in batches)
    return max(1, min(threads, len(batches), WORK_BYTES // per_thread))


def shard_rows(
    model: Any,
    sequences: Sequence[np.ndarray],
    numbers: Sequence[int],
    *,
    batch_size: int,
    threshold: float,
    causal: bool | None,
    pad_id: int = 0,
) -> dict[str, np.ndarray]:
    """The rows of :data:`COLUMNS` for ``sequences`` (int64 id arrays, special tokens included).

    ``numbers``: each sequence's index in the dataset (the ``sequence`` column).
    Sequences are batched ``batch_size`` at a time in order of length (least
    padding); rows come out in the given order, then layer, then head.
    ``causal``: the model's own flag, or None to infer it from the weights.

    Threads: a transformers model runs one batch per torch thread, each thread
    on one torch thread (forward and metrics), instead of one batch at a time on
    all of them. The metrics are many small reductions, which a thread pool's
    fork/join slows down (4-5x on a busy 2-core machine), and a forward on one
    thread per core wastes less than one spread over several. A dask worker has
    one thread and runs its batches one after the other.
    """
    if not sequences:
        return {name: np.zeros(0) for name in COLUMN_NAMES}
    order = sorted(range(len(sequences)), key=lambda i: (len(sequences[i]), i))
    hf = _is_hf(model)
    batches: list[list[int]] = []
    for i in order:  # consecutive by length; a non-transformers batch holds one length only
        last = batches[-1] if batches else None
        same = last is not None and (hf or len(sequences[last[0]]) == len(sequences[i]))
        if last is not None and same and len(last) < batch_size:
            last.append(i)
        else:
            batches.append([i])
    per_seq: dict[int, dict[str, np.ndarray]] = {}
    workers = _workers(model, batches, sequences)
    if workers == 1:
        for batch in batches:
            stack = batch_attention(model, [sequences[i] for i in batch], pad_id)
            with torch_threads(1):
                per_seq.update(_numbers(stack, batch, sequences, causal, threshold))
    else:
        job = functools.partial(_batch_job, model, sequences, pad_id, causal, threshold)
        with hf_ready(model):
            pool = ThreadPoolExecutor(workers, initializer=_one_thread,
                                      thread_name_prefix="attnwidget-corpus")
            try:
                for result in pool.map(job, batches):
                    per_seq.update(result)
            finally:  # an interrupt waits for the batches running now and starts no other
                pool.shutdown(wait=True, cancel_futures=True)
    L, H = per_seq[0]["mean_entropy"].shape
    count = L * H
    cols: dict[str, Any] = {
        "sequence": np.repeat(np.asarray(numbers, dtype=np.int64), count),
        "layer": np.tile(np.repeat(np.arange(L, dtype=np.int16), H), len(sequences)),
        "head": np.tile(np.arange(H, dtype=np.int16), L * len(sequences)),
        "n_tokens": np.repeat(np.asarray([len(s) for s in sequences], dtype=np.int32), count),
    }
    for name in COLUMN_NAMES[4:]:
        cols[name] = np.concatenate([per_seq[i][name].reshape(-1) for i in range(len(sequences))])
    return cols
