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
    """`text` with control characters escaped, so a hostile file name cannot drive a terminal."""
    return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text)
