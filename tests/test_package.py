"""The built wheel ships the JS bundle, which is not in git."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]


@pytest.mark.slow
def test_sdist_then_wheel_contains_the_bundle(tmp_path):
    if shutil.which("npm") is None:
        pytest.skip("npm is not installed")
    # sdist first, then the wheel from the unpacked sdist: the real install path. The sdist
    # carries the built bundle (gitignored, added as an artifact), so the wheel build from it
    # skips npm (skip-if-exists) and installing the sdist needs no node
    # (scripts/check_bare_install.sh installs it with node off the PATH).
    subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(tmp_path), str(ROOT)],
        check=True, capture_output=True, text=True, timeout=600,
    )
    sdist = next(tmp_path.glob("attnwidget-*.tar.gz"))
    with tarfile.open(sdist) as tar:
        names = tar.getnames()
    assert any(n.endswith("js/src/index.ts") for n in names)
    assert any(n.endswith("attnwidget/static/widget.js") for n in names)
    assert any(n.endswith("/LICENSE") for n in names)
    assert not any("node_modules" in n for n in names)
    wheel = next(tmp_path.glob("attnwidget-*.whl"))
    with zipfile.ZipFile(wheel) as zf:
        files = set(zf.namelist())
        bundle = zf.read("attnwidget/static/widget.js").decode()
    assert {"attnwidget/static/widget.js", "attnwidget/static/widget.css", "attnwidget/py.typed",
            "attnwidget/maps.py", "attnwidget/extract/huggingface.py"} <= files
    meta = zf_meta(wheel)
    from attnwidget import __version__

    assert f"Version: {__version__}" in meta  # one version source: attnwidget/__init__.py
    assert "License-Expression: MIT" in meta
    assert "Requires-Dist: tqdm" in meta
    assert "Classifier: Framework :: Jupyter" in meta
    assert "Project-URL: Source" in meta
    with zipfile.ZipFile(wheel) as zf:
        entry_points = next(zf.read(n).decode() for n in zf.namelist() if n.endswith("entry_points.txt"))
        assert any(n.endswith("licenses/LICENSE") for n in zf.namelist())
    assert "attnwidget = attnwidget.__main__:main" in entry_points
    assert "render" in bundle
    # no CDN: the widget must work offline
    assert "http://" not in bundle
    assert "https://" not in bundle


def zf_meta(wheel: Path) -> str:
    with zipfile.ZipFile(wheel) as zf:
        return next(zf.read(n).decode() for n in zf.namelist() if n.endswith(".dist-info/METADATA"))


def test_js_state_keys_mirror_the_python_traits():
    from attnwidget import AttentionView

    source = (ROOT / "js" / "src" / "state.ts").read_text()
    start = source.index("= [", source.index("export const STATE_KEYS")) + 3
    listed = source[start : source.index("];", start)]
    js_keys = {k.strip().strip('"') for k in listed.split(",") if k.strip()}
    # the interface's own fields: names before a colon at brace depth 1 (several a line, comments
    # dropped; the fields of a nested type such as sweep_scores' are at depth 2)
    body = source[source.index("export interface ViewState {"):]
    body = "\n".join(line.split("//")[0] for line in body.splitlines())
    typed, depth = set(), 0
    for m in re.finditer(r"[{}]|([A-Za-z_]\w*)\??\s*:", body):
        if m.group(0) in "{}":
            depth += 1 if m.group(0) == "{" else -1
            if depth == 0:
                break
        elif depth == 1:
            typed.add(m.group(1))
    py_keys = set(AttentionView.class_own_traits(sync=True))
    assert js_keys == py_keys
    assert typed == py_keys
