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

Characters that draw nothing but change what is around them are shown by
name (:func:`show_invisible`): bidirectional controls (``U+202E`` would flip
the rest of a caption), zero-width characters (a token that is only ``U+200B``
would be an empty label) and other control characters, e.g. ``⟨RLO⟩``,
``⟨ZWSP⟩``, ``⟨U+0007⟩``. This applies to every display form and to input text
shown in captions and reports; the raw tokens keep the characters.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from functools import lru_cache
from typing import Literal

Scheme = Literal["bytelevel", "sentencepiece", "wordpiece", "plain"]
SCHEMES: tuple[str, ...] = ("bytelevel", "sentencepiece", "wordpiece", "plain")

_SP_BYTE_PREFIX = "<0x"  # SentencePiece byte fallback pieces look like <0x0A>

# Invisible characters with a common short name; other C0/C1 controls show as U+XXXX.
_INVISIBLE_NAMES = {
    0x061C: "ALM", 0x200E: "LRM", 0x200F: "RLM", 0x202A: "LRE", 0x202B: "RLE", 0x202C: "PDF",
    0x202D: "LRO", 0x202E: "RLO", 0x2066: "LRI", 0x2067: "RLI", 0x2068: "FSI", 0x2069: "PDI",
    0x200B: "ZWSP", 0x200C: "ZWNJ", 0x200D: "ZWJ", 0x2060: "WJ", 0xFEFF: "ZWNBSP", 0x00AD: "SHY",
    0x180E: "MVS", 0x2028: "LSEP", 0x2029: "PSEP",
}


@lru_cache(maxsize=1)
def _invisible_table() -> dict[int, str]:
    table = {cp: f"⟨{name}⟩" for cp, name in _INVISIBLE_NAMES.items()}
    for cp in [*range(0x20), *range(0x7F, 0xA0)]:
        table[cp] = f"⟨U+{cp:04X}⟩"
    table.update({ord("\n"): "⏎", ord("\r"): "⏎", ord("\t"): "⇥"})
    return table


def show_invisible(text: str) -> str:
    """``text`` with bidi controls, zero-width and control characters shown by name.

    Newlines and carriage returns become ``⏎``, tabs ``⇥``; e.g.
    ``show_invisible("a\u202eb\n") == "a⟨RLO⟩b⏎"``. Visible text, RTL letters
    included, is unchanged.
    """
    return text.translate(_invisible_table())


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
