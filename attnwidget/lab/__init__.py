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
one handout's module does not import the others' dependencies.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["fundamentals", "lab02", "long_context", "per_head", "surgeon"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
