"""attnwidget.inputs: the text / validation / random sources of handout 002, and their provenance.

Windows are checked against the tokenizer called directly (ids concatenated by
hand), random draws against numpy's generator, captions against the string
002 asks for, and every bad-input rule against its one-line message.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from attnwidget import AttentionMaps, AttentionView, inputs
from attnwidget.inputs import DatasetNotFoundError, InputError, Source
from attnwidget.maps import average_label

RECORDS = [
    "It is a truth universally acknowledged, that a single man in possession of a good fortune, "
    "must be in want of a wife.",
    "However little known the feelings or views of such a man may be on his first entering a "
    "neighbourhood, this truth is so well fixed in the minds of the surrounding families.",
    "My dear Mr. Bennet, said his lady to him one day, have you heard that Netherfield Park is let at last?",
    "Mr. Bennet replied that he had not. But it is, returned she; for Mrs. Long has just been here, "
    "and she told me all about it.",
]  # the opening of Pride and Prejudice (1813, public domain)


@pytest.fixture(scope="module")
def tok(minilm):
    return minilm[1]


@pytest.fixture(scope="module")
def tinylm():
    from attnwidget.models import load_tiny_lm

    return load_tiny_lm()


def by_hand(tok, records, seq_len):
    """Windows of seq_len tokens, [CLS] + content + [SEP], from the tokenizer called directly."""
    stream = [i for r in records for i in tok(r, add_special_tokens=False)["input_ids"]]
    c = seq_len - 2
    return [[tok.cls_token_id, *stream[k * c : (k + 1) * c], tok.sep_token_id]
            for k in range(len(stream) // c)]


def test_validation_windows_are_consecutive_token_windows_with_special_tokens(tok):
    expected = by_hand(tok, RECORDS, 16)
    windows = inputs.Windows(RECORDS, tok, 16)
    assert len(windows) == len(expected) >= 4
    for i, ids in enumerate(expected):
        sample = windows[i]
        assert sample.input_ids.tolist() == ids
        assert sample.input_ids.dtype == torch.int64
        assert sample.text == tok.decode(ids[1:-1])
        assert sample.source == Source(kind="validation", name="in-memory dataset",
                                       dataset="list of 4 strings", index=i, seq_len=16, unit="window")


def test_text_file_jsonl_list_and_dataset_give_the_same_windows(tok, tmp_path):
    datasets = pytest.importorskip("datasets")
    txt = tmp_path / "pride.txt"
    txt.write_text("\n\n".join(r.replace(", ", ",\n", 1) for r in RECORDS) + "\n", encoding="utf-8")
    jsonl = tmp_path / "pride.jsonl"
    jsonl.write_text("\n".join(json.dumps({"text": r, "id": i}) for i, r in enumerate(RECORDS)) + "\n\n")
    strings = tmp_path / "strings.jsonl"
    strings.write_text("\n".join(json.dumps(r) for r in RECORDS))

    class DuckDataset:  # what attnwidget reads of a datasets.Dataset, without the package
        column_names = ("text",)

        def __getitem__(self, key):
            return list(RECORDS) if key == "text" else None

    reference = [s.input_ids.tolist() for s in inputs.load_samples(
        tok, "validation", dataset=RECORDS, seq_len=16, num_samples=4)]
    # the text file's records are paragraphs: a line break inside one tokenizes like a space
    assert reference[:4] == by_hand(tok, RECORDS, 16)[:4]
    for data in (txt, str(jsonl), strings, datasets.Dataset.from_dict({"text": RECORDS}), DuckDataset()):
        got = [s.input_ids.tolist() for s in inputs.load_samples(
            tok, "validation", dataset=data, seq_len=16, num_samples=4)]
        assert got == reference, data
    sample = inputs.load_samples(tok, "validation", dataset=txt, seq_len=16, index=2)[0]
    assert sample.source.name == "pride.txt"
    assert sample.source.dataset == str(txt)
    assert sample.source.index == 2


def test_documents_unit_takes_each_record_cut_to_seq_len(tok):
    windows = inputs.Windows(RECORDS, tok, 20, unit="document")
    assert len(windows) == len(RECORDS)
    for i, record in enumerate(RECORDS):
        content = tok(record, add_special_tokens=False)["input_ids"][:18]
        assert windows.ids(i).tolist() == [tok.cls_token_id, *content, tok.sep_token_id]
        assert windows.source(i).unit == "document"
    short = inputs.Windows(["Hello there.", *RECORDS], tok, 64, unit="document")
    assert len(short[0]) == len(tok("Hello there.")["input_ids"]) < 64  # shorter records stay short


def test_random_tokens_are_seeded_drawn_without_special_tokens_and_deterministic(tok, minilm):
    model = minilm[0]
    a = inputs.random_sample(tok, 64, seed=3, index=2, model=model)
    b = inputs.random_sample(tok, 64, seed=3, index=2)
    assert torch.equal(a.input_ids, b.input_ids)
    assert not torch.equal(a.input_ids, inputs.random_sample(tok, 64, seed=3, index=3).input_ids)
    assert not torch.equal(a.input_ids, inputs.random_sample(tok, 64, seed=4, index=2).input_ids)
    # the same draw made here with numpy, over the ids that are not special tokens
    pool = np.array([i for i in range(len(tok)) if i not in set(tok.all_special_ids)])
    draw = pool[np.random.default_rng([3, 2]).integers(0, len(pool), size=62)]
    assert a.input_ids.tolist() == [tok.cls_token_id, *draw.tolist(), tok.sep_token_id]
    assert a.source == Source(kind="random", seed=3, index=2, seq_len=64)
    samples = inputs.load_samples(tok, "random", seq_len=32, seed=3, index=2, num_samples=3)
    assert [s.source.index for s in samples] == [2, 3, 4]
    assert torch.equal(samples[0].input_ids, inputs.random_sample(tok, 32, seed=3, index=2).input_ids)


def test_random_tokens_for_the_tiny_model_fill_its_context(tinylm):
    model, chars = tinylm
    sample = inputs.random_sample(chars, model=model, seed=1)
    assert len(sample) == model.config.max_len  # the default 128 is capped at what the model takes
    assert set(sample.text) <= set(chars.alphabet)
    maps = inputs.extract_sample(model, sample, chars)
    assert maps.query_tokens == tuple(sample.text)  # the characters label the axes, not positions
    assert maps.causal
    assert maps.source.kind == "random"


def test_text_mode_tokenizes_as_the_tokenizer_does_and_cuts_at_seq_len(tok):
    text = RECORDS[0]
    (sample,) = inputs.load_samples(tok, text=text)
    assert sample.input_ids.tolist() == tok(text)["input_ids"]
    assert sample.text == text
    assert sample.source == Source(kind="text", seq_len=len(sample))
    cut = inputs.text_sample(tok, text, seq_len=8)
    assert cut.input_ids.tolist() == [*tok(text)["input_ids"][:7], tok.sep_token_id]
    assert cut.text == tok.decode(cut.input_ids[1:-1])


def test_the_record_keeps_its_source_and_the_caption_says_what_the_sequence_is(minilm, tmp_path):
    model, tok = minilm
    sample = inputs.Windows(RECORDS, tok, 32, name="Pride and Prejudice")[1]
    maps = inputs.extract_sample(model, sample, tok)
    assert maps.source == sample.source
    assert maps.text == sample.text
    from attnwidget import extract_attention

    assert torch.equal(maps.weights, extract_attention(model, sample.input_ids[None], tok).weights)
    first50 = " ".join(sample.text.split())[:50].rstrip()
    expected = (f"layer 3, head 2 on Pride and Prejudice validation sequence (window 1): "
                f"'{first50}…' (32 tokens)")
    assert maps.caption(3, 2) == expected
    assert maps.caption(head=2).startswith("head 2 on Pride and Prejudice validation sequence")
    # kept by every derived record and by a save/load round trip
    for derived in (maps.select(layers=[3], heads=[2]), maps.head_mean(),
                    AttentionMaps.load(maps.save(tmp_path / "r.npz"))):
        assert derived.source == sample.source
        assert derived.text == sample.text
    assert maps.select(layers=[3], heads=[2]).caption(0, 0) == expected
    assert maps.head_mean().caption(3).startswith(f"layer 3, {average_label(12)} on ")
    meta = json.loads(__import__("zipfile").ZipFile(tmp_path / "r.npz").read("meta.json"))
    assert meta["source"] == sample.source.to_dict()


def test_captions_of_other_sources():
    w = np.full((1, 2, 3, 3), 1 / 3)
    assert AttentionMaps(w, ["a", "b", "c"], text="a b c").caption(0, 1) == \
        "layer 0, head 1 on text sequence: 'a b c' (3 tokens)"
    masked = Source(kind="validation", name="WikiText-103", index=0, diagonal_masked=True)
    text = "In 1941, after the fall of France, the British government established a civil defence force."
    maps = AttentionMaps(w, ["a", "b", "c"], text=text, source=masked.to_dict())
    assert maps.source == masked  # a dict of the fields is accepted
    assert maps.caption(head=1) == ("head 1 on WikiText-103 validation sequence (window 0): 'In 1941, after "
                                    "the fall of France, the British gov…' (3 tokens); self-attention "
                                    "(diagonal) masked")
    assert Source(kind="random", seed=0).phrase() == "random sequence (seed 0)"
    hidden = AttentionMaps(w, ["a", "b", "c"], text="x\u202ey\nz",
                           source={"kind": "text", "name": "\u202eevil"})
    assert "\u202e" not in hidden.caption(0, 0)
    assert "⟨RLO⟩" in hidden.caption(0, 0)


def test_view_from_a_source_shows_and_ablates_that_sequence(minilm):
    model, tok = minilm
    view = AttentionView(model, source={"mode": "validation", "dataset": RECORDS, "seq_len": 24, "index": 1,
                                        "name": "Pride and Prejudice"}, tokenizer=tok, layer=2, head=4)
    sample = inputs.Windows(RECORDS, tok, 24, name="Pride and Prejudice")[1]
    expected = inputs.extract_sample(model, sample, tok)
    assert torch.equal(view.maps.weights, expected.weights)
    assert " · head 4 on Pride and Prejudice validation sequence (window 1): '" in view.caption
    assert "(24 tokens) · no causal mask" in view.caption
    view.ablated = [[0, 3]]
    assert view.maps.source == sample.source
    assert view.effect["heads"] == [[0, 3]]
    with pytest.raises(TypeError, match="text: pass the text or source"):
        AttentionView(model, "a text", source={"mode": "random"}, tokenizer=tok)
    with pytest.raises(TypeError, match=r"takes no extraction arguments, got \['source'\]"):
        AttentionView(expected, source={"mode": "random"})


def test_reference_manual_is_real_prose_from_the_interpreter(tok):
    from pydoc_data.topics import topics

    def underline(line: str) -> bool:  # "*****" under a heading: markup, not prose
        t = line.strip()
        return len(t) >= 3 and len(set(t)) == 1 and t[0] in "*=~^-"

    manual = inputs.reference_manual()
    assert manual.name == "Python reference manual"
    assert len(manual) == len(topics)
    for record, key in zip(manual.records, sorted(topics), strict=True):
        assert record.splitlines() == [line for line in topics[key].splitlines() if not underline(line)]
    assert len(inputs.Windows(manual, tok, 128)) > 500  # enough windows for every test and the notebook


# --------------------------------------------------------------------------- bad input
def one_line(exc: pytest.ExceptionInfo) -> str:
    message = str(exc.value)
    assert "\n" not in message
    return message


def test_missing_dataset_names_the_argument_and_is_a_file_not_found(tok, tmp_path):
    with pytest.raises(DatasetNotFoundError) as exc:
        inputs.load_samples(tok, "validation", dataset=tmp_path / "nope.txt")
    assert isinstance(exc.value, FileNotFoundError)
    assert isinstance(exc.value, ValueError)
    assert one_line(exc).startswith(f"dataset: no file at '{tmp_path / 'nope.txt'}'; expected a text")


@pytest.mark.parametrize(("data", "match"), [
    (["", "  \n "], r"^dataset: 'list of 2 strings' holds no text \(2 records, all blank\); expected"),
    (["Too short."], r"^dataset: 'list of 1 string' has 3 tokens, fewer than one window of seq_len=16 "
                     r"\(14 text tokens \+ 2 special\); expected a longer dataset or a smaller seq_len$"),
    ({"validation": []}, r"^dataset: got a mapping with keys \['validation'\] \(a DatasetDict\?\); expected"),
    (42, r"^dataset: expected a path .* got int$"),
    ([b"bytes"], r"^dataset: item 0 of the list is a bytes; expected strings$"),
])
def test_empty_or_unusable_datasets(tok, data, match):
    with pytest.raises(InputError, match=match) as exc:
        inputs.load_samples(tok, "validation", dataset=data, seq_len=16)
    one_line(exc)


def test_seq_len_index_and_num_samples_past_the_limits(minilm):
    model, tok = minilm
    with pytest.raises(InputError) as exc:
        inputs.load_samples(tok, "validation", dataset=RECORDS, seq_len=600, model=model)
    assert one_line(exc) == ("seq_len: expected an int 3..512 (the model takes at most 512 tokens, "
                             "config.max_position_embeddings), got 600")
    with pytest.raises(InputError, match=r"^seq_len: expected an int 3\.\.512 .*, got 2$"):
        inputs.load_samples(tok, "random", seq_len=2, model=model)
    n = len(inputs.Windows(RECORDS, tok, 16))
    with pytest.raises(InputError) as exc:
        inputs.load_samples(tok, "validation", dataset=RECORDS, seq_len=16, index=n)
    assert one_line(exc) == (f"index: got {n}, but 'in-memory dataset' has {n} windows of 16 tokens; "
                             f"expected 0..{n - 1}")
    with pytest.raises(InputError) as exc:
        inputs.load_samples(tok, "validation", dataset=RECORDS, seq_len=16, index=1, num_samples=n)
    assert one_line(exc) == (f"num_samples: got {n} from index 1, but 'in-memory dataset' has {n} windows "
                             f"of 16 tokens; expected 1..{n - 1}")
    with pytest.raises(InputError, match=r"^index: got -1, but 'in-memory dataset' has \d+ windows"):
        inputs.load_samples(tok, "validation", dataset=RECORDS, seq_len=16, index=-1)
    with pytest.raises(InputError, match=r"^text: 600 tokens, but the model takes at most 512 "):
        inputs.load_samples(tok, text="word " * 598, model=model)


def test_bad_files_fields_and_modes(tok, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{"body": "no text key"}\n')
    with pytest.raises(InputError, match=r"^field: line 2 of '.*bad\.jsonl' has no 'text' key "
                                         r"\(keys: \['body'\]\)"):
        inputs.TextDataset(bad)
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"text": "fine"}\n{"text": \n')
    with pytest.raises(InputError, match=r"^dataset: line 2 of '.*broken\.jsonl' is not JSON"):
        inputs.TextDataset(broken)
    latin = tmp_path / "latin1.txt"
    latin.write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(InputError, match=r"^dataset: '.*latin1\.txt' is not UTF-8 text"):
        inputs.TextDataset(latin)
    with pytest.raises(InputError, match=r"^dataset: '.*' is not a file"):
        inputs.TextDataset(tmp_path)
    with pytest.raises(InputError, match=r"^mode: expected one of \('text', 'validation', 'random'\), "
                                         r"got 'valid'$"):
        inputs.load_samples(tok, "valid", dataset=RECORDS)
    with pytest.raises(InputError, match=r"^dataset: mode 'validation' needs a dataset"):
        inputs.load_samples(tok, "validation")
    with pytest.raises(InputError, match=r"^text: mode 'text' needs the text, got None$"):
        inputs.load_samples(tok)
    with pytest.raises(InputError, match=r"^field: 'body' is not a column of the dataset; expected one of"):
        inputs.Windows(type("D", (), {"column_names": ["text"], "__getitem__": lambda s, k: []})(), tok,
                       field="body")
    with pytest.raises(InputError, match=r"^tokenizer: needed to turn a source into tokens, got None"):
        inputs.load_samples(None, "random")
    with pytest.raises(InputError, match=r"^source\.kind: expected one of"):
        Source(kind="wikitext")
    with pytest.raises(ValueError, match=r"^source: unknown fields \['colour'\]"):
        AttentionMaps(np.full((1, 1, 2, 2), 0.5), ["a", "b"], source={"kind": "text", "colour": 1})
