"""Shards of a corpus run as tasks on a ``dask.distributed`` cluster (the ``distributed`` extra).

Each shard is one task: the worker runs :func:`attnwidget.corpus._compute.shard_rows`
on the shard's token ids (a few KB) and hands the columns back; the client
writes the shard file, so the output folder only has to exist where the client
runs and an interrupted run resumes as a local one does. The model reaches the
workers either as a name (``"minilm"``, ``"tiny"`` or a folder every worker can
read: each worker process loads it once and keeps it) or, for a model object,
pickled once, scattered to every worker and unpickled once per worker process.
(Scattering the module itself goes through dask's generic serializer, which
rebuilds PyTorch's hook dictionaries as plain dicts, and hooks then fail.)
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

#: Models loaded by name in this worker process (one load per process, reused by every shard).
_MODELS: dict[str, Any] = {}
#: glibc's largest automatic mmap threshold (32 MiB on 64-bit systems), set again in each worker.
MMAP_THRESHOLD = 32 * 2**20
_TUNED: list[bool] = []


def _tune_malloc() -> None:
    """Let glibc serve a worker's mid-size arrays from its heap again, once per worker process.

    dask's nanny starts workers with ``MALLOC_TRIM_THRESHOLD_=65536`` (so freed memory
    goes back to the system); setting that variable also freezes glibc's mmap
    threshold at 128 KiB, so every array the metrics allocate and free (1-30 MB
    each, thousands a shard) becomes an mmap, page faults and an munmap. That made
    a shard 1.4-1.5x slower in a worker than in the client process (5.0 s against
    3.3 s for 64 sequences at 128 tokens); raising the mmap threshold to glibc's own
    automatic maximum brings it back to 3.4-3.6 s. The trim threshold stays as dask set it.
    """
    if _TUNED:
        return
    _TUNED.append(True)
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        if libc is not None and hasattr(libc, "mallopt"):
            libc.mallopt(-3, MMAP_THRESHOLD)  # -3: M_MMAP_THRESHOLD
    except OSError:  # not glibc (macOS, musl): nothing to tune
        pass


def require_distributed() -> Any:
    try:
        import distributed
    except ImportError:
        raise ModuleNotFoundError(
            "scheduler='dask' needs dask.distributed, which is not installed; install the extra with: "
            "pip install 'attnwidget[distributed]'"
        ) from None
    return distributed


def connect(client: Any) -> tuple[Any, bool]:
    """``(Client, whether we opened it)`` from a Client, a scheduler address, or None (the default client)."""
    distributed = require_distributed()
    if isinstance(client, distributed.Client):
        return client, False
    if isinstance(client, str):
        return distributed.Client(client), True
    if client is None:
        try:
            return distributed.get_client(), False
        except ValueError:
            raise ValueError(
                "client: scheduler='dask' needs a cluster; expected client=distributed.Client(...) or a "
                "scheduler address such as 'tcp://10.0.0.5:8786', got None and no default client"
            ) from None
    raise TypeError(
        f"client: expected a distributed.Client, an address str or None, got {type(client).__name__}"
    )


def _model(ref: tuple[str, str, Any]) -> Any:
    kind, key, value = ref
    if key not in _MODELS:
        if kind == "pickle":
            import pickle

            _MODELS[key] = pickle.loads(value)  # dask resolved the scattered future to the bytes
        else:
            from attnwidget.models import load

            _MODELS[key] = load(value, "model")[0]
    return _MODELS[key]


def compute_shard(ref: tuple[str, str, Any], sequences: Sequence[np.ndarray], numbers: Sequence[int],
                  options: dict[str, Any]) -> dict[str, np.ndarray]:
    """The worker's side of one shard (a module-level function, so dask pickles it by name)."""
    from attnwidget.corpus._compute import shard_rows

    _tune_malloc()
    return shard_rows(_model(ref), sequences, numbers, **options)


def run_shards(
    client: Any,
    model: Any,
    spec: str | None,
    payloads: dict[int, tuple[list[np.ndarray], list[int]]],
    options: dict[str, Any],
) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
    """Submit every shard, yield ``(shard, columns)`` as each finishes; cancel the rest on exit.

    ``spec``: the model's name for the workers to load, or None to scatter ``model``.
    """
    import pickle
    import uuid

    distributed = require_distributed()
    if spec is not None:
        ref: tuple[str, str, Any] = ("spec", f"spec:{spec}", spec)
    else:
        # a fresh key per run: a worker never reuses another run's (possibly since changed) model
        ref = ("pickle", f"object:{uuid.uuid4()}", client.scatter(pickle.dumps(model), broadcast=True))
    futures = {
        client.submit(compute_shard, ref, seqs, nums, options, pure=False): shard
        for shard, (seqs, nums) in payloads.items()
    }
    try:
        for future in distributed.as_completed(list(futures)):
            yield futures[future], future.result()
    finally:
        # an interrupted run (Ctrl-C, a failing shard, a callback that raised) leaves no work behind
        client.cancel([f for f in futures if not f.done()])
