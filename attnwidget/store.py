"""Saving and loading an :class:`~attnwidget.AttentionMaps` record: one portable file.

A record made where the model runs (a GPU box, a cluster job) can be viewed
where the notebook runs (a laptop) without the model: ``maps.save(path)`` there,
``AttentionMaps.load(path)`` here.

The file is a zip archive (numpy's ``.npz`` layout, readable with ``np.load``):

* ``weights.npy``: float32 ``[layer, head, query_pos, key_pos]``, little-endian;
* ``empty_rows.npy``: bool ``[layer, head, query_pos]`` (fully masked rows);
* ``query_padding.npy``, ``key_padding.npy``: bool ``[Q]``, ``[K]``;
* ``meta.json``: format name and version, tokens (raw and display forms), layer
  and head names, model name, text, causal flag, averaged heads, token scheme
  and special tokens, the sequence's source (:class:`attnwidget.inputs.Source`
  as a dict, or null; files written before it existed have none), and the
  library version that wrote it.

No pickles: loading never runs code from the file. The loaded record is
validated like any other (rows sum to 1, shapes agree), and a truncated or
corrupted file raises one ``ValueError`` that names the path and what is wrong.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from attnwidget.maps import AttentionMaps

#: Written into meta.json; a reader refuses a newer format version it does not know.
FORMAT = "attnwidget.AttentionMaps"
FORMAT_VERSION = 1
_ARRAYS = ("weights", "empty_rows", "query_padding", "key_padding")


def _write_array(zf: zipfile.ZipFile, name: str, array: np.ndarray) -> None:
    # zip64 and streaming: a multi-GiB stack is written without a second copy in memory
    with zf.open(f"{name}.npy", "w", force_zip64=True) as fh:
        np.lib.format.write_array(fh, np.ascontiguousarray(array), allow_pickle=False)


def save_maps(maps: AttentionMaps, path: str | Path) -> Path:
    """Write ``maps`` to ``path`` (suffix free; ``.npz`` is conventional); returns the path."""
    from attnwidget import __version__

    path = Path(path)
    meta = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "written_by": f"attnwidget {__version__}",
        "shape": list(maps.shape),
        "query_tokens": list(maps.query_tokens),
        "key_tokens": None if maps.key_tokens is maps.query_tokens else list(maps.key_tokens),
        "query_display": list(maps.query_display), "key_display": list(maps.key_display),
        "layer_names": list(maps.layer_names), "head_names": list(maps.head_names),
        "model_name": maps.model_name, "text": maps.text, "causal": bool(maps.causal),
        "averaged_heads": None if maps.averaged_heads is None else list(maps.averaged_heads),
        "token_scheme": maps._token_scheme, "special_tokens": list(maps._special_tokens),
        "source": None if maps.source is None else maps.source.to_dict(),
    }
    tmp = path.with_name(path.name + ".partial")
    try:
        # stored, not deflated: float weights barely compress and deflate is slow at GiB sizes
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
            # ensure_ascii keeps lone surrogates and every other code point writable as JSON
            zf.writestr("meta.json", json.dumps(meta, ensure_ascii=True))
            _write_array(zf, "weights", maps.weights.numpy().astype("<f4", copy=False))
            _write_array(zf, "empty_rows", maps.empty_rows.numpy())
            _write_array(zf, "query_padding", np.asarray(maps.query_padding))
            _write_array(zf, "key_padding", np.asarray(maps.key_padding))
        tmp.replace(path)  # a crash mid-write never leaves a half file under the real name
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _bad(path: Path, what: str) -> ValueError:
    return ValueError(
        f"path: {str(path)!r} is not a readable attnwidget record ({what}); "
        "expected a file written by AttentionMaps.save"
    )


def _read_array(zf: zipfile.ZipFile, name: str, path: Path) -> np.ndarray:
    try:
        with zf.open(f"{name}.npy") as fh:
            array = np.lib.format.read_array(fh, allow_pickle=False)
    except KeyError:
        raise _bad(path, f"{name}.npy is missing") from None
    except (zipfile.BadZipFile, EOFError, ValueError, OSError) as exc:
        raise _bad(path, f"{name}.npy is damaged: {exc}") from None
    return array


def load_maps(path: str | Path) -> AttentionMaps:
    """Read a record written by :func:`save_maps`; validated like any new record."""
    from attnwidget.maps import AttentionMaps

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"path: no file at {str(path)!r}")
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise _bad(path, f"not a zip archive or truncated: {exc}") from None
    with zf:
        try:
            meta = json.loads(zf.read("meta.json").decode("utf-8"))
        except KeyError:
            raise _bad(path, "meta.json is missing") from None
        except (zipfile.BadZipFile, EOFError, ValueError, OSError) as exc:
            raise _bad(path, f"meta.json is damaged: {exc}") from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            named = meta.get("format") if isinstance(meta, dict) else meta
            raise _bad(path, f"meta.json names format {named!r}")
        if meta.get("format_version") != FORMAT_VERSION:
            raise _bad(path, f"format version {meta.get('format_version')!r}, this attnwidget reads "
                             f"version {FORMAT_VERSION}; upgrade attnwidget")
        arrays = {name: _read_array(zf, name, path) for name in _ARRAYS}
    weights = arrays["weights"]
    if list(weights.shape) != meta.get("shape") or weights.dtype != np.float32:
        raise _bad(path, f"weights are {weights.dtype} {list(weights.shape)}, meta.json says "
                         f"float32 {meta.get('shape')}")
    empty = arrays["empty_rows"]
    if empty.shape != weights.shape[:3] or empty.dtype != bool:
        raise _bad(path, f"empty_rows are {empty.dtype} {list(empty.shape)}, expected bool "
                         f"{list(weights.shape[:3])}")
    # fully masked rows are stored as zeros; give them back as NaN so the record's own
    # validation flags them again and a zero row that was *not* masked fails loudly
    if empty.any():
        weights = weights.copy()
        weights[empty] = np.nan
    fields: dict[str, Any] = {k: meta.get(k) for k in (
        "key_tokens", "query_display", "key_display", "layer_names", "head_names", "model_name",
        "text", "causal", "averaged_heads", "token_scheme", "source")}
    try:
        maps = AttentionMaps(
            weights, meta["query_tokens"], **fields,
            special_tokens=meta.get("special_tokens") or (),
            query_padding=arrays["query_padding"], key_padding=arrays["key_padding"],
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise _bad(path, f"its contents do not make a valid record: {exc}") from None
    if not np.array_equal(maps.empty_rows.numpy(), empty):
        raise _bad(path, "rows flagged as fully masked do not match the stored weights")
    return maps
