"""Replaying a model's layers from an earlier run of the same input.

Ablating a head in layer L changes nothing the model computes before that
head's output is projected: every layer below L, and layer L's own query, key
and value projections and attention weights, see exactly the inputs they saw in
the plain run. An ablated re-run can give back what the plain run computed
there instead of computing it again.

:class:`Replay` records, in one run, every call of the modules it is asked to
keep, in the order the calls start: the linear layers (``nn.Linear``,
transformers' ``Conv1D``), which are most of a transformer's arithmetic, and
optionally larger pieces that hold no ablation site (BERT's self-attention:
query, key, value and the attention weights). For each call it keeps the
module, the state the output depends on besides the inputs (:func:`_state`),
copies of its tensor inputs and a copy of its output. In a later run it hands
back the recorded output for as long as each call is the same module, in the
same state, on inputs *exactly* equal (``torch.equal``) to the recorded ones.
The first call that differs in any of these (the ablated head's projection,
whose input the ablation rewrote; a weight changed in place; another text) is
computed, and so is everything after it. A replay can therefore only save work,
never change a number: a replayed output is the output this module gave for
these very inputs.

The rest (embeddings, layer norms, the ablation's own hooks and transformers'
output recording, which hooks the self-attention module itself) runs as usual,
so the records and hidden states a replayed run returns are those of a plain run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import torch
from torch import nn

#: The most bytes one :class:`Replay` keeps (inputs and outputs together). A run whose kept
#: modules produce more is recorded up to here; later calls are computed. 0 turns replay off.
REPLAY_BYTES = 256 * 2**20


def is_linear(module: nn.Module) -> bool:
    """An ``nn.Linear`` or transformers' ``Conv1D`` (GPT-2)."""
    return isinstance(module, nn.Linear) or type(module).__name__ == "Conv1D"


def parameter_versions(module: nn.Module, recurse: bool = True) -> tuple | None:
    """Identity and in-place version counter of each parameter; None where not tracked.

    A parameter replaced, or changed in place (an optimizer step, ``load_state_dict``, any
    in-place op outside ``.data``), gives another tuple. Writes through ``.data`` bypass the
    counter, as they bypass autograd's own checks.
    """
    try:
        return tuple((id(p), p._version) for p in module.parameters(recurse=recurse))
    except RuntimeError:  # parameters made under inference_mode track no version
        return None


def _state(module: nn.Module, ours: frozenset[int] = frozenset()) -> tuple | None:
    """What a module's output depends on besides its inputs: its parameters (all of them for a
    larger piece), the training flags, the attention implementation its config names, and the
    hooks inside it (a child whose hooks changed would not run in a replay); None: untracked.
    Hooks on the module itself run around a replayed forward as around a computed one."""
    leaf = not any(True for _ in module.children())
    versions = parameter_versions(module, recurse=not leaf)
    if versions is None:
        return None
    if leaf:
        return versions
    inner = tuple(m for m in module.modules() if m is not module)
    hooks = tuple(sorted(k for m in inner for d in (m._forward_hooks, m._forward_pre_hooks)
                         for k in d if k not in ours))
    config = getattr(module, "config", None)
    return (versions, tuple(m.training for m in module.modules()), hooks,
            getattr(config, "_attn_implementation", None))


def _tensors(x: Any) -> Iterator[torch.Tensor]:
    if isinstance(x, torch.Tensor):
        yield x
    elif isinstance(x, (tuple, list)):
        for item in x:
            yield from _tensors(item)
    elif isinstance(x, dict):
        for item in x.values():
            yield from _tensors(item)


def _plain(x: Any) -> bool:
    """Only tensors, None, numbers, strings and tuples/lists/dicts of them: what can be
    compared exactly (another object, a KV cache say, cannot)."""
    if x is None or isinstance(x, (torch.Tensor, bool, int, float, str)):
        return True
    if isinstance(x, (tuple, list)):
        return all(_plain(i) for i in x)
    if isinstance(x, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in x.items())
    return False


def _copy(x: Any, copy_tensor) -> Any:
    if isinstance(x, torch.Tensor):
        return copy_tensor(x)
    if isinstance(x, (tuple, list)):
        return type(x)(_copy(i, copy_tensor) for i in x)
    if isinstance(x, dict):
        return {k: _copy(v, copy_tensor) for k, v in x.items()}
    return x


def _same(a: Any, b: Any) -> bool:
    """Exactly equal: tensors by shape, dtype, device and every element; the rest by ==."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.shape == b.shape
                and a.dtype == b.dtype and a.device == b.device and torch.equal(a, b))
    if isinstance(a, (tuple, list)) or isinstance(b, (tuple, list)):
        return (type(a) is type(b) and len(a) == len(b)
                and all(_same(x, y) for x, y in zip(a, b, strict=True)))
    if isinstance(a, dict) or isinstance(b, dict):
        return (isinstance(a, dict) and isinstance(b, dict) and a.keys() == b.keys()
                and all(_same(a[k], b[k]) for k in a))
    return type(a) is type(b) and a == b


@dataclasses.dataclass
class _Call:
    module: nn.Module
    state: tuple | None = None
    inputs: Any = None  # (args, kwargs), copied
    output: Any = None  # copied
    span: int = 0  # calls recorded inside this one (skipped when it is replayed)
    replayable: bool = False  # False: inputs can be checked, output cannot be given back
    checkable: bool = False  # False: the replay stops here


class Replay:
    """The calls of chosen modules in one run, to give back to a later run of the same input.

    ``calls``: in the order the calls started, up to the last call an ablation can leave
    unchanged (before the last attention site's projection, when ``markers`` name them).
    ``replayed``: how many calls the last :meth:`replaying` gave back (a larger piece counts
    once, the calls inside it not at all).
    """

    def __init__(self, budget: int | None = None) -> None:
        self.budget = REPLAY_BYTES if budget is None else int(budget)
        self.calls: list[_Call] = []
        self.nbytes = 0
        self.replayed = 0

    @contextlib.contextmanager
    def recording(self, model: nn.Module, markers: Sequence[nn.Module] = (),
                  pieces: Iterable[nn.Module] = ()) -> Iterator[Replay]:
        """Record the calls of the linear layers and of ``pieces`` in the runs inside the
        block (in this thread).

        ``markers``: modules (the attention sites' output projections) from whose last call on
        nothing can be replayed; those calls are dropped after the run. ``pieces``: larger
        modules to replay whole; none may contain a marker (an ablation hook inside would
        not run).
        """
        owner = threading.get_ident()
        copies: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # id -> (tensor, its copy)
        open_calls: list[int] = []
        last_marker = [0]
        full = [self.budget <= 0]
        handles: list[Any] = []
        ours: set[int] = set()

        def copy_of(x: torch.Tensor) -> torch.Tensor:
            seen = copies.get(id(x))
            if seen is not None and seen[0] is x:  # q, k and v read the same hidden states
                return seen[1]
            c = x.detach().clone()
            self.nbytes += c.nelement() * c.element_size()
            copies[id(x)] = (x, c)
            return c

        def size(x: Any, new_only: bool) -> int:
            return sum(t.nelement() * t.element_size() for t in _tensors(x)
                       if not (new_only and id(t) in copies and copies[id(t)][0] is t))

        def start(module: nn.Module, args: tuple, kwargs: dict) -> None:
            if threading.get_ident() != owner or full[0]:
                return
            call = _Call(module)
            if _plain(args) and _plain(kwargs):
                if self.nbytes + size((args, kwargs), True) > self.budget:
                    full[0] = True  # this call and the ones after it are computed in a replay
                    return
                call.inputs = _copy((args, kwargs), copy_of)
                call.state = _state(module, frozenset(ours))
                call.checkable = call.state is not None
            open_calls.append(len(self.calls))
            self.calls.append(call)

        def end(module: nn.Module, _args: tuple, _kwargs: dict, output: Any) -> None:
            if (threading.get_ident() != owner or not open_calls
                    or self.calls[open_calls[-1]].module is not module):
                return  # a call not recorded (the budget ran out at its start)
            index = open_calls.pop()
            call = self.calls[index]
            call.span = len(self.calls) - index - 1
            if call.checkable and _plain(output) and not full[0]:
                if self.nbytes + size(output, False) > self.budget:
                    full[0] = True
                else:
                    call.output = _copy(output, lambda t: t.detach().clone())
                    self.nbytes += size(output, False)
                    call.replayable = True

        def mark(_module: nn.Module, _args: tuple) -> None:
            if threading.get_ident() == owner:
                last_marker[0] = len(self.calls)

        handles += [m.register_forward_pre_hook(mark) for m in markers]  # before a call starts
        for m in [m for m in model.modules() if is_linear(m)] + list(pieces):
            handles.append(m.register_forward_pre_hook(start, with_kwargs=True))
            handles.append(m.register_forward_hook(end, with_kwargs=True))
        ours.update(h.id for h in handles)
        try:
            yield self
        finally:
            for h in handles:
                h.remove()
            copies.clear()
        if markers:  # nothing from the last site's projection on is ever the same again
            self.calls = self.calls[: last_marker[0]]
        self.nbytes = sum({id(t): t.nelement() * t.element_size() for c in self.calls
                           for t in _tensors((c.inputs, c.output))}.values())

    @contextlib.contextmanager
    def replaying(self, model: nn.Module) -> Iterator[Replay]:
        """Inside the block, this thread's calls of the recorded modules get their recorded
        outputs back, in order, until the first call that is not exactly the recorded one."""
        owner = threading.get_ident()
        state = {"pos": 0, "live": bool(self.calls)}
        self.replayed = 0
        modules = {id(c.module): c.module for c in self.calls}.values()
        saved = [(m, m.__dict__.get("forward")) for m in modules]

        def wrap(module: nn.Module, forward: Any) -> Any:
            def replayed_forward(*args: Any, **kwargs: Any) -> Any:
                if state["live"] and threading.get_ident() == owner:
                    call = self.calls[state["pos"]] if state["pos"] < len(self.calls) else None
                    if (call is not None and call.module is module and call.checkable
                            and _same((args, kwargs), call.inputs) and _state(module) == call.state):
                        if call.replayable:
                            state["pos"] += 1 + call.span
                            self.replayed += 1
                            return _copy(call.output, torch.Tensor.clone)  # the caller may write to it
                        state["pos"] += 1  # the same call, but its output was not kept: run it,
                        return forward(*args, **kwargs)  # the calls inside may still be replayed
                    state["live"] = False  # from here on, the run differs: compute everything
                return forward(*args, **kwargs)

            return replayed_forward

        try:
            for module, _ in saved:
                module.forward = wrap(module, module.forward)
            yield self
        finally:
            for module, own in saved:
                if own is None:
                    del module.forward
                else:  # a forward set on the instance before (accelerate's hooks do that)
                    module.forward = own
