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
query, key, value and the attention weights). It records by wrapping the
module's ``forward``, so what it keeps is what ``forward`` itself took and gave:
the module's hooks run around a replayed ``forward`` exactly as around a
computed one, once. For each call it keeps the module, the state its output
depends on besides the inputs (:func:`_state`: parameters and buffers, training
flags, the hooks inside a larger piece, the attention implementation), copies
of the inputs and a copy of the output; and, for the whole run, the global
switches (autocast).

In a later run it hands back the recorded output for as long as each call is
the same module, in the same state, on inputs *exactly* equal (``torch.equal``)
to the recorded ones. The first call that differs in any of these (the ablated
head's projection, whose input the ablation rewrote; a weight changed; another
text) is computed, and so is everything after it. A larger piece with hooks
inside is not given back whole (its hooks must run): it runs, and the calls
inside it are replayed one by one. What is given back is thus always the output
this module's ``forward`` gave for these very inputs in this state. Writes
through ``.data`` in place are not seen (:func:`weights_state`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import threading
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import torch
from torch import nn

#: The most bytes one :class:`Replay` keeps (inputs and outputs together). A run whose kept
#: modules produce more is recorded up to here; later calls are computed. 0 turns replay off.
REPLAY_BYTES = 256 * 2**20

# one recording or replay at a time in the process: both set `forward` on the model's modules
_LOCK = threading.RLock()


def is_linear(module: nn.Module) -> bool:
    """An ``nn.Linear`` or transformers' ``Conv1D`` (GPT-2)."""
    return isinstance(module, nn.Linear) or type(module).__name__ == "Conv1D"


def weights_state(module: nn.Module, recurse: bool = True) -> tuple | None:
    """Each parameter's and buffer's identity, storage, dtype, device and in-place version;
    None where not tracked (tensors made under inference_mode).

    An optimizer step, ``load_state_dict``, any in-place op, ``p.data = ...``, ``.half()``,
    ``.to()`` give another tuple. An in-place write through ``.data`` (``p.data.mul_(2)``)
    does not: it bypasses the version counter as it bypasses autograd's own checks.
    """
    try:
        return tuple((id(t), t._version, t.data_ptr(), t.dtype, t.device) for t in itertools.chain(
            module.parameters(recurse=recurse), module.buffers(recurse=recurse)))
    except RuntimeError:
        return None


def _global_hooks() -> int:
    from torch.nn.modules import module as torch_module

    return len(torch_module._global_forward_hooks) + len(torch_module._global_forward_pre_hooks)


def _inner_hooks(module: nn.Module) -> tuple:
    """The hooks a replayed piece would skip: those of the modules inside it, and the global ones."""
    inner = (m for m in module.modules() if m is not module)
    return (_global_hooks(), *sorted(k for m in inner for d in (m._forward_hooks, m._forward_pre_hooks)
                                     for k in d))


def _state(module: nn.Module) -> tuple | None:
    """What a module's output depends on besides its inputs: its own weights (a linear layer),
    or for a larger piece all its weights, training flags, inner hooks and the attention
    implementation its config names; None: untracked."""
    leaf = not any(True for _ in module.children())
    weights = weights_state(module, recurse=not leaf)
    if weights is None or leaf:
        return weights
    config = getattr(module, "config", None)
    return (weights, tuple(m.training for m in module.modules()), _inner_hooks(module),
            getattr(config, "_attn_implementation", None))


def _context() -> tuple:
    """Global switches the outputs depend on: autocast, per device type."""
    out = []
    for device in ("cpu", "cuda"):
        try:
            out.append((torch.is_autocast_enabled(device), torch.get_autocast_dtype(device)))
        except (AttributeError, RuntimeError, TypeError):  # an older torch: one flag for all
            out.append((torch.is_autocast_enabled(), None))
    return tuple(out)


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
    """Only tensors, None, numbers, strings and plain tuples/lists/dicts of them: what can be
    copied and compared exactly (another object, a KV cache or a namedtuple say, cannot)."""
    if x is None or isinstance(x, (torch.Tensor, bool, int, float, str)):
        return True
    if type(x) in (tuple, list):
        return all(_plain(i) for i in x)
    if type(x) is dict:
        return all(isinstance(k, str) and _plain(v) for k, v in x.items())
    return False


def _copy(x: Any, copy_tensor) -> Any:
    if isinstance(x, torch.Tensor):
        return copy_tensor(x)
    if type(x) in (tuple, list):
        return type(x)(_copy(i, copy_tensor) for i in x)
    if type(x) is dict:
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


def _nbytes(x: Any) -> int:
    return sum(t.nelement() * t.element_size() for t in _tensors(x))


@dataclasses.dataclass
class _Call:
    module: nn.Module
    state: tuple | None = None
    inputs: Any = None  # (args, kwargs), copied
    output: Any = None  # copied
    span: int = 0  # calls recorded inside this one (skipped when it is given back whole)
    replayable: bool = False  # False: inputs can be checked, but it runs (its inner calls replay)
    checkable: bool = False  # False: the replay stops here


class _InputCopies:
    """Copies of each call's tensor inputs, counted in the replay's bytes. A tensor the previous
    call also took, unchanged since, is copied once (q, k and v read the same hidden states);
    only the previous call's inputs are held, not every input of the run."""

    def __init__(self, replay: Replay) -> None:
        self.replay = replay
        self.recent: list[tuple[torch.Tensor, torch.Tensor]] = []  # (input, its copy)

    def __call__(self, inputs: Any) -> Any:
        seen, self.recent = self.recent, []

        def copy(x: torch.Tensor) -> torch.Tensor:
            for orig, c in seen:
                if orig is x and torch.equal(c, x):  # the same tensor, not changed since
                    self.recent.append((x, c))
                    return c
            c = x.detach().clone()
            self.replay.nbytes += c.nelement() * c.element_size()
            self.recent.append((x, c))
            return c

        return _copy(inputs, copy)


@contextlib.contextmanager
def forward_wrapped(modules: Iterable[nn.Module], wrap) -> Iterator[None]:
    """Set ``forward`` on each module's instance to ``wrap(module, forward)``; put back what was
    there before (also a ``forward`` set on the instance by someone else, accelerate's hooks)."""
    saved = []
    try:
        for module in modules:
            own = vars(module).get("forward")
            wrapper = wrap(module, module.forward)
            module.forward = wrapper
            saved.append((module, own, wrapper))
        yield
    finally:
        for module, own, wrapper in saved:
            if vars(module).get("forward") is not wrapper:
                continue  # replaced since by someone else: theirs now
            if own is None:
                del module.forward
            else:
                module.forward = own


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
        self.context: tuple | None = None
        self.cut = False  # the budget stopped the last recording below the last marker

    @contextlib.contextmanager
    def recording(self, model: nn.Module, markers: Sequence[nn.Module] = (),
                  pieces: Iterable[nn.Module] = ()) -> Iterator[Replay]:
        """Record the calls of the linear layers and of ``pieces`` in the one run inside the
        block (in this thread); a run that raises leaves nothing recorded.

        ``markers``: modules (the attention sites' output projections) from whose last call on
        nothing can be replayed; those calls are dropped after the run. ``pieces``: larger
        modules to replay whole; none may contain a marker (an ablation hook inside would
        not run).
        """
        owner = threading.get_ident()
        last_marker = [0]
        full = [self.budget <= 0]
        cut = [False]  # the budget was reached before the last marker's call
        copy_inputs = _InputCopies(self)

        def wrap(module: nn.Module, forward: Any) -> Any:
            leaf = not any(True for _ in module.children())

            def recorded_forward(*args: Any, **kwargs: Any) -> Any:
                if threading.get_ident() != owner or full[0]:
                    return forward(*args, **kwargs)
                call = _Call(module)
                if _plain(args) and _plain(kwargs):
                    if self.nbytes + _nbytes((args, kwargs)) > self.budget:
                        full[0] = True  # this call and the ones after it are computed in a replay
                        return forward(*args, **kwargs)
                    call.inputs = copy_inputs((args, kwargs))
                    call.state = _state(module)
                    call.checkable = call.state is not None
                index = len(self.calls)
                self.calls.append(call)
                output = forward(*args, **kwargs)
                call.span = len(self.calls) - index - 1
                whole = leaf or _inner_hooks(module) == (0,)  # else its inner hooks must run
                if call.checkable and whole and _plain(output) and not full[0]:
                    if self.nbytes + _nbytes(output) > self.budget:
                        full[0] = True
                    else:
                        call.output = _copy(output, lambda t: t.detach().clone())
                        self.nbytes += _nbytes(output)
                        call.replayable = True
                return output

            return recorded_forward

        def mark(_module: nn.Module, _args: tuple) -> None:  # before the marker's own call
            if threading.get_ident() == owner:
                last_marker[0] = len(self.calls)
                cut[0] = full[0]

        kept = [m for m in model.modules() if is_linear(m)] + list(pieces)
        with _LOCK, forward_wrapped(kept, wrap):
            handles = [m.register_forward_pre_hook(mark) for m in markers]
            try:
                self.context = _context()
                yield self
            except BaseException:
                self.calls, self.nbytes = [], 0
                raise
            finally:
                for h in handles:
                    h.remove()
                copy_inputs.recent.clear()
        if markers:  # nothing from the last site's projection on is ever the same again
            self.calls = self.calls[: last_marker[0]]
        self.cut = cut[0] if markers else full[0]
        self.nbytes = sum({id(t): t.nelement() * t.element_size() for c in self.calls
                           for t in _tensors((c.inputs, c.output))}.values())

    @contextlib.contextmanager
    def replaying(self, model: nn.Module) -> Iterator[Replay]:
        """Inside the block, this thread's calls of the recorded modules get their recorded
        outputs back, in order, until the first call that is not exactly the recorded one."""
        owner = threading.get_ident()
        state = {"pos": 0, "live": bool(self.calls) and _context() == self.context}
        self.replayed = 0

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
                        state["pos"] += 1  # the same call, run: the calls inside may replay
                        return forward(*args, **kwargs)
                    state["live"] = False  # from here on, the run differs: compute everything
                return forward(*args, **kwargs)

            return replayed_forward

        modules = {id(c.module): c.module for c in self.calls}.values()
        with _LOCK, forward_wrapped(modules, wrap):
            yield self
