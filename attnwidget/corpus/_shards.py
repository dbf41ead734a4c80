"""A corpus run on disk: a folder of Parquet shards plus the manifest that says what they hold.

::

    out/
      manifest.json           settings of the run (model, dataset fingerprint, seq_len, shards, ...)
      shard-00000.parquet     rows of sequences index .. index + shard_size - 1
      shard-00001.parquet     ...

A shard is written to ``shard-NNNNN.parquet.partial`` and renamed when complete,
so a shard file that exists is whole: an interrupted run loses at most the
shard it was computing, and a rerun with the same settings computes only the
shards that are missing. Each shard's Arrow schema carries the manifest (key
``attnwidget``), so a table read back knows where it came from.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from attnwidget.corpus._compute import COLUMN_NAMES, COLUMNS

FORMAT = "attnwidget.corpus"
#: 2: the pattern column labels uniform by the spread rule (metrics.SPREAD_UNIFORM_RULE), not by
#: 001's std rule; a folder of version 1 is not resumed, so no table mixes the two.
FORMAT_VERSION = 2
MANIFEST = "manifest.json"
#: Settings that must match for a rerun to resume a folder (the rest is recorded, not compared).
#: In the order they are checked: the settings a person chose first, the dataset's contents last.
RESUME_KEYS = ("format", "format_version", "model", "seq_len", "unit", "index", "num_samples",
               "shard_size", "threshold", "columns", "fingerprint")


def require_pyarrow() -> Any:
    try:
        import pyarrow as pa
        import pyarrow.parquet
    except ImportError:
        raise ModuleNotFoundError(
            "attnwidget.corpus writes Parquet through pyarrow, which is not installed; "
            "install the extra with: pip install 'attnwidget[corpus]'"
        ) from None
    return pa


def schema(manifest: dict[str, Any]) -> Any:
    pa = require_pyarrow()
    types = {"int64": pa.int64(), "int32": pa.int32(), "int16": pa.int16(), "float64": pa.float64(),
             "string": pa.string()}
    return pa.schema([pa.field(name, types[kind]) for name, kind, _ in COLUMNS],
                     metadata={"attnwidget": json.dumps(manifest)})


def shard_path(out: Path, shard: int) -> Path:
    return out / f"shard-{shard:05d}.parquet"


def prepare_folder(out: Path, manifest: dict[str, Any]) -> None:
    """Create ``out`` with ``manifest``, or check that the folder's manifest matches (to resume).

    A folder holding another run's shards raises ValueError naming ``out`` and the
    first setting that differs.
    """
    if out.exists() and not out.is_dir():
        raise ValueError(f"out: {str(out)!r} is a file; expected a folder for the shards")
    out.mkdir(parents=True, exist_ok=True)
    path = out / MANIFEST
    if path.exists():
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ValueError(f"out: {str(path)!r} is not a readable manifest ({exc})") from None
        for key in RESUME_KEYS:
            if old.get(key) != manifest.get(key):
                raise ValueError(
                    f"out: {str(out)!r} holds a corpus run with other settings ({key}: "
                    f"{old.get(key)!r} there, {manifest.get(key)!r} now); expected the same settings "
                    "to resume it, or a new folder"
                )
        return
    if any(out.glob("shard-*.parquet")):
        raise ValueError(f"out: {str(out)!r} holds shards but no {MANIFEST}; expected an empty or new folder")
    tmp = path.with_name(MANIFEST + ".partial")
    tmp.write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    os.replace(tmp, path)


def shard_done(out: Path, shard: int, n_sequences: int) -> bool:
    """True when the shard's file exists and holds rows for ``n_sequences`` sequences
    (the same number of layers x heads each); an unreadable file counts as missing and is written again."""
    path = shard_path(out, shard)
    if not path.is_file():
        return False
    import pyarrow.parquet as pq

    try:
        rows = pq.ParquetFile(path).metadata.num_rows
    except Exception:  # any unreadable file is as good as missing
        return False
    return rows > 0 and rows % n_sequences == 0


def write_shard(out: Path, shard: int, columns: dict[str, np.ndarray], manifest: dict[str, Any]) -> Path:
    """Write one shard atomically (``.partial`` then rename); returns its path."""
    pa = require_pyarrow()
    import pyarrow.parquet as pq

    table = pa.Table.from_pydict({name: columns[name] for name in COLUMN_NAMES}, schema=schema(manifest))
    path = shard_path(out, shard)
    tmp = path.with_name(path.name + ".partial")
    try:
        pq.write_table(table, tmp)
        os.replace(tmp, path)  # a crash before this line leaves no file under the real name
    finally:
        tmp.unlink(missing_ok=True)
    return path


def read_manifest(out: Path) -> dict[str, Any]:
    path = Path(out) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"path: no corpus run at {str(out)!r} (no {MANIFEST}); expected a folder "
                                "written by attnwidget.corpus.run")
    return json.loads(path.read_text(encoding="utf-8"))


def read_table(out: str | Path, allow_partial: bool = False) -> Any:
    """All shards of the run in ``out`` as one ``pyarrow.Table`` (rows in sequence, layer, head order).

    A run with missing shards raises ValueError naming ``path`` and how many are
    missing (rerun :func:`attnwidget.corpus.run` to finish it), unless ``allow_partial``.
    """
    pa = require_pyarrow()
    import pyarrow.parquet as pq

    out = Path(out)
    manifest = read_manifest(out)
    n = int(manifest["n_shards"])
    present = [s for s in range(n) if shard_path(out, s).is_file()]
    if len(present) < n and not allow_partial:
        raise ValueError(
            f"path: {n - len(present)} of {n} shards of {str(out)!r} are missing (an interrupted run); "
            "run attnwidget.corpus.run again with the same arguments to finish it, or pass allow_partial=True"
        )
    tables = [pq.read_table(shard_path(out, s)) for s in present]
    if not tables:
        return schema(manifest).empty_table()
    return pa.concat_tables(tables).replace_schema_metadata({"attnwidget": json.dumps(manifest)})
