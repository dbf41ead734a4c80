"""The lab handouts, call for call: one module per handout, thin wrappers over the core.

A student following a handout imports its functions from the module of the
same handout and calls them by the handout's names, with its arguments, and
gets what the handout says they return:

========================  =====================================================
module                    handout
========================  =====================================================
:mod:`.lab02`             Lab 02, "Attention Visualization" (the toolkit)
:mod:`.fundamentals`      "Attention Fundamentals for Visualization"
:mod:`.per_head`          the guide to per-head visualisation with full context
:mod:`.surgeon`           "The Attention Surgeon"
:mod:`.long_context`      the long-context attention analysis summary
========================  =====================================================

No metric is computed twice: each function calls :mod:`attnwidget.metrics`,
:mod:`attnwidget.scratch`, :mod:`attnwidget.plots`, :mod:`attnwidget.extract`,
:mod:`attnwidget.synthetic`, :mod:`attnwidget.tinylm` or
:mod:`attnwidget.models`. Where a handout's units differ from the core's
(the Surgeon's ``analyze_attention_patterns``), or its numbers cannot occur,
the lab function says so in its docstring. Plot functions return bokeh
figures and write ``save_path`` (``.html``, ``.png`` or ``.svg``) when given.

The submodules load on first use (``attnwidget.lab.surgeon``), so importing
one handout's module does not import the others' dependencies. A handout's
function can also be imported from here (``from attnwidget.lab import
create_attention_heatmap``) when one handout alone has that name; a name two
handouts share with different meanings (``plot_attention_heatmap`` in 001 and
003) raises an ImportError naming both modules, also from ``hasattr`` and
``getattr(lab, name, default)``: Python would turn an AttributeError into a bare
"cannot import name", and the point is to say where the two functions are.

Handout names the core has under the same name appear in several modules as
the same object (``compression_hints``); those import from here too.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["fundamentals", "lab02", "long_context", "per_head", "surgeon"]



def __getattr__(name: str) -> Any:
    if name in __all__:
        return importlib.import_module(f"{__name__}.{name}")
    if name.startswith("__"):  # dunder lookups (copy, pickle, doctest) are not handout names
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    found = {}
    for module in __all__:
        mod = importlib.import_module(f"{__name__}.{module}")
        if name in getattr(mod, "__all__", ()):
            found[module] = getattr(mod, name)
    if len({id(v) for v in found.values()}) == 1:
        return next(iter(found.values()))
    if found:
        where = " and ".join(f"attnwidget.lab.{m}" for m in found)
        raise ImportError(f"{name} is a function of two handouts with different meanings ({where}); "
                          f"import it from the module of the handout you follow, e.g. "
                          f"from attnwidget.lab.{next(iter(found))} import {name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}; the handouts' functions are "
                         f"in {', '.join(f'attnwidget.lab.{m}' for m in __all__)}")
