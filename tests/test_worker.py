"""The kernel's one worker thread: the view touched last goes first, cancelled jobs never run."""

from __future__ import annotations

import threading

import pytest

from attnwidget._worker import Worker


class Owner:  # a view's panel store, as far as the worker knows
    pass


def test_the_last_owner_to_submit_goes_first_and_keeps_its_own_order():
    worker, a, b = Worker(), Owner(), Owner()
    gate, ran = threading.Event(), []
    worker.submit(a, gate.wait)  # keeps the thread busy while the queue fills
    first_a = [worker.submit(a, ran.append, f"a{i}") for i in range(3)]
    cancelled = worker.submit(a, ran.append, "a-cancelled")
    assert cancelled.cancel()
    later_b = [worker.submit(b, ran.append, f"b{i}") for i in range(2)]
    gate.set()
    for fut in first_a + later_b:
        fut.result(timeout=10)
    assert ran == ["b0", "b1", "a0", "a1", "a2"]
    assert cancelled.cancelled()


def test_an_error_goes_to_the_future_and_the_thread_goes_on():
    worker, owner = Worker(), Owner()

    def fail():
        raise ValueError("boom")

    bad = worker.submit(owner, fail)
    good = worker.submit(owner, lambda: 42)
    with pytest.raises(ValueError, match="boom"):
        bad.result(timeout=10)
    assert good.result(timeout=10) == 42


def test_stop_cancels_what_is_queued_and_waits_for_the_running_call():
    # at exit: a thread left inside torch while the interpreter is torn down aborts the process
    worker, owner = Worker(), Owner()
    started, gate, ran = threading.Event(), threading.Event(), []
    running = worker.submit(owner, lambda: (started.set(), gate.wait(), ran.append("running")))
    queued = worker.submit(owner, ran.append, "queued")
    assert started.wait(timeout=10)  # the first call is running when stop comes
    threading.Timer(0.2, gate.set).start()
    worker.stop(timeout=10)
    assert ran == ["running"]
    assert running.done()
    assert queued.cancelled()
    assert worker.submit(owner, ran.append, "late").cancelled()


def changed(worker: Worker, owner: Owner) -> None:
    """``owner``'s view handled a change (what AttentionView._flush wraps in ``busy``)."""
    with worker.busy(owner):
        pass


def test_other_views_jobs_wait_until_the_kernel_is_quiet():
    from attnwidget import _worker

    worker, a, b = Worker(), Owner(), Owner()
    done_at = {}
    start = _worker.time.monotonic()
    changed(worker, a)
    job_a = worker.submit(a, lambda: done_at.setdefault("a", _worker.time.monotonic()))
    changed(worker, b)  # b is in use now: a's job waits for QUIET_S without a change
    job_b = worker.submit(b, lambda: done_at.setdefault("b", _worker.time.monotonic()))
    job_a.result(timeout=10)
    job_b.result(timeout=10)
    assert done_at["b"] < done_at["a"]  # the view in use goes first...
    assert done_at["a"] - start >= _worker.QUIET_S  # ...and the other waits for quiet
    worker.stop()


def test_idle_work_of_the_view_in_use_waits_for_quiet_too():
    from attnwidget import _worker

    worker, a = Worker(), Owner()
    done_at = {}
    start = _worker.time.monotonic()
    changed(worker, a)
    later = worker.submit(a, lambda: done_at.setdefault("idle", _worker.time.monotonic()), idle=True)
    now = worker.submit(a, lambda: done_at.setdefault("near", _worker.time.monotonic()))
    later.result(timeout=10)
    now.result(timeout=10)
    assert done_at["near"] < done_at["idle"]
    assert done_at["idle"] - start >= _worker.QUIET_S
    worker.stop()


def test_no_job_starts_while_a_change_is_handled():
    # an ablation's forward on the event loop needs both cores, and a prefetch started
    # meanwhile would mostly be for the record it replaces
    from attnwidget import _worker

    worker, a, b = Worker(), Owner(), Owner()
    events: list[str] = []
    with worker.busy(a):
        mine = worker.submit(a, events.append, "a's prefetch")
        other = worker.submit(b, events.append, "b's prefetch")
        _worker.time.sleep(2 * _worker.QUIET_S)  # longer than either wait: still nothing runs
        events.append("change handled")
        left = _worker.time.monotonic()
    mine.result(timeout=10)
    other.result(timeout=10)
    assert events[0] == "change handled"
    assert sorted(events[1:]) == ["a's prefetch", "b's prefetch"]
    # the waits count from the end of the change
    assert worker._touched >= left
    worker.stop()


def test_prefetches_sort_on_one_thread_and_awaited_numbers_on_two():
    import asyncio

    import torch

    from attnwidget import _panels
    from attnwidget.maps import AttentionMaps
    from attnwidget.metrics import basic

    single = lambda: getattr(basic._sorting, "single", False)  # noqa: E731
    assert _panels.WORKER.submit(Owner(), single).result(timeout=30) is True
    store = _panels.PanelStore(AttentionMaps.from_tensor(torch.softmax(torch.randn(1, 1, 4, 4), -1)))

    async def awaited() -> bool:
        got: asyncio.Future = asyncio.get_running_loop().create_future()
        store.compute_then(single, got.set_result, got.set_exception)
        return await asyncio.wait_for(got, 30)

    assert asyncio.run(awaited()) is False
    assert single() is False  # the caller's thread is left as it was


def test_the_worker_uses_one_openmp_thread_and_leaves_the_process_default_alone():
    # an idle second team of OpenMP threads slowed the main thread's torch work by a third
    import torch

    torch.ones(2**16).sum()
    main = torch.get_num_threads()
    worker = Worker()
    assert worker.submit(Owner(), torch.get_num_threads).result(timeout=10) == 1
    assert torch.get_num_threads() == main
    later: list[int] = []
    thread = threading.Thread(target=lambda: later.append(torch.get_num_threads()))
    thread.start()
    thread.join()
    assert later == [main]  # threads started afterwards keep the default
    worker.stop()


def test_a_job_gives_the_gil_up_quickly_and_leaves_the_interval_as_it_found_it():
    # while a job runs, a thread waiting for the GIL (the kernel's message threads) gets it
    # within SWITCH_S; after it, the interpreter's own interval is back, and a value someone set
    # during the job is theirs to keep
    import sys

    from attnwidget import _worker

    worker, owner = Worker(), Owner()
    assert _worker.WORKER.wait_idle()  # the views' worker sets the interval too while it works
    default = sys.getswitchinterval()
    assert default > _worker.SWITCH_S
    try:
        during = worker.submit(owner, sys.getswitchinterval).result(timeout=10)
        assert during == _worker.SWITCH_S
        assert worker.wait_idle()
        assert sys.getswitchinterval() == default

        def user_sets_theirs():
            sys.setswitchinterval(0.002)

        worker.submit(owner, user_sets_theirs).result(timeout=10)
        assert worker.wait_idle()
        assert sys.getswitchinterval() == 0.002
        sys.setswitchinterval(default)

        def fails():
            raise RuntimeError("boom")

        with pytest.raises(RuntimeError, match="boom"):
            worker.submit(owner, fails).result(timeout=10)
        assert worker.wait_idle()
        assert sys.getswitchinterval() == default
    finally:
        sys.setswitchinterval(default)
        worker.stop()
