"""Readable display forms of subword tokens.

Tokenizers mark word boundaries in their vocabulary: byte-level BPE (GPT-2,
RoBERTa, Llama 3) writes a leading space as ``Ġ`` and every byte as a printable
stand-in character, SentencePiece (T5, Llama 2) writes ``▁`` for a space, and
WordPiece (BERT) prefixes continuation pieces with ``##``. The raw forms are
kept in :class:`~attnwidget.AttentionMaps`; this module derives the form shown
on axes, in hovers and in reports.

The display form is the text a token contributes to the input with the
word-boundary marker removed, so ``Ġcat``, ``▁cat`` and ``cat`` all show as
``cat`` and ``##s`` shows as ``s``. Whitespace that would otherwise vanish is
made visible (``⏎`` newline, ``⇥`` tab, ``␣`` a token that is only spaces).
Special tokens such as ``[CLS]``, ``<s>`` or ``<|endoftext|>`` are kept as
they are. The result is plain text: callers render it as text, never HTML.

Characters that draw nothing, or nothing of their own, are shown by name
(:func:`show_invisible`), chosen by Unicode category rather than a hand list so
that new code points are covered too: control (Cc), format (Cf: bidi controls,
zero-width characters, the tag block U+E0000-E007F that can hide text in plain
sight), private use (Co), surrogates (Cs), line and paragraph separators (Zl,
Zp), unassigned code points (Cn), every space but U+0020 (Zs: a no-break or
ideographic space looks like a space but is another character), and the
default-ignorable marks and letters that categories file as visible (variation
selectors, the combining grapheme joiner, Hangul fillers). ``U+202E`` would flip
the rest of a caption and a token that is only ``U+200B`` would be an empty
label; shown by name they read ``⟨RLO⟩``, ``⟨ZWSP⟩``, ``⟨U+0007⟩``, ``⟨TAG a⟩``,
``⟨VS16⟩``. This applies to every display form and to input text shown in
captions, figures and reports; the raw tokens keep the characters.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Sequence
from functools import lru_cache
from typing import Literal

Scheme = Literal["bytelevel", "sentencepiece", "wordpiece", "plain"]
SCHEMES: tuple[str, ...] = ("bytelevel", "sentencepiece", "wordpiece", "plain")

_SP_BYTE_PREFIX = "<0x"  # SentencePiece byte fallback pieces look like <0x0A>

#: Unicode general categories whose characters draw nothing of their own.
INVISIBLE_CATEGORIES = frozenset({"Cc", "Cf", "Co", "Cs", "Zl", "Zp", "Cn"})

# Short names for the invisible characters people meet; the rest show as U+XXXX.
_INVISIBLE_NAMES = {
    0x061C: "ALM", 0x200E: "LRM", 0x200F: "RLM", 0x202A: "LRE", 0x202B: "RLE", 0x202C: "PDF",
    0x202D: "LRO", 0x202E: "RLO", 0x2066: "LRI", 0x2067: "RLI", 0x2068: "FSI", 0x2069: "PDI",
    0x200B: "ZWSP", 0x200C: "ZWNJ", 0x200D: "ZWJ", 0x2060: "WJ", 0xFEFF: "ZWNBSP", 0x00AD: "SHY",
    0x180E: "MVS", 0x2028: "LSEP", 0x2029: "PSEP", 0x034F: "CGJ", 0x00A0: "NBSP", 0x202F: "NNBSP",
    0x2007: "FIGSP", 0x3000: "IDSP", 0x2061: "FUNCTION APPLICATION", 0x2062: "INVISIBLE TIMES",
    0x2063: "INVISIBLE SEPARATOR", 0x2064: "INVISIBLE PLUS", 0xFFF9: "IAA", 0xFFFA: "IAS",
    0xFFFB: "IAT", 0x3164: "HANGUL FILLER", 0xFFA0: "HALFWIDTH HANGUL FILLER",
    0x115F: "HANGUL CHOSEONG FILLER", 0x1160: "HANGUL JUNGSEONG FILLER",
}

# Default-ignorable code points (Unicode's DerivedCoreProperties) that are not in an
# invisible category: categories file them as marks (Mn) or letters (Lo), yet they draw
# nothing of their own. Python's unicodedata has no property lookup for these.
_IGNORABLE_RANGES = (
    (0x034F, 0x034F), (0x115F, 0x1160), (0x17B4, 0x17B5), (0x180B, 0x180F),
    (0x3164, 0x3164), (0xFE00, 0xFE0F), (0xFFA0, 0xFFA0), (0xE0100, 0xE01EF),
)


def is_invisible(char: str) -> bool:
    """True when ``char`` (one code point) draws nothing of its own; see the module docstring."""
    cp = ord(char)
    if cp == 0x20:
        return False
    category = unicodedata.category(char)
    if category in INVISIBLE_CATEGORIES or category == "Zs":
        return True
    return any(lo <= cp <= hi for lo, hi in _IGNORABLE_RANGES)


def _name(cp: int) -> str:
    if cp in (0x0A, 0x0D):
        return "⏎"
    if cp == 0x09:
        return "⇥"
    if cp in _INVISIBLE_NAMES:
        return f"⟨{_INVISIBLE_NAMES[cp]}⟩"
    if 0xE0020 <= cp <= 0xE007E:  # tag characters mirror ASCII: show the hidden letter
        return f"⟨TAG {chr(cp - 0xE0000)}⟩"
    if 0xFE00 <= cp <= 0xFE0F:
        return f"⟨VS{cp - 0xFE00 + 1}⟩"
    if 0xE0100 <= cp <= 0xE01EF:
        return f"⟨VS{cp - 0xE0100 + 17}⟩"
    return f"⟨U+{cp:04X}⟩"


class _InvisibleTable(dict):
    """``str.translate`` table over all of Unicode, filled on first sight of each code point."""

    def __missing__(self, cp: int) -> str | None:
        value = _name(cp) if is_invisible(chr(cp)) else None
        # None would delete the character in translate(); visible ones map to themselves
        self[cp] = chr(cp) if value is None else value
        return self[cp]


_INVISIBLE_TABLE = _InvisibleTable()


def show_invisible(text: str) -> str:
    """``text`` with every character that draws nothing of its own shown by name.

    Newlines and carriage returns become ``⏎``, tabs ``⇥``, other invisible
    characters ``⟨NAME⟩`` or ``⟨U+XXXX⟩`` (see :func:`is_invisible`); e.g.
    ``show_invisible("a\u202eb\n") == "a⟨RLO⟩b⏎"``. Visible text, RTL letters
    and emoji included, is unchanged; the joiners and variation selectors inside
    emoji sequences are shown by name, since they are where text hides.
    """
    return text.translate(_INVISIBLE_TABLE)


@lru_cache(maxsize=1)
def _byte_decoder() -> dict[str, int]:
    """Inverse of GPT-2's bytes_to_unicode table: stand-in character -> byte."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(printable, chars, strict=True)}


def detect_scheme(tokens: Iterable[str]) -> Scheme:
    """Guess the tokenizer family from the raw tokens.

    ``Ġ``/``Ċ`` mean byte-level BPE, ``▁`` SentencePiece, a ``##`` prefix
    WordPiece; anything else is shown as it is ("plain").
    """
    tokens = list(tokens)
    if any(("Ġ" in t or "Ċ" in t) for t in tokens):
        return "bytelevel"
    if any("▁" in t for t in tokens):
        return "sentencepiece"
    if any(t.startswith("##") and len(t) > 2 for t in tokens):
        return "wordpiece"
    return "plain"


def _visible(text: str) -> str:
    if text and not text.strip(" "):
        return "␣" * len(text)
    out = show_invisible(text)
    stripped = out.strip(" ")
    return stripped if stripped else out


def display_token(raw: str, scheme: Scheme = "plain", special: bool = False) -> str:
    """Readable form of one raw token (plain text; see the module docstring)."""
    if not raw:
        return raw
    if special:
        return show_invisible(raw)
    if scheme == "bytelevel":
        table = _byte_decoder()
        if all(ch in table for ch in raw):
            text = bytes(table[ch] for ch in raw).decode("utf-8", errors="replace")
        else:  # added tokens are stored unmapped
            text = raw
        return _visible(text)
    if scheme == "sentencepiece":
        if raw.startswith(_SP_BYTE_PREFIX) and raw.endswith(">") and len(raw) == 6:
            try:
                return _visible(bytes([int(raw[3:5], 16)]).decode("utf-8", errors="replace"))
            except ValueError:
                return raw
        return _visible(raw.replace("▁", " "))
    if scheme == "wordpiece":
        return _visible(raw[2:] if raw.startswith("##") and len(raw) > 2 else raw)
    # plain tokens keep their spaces; only invisible characters are named
    return _visible(raw) if not raw.strip(" ") else show_invisible(raw)


def display_tokens(
    raw_tokens: Sequence[str],
    scheme: Scheme | None = None,
    special_tokens: Iterable[str] = (),
) -> tuple[str, ...]:
    """Display forms for a token sequence; ``scheme=None`` guesses it from the tokens."""
    if scheme is None:
        scheme = detect_scheme(raw_tokens)
    elif scheme not in SCHEMES:
        raise ValueError(f"scheme: expected one of {SCHEMES}, got {scheme!r}")
    specials = set(special_tokens)
    return tuple(display_token(t, scheme, t in specials) for t in raw_tokens)
