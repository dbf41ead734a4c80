"""A dataset as a list of text records: files, lists of strings, ``datasets.Dataset`` objects, and
the Python reference manual every CPython ships (real English prose, offline)."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from attnwidget.inputs.source import DatasetNotFoundError, InputError

#: Suffixes read as JSON lines; every other file is read as plain UTF-8 text.
JSONL_SUFFIXES = (".jsonl", ".ndjson")


class TextDataset:
    """The records of a dataset as a list of non-blank strings, with a name for captions.

    ``data``: a path to a text file (records are paragraphs: blocks separated by
    blank lines) or a JSON-lines file (``.jsonl``/``.ndjson``: each line an
    object with ``field``, or a JSON string); a list or tuple of strings; a
    ``datasets.Dataset`` (anything with ``column_names`` whose ``[field]`` gives
    the strings); or a :class:`TextDataset`. Blank records are dropped.
    ``name``: how captions call it (default: the file name, or ``"in-memory
    dataset"``). ``description``: the path or what the object was (for the record).
    """

    def __init__(self, data: Any, *, field: str = "text", name: str | None = None) -> None:
        if name is not None and not isinstance(name, str):
            raise InputError(f"name: expected a str or None, got {type(name).__name__}")
        if isinstance(data, TextDataset):
            self.records, self.description = data.records, data.description
            self.name = name or data.name
            self.path = data.path
            return
        self.path: Path | None = None
        if isinstance(data, (str, os.PathLike)):
            self.path = Path(data)
            records = _read_file(self.path, field)
            self.description = str(self.path)
            default_name = self.path.name
        elif isinstance(data, Mapping):
            raise InputError(
                f"dataset: got a mapping with keys {sorted(map(str, data))[:5]} (a DatasetDict?); "
                "expected one split, e.g. dataset['validation'], a path or a list of strings"
            )
        elif hasattr(data, "column_names") and hasattr(data, "__getitem__"):
            columns = list(data.column_names)
            if field not in columns:
                raise InputError(
                    f"field: {field!r} is not a column of the dataset; expected one of {columns}"
                )
            records = _strings(data[field], "dataset", f"column {field!r}")
            self.description = f"{type(data).__name__} ({len(records)} rows, column {field!r})"
            default_name = str(getattr(getattr(data, "info", None), "dataset_name", None) or "dataset")
        elif isinstance(data, (list, tuple)):
            records = _strings(data, "dataset", "the list")
            self.description = f"list of {len(records)} string{'s' if len(records) != 1 else ''}"
            default_name = "in-memory dataset"
        else:
            raise InputError(
                f"dataset: expected a path to a text or JSON-lines file, a list of strings or a "
                f"datasets.Dataset, got {type(data).__name__}"
            )
        self.records = [r for r in records if r.strip()]
        self.name = name or default_name
        if not self.records:
            raise InputError(
                f"dataset: {self.description!r} holds no text ({len(records)} records, all blank); "
                "expected at least one non-blank record"
            )

    def __len__(self) -> int:
        return len(self.records)

    def __repr__(self) -> str:
        return f"TextDataset({self.name!r}, {len(self)} records, {self.description!r})"


def _strings(values: Iterable[Any], name: str, where: str) -> list[str]:
    out = list(values)
    for i, v in enumerate(out):
        if not isinstance(v, str):
            raise InputError(f"{name}: item {i} of {where} is a {type(v).__name__}; expected strings")
    return out


def _read_file(path: Path, field: str) -> list[str]:
    if not path.exists():
        raise DatasetNotFoundError(
            f"dataset: no file at {str(path)!r}; expected a text (.txt) or JSON-lines (.jsonl) file, "
            "a list of strings or a datasets.Dataset"
        )
    if not path.is_file():
        raise InputError(f"dataset: {str(path)!r} is not a file; expected a text or JSON-lines file")
    try:
        content = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(
            f"dataset: {str(path)!r} is not UTF-8 text ({exc.reason} at byte {exc.start})"
        ) from None
    if path.suffix.lower() not in JSONL_SUFFIXES:
        # paragraphs: the natural record of prose (WikiText's raw files, books)
        return [p.strip("\n") for p in re.split(r"\n[ \t]*\n", content)]
    records = []
    for number, line in enumerate(content.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"dataset: line {number} of {str(path)!r} is not JSON ({exc.msg})") from None
        if isinstance(item, dict):
            if field not in item:
                raise InputError(
                    f"field: line {number} of {str(path)!r} has no {field!r} key (keys: {sorted(item)[:5]}); "
                    "pass field= naming the text"
                )
            item = item[field]
        if not isinstance(item, str):
            raise InputError(
                f"dataset: line {number} of {str(path)!r} holds a {type(item).__name__}; expected a "
                f"string or an object with a string {field!r}"
            )
        records.append(item)
    return records




#: A line that only underlines a heading in the reference manual's plain text (``*****``, ``=====``).
_UNDERLINE = re.compile(r"^[ \t]*([*=~^-])\1{2,}[ \t]*(?:\n|$)", re.MULTILINE)


def reference_manual(name: str = "Python reference manual") -> TextDataset:
    """The Python Language Reference's topics as a dataset: real English prose that works offline.

    Read at run time from ``pydoc_data.topics``, which every CPython installs
    (what ``help("assignment")`` shows): 79 topics, about 460 KB and 128,000
    MiniLM tokens (1,000 windows of 128) on Python 3.11. The text changes with
    the Python version, so compare numbers computed on the same interpreter.
    Lines that only underline a heading are dropped. Licence: the Python
    documentation is distributed under the PSF License Agreement; attnwidget
    ships none of it, it reads the interpreter's own copy.
    """
    import sys
    from pydoc_data.topics import topics

    records = [_UNDERLINE.sub("", topics[key]) for key in sorted(topics)]
    dataset = TextDataset(records, name=name)
    dataset.description = f"pydoc_data.topics of Python {sys.version.split()[0]} ({len(records)} topics)"
    return dataset
