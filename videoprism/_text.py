"""Text safe to print on a terminal: file names and labels with control characters or undecodable bytes escaped."""

from __future__ import annotations

import os

__all__ = ["printable"]


def printable(text: str | os.PathLike[str] | bytes) -> str:
    """``text`` unchanged when every character is printable, else escaped as `repr` escapes it, without the quotes.

    Newlines, tabs, terminal escape sequences (ESC), other control characters and the lone surrogates that stand for
    undecodable bytes in file names (``os.fsdecode``; shown as the byte, ``\\xff``) become backslash escapes (a
    backslash itself is doubled then), so a file name cannot break a line, move the cursor or raise
    ``UnicodeEncodeError`` when printed; ordinary names print as they are.
    """
    text = os.fsdecode(text) if isinstance(text, bytes) else os.fspath(text)
    if text.isprintable():
        return text
    return "".join(_escaped(c) for c in text)


def _escaped(c: str) -> str:
    if c.isprintable() and c != "\\":
        return c
    if "\udc80" <= c <= "\udcff":  # an undecodable byte of a file name or argument (surrogateescape)
        return f"\\x{ord(c) - 0xDC00:02x}"
    return repr(c)[1:-1]
