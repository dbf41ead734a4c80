"""Where a view's record comes from: a record, a model and a text, a model and a source;
its corpus summary; and the ablated re-runs of its model.

:class:`ViewSource` remembers how to run the model again (the ids and tokenizer
it was extracted with), so :meth:`ViewSource.ablated` and :meth:`ViewSource.sweep`
see the same sequence as the first extraction.
"""

from __future__ import annotations

import functools
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from attnwidget.maps import AttentionMaps, check_size

_STATIC = Path(__file__).parent / "static"

# Shown instead of the view when the bundle was never built (a source tree without
# `pip install -e .`): importing attnwidget still works for metrics and extraction.
_MISSING_BUNDLE_ESM = """
export default { render({ el }) {
  el.textContent = "attnwidget: the JS bundle (attnwidget/static/widget.js) is missing; "
    + "build it with `pip install -e .` or `npm --prefix js run build`.";
} };
"""


def bundle(name: str) -> str | Path:
    """The built ``static/`` file, or (for the JS) a module that says how to build it."""
    path = _STATIC / name
    if path.exists():
        return path
    return _MISSING_BUNDLE_ESM if name.endswith(".js") else ""


@dataclass
class ViewSource:
    """A model and what it was run on: ``text`` is the text or the sample's ids ``[1, T]``."""

    model: Any
    text: Any
    tokenizer: Any
    options: dict[str, Any]
    sample: Any = None  # the inputs.Sample a view built from a source shows (its provenance)
    base: Any = None  # attnwidget.ablate.unablated_run of the text, kept after the first ablation
    rebuild: Any = None  # () -> the record again, for a view that let go of it (attnwidget._lifetime)
    # the last ablated runs, the latest last: (heads, mode, the model's weights_state, the
    # original it was compared with, record, effect)
    kept_runs: list = field(default_factory=list)

    last_run_s: float | None = None  # how long the last ablated run took (s)
    extract_s: float | None = None  # how long the record's extraction took (s), if timed
    forgets: int = 0  # how many times :meth:`forget` ran: a plain run made before one is not kept
    ahead_too_big: bool = False  # the plain run made ahead did not fit AHEAD_MAX_BYTES: not again
    ahead_failed: bool = False  # the plain run made ahead raised: left to the click, which reports it
    made_ahead: Any = None  # the base, while it is one made ahead that no click has used yet
    ahead_s: float | None = None  # how long the plain run made ahead took (s), on one thread
    ahead_layers: int | None = None  # the layers it ran (None: not known)
    last_run_layers: int | None = None  # the layers the last ablated run computed
    replay_bytes: int | None = None  # replay_bytes_estimate of the sequence, once asked
    _base_lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def __post_init__(self) -> None:
        from attnwidget._cells import watch_cells

        watch_cells()  # runs the page asks for never overlap the kernel's cells (attnwidget._cells)

    #: Ablated runs kept: the one shown and the one a click would show next (:meth:`prepare`).
    KEEP_RUNS: ClassVar[int] = 2
    #: The longest ablated run (s) that :meth:`prepare` starts on a hint.
    PREPARE_MAX_S: ClassVar[float] = 0.5
    #: The plain run is made ahead of the first ablation (:meth:`make_base`) only for a record
    #: whose extraction, times the cores it may have used, took at most this long (s): the run
    #: ahead is on one thread, and a cell started meanwhile waits for it (the hover hint's
    #: bound, :data:`PREPARE_MAX_S`). MiniLM on two cores: 0.09 at 128 tokens, 0.14 at 256,
    #: 0.29 at 510, and twice that when the kernel was busy as the record was made.
    AHEAD_MAX_S: ClassVar[float] = 0.5
    #: ... and is kept only if its replay fits in this many bytes: it is held for a click that
    #: may never come (MiniLM: 22 MiB at 128 tokens, 52 at 256, 139 at 510, the 510-token
    #: record itself being 75). A larger one is left to the first click, as before. One such
    #: run at a time is kept in the process, the latest view's (:func:`_hold_ahead`).
    AHEAD_MAX_BYTES: ClassVar[int] = 32 * 2**20

    def ablated(self, pairs: list[list[int]], mode: str,
                original: AttentionMaps) -> tuple[AttentionMaps, dict]:
        """The record with the ``[layer, head]`` pairs switched off, and what that changed
        (:func:`attnwidget.ablate.ablated_record`).

        The last :data:`KEEP_RUNS` results are kept: switching a head off, on and off again
        (the way one looks at what it does) runs the model once, and so does a click that
        :meth:`prepare` saw coming. At most two records more than the view's own;
        :meth:`forget` frees them.
        """
        from attnwidget._cells import run_for_page
        from attnwidget._replay import weights_state

        # a model changed since (an optimizer step, load_state_dict) invalidates the kept runs
        key = (sorted((int(a), int(b)) for a, b in pairs), mode, weights_state(self.model))
        for i, kept in enumerate(self.kept_runs):
            if kept[:3] == key and kept[3] is original and key[2] is not None:
                self.kept_runs.append(self.kept_runs.pop(i))  # the latest last
                return kept[4], kept[5]
        # the page's: never beside a cell; a long one on the kernel's main thread (attnwidget._cells)
        maps, effect = run_for_page("ablation", lambda: self._ablated_run(pairs, mode, original, key[2]),
                                    self.expected_s(pairs, original.n_layers))
        self.kept_runs = [*self.kept_runs, (*key, original, maps, effect)][-self.KEEP_RUNS:]
        return maps, effect

    def prepare(self, pairs: list[list[int]], mode: str, original: AttentionMaps) -> bool:
        """Run the ablation a click is about to ask for (the pointer rests on the ablate
        button, or on a head thumbnail with shift held), so that the click finds it kept;
        the run is the same as the click's own.

        Not when the run is expected to take over :data:`PREPARE_MAX_S` (:meth:`expected_s`),
        nor without an estimate: the kernel answers nothing else meanwhile, and a
        pointer that only passed over the button would hold the sliders that long. Returns
        whether it ran (or found the run kept).
        """
        estimate = self.expected_s(pairs, original.n_layers)
        if estimate is None or estimate > self.PREPARE_MAX_S:  # no estimate, no hint
            return False
        self.ablated(pairs, mode, original)
        return True

    def expected_s(self, pairs: list[list[int]] | None = None, n_layers: int | None = None) -> float | None:
        """How long the ablated run of ``pairs`` should take (s), None before any estimate: the
        last ablated run; before one, the plain run made ahead (on one thread, as the page's
        short runs are); else the extraction (on every core). The first two are scaled to the
        layers the run computes (from the first ablated one of ``pairs`` on, of ``n_layers``):
        a run from layer 0 takes six times one of the last layer of six, and a plain run
        taken for a layer-0 run had sent the first click to the kernel's main thread, where
        the hand-over cost more than it saved. Twice that while the plain run is still to be
        made."""
        runs = ((self.last_run_s, self.last_run_layers), (self.ahead_s, self.ahead_layers),
                (self.extract_s, None))
        estimate, layers = next(((s, n) for s, n in runs if s is not None), (None, None))
        if estimate is None:
            return None
        if layers and pairs and n_layers:
            estimate *= (n_layers - min(int(layer) for layer, _ in pairs)) / layers
        return estimate * (2 if self.base is None else 1)

    def wants_base(self, tokens: int) -> bool:
        """Whether :meth:`make_base` should make the plain run of this ``tokens``-long sequence:
        none made yet, a record extracted from a model (not given as an array of weights)
        within :data:`AHEAD_MAX_S` (times the cores), a replay expected within
        :data:`AHEAD_MAX_BYTES` (:func:`attnwidget.ablate.replay_bytes_estimate`), and no
        earlier try that failed or went over it."""
        import os

        import torch

        return (self.base is None and not self.ahead_too_big and not self.ahead_failed
                and self.extract_s is not None
                and isinstance(self.model, torch.nn.Module)  # not weights given as an array
                and self.extract_s * (os.cpu_count() or 1) <= self.AHEAD_MAX_S
                and self._estimate(tokens) <= self.AHEAD_MAX_BYTES)

    def _estimate(self, tokens: int) -> int:
        """:func:`attnwidget.ablate.replay_bytes_estimate` of the sequence (``tokens`` long; the
        same at every ask), computed once: it is asked at every change until the run is made."""
        if self.replay_bytes is None:
            from attnwidget.ablate import replay_bytes_estimate

            self.replay_bytes = replay_bytes_estimate(self.model, tokens)
        return self.replay_bytes

    def make_base(self, forgets: int, retry: Any = None) -> bool:
        """Make the plain run the first ablated run needs (:func:`attnwidget.ablate.unablated_run`)
        while the model is free (:func:`attnwidget._cells.run_ahead`, which calls ``retry``
        once it is free again if a cell held it), so that the first click costs what the later
        ones do (a view's worker calls it when the kernel is idle). ``forgets``:
        :attr:`forgets` when it was asked; if :meth:`forget` ran since (the view let go of its
        record), nothing is made or kept. Returns whether the plain run is there now; a
        failing run is not tried again: the click runs it and reports the error."""
        from attnwidget._cells import run_ahead

        def run() -> None:
            from attnwidget.ablate import unablated_run

            if self.base is not None or self.forgets != forgets:  # made by a click; let go of
                return
            start = time.perf_counter()
            base = unablated_run(self.model, self.text, self.tokenizer, replay_bytes=self.AHEAD_MAX_BYTES)
            self.ahead_s = time.perf_counter() - start
            self.ahead_layers = len(base.hidden_states) - 1 if base.hidden_states else None
            if base.replay.cut:  # the click makes it with the full budget
                self.ahead_too_big = True
                return
            with self._base_lock:
                if self.forgets != forgets:
                    return
                self.base = self.made_ahead = base
            _hold_ahead(self)

        try:
            run_ahead(run, retry)
        except Exception:  # work ahead of a click: the click runs it again and shows the error
            self.ahead_failed = True
            return False
        return self.base is not None

    def drop_ahead(self) -> None:
        """Drop the plain run made ahead if no click has used it (another view made one since)."""
        with self._base_lock:
            if self.made_ahead is not None and self.base is self.made_ahead:
                self.base = None
            self.made_ahead = None

    def forget(self) -> None:
        """Drop the runs kept for the ablation (a view that let go of its record)."""
        with self._base_lock:
            self.forgets += 1
            self.base = self.made_ahead = None
        self.kept_runs = []

    def _ablated_run(self, pairs: list[list[int]], mode: str, original: AttentionMaps,
                     versions: tuple | None) -> tuple[AttentionMaps, dict]:
        from attnwidget.ablate import ablated_record

        heads: dict[int, list[int]] = {}
        for layer, head in pairs:
            heads.setdefault(layer, []).append(head)
        # the unablated run every toggle is compared with (and replays below its heads), made
        # once, and again when the model's parameters changed
        self.made_ahead = None  # used by a click (or replaced below): the view's own from now on
        if self.base is None or versions is None or self.base.versions != versions:
            from attnwidget.ablate import unablated_run

            self.base = unablated_run(self.model, self.text, self.tokenizer)
        start = time.perf_counter()
        maps, effect = ablated_record(self.model, self.text, heads, self.tokenizer, mode=mode,
                                      original=original, base=self.base, **self.options)
        self.last_run_s = time.perf_counter() - start
        self.last_run_layers = original.n_layers - min(heads)
        if self.sample is not None:  # the re-run saw the same sequence: keep its provenance
            maps = maps.with_source(self.sample.source, text=self.sample.text)
        return maps, effect

    def sweep(self, mode: str, progress: bool) -> dict[str, Any]:
        """Every head ablated on its own (:func:`attnwidget.ablate.ablation_sweep`)."""
        from attnwidget.ablate import ablation_sweep

        return ablation_sweep(self.model, self.text, self.tokenizer, mode=mode, progress=progress)


_ahead_lock = threading.Lock()
_ahead_held: Any = None  # weakref.ref to the ViewSource whose base made ahead is kept


def _hold_ahead(source: ViewSource) -> None:
    """``source`` keeps the plain run it made ahead; the one another view made before, not used
    by a click yet, is dropped (made again once that view is in use and the kernel idle): at
    most one such run, :data:`ViewSource.AHEAD_MAX_BYTES`, is held for clicks that may never
    come, however many views are shown."""
    import weakref

    global _ahead_held
    with _ahead_lock:
        before = _ahead_held() if _ahead_held is not None else None
        _ahead_held = weakref.ref(source)
    if before is not None and before is not source:
        before.drop_ahead()


def open_record(model: Any, text: Any, tokenizer: Any, source: Any,
                options: dict[str, Any]) -> tuple[AttentionMaps, ViewSource | None, Any]:
    """The record a view shows; when it came from a model, how to run the model again; and the
    :class:`attnwidget.generate.Generation` when ``options`` hold ``generate=N`` (else None).

    ``generate``, ``greedy`` and ``seed`` are taken out of ``options``: with ``generate=N``
    the model writes N tokens after the prompt ``text`` (:func:`generate_attention`).
    """
    options = dict(options)
    n_new, greedy, seed = (options.pop(name, default) for name, default in GENERATE_OPTIONS.items())
    if n_new is None:
        if (greedy, seed) != (GENERATE_OPTIONS["greedy"], GENERATE_OPTIONS["seed"]):
            raise TypeError(f"greedy/seed: only used with generate=N (tokens to generate), got "
                            f"greedy={greedy!r}, seed={seed!r} without generate=")
    else:
        if isinstance(model, AttentionMaps) or source is not None:
            got = "a record" if source is None else "source="
            raise TypeError("generate: needs a causal LM and a prompt, as AttentionView(model, prompt, "
                            f"tokenizer=tok, generate=N); got {got}")
        return open_generation(model, text, tokenizer, n_new, greedy, seed, options)
    if isinstance(model, AttentionMaps):
        if text is not None or tokenizer is not None or source is not None or options:
            extra = sorted(options) + [
                n for n, v in (("text", text), ("tokenizer", tokenizer), ("source", source)) if v is not None
            ]
            raise TypeError(f"AttentionView(maps) takes no extraction arguments, got {extra}")
        maps, how = model, None
    elif source is not None:
        from attnwidget import inputs
        from attnwidget.extract.huggingface import is_hf_model

        if text is not None:
            raise TypeError("text: pass the text or source=..., not both")
        tokenizer = inputs.find_tokenizer(model, tokenizer)
        sample = inputs.resolve(source, model, tokenizer)
        start = time.perf_counter()
        maps = inputs.extract_sample(model, sample, tokenizer, **options)
        took = time.perf_counter() - start
        # ablation re-runs the model on the sample's ids; transformers models take the tokenizer
        # to label them, hook-based ones do not
        how = ViewSource(model, sample.input_ids.unsqueeze(0), tokenizer if is_hf_model(model) else None,
                         options, sample,
                         rebuild=functools.partial(inputs.extract_sample, model, sample, tokenizer,
                                                   **options), extract_s=took)
    else:
        from attnwidget.extract import extract_attention

        start = time.perf_counter()
        try:
            maps = extract_attention(model, text, tokenizer, **options)
        except (TypeError, ValueError) as exc:  # in the view's own word: the user passed `text`
            if type(exc) in (TypeError, ValueError) and str(exc).startswith("text_or_inputs:"):
                raise type(exc)("text" + str(exc)[len("text_or_inputs"):]) from None
            raise
        how = ViewSource(model, text, tokenizer, options,
                         rebuild=functools.partial(extract_attention, model, text, tokenizer, **options),
                         extract_s=time.perf_counter() - start)
    # not caught by AttentionMaps itself (a record may be analysed in pieces); the view's
    # caches and the browser's budget need a bound (see attnwidget.maps.check_size)
    check_size(*maps.shape, "maps")
    return maps, how, None


#: The generation options of ``AttentionView(model, prompt, ..., generate=N, greedy=, seed=)``
#: and their defaults (those of :func:`attnwidget.generate.generate_attention`).
GENERATE_OPTIONS: dict[str, Any] = {"generate": None, "greedy": True, "seed": 0}


def open_generation(model: Any, prompt: Any, tokenizer: Any, n_new: Any, greedy: bool, seed: int,
                    options: dict[str, Any]) -> tuple[AttentionMaps, ViewSource, Any]:
    """The model writes ``n_new`` tokens after ``prompt``; the record of prompt + generated tokens,
    how to re-run the model on that final sequence (ablation), and the
    :class:`~attnwidget.generate.Generation`. Bad input is refused before any forward."""
    from attnwidget.extract.huggingface import is_hf_model
    from attnwidget.generate import generate_attention

    if prompt is None:
        raise TypeError("prompt: generate=N needs a prompt (text or token ids) after the model")
    gen = generate_attention(model, prompt, tokenizer, n_new, greedy=greedy, seed=seed, **options)
    if is_hf_model(model):  # re-runs see the generated ids themselves, not a re-tokenised text
        how = ViewSource(model, gen.token_ids.unsqueeze(0), tokenizer, {})
    else:  # the tiny LM: its character tokenizer gives back the same ids
        from attnwidget.tinylm import CharTokenizer

        tok = tokenizer if tokenizer is not None else CharTokenizer()
        how = ViewSource(model, tok.decode(gen.token_ids.tolist()), tok, {})
    return gen.maps, how, gen


def corpus_summary(corpus: Any, maps: AttentionMaps) -> Any:
    """``corpus`` as a :class:`attnwidget.corpus.HeadSummary` of the record's layers x heads, or None."""
    if corpus is None:
        return None
    from attnwidget.corpus import HeadSummary, summarize

    summary = corpus if isinstance(corpus, HeadSummary) else summarize(corpus)
    if summary.shape != maps.shape[:2]:
        raise ValueError(
            f"corpus: summarises {summary.shape[0]} layers x {summary.shape[1]} heads, but the record has "
            f"{maps.shape[0]} x {maps.shape[1]}; expected a corpus run of the same model"
        )
    return summary
