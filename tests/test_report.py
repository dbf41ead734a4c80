"""The report command: exit codes, one-line errors, offline HTML, metrics.json equal to the metrics."""

from __future__ import annotations

import json
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
    missing = run("report")  # the text is required
    assert missing.returncode == 2
    assert "the following arguments are required: text" in missing.stderr


@pytest.mark.parametrize(("args", "message"), [
    (["", "--model", "tiny"], "error: text: expected a non-empty string, got ''"),
    (["hello", "--model", "/no/such/model"], "error: --model: no model at '/no/such/model'"),
    (["a b", "--model", "tiny"], "error: text: characters [' '] are not in the tokenizer's alphabet"),
    (["word " * 700, "--model", "minilm"],
     "error: text: 702 tokens after tokenization, but the model accepts at most 512"),
])
def test_bad_input_exits_non_zero_with_one_line(args, message, tmp_path):
    res = run("report", *args, "--out", str(tmp_path / "r"), "--quiet", "--no-png")
    assert res.returncode == 2
    errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1
    assert errors[0].startswith(message)
    assert not (tmp_path / "r" / "index.html").exists()


def test_tiny_model_report_without_png(tmp_path):
    res = run("report", "q8Zr2kLmxTq8Zr2kLmxT", "--model", "tiny", "--out", str(tmp_path), "--quiet",
              "--no-png")
    assert res.returncode == 0, res.stderr
    numbers = json.loads((tmp_path / "metrics.json").read_text())
    assert numbers["shape"] == [2, 4, 20, 20]
    assert numbers["causal"] is True
    assert not (tmp_path / "figures").exists()


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
    assert numbers["pattern"] == M.identify_attention_pattern(maps).tolist()
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
