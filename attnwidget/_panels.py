"""The widget's panel store: each map's metrics and encoded overview, cached under a byte budget,
computed ahead of time and off the kernel's event loop in its one worker thread (:mod:`attnwidget._worker`).

A :class:`PanelStore` never reads the view's traits: everything that decides a
result (the map's key, the colour scale, the layer wanted) comes in as an
argument, so a slider moved while the worker runs cannot mix two states into
one cache entry. Keys are ``(kind, layer, head, generation)``; the generation
changes whenever the record does (an ablation re-run), so no entry of an older
record is ever served, except what was computed from a layer both records share
(the same tensors, :meth:`PanelStore.replace`), which is carried over.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

import numpy as np
import torch

from attnwidget._messages import atlas_message, overview_message
from attnwidget._worker import WORKER
from attnwidget.maps import AttentionMaps
from attnwidget.metrics import PanelMetrics, attention_received, attention_rollout
from attnwidget.metrics.basic import single_thread_sorts

#: Metrics objects and encoded panels are kept up to this many bytes of their own.
METRICS_CACHE_BYTES = 512 * 2**20
#: Maps with more cells than this (128 x 128, about a millisecond of metrics) get the other
#: heads of the shown layer computed ahead of time in a worker thread, nearest first, so that
#: a slider step or a click on the head strip finds them ready.
PREFETCH_CELLS = 128 * 128

#: Maps with more cells than this (1024 x 1024, some 50 ms of metrics and more) send their
#: picture first and their metrics when the worker has them; smaller ones send both at once.
LATER_CELLS = 1024 * 1024

Key = tuple[str, int, "int | None", int]


def _same_frame(a: AttentionMaps, b: AttentionMaps) -> bool:
    """Whether what a layer's entries depend on besides its weights is the same in both records:
    shape, padding (the key mask), causality and head names (the thumbnails' badges)."""
    return (a.shape == b.shape and a.causal == b.causal and a.head_names == b.head_names
            and np.array_equal(a.key_padding, b.key_padding)
            and np.array_equal(a.query_padding, b.query_padding))


class PanelStore:
    """Metrics and encoded overviews of one record's maps (a head, a layer's mean, the rollout).

    ``budget`` (bytes) and ``prefetch_cells`` default to :data:`METRICS_CACHE_BYTES`
    and :data:`PREFETCH_CELLS` as they are when the store is made.
    """

    def __init__(self, maps: AttentionMaps, budget: int | None = None, prefetch_cells: int | None = None,
                 corpus: Any = None) -> None:
        self.maps: AttentionMaps | None = maps
        self.budget = METRICS_CACHE_BYTES if budget is None else budget
        self.prefetch_cells = PREFETCH_CELLS if prefetch_cells is None else prefetch_cells
        self.corpus = corpus
        self.generation = 0
        self._metrics: OrderedDict[Key, PanelMetrics] = OrderedDict()
        self._encoded: dict[tuple, dict[str, Any]] = {}  # (*key, scale) -> overview message
        self._received: dict[Key, np.ndarray] = {}  # key -> attention each key receives [K]
        self._lock = threading.RLock()  # guards both against the worker thread
        self._pending: list[Future] = []  # this store's prefetches not finished
        self._atlas_future: Future | None = None
        self._rollout: np.ndarray | None = None
        self._atlas_layer: int | None = None
        self._atlases: dict[tuple[int, int], dict[str, Any]] = {}  # (layer, generation) -> atlas

    # ------------------------------------------------------------------ lookups
    def key(self, kind: str, layer: int, head: int | None) -> Key:
        """The cache key of a map of the current record."""
        return kind, layer, head, self.generation

    def metrics(self, key: Key) -> PanelMetrics:
        """The map's :class:`PanelMetrics`, cached; a key of a replaced record raises RuntimeError."""
        with self._lock:
            if key in self._metrics:
                self._metrics.move_to_end(key)
                return self._metrics[key]
            kind, layer, head, gen = key
            if gen != self.generation or self.maps is None:  # asked by a worker for a replaced record
                raise RuntimeError("stale request")
            pm = self._compute(kind, layer, head)
            self._metrics[key] = pm
            return pm

    def _compute(self, kind: str, layer: int, head: int | None) -> PanelMetrics:
        maps = self.maps
        assert maps is not None
        mask, causal = maps.key_mask(), bool(maps.causal)
        if kind == "head":
            return PanelMetrics(maps.head(layer, head), mask=mask, causal=causal)
        if kind == "average":
            return PanelMetrics(torch.from_numpy(maps.layer(layer)).mean(dim=0), mask=mask, causal=causal)
        if self._rollout is None:
            self._rollout = attention_rollout(maps.weights)
        # the residual term puts weight on padded positions' own rows: only causality applies
        return PanelMetrics(self._rollout[layer], causal=causal)

    def overview(self, key: Key, scale: str) -> dict[str, Any]:
        """The map's overview as sent (:func:`attnwidget._messages.overview_message`), cached per scale."""
        ekey = (*key, scale)
        with self._lock:
            if ekey in self._encoded:
                return self._encoded[ekey]
        msg = overview_message(self.metrics(key), scale)
        with self._lock:
            self._encoded[ekey] = msg
        return msg

    def received(self, key: Key) -> np.ndarray:
        """float32 ``[K]``: the mean weight each key receives over the map's non-empty rows
        (:func:`attnwidget.metrics.attention_received`), cached: the text view's shading with
        no query selected."""
        with self._lock:
            if key in self._received:
                return self._received[key]
        out = attention_received(self.metrics(key).weights).astype(np.float32)
        with self._lock:
            self._received[key] = out
        return out

    def ready(self, key: Key) -> bool:
        """True when the map's numbers can go with its picture: its threshold-free metrics are
        computed, or it is small enough (:data:`LATER_CELLS`) to compute them at once."""
        if self.maps is not None and self.maps.shape[-2] * self.maps.shape[-1] <= LATER_CELLS:
            return True
        return self.has_numbers(key)

    def has_numbers(self, key: Key) -> bool:
        """Whether the map's threshold-free metrics are computed (its picture may be alone)."""
        with self._lock:
            pm = self._metrics.get(key)
        return pm is not None and pm.has_static()

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._metrics

    def keys(self) -> list[Key]:
        """The cached maps, least recently used first."""
        with self._lock:
            return list(self._metrics)

    def nbytes(self) -> int:
        """Bytes held: metrics intermediates, own copies of maps and encoded overviews."""
        with self._lock:
            return (sum(self._own_bytes(k, v) for k, v in self._metrics.items())
                    + sum(len(m["buffer"]) for m in [*self._encoded.values(), *self._atlases.values()]))

    @staticmethod
    def _own_bytes(key: Key, pm: PanelMetrics) -> int:
        # a head's weights are a view into the record; an average or rollout map is our own copy
        own = 0 if key[0] == "head" else pm.weights.element_size() * pm.weights.numel()
        return pm.nbytes + own

    def trim(self) -> None:
        """Drop least recently used maps, with their overviews, until the store is within its
        budget (the newest map always stays)."""
        with self._lock:
            while self.nbytes() > self.budget and len(self._metrics) > 1:
                self._metrics.popitem(last=False)
                # the evicted map's overviews, and any the worker encoded for maps evicted meanwhile
                for enc in [k for k in self._encoded if k[:4] not in self._metrics]:
                    del self._encoded[enc]
                for k in [k for k in self._received if k not in self._metrics]:
                    del self._received[k]

    def replace(self, maps: AttentionMaps) -> None:
        """Show another record (an ablation re-run, or the original back): a new generation.

        What was computed from a layer the two records share (the same tensors: an ablated
        re-run shares the layers up to its first ablated one with the original,
        :meth:`AttentionMaps._sharing_layers`) is kept, under the new generation: the heads'
        and the layer average's metrics and pictures, and the layer's thumbnails. The rest
        (other layers, the rollout, which mixes all of them) is dropped.
        """
        with self._lock:
            old, gen = self.maps, self.generation
            metrics, encoded = list(self._metrics.items()), list(self._encoded.items())
            received, atlases = list(self._received.items()), list(self._atlases.items())
            self.drop_caches()
            self.maps = maps
            self.generation = gen + 1
            if old is None or not _same_frame(old, maps):
                return
            shared = {layer for layer in range(maps.n_layers) if maps.shares_layer(old, layer)}

            def kept(key: tuple) -> bool:  # (kind, layer, head, generation, ...)
                return key[0] in ("head", "average") and key[1] in shared and key[3] == gen

            def renamed(key: tuple) -> tuple:
                return (*key[:3], gen + 1, *key[4:])

            self._metrics.update((renamed(k), v) for k, v in metrics if kept(k))
            self._encoded.update((renamed(k), v) for k, v in encoded if kept(k))
            self._received.update((renamed(k), v) for k, v in received if kept(k))
            self._atlases.update(((layer, gen + 1), v) for (layer, g), v in atlases
                                 if layer in shared and g == gen)

    # ------------------------------------------------------------------ the worker
    def busy(self) -> contextlib.AbstractContextManager[None]:
        """The view is handling a change: no background work starts meanwhile (the worker's
        :meth:`~attnwidget._worker.Worker.busy`)."""
        return WORKER.busy(self)

    def prefetch(self, layer: int, head: int, scale: str,
                 before: tuple[int, int] | None = None) -> list[Future]:
        """Compute ahead of time (maps over ``prefetch_cells`` only) what a next step may show:
        the heads next to ``head`` and the same head in the layers next to ``layer`` (picture and
        metrics), then the pictures of the layer's other heads (cheap), then their metrics (maps
        up to :data:`LATER_CELLS`). Returns the futures.

        When one slider moved on from ``before`` (the ``(layer, head)`` shown before), the map
        its next step reaches comes first. For maps up to :data:`LATER_CELLS` (a neighbour is
        milliseconds of work, and steps come tens of ms apart) only that map is computed at once
        and the other neighbours once the kernel is idle (:data:`attnwidget._worker.QUIET_S`):
        measured in JupyterLab on two cores (``bench_widget.py``), computing them between the
        steps slowed the next reply: layer moves at 512 tokens 1.26-1.76x the transport floor,
        head moves 1.04-1.54x, against 1.16-1.54x and 1.09-1.19x. Larger maps keep every
        neighbour in order: each is seconds of CPU a step's reply does not wait for (the picture
        goes first), and an idle job already running when the next step comes would hold up
        the map that step reaches (the 4096-token first visits went from 3.7-5.5x to 6.6-9.4x).

        Earlier prefetches not started yet are cancelled (a running one finishes and is cached);
        work already queued for the thumbnails runs first. The first metrics computed run on
        both cores.
        """
        for fut in self._pending:
            fut.cancel()
        self._pending = []
        if self.maps is None:
            return []
        n_layers, n_heads, Q, K = self.maps.shape
        if self.prefetch_cells >= Q * K:
            return []
        heads = [(layer, h) for h in sorted(range(n_heads), key=lambda h: (abs(h - head), h < head))]
        layers = [(lay, head) for lay in (layer + 1, layer - 1) if 0 <= lay < n_layers]
        near_at = heads[1:3] + layers
        soon = near_at
        if before is not None and (before[0] == layer) != (before[1] == head):  # one slider moved
            ahead = (2 * layer - before[0], 2 * head - before[1])
            near_at.sort(key=lambda lh: lh != ahead)  # stable: the rest keep their order
            if ahead in near_at and Q * K <= LATER_CELLS:  # a drag's steps: see the docstring
                soon = [ahead]
        self._pending = [WORKER.submit(self, *job) for job in self._near_jobs(soon, layer, scale, True)]
        self._pending += [WORKER.submit(self, *job, idle=True)
                          for job in self._near_jobs([lh for lh in near_at if lh not in soon], layer, scale,
                                                     False)]
        # the layer's other heads once the kernel is idle: on two cores, computing them between
        # the moves of a drag slows the replies more than it saves
        rest = [k for k in (self.key("head", *lh) for lh in heads[3:]) if k not in self]
        idle = [(self._warm_picture, k, scale) for k in rest]
        if Q * K <= LATER_CELLS:  # a large map's far heads: numbers on demand (seconds of CPU else)
            idle += [(self._warm_numbers, k, scale) for k in rest]
        self._pending += [WORKER.submit(self, *job, idle=True) for job in idle]
        return list(self._pending)

    def _near_jobs(self, at: list[tuple[int, int]], layer: int, scale: str, first: bool) -> list[tuple]:
        """The jobs that make the maps ``at`` (``(layer, head)`` pairs) ready: picture, metrics
        (the first on both cores when ``first``) and, for a map of another layer than ``layer``,
        that layer's thumbnails."""
        jobs: list[tuple] = []
        for lay, h in at:
            key = self.key("head", lay, h)
            if key not in self:
                jobs.append((self._warm_picture, key, scale))
            # not "key not in self": the idle pictures make the entry without its numbers
            if not self.has_numbers(key):
                jobs.append((self._warm_numbers_first if first else self._warm_numbers, key, scale))
                first = False
            if lay != layer:
                jobs.append((self._atlas_for, lay))
        return jobs

    def _warm_picture(self, key: Key, scale: str) -> None:
        self.overview(key, scale)

    def _warm_numbers(self, key: Key, _scale: str) -> None:
        self.metrics(key).static()

    def _warm_numbers_first(self, key: Key, scale: str) -> None:
        """:meth:`_warm_numbers` with a large map's sort on two threads
        (:func:`attnwidget.metrics.basic.single_thread_sorts`): at 4096 x 4096 one map's exact
        numbers take 0.7 s on one core, longer than a slider step takes, so a user stepping
        through the heads waited longer at every step (0.24, 0.59, 0.91 s); on two cores they
        are ready about when the next step comes. A reply to a slider meanwhile shares the
        cores for that long."""
        with single_thread_sorts(False):
            self._warm_numbers(key, scale)

    def atlas(self, layer: int) -> dict[str, Any] | None:
        """The layer's thumbnails (:func:`attnwidget._messages.atlas_message`), cached; None if
        another layer was asked for since (the worker skips work nobody waits for)."""
        if self._atlas_layer is not None and layer != self._atlas_layer:
            return None
        return self._atlas_for(layer)

    def _atlas_for(self, layer: int) -> dict[str, Any] | None:
        maps, gen = self.maps, self.generation
        if maps is None:
            return None
        with self._lock:
            if (layer, gen) in self._atlases:
                return self._atlases[layer, gen]
        out = atlas_message(maps, layer, self.corpus)
        with self._lock:
            if gen == self.generation and self.maps is maps:
                self._atlases[layer, gen] = out
        return out

    def schedule_atlas(self, layer: int, deliver: Callable[[dict[str, Any]], None],
                       fail: Callable[[BaseException], None]) -> None:
        """Build the layer's thumbnails and hand them to ``deliver``: now without an event loop;
        in a kernel from the worker, handed back to the event loop (``fail`` gets an error).

        A result whose layer or record is no longer the one asked for last is dropped.
        """
        self._atlas_layer = layer
        with self._lock:
            ready = self._atlases.get((layer, self.generation))
        if ready is not None:  # built ahead (a neighbouring layer) or shown before: at once
            deliver(ready)
            return
        gen = self.generation

        def still_wanted(atlas: dict[str, Any] | None) -> None:
            if atlas is not None and layer == self._atlas_layer and gen == self.generation:
                deliver(atlas)

        self._atlas_future = self.compute_then(lambda: self.atlas(layer), still_wanted, fail)

    def compute_then(self, fn: Callable[[], Any], deliver: Callable[[Any], None],
                     fail: Callable[[BaseException], None]) -> Future | None:
        """Run ``fn()`` in the worker and hand its result to ``deliver`` on the kernel's event loop
        (``fail`` gets its error), so the loop keeps handling the browser's messages meanwhile.
        Without a running event loop nothing could deliver later: ``fn`` runs now. Returns the
        future (None when run now)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            deliver(fn())
            return None
        def waited_for() -> Any:
            with single_thread_sorts(False):  # the view waits for these numbers: both cores
                return fn()

        fut = WORKER.submit(self, waited_for)

        def on_loop(f: Future) -> None:
            if f.cancelled() or self.maps is None:
                return
            exc = f.exception()
            if exc is not None:
                fail(exc)
            else:
                deliver(f.result())

        def hand_back(f: Future) -> None:
            with contextlib.suppress(RuntimeError):  # the loop is closed: the kernel is going away
                loop.call_soon_threadsafe(on_loop, f)

        fut.add_done_callback(hand_back)
        return fut

    def drop_caches(self) -> None:
        """Cancel this store's queued work and forget every computed entry (metrics, overviews,
        thumbnails, rollout); the record stays. A task already running finishes."""
        for fut in [*self._pending, self._atlas_future]:
            if fut is not None:
                fut.cancel()
        with self._lock:
            self._metrics.clear()
            self._encoded.clear()
            self._received.clear()
            self._atlases.clear()
            self._rollout = None

    def close(self) -> None:
        """Cancel this store's queued work and let go of the record and every entry."""
        with self._lock:
            self.drop_caches()
            self.maps = self.corpus = None

    @property
    def closed(self) -> bool:
        """True once :meth:`close` ran."""
        return self.maps is None
