"""The built wheel ships the JS bundle, which is not in git."""

from __future__ import annotations

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
    # sdist first, then the wheel from the unpacked sdist: the real install path,
    # with no prebuilt static/ around (it is gitignored and excluded from the sdist)
    subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(tmp_path), str(ROOT)],
        check=True, capture_output=True, text=True, timeout=600,
    )
    sdist = next(tmp_path.glob("attnwidget-*.tar.gz"))
    with tarfile.open(sdist) as tar:
        names = tar.getnames()
    assert any(n.endswith("js/src/index.ts") for n in names)
    assert not any("node_modules" in n for n in names)
    wheel = next(tmp_path.glob("attnwidget-*.whl"))
    with zipfile.ZipFile(wheel) as zf:
        files = set(zf.namelist())
        bundle = zf.read("attnwidget/static/widget.js").decode()
    assert {"attnwidget/static/widget.js", "attnwidget/static/widget.css",
            "attnwidget/maps.py", "attnwidget/extract/huggingface.py"} <= files
    assert "render" in bundle
    # no CDN: the widget must work offline
    assert "http://" not in bundle
    assert "https://" not in bundle


def test_js_state_keys_mirror_the_python_traits():
    from attnwidget import AttentionView

    source = (ROOT / "js" / "src" / "index.ts").read_text()
    start = source.index("= [", source.index("export const STATE_KEYS")) + 3
    listed = source[start : source.index("];", start)]
    js_keys = {k.strip().strip('"') for k in listed.split(",") if k.strip()}
    interface = source[source.index("export interface ViewState {"):]
    interface = interface[: interface.index("}")]
    typed = {line.split(":")[0].strip() for line in interface.splitlines()[1:] if ":" in line}
    py_keys = set(AttentionView.class_own_traits(sync=True))
    assert js_keys == py_keys
    assert typed == py_keys
