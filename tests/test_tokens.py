import numpy as np

from attnwidget.tokens import detect_scheme, display_token, display_tokens


def test_bytelevel_markers_become_text():
    raw = ["<s>", "The", "Ġcat", "Ġsat", "Ċ", "ĠcafÃ©", "</s>"]
    shown = display_tokens(raw, special_tokens=["<s>", "</s>"])
    assert detect_scheme(raw) == "bytelevel"
    assert shown == ("<s>", "The", "cat", "sat", "⏎", "café", "</s>")


def test_sentencepiece_and_byte_fallback():
    raw = ["▁The", "▁un", "believ", "able", "<0x0A>", "▁"]
    assert display_tokens(raw) == ("The", "un", "believ", "able", "⏎", "␣")


def test_wordpiece_continuations_and_specials_kept():
    raw = ["[CLS]", "token", "##s", "##", "[SEP]"]
    assert display_tokens(raw, special_tokens=["[CLS]", "[SEP]"]) == (
        "[CLS]", "token", "s", "##", "[SEP]",
    )


def test_whitespace_tokens_are_visible_and_html_is_untouched():
    assert display_token("Ġ", "bytelevel") == "␣"
    assert display_token("ĠĠĠ", "bytelevel") == "␣␣␣"
    assert display_token("\t", "plain") == "⇥"
    # display forms are plain text: markup is kept verbatim for the renderer to escape
    assert display_token("<img src=x onerror=alert(1)>", "plain") == "<img src=x onerror=alert(1)>"


def test_unknown_scheme_is_refused():
    import pytest

    with pytest.raises(ValueError, match="scheme: expected one of"):
        display_tokens(["a"], scheme="morse")


def test_invisible_characters_are_named_and_visible_text_is_kept():
    from attnwidget.tokens import show_invisible

    assert show_invisible("abc\u202edef") == "abc⟨RLO⟩def"
    assert show_invisible("\u2067x\u2069") == "⟨RLI⟩x⟨PDI⟩"
    assert show_invisible("a\u200bb\ufeff") == "a⟨ZWSP⟩b⟨ZWNBSP⟩"
    assert show_invisible("bell\x07\x9b") == "bell⟨U+0007⟩⟨U+009B⟩"
    assert show_invisible("two\nlines\tand tab") == "two⏎lines⇥and tab"
    assert show_invisible("مرحبا 👋 café") == "مرحبا 👋 café"  # RTL letters and emoji are text
    # every scheme, and special tokens too
    assert display_token("\u200b", "plain") == "⟨ZWSP⟩"
    assert display_token("\u202e", "plain", special=True) == "⟨RLO⟩"
    assert display_token("##\u200d", "wordpiece") == "⟨ZWJ⟩"
    assert display_token("▁a\u202eb", "sentencepiece") == "a⟨RLO⟩b"
    assert display_token("ĠâĢ®", "bytelevel") == "⟨RLO⟩"  # U+202E as UTF-8 bytes
    assert display_token(" x ", "plain") == " x "  # plain tokens keep their spaces


# --------------------------------------------------------------------------- by category
def _spec_invisible(cp: int) -> bool:
    """Independent statement of the rule, from the Unicode data, for the checks below."""
    import unicodedata

    ch = chr(cp)
    cat = unicodedata.category(ch)
    default_ignorable = (
        cp == 0x034F or 0x115F <= cp <= 0x1160 or 0x17B4 <= cp <= 0x17B5 or 0x180B <= cp <= 0x180F
        or cp in (0x3164, 0xFFA0) or 0xFE00 <= cp <= 0xFE0F or 0xE0100 <= cp <= 0xE01EF
    )
    return cp != 0x20 and (cat[0] == "C" or cat in ("Zl", "Zp", "Zs") or default_ignorable)


def test_every_code_point_is_shown_by_name_exactly_when_it_draws_nothing():
    from attnwidget.tokens import is_invisible, show_invisible

    # exhaustive over all 1,114,112 code points, surrogates and unassigned ones included
    spec = [_spec_invisible(cp) for cp in range(0x110000)]
    invisible = [chr(cp) for cp, hidden in enumerate(spec) if hidden]
    visible = "".join(chr(cp) for cp, hidden in enumerate(spec) if not hidden)
    # show_invisible is str.translate, one character at a time: the visible ones in one string
    assert show_invisible(visible) == visible
    names = set()
    for ch in invisible:
        shown = show_invisible(ch)
        assert is_invisible(ch), hex(ord(ch))
        assert shown != ch, hex(ord(ch))
        names.add(shown)
    # and what names them is itself visible: checked once per character the names use
    assert not [c for c in set("".join(names)) if _spec_invisible(ord(c))]
    assert len(invisible) > 900_000  # private use, surrogates and unassigned planes are most of Unicode
    assert len(visible) > 100_000


def test_the_gaps_of_the_old_hand_list_are_named():
    from attnwidget.tokens import show_invisible

    hidden = "".join(chr(0xE0000 + ord(c)) for c in "run rm")  # tag characters hide ASCII
    assert show_invisible(f"ok{hidden}") == "ok⟨TAG r⟩⟨TAG u⟩⟨TAG n⟩⟨TAG  ⟩⟨TAG r⟩⟨TAG m⟩"
    assert show_invisible("\U000e0001\U000e007f") == "⟨U+E0001⟩⟨U+E007F⟩"
    assert show_invisible("a\u2061\u2062\u2063\u2064b") == (
        "a⟨FUNCTION APPLICATION⟩⟨INVISIBLE TIMES⟩⟨INVISIBLE SEPARATOR⟩⟨INVISIBLE PLUS⟩b")
    assert show_invisible("".join(map(chr, range(0x206A, 0x2070)))) == "".join(
        f"⟨U+{cp:04X}⟩" for cp in range(0x206A, 0x2070))
    assert show_invisible("\ufff9\ufffa\ufffb") == "⟨IAA⟩⟨IAS⟩⟨IAT⟩"
    assert show_invisible("\u3164") == "⟨HANGUL FILLER⟩"  # a letter by category, blank on screen
    assert show_invisible("1\u00a0000") == "1⟨NBSP⟩000"
    assert show_invisible("\ue000\U000f0000") == "⟨U+E000⟩⟨U+F0000⟩"  # private use
    assert show_invisible("\u2764\ufe0f") == "\u2764⟨VS16⟩"


def test_untrusted_text_is_named_in_display_forms_captions_figures_and_the_widget():
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from attnwidget import AttentionView
    from attnwidget.maps import AttentionMaps
    from attnwidget.plots import caption

    # the whole range: surrogates (Cs) and unassigned code points included
    chars = st.characters(min_codepoint=0, max_codepoint=0x10FFFF, exclude_categories=())
    token = st.text(chars, min_size=1, max_size=6)

    def clean(text: str) -> bool:
        return not any(_spec_invisible(ord(c)) for c in text if c != " ")

    @settings(max_examples=60, deadline=None)
    @given(tokens=st.lists(token, min_size=2, max_size=4), text=st.text(chars, max_size=20),
           name=st.text(chars, min_size=1, max_size=8))
    def check(tokens, text, name):
        n = len(tokens)
        maps = AttentionMaps.from_tensor(np.full((n, n), 1 / n), tokens, model_name=name, text=text)
        assert all(clean(t) for t in maps.query_display + maps.key_display)
        assert clean(caption(maps, 0, 0))
        view = AttentionView(maps)
        try:
            assert all(clean(t) for t in view.query_tokens + view.key_tokens)
            assert clean(view.caption)
        finally:
            view.close()

    check()
