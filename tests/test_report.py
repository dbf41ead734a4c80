"""The report command: exit codes, one-line errors, offline HTML, metrics.json equal to the metrics."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys

import numpy as np
import pytest

XSS = "<img src=x onerror=alert(1)>"


def run(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "attnwidget", *args], capture_output=True, text=True,
                          timeout=timeout, env={**__import__("os").environ, "HF_HUB_OFFLINE": "1"})


def test_help_explains_every_option():
    res = run("report", "--help")
    assert res.returncode == 0
    assert res.stdout.startswith("usage: attnwidget report")
    for option in ("--model", "--out", "--no-png", "--quiet", "minilm", "tiny"):
        assert option in res.stdout


def test_command_line_exit_codes_and_streams():
    from attnwidget import __version__

    top = run("--help")  # help: stdout, exit 0
    assert top.returncode == 0
    assert top.stderr == ""
    assert "report" in top.stdout
    assert "version" in top.stdout
    bare = run()  # no command: usage on stderr, exit 2
    assert bare.returncode == 2
    assert bare.stdout == ""
    assert "a command is required (report or version)" in bare.stderr
    bad = run("plot")
    assert bad.returncode == 2
    assert bad.stdout == ""
    assert "invalid choice: 'plot'" in bad.stderr
    for args in (["version"], ["--version"]):
        res = run(*args)
        assert res.returncode == 0
        assert res.stdout.strip() == f"attnwidget {__version__}"
    missing = run("report", "--model", "tiny", "--no-png")  # mode text (the default) needs the text
    assert missing.returncode == 2
    assert missing.stderr.strip() == "error: text: expected a non-empty string, got None"


@pytest.mark.parametrize(("args", "message"), [
    (["", "--model", "tiny"], "error: text: expected a non-empty string, got ''"),
    (["hello", "--model", "/no/such/model"], "error: --model: no model at '/no/such/model'"),
    (["a b", "--model", "tiny"], "error: text: record 0 cannot be tokenized: text: characters [' '] "
                                 "are not in the tokenizer's alphabet"),
    (["word " * 700, "--model", "minilm"],
     "error: text: 702 tokens, but the model takes at most 512 (config.max_position_embeddings)"),
    (["--mode", "validation", "--dataset", "/no/such.txt", "--model", "tiny"],
     "error: --dataset: no file at '/no/such.txt'; expected a text or JSON-lines file (attnwidget works "
     "offline and downloads nothing: for real prose without a file, --dataset python-reference)"),
    (["abc", "--text", "abd", "--model", "tiny"], "error: text: given twice, as 'abc' and as --text 'abd'"),
    (["--mode", "random", "--seq-len", "49", "--model", "tiny"], "error: seq_len: "),
    (["--mode", "random", "--layer", "5", "--model", "tiny"], "error: --layer: expected 0..1"),
])
def test_bad_input_exits_non_zero_with_one_line(args, message, tmp_path, capsys):
    # in this process, through the command's own entry point: a python start and its imports
    # cost 2-3 s a case, and the process-level contract (exit code 2, nothing on stdout, the
    # line on stderr) is checked through a real process above
    from attnwidget.__main__ import main

    try:
        code = main(["report", *args, "--out", str(tmp_path / "r"), "--quiet", "--no-png"])
    except SystemExit as exit_:  # argparse's own errors
        code = exit_.code
    out, err = capsys.readouterr()
    assert code == 2
    assert out == ""
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1
    assert errors[0].startswith(message)
    assert not (tmp_path / "r" / "index.html").exists()


def test_the_page_titles_each_section_with_the_maps_provenance_line():
    import html

    from attnwidget import AttentionMaps, report
    from attnwidget.maps import average_label

    rng = np.random.default_rng(0)
    w = rng.random((2, 3, 5, 5)).astype(np.float32)
    w[..., 4] = 0.0  # the last key is padding
    w /= w.sum(-1, keepdims=True)
    maps = AttentionMaps(w, list("abcde"), model_name="toy", text=f"a {XSS}", key_padding=[0, 0, 0, 0, 1])
    numbers = report.compute(maps)
    page = report.page(maps, maps.text, numbers, report.figures_of(maps, numbers))
    assert "3 heads · 5 tokens · no causal mask, 1 padded key</p>" in page  # the header: maps.masking()
    lines = {name: report.section_provenance(maps, name)
             for name in ("entropy", "layer0", "layer1", "rollout", "history", "received")}
    assert lines["entropy"] is None  # every layer and head: no one map to name
    assert lines["layer1"] == maps.provenance(1, what=f"each of 3 heads, then the {average_label(3)}")
    assert lines["rollout"] == maps.provenance(1, rollout=True)
    assert lines["history"] == lines["received"] == maps.provenance(1, 0)
    for name, line in lines.items():
        if line is not None:
            assert f'<p class="provenance"><bdi>{html.escape(line)}</bdi></p>' in page, name
    assert XSS not in page


@pytest.mark.parametrize("spelling", [["q8Zr2kLmxTq8Zr2kLmxT"],
                                      ["--mode", "text", "--text", "q8Zr2kLmxTq8Zr2kLmxT"]],
                         ids=["positional", "handout-002-option"])
def test_tiny_model_report_without_png(tmp_path, spelling):
    res = run("report", *spelling, "--model", "tiny", "--out", str(tmp_path), "--quiet", "--no-png")
    assert res.returncode == 0, res.stderr
    numbers = json.loads((tmp_path / "metrics.json").read_text())
    assert numbers["shape"] == [2, 4, 20, 20]
    assert numbers["causal"] is True
    assert not (tmp_path / "figures").exists()


def test_validation_mode_reads_the_builtin_reference_manual_offline(tmp_path):
    from attnwidget.inputs import load_samples, reference_manual
    from attnwidget.models import load_minilm

    res = run("report", "--mode", "validation", "--dataset", "python-reference", "--seq-len", "32",
              "--index", "3", "--model", "minilm", "--out", str(tmp_path), "--quiet", "--no-png")
    assert res.returncode == 0, res.stderr
    numbers = json.loads((tmp_path / "metrics.json").read_text())
    assert numbers["shape"] == [6, 12, 32, 32]
    # the very window load_samples gives for the reference manual: its words are on the page
    _, tok = load_minilm()
    sample = load_samples(tok, "validation", dataset=reference_manual(), seq_len=32, index=3)[0]
    page = (tmp_path / "index.html").read_text()
    assert sample.text.split()[1] in page


@pytest.mark.slow
def test_minilm_report_matches_the_metrics_and_is_offline(tmp_path, minilm):
    from attnwidget import extract_attention
    from attnwidget import metrics as M  # noqa: N812

    text = f"The cat sat on the mat. {XSS}"
    res = run("report", text, "--model", "minilm", "--out", str(tmp_path))
    assert res.returncode == 0, res.stderr
    page = (tmp_path / "index.html").read_text()
    assert not re.search(r"<script[^>]+src=", page)
    assert not re.search(r"<link[^>]+href=[\"']https?:", page)
    assert XSS not in page  # escaped
    assert "&lt;img src=x onerror=alert(1)&gt;" in page
    assert page.count("<tr><td>") == 72  # a row for every head
    model, tok = minilm
    maps = extract_attention(model, text, tok)
    numbers = json.loads((tmp_path / "metrics.json").read_text())
    stats = M.compute_attention_statistics(maps)
    for key in ("mean_entropy", "sparsity_gini", "effective_tokens", "diagonal_mean"):
        np.testing.assert_allclose(numbers["statistics"][key], stats[key], rtol=1e-6)
    assert numbers["pattern"] == M.identify_attention_pattern(maps, uniform="spread").tolist()
    assert numbers["grade"] == M.sharpness_grade(maps).tolist()
    from PIL import Image

    png = Image.open(tmp_path / "figures" / "layer3.png")
    pixels = np.asarray(png.convert("RGB"))
    assert png.size[0] >= 800
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 50
    assert sorted(p.name for p in (tmp_path / "figures").iterdir())[:2] == ["entropy.png", "history.png"]


def test_report_from_a_local_transformers_folder(tmp_path, bpe_tokenizer):
    from tiny_models import tiny

    folder = tmp_path / "model"
    tiny("bert", len(bpe_tokenizer), "eager").save_pretrained(folder)
    bpe_tokenizer.save_pretrained(folder)
    res = run("report", "The cat sat on the mat.", "--model", str(folder), "--out", str(tmp_path / "r"),
              "--quiet", "--no-png")
    assert res.returncode == 0, res.stderr
    numbers = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert numbers["shape"][:2] == [2, 4]
    assert numbers["tokens"][0] == "The"


def test_without_a_browser_the_page_is_written_and_one_line_says_what_to_install(tmp_path):
    import os

    text = "q8Zr2kLmxTq8Zr2kLmxT"
    missing = {"CHROMEDRIVER_PATH": str(tmp_path / "no-such-chromedriver")}
    res = subprocess.run([sys.executable, "-m", "attnwidget", "report", text, "--model", "tiny", "--out",
                          str(tmp_path / "a")], capture_output=True, text=True, timeout=600,
                         env={**os.environ, "HF_HUB_OFFLINE": "1", **missing})
    assert res.returncode == 1
    assert "Traceback" not in res.stderr
    errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        "error: no PNG figures: PNG/SVG export needs chromedriver, not found (Debian/Ubuntu: apt-get install "
        "chromium chromium-driver, then pip install 'attnwidget[export]' (selenium); set "
        "CHROMIUM_PATH/CHROMEDRIVER_PATH if they live elsewhere); or add --no-png to skip them"]
    assert (tmp_path / "a" / "index.html").stat().st_size > 100_000  # everything else is written
    assert json.loads((tmp_path / "a" / "metrics.json").read_text())["shape"] == [2, 4, 20, 20]
    assert not (tmp_path / "a" / "figures").exists()
    assert f"wrote {tmp_path / 'a' / 'index.html'}" in res.stdout
    # selenium missing (as if not installed): the same, naming selenium
    out = str(tmp_path / "b")
    code = ("import sys; sys.modules['selenium'] = None; from attnwidget.__main__ import main; "
            f"sys.exit(main(['report', {text!r}, '--model', 'tiny', '--quiet', '--out', {out!r}]))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600,
                         env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert res.returncode == 1
    assert res.stderr.splitlines() == [
        "error: no PNG figures: PNG/SVG export needs selenium, which is not installed (Debian/Ubuntu: "
        "apt-get install chromium chromium-driver, then pip install 'attnwidget[export]' (selenium); set "
        "CHROMIUM_PATH/CHROMEDRIVER_PATH if they live elsewhere); or add --no-png to skip them"]
    assert (tmp_path / "b" / "index.html").exists()


@pytest.mark.slow
def test_a_510_token_report_draws_pooled_maps_that_equal_the_metrics(tmp_path, minilm):
    from bokeh.models import ColumnDataSource

    from attnwidget import extract_attention, report
    from attnwidget._codec import pool_max, quantize

    model, tok = minilm
    text = " ".join(["the cat sat on the mat"] * 85)  # 510 word pieces with [CLS] and [SEP]
    maps = extract_attention(model, text, tok)
    assert maps.shape == (6, 12, 512, 512)
    numbers = report.compute(maps)
    figures = {name: fig for name, _, fig in report.figures_of(maps, numbers)}
    layer3 = [child[0] for child in figures["layer3"].children]
    assert len(layer3) == 13
    for h in (0, 7):
        panel = layer3[h]
        image = next(r.data_source.data for r in panel.renderers if type(r.glyph).__name__ == "Image")
        w = maps.head(3, h)
        f = 3  # 512 tokens drawn in 200-pixel panels
        # on the report's square-root scale: levels of sqrt(weight) up to sqrt(the head's max)
        expected = quantize(np.sqrt(pool_max(w, f)[0]), math.sqrt(float(w.max())))
        np.testing.assert_array_equal(image["image"][0], expected)
        entropy = numbers["statistics"]["mean_entropy"][3][h]
        assert panel.title.text == f"L3 H{h} · ent {entropy:.2f} · {numbers['grade'][3][h]}"
        note = [t.text for t in panel.above if t is not panel.title]
        assert note == ["max-pooled 3×3: 512×512 → 171×171"]
    entropy = figures["entropy"]
    cells = next(r.data_source.data for r in entropy.renderers if isinstance(r.data_source, ColumnDataSource))
    np.testing.assert_allclose(np.asarray(cells["weight"]).reshape(6, 12),
                               np.asarray(numbers["statistics"]["mean_entropy"]), rtol=1e-6)
    index = report.build(text, "minilm", tmp_path, png=False, progress=False)
    assert index.stat().st_size < 10e6  # the page at 510 tokens (it was 399 MB with a rect per cell)
    page = index.read_text()
    assert page.count("max-pooled 3") == 6 * 13  # one per grid panel (× is escaped in the page)
