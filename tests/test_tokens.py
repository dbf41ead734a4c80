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
