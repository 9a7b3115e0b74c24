"""The report extension point: a renderer turns a ScanResult into text, and does nothing else.

Renderers are pure and deterministic (the result is already sorted); the CLI owns stdout, files
and exit codes.
"""

from __future__ import annotations

from typing import Protocol

from imgscan.model import ScanResult


class Renderer(Protocol):
    def __call__(self, result: ScanResult) -> str: ...


def printable(text: str) -> str:
    """`text` with control characters escaped, so a hostile file name cannot drive a terminal,
    and the bytes of a name that is not UTF-8 (carried as surrogate escapes) shown as `\\xff`,
    so the text can always be written out as UTF-8."""
    return "".join(c if c.isprintable() else _escape(c) for c in text)


def _escape(char: str) -> str:
    code = ord(char)
    if 0xDC80 <= code <= 0xDCFF:  # surrogateescape: the undecodable byte code - 0xDC00
        return f"\\x{code - 0xDC00:02x}"
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"
