"""Replaying a model's linear layers from an earlier run of the same input.

Ablating a head in layer L changes nothing the model computes before that
head's output is projected: every layer below L, and layer L's own query, key
and value projections, see exactly the inputs they saw in the plain run. Those
linear layers are most of a transformer's arithmetic (at 128 tokens, three
quarters of MiniLM's forward), so an ablated re-run can give their outputs back
instead of computing them again.

:class:`Replay` records, in one run, every call of a linear layer (``nn.Linear``
and transformers' ``Conv1D``): the module, its parameters' identity and version,
a copy of its input and a copy of its output. In a later run it hands back the
recorded output for as long as each call is the same module, with unchanged
parameters (:func:`parameter_versions`), on an input *exactly* equal
(``torch.equal``) to the recorded one.
The first call that differs in any of these (the ablated head's projection,
whose input the ablation rewrote; a weight the user changed in place; another
text) is computed, and so is everything after it. A replay can therefore only
save work, never change a number: a replayed output is the output this module
gave for this very input.

Everything else (embeddings, layer norms, the attention itself, the ablation's
own hooks and transformers' output recording) runs as usual, so the records and
hidden states a replayed run returns are those of a plain run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import nn

#: The most bytes one :class:`Replay` keeps (inputs and outputs together). A run whose linear
#: layers produce more is recorded up to here; later calls are computed. 0 turns replay off.
REPLAY_BYTES = 256 * 2**20


def _is_linear(module: nn.Module) -> bool:
    return isinstance(module, nn.Linear) or type(module).__name__ == "Conv1D"  # GPT-2's Conv1D


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


def _versions(module: nn.Module) -> tuple | None:
    return parameter_versions(module, recurse=False)


@dataclasses.dataclass(frozen=True)
class _Call:
    module: nn.Module
    versions: tuple | None
    input: torch.Tensor | None  # None: a call that cannot be replayed (other arguments)
    output: torch.Tensor | None


class Replay:
    """The linear layers' calls of one run, to give back to a later run of the same input.

    ``calls``: in call order, up to the last call that an ablation can leave unchanged (the
    last attention site's projection, when ``markers`` name the sites' modules).
    ``replayed``: how many calls the last :meth:`replaying` gave back.
    """

    def __init__(self, budget: int | None = None) -> None:
        self.budget = REPLAY_BYTES if budget is None else int(budget)
        self.calls: list[_Call] = []
        self.nbytes = 0
        self.replayed = 0

    @contextlib.contextmanager
    def recording(self, model: nn.Module, markers: Sequence[nn.Module] = ()) -> Iterator[Replay]:
        """Record the linear layers' calls of the runs inside the block (in this thread).

        ``markers``: modules (the attention sites' output projections) after whose last call
        nothing can be replayed; the calls from there on are dropped after the run.
        """
        owner = threading.get_ident()
        copies: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # input id -> (input, its copy)
        last_marker = [0]
        full = [self.budget <= 0]

        def copy_of(x: torch.Tensor) -> torch.Tensor:
            seen = copies.get(id(x))
            if seen is not None and seen[0] is x:  # q, k and v read the same hidden states
                return seen[1]
            c = x.detach().clone()
            self.nbytes += c.nelement() * c.element_size()
            copies[id(x)] = (x, c)
            return c

        def keep(module: nn.Module, args: tuple, output: Any) -> None:
            if threading.get_ident() != owner or full[0]:
                return
            x = args[0] if len(args) == 1 else None
            if not isinstance(x, torch.Tensor) or not isinstance(output, torch.Tensor):
                self.calls.append(_Call(module, None, None, None))
                return
            size = (x.nelement() * x.element_size() * (id(x) not in copies)
                    + output.nelement() * output.element_size())
            if self.nbytes + size > self.budget:
                full[0] = True  # the calls after this one are computed in a replay
                return
            self.calls.append(_Call(module, _versions(module), copy_of(x), output.detach().clone()))
            self.nbytes += output.nelement() * output.element_size()

        def mark(_module: nn.Module, _args: tuple) -> None:
            if threading.get_ident() == owner:
                last_marker[0] = len(self.calls)

        handles = [m.register_forward_hook(keep) for m in model.modules() if _is_linear(m)]
        handles += [m.register_forward_pre_hook(mark) for m in markers]
        try:
            yield self
        finally:
            for h in handles:
                h.remove()
            copies.clear()
        if markers:  # nothing from the last site's projection on is ever the same again
            self.calls = self.calls[: last_marker[0]]
            self.nbytes = sum({id(t): t.nelement() * t.element_size()
                               for c in self.calls for t in (c.input, c.output) if t is not None}.values())

    @contextlib.contextmanager
    def replaying(self, model: nn.Module) -> Iterator[Replay]:
        """Inside the block, this thread's linear layer calls get their recorded outputs back,
        in order, until the first call that is not exactly the recorded one."""
        owner = threading.get_ident()
        state = {"pos": 0, "live": bool(self.calls)}
        self.replayed = 0
        modules = {id(c.module): c.module for c in self.calls}.values()
        saved = [(m, m.__dict__.get("forward")) for m in modules]

        def wrap(module: nn.Module, forward: Any) -> Any:
            def replayed_forward(*args: Any, **kwargs: Any) -> Any:
                if state["live"] and threading.get_ident() == owner:
                    call = self.calls[state["pos"]] if state["pos"] < len(self.calls) else None
                    x = args[0] if len(args) == 1 and not kwargs else None
                    if (call is not None and call.module is module and call.input is not None
                            and isinstance(x, torch.Tensor) and call.versions is not None
                            and call.versions == _versions(module) and x.shape == call.input.shape
                            and x.dtype == call.input.dtype and x.device == call.input.device
                            and torch.equal(x, call.input)):
                        state["pos"] += 1
                        self.replayed += 1
                        return call.output.clone()  # the caller may change it in place
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
