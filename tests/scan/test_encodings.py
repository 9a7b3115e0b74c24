"""Text files in UTF-16 (Windows writes .rdp files, regedit exports and PowerShell 5 output so)
are matched as the text they hold, with their line numbers; bytes that only look like UTF-16
are scanned as they are."""

from __future__ import annotations

import codecs
import secrets

import pytest

from imgscan.model import FileRef
from imgscan.scan.worker import FileScanner


def _scan(scanner: FileScanner, path: str, data: bytes) -> list[tuple[str, int, str | None]]:
    outcome = scanner.scan(FileRef("/dev/sda1", path, len(data), "-", inline=data))
    assert outcome.skipped == ()
    return [(f.rule, f.line, f.secret) for f in outcome.findings]


@pytest.mark.parametrize(
    ("bom", "encoding"),
    [(codecs.BOM_UTF16_LE, "utf-16-le"), (codecs.BOM_UTF16_BE, "utf-16-be")],
)
def test_utf16_text_is_matched_with_its_lines(
    inline_scanner: FileScanner, bom: bytes, encoding: str
) -> None:
    password = secrets.token_urlsafe(15)
    text = f"# deploy notes\r\n\r\nDATABASE_URL=postgres://hr_app:{password}@db.internal/hr\r\n"
    found = _scan(inline_scanner, "C:\\Users\\alice\\notes.txt", bom + text.encode(encoding))
    assert [(line, secret) for _, line, secret in found] == [(3, password)]


def test_bytes_that_only_start_like_utf16_are_scanned_as_they_are(
    inline_scanner: FileScanner,
) -> None:
    password = secrets.token_urlsafe(15)
    # FF FE, then an unpaired low surrogate (U+DC41: not UTF-16), then plain ASCII text.
    line = f"\nDATABASE_URL=postgres://hr_app:{password}@db.internal/hr\n"
    data = codecs.BOM_UTF16_LE + b"\x41\xdc" + line.encode()
    found = _scan(inline_scanner, "/srv/app/settings.env", data)
    assert [secret for _, _, secret in found] == [password]
