"""Decide whether a text is blank: nothing in it that a reader, or a model, would see.

Tokenizers drop format and control characters (zero-width spaces, byte-order marks,
direction marks, soft hyphens), so a text made only of them reaches the model as an empty
text and still gets a label or an invented summary. Every check of an empty text (the JSON
bodies, the classic endpoints, the rows of an uploaded file, category names) asks here.
"""

from __future__ import annotations

import unicodedata

# Control (Cc) and format (Cf) characters: never drawn.
_INVISIBLE_CATEGORIES = frozenset({"Cc", "Cf"})
# Characters of other categories that fonts draw as nothing: Hangul fillers, the blank
# braille pattern, the combining grapheme joiner, variation selectors.
_INVISIBLE_OTHERS = frozenset(
    [
        0x115F,
        0x1160,
        0x3164,
        0xFFA0,
        0x2800,
        0x034F,
        *range(0xFE00, 0xFE10),
        *range(0xE0100, 0xE01F0),
    ]
)


def is_invisible(char: str) -> bool:
    """Say whether one character shows nothing: whitespace, a control or format character,
    or one of the few letters and symbols that are drawn blank."""
    return (
        char.isspace()
        or unicodedata.category(char) in _INVISIBLE_CATEGORIES
        or ord(char) in _INVISIBLE_OTHERS
    )


def is_blank(text: str) -> bool:
    """Say whether a text is empty or has no visible character (e.g. "\\u200b\\ufeff ")."""
    return all(is_invisible(char) for char in text)


def describe_blank(text: str) -> str:
    """Say in words why a blank text is blank: "empty", "only whitespace", or which
    invisible characters it holds (as escapes, e.g. U+200B)."""
    if not text:
        return "empty"
    if text.isspace():
        return "only whitespace"
    shown = sorted({f"U+{ord(c):04X}" for c in text if not c.isspace()})
    more = f" and {len(shown) - 3} more" if len(shown) > 3 else ""
    return "only invisible characters (" + ", ".join(shown[:3]) + more + ")"


def blank_problem(what: str, text: str) -> str:
    """Return the message that refuses a blank `text`, naming it `what` ("text",
    "categories[2]") and saying what would be accepted."""
    if not text or text.isspace():
        return f"{what} must not be empty or only whitespace"
    return (
        f"{what} is {describe_blank(text)}, which a model sees as an empty text; "
        "send a text with at least one visible character"
    )
