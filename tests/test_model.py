"""Redaction and fingerprints: what of a secret may ever leave the scanner."""

from __future__ import annotations

import hashlib

from imgscan.model import fingerprint, redact


def test_redact_shows_only_marker_and_length() -> None:
    assert redact(b"AKIAABCDEFGHIJKLMNOP", 4) == "AKIA…(20)"
    assert redact(b"hunter2-is-long", 0) == "…(15)"
    # Never the whole secret, even when the declared marker is as long as the value.
    assert redact(b"abcd", 10) == "abc…(4)"
    assert "\x1b" not in redact(b"\x1b[31mred", 5)


def test_fingerprint_is_stable_versioned_and_not_a_plain_hash() -> None:
    a = fingerprint("rule", "/etc/app.conf", b"password123")
    assert a == fingerprint("rule", "/etc/app.conf", b"password123")
    assert a.startswith("fp1:")
    assert a != fingerprint("rule", "/etc/other.conf", b"password123")
    assert a != fingerprint("other", "/etc/app.conf", b"password123")
    digest = a.split(":", 1)[1]
    for plain in (
        hashlib.sha256(b"password123").hexdigest(),
        hashlib.md5(b"password123").hexdigest(),
        hashlib.sha1(b"password123").hexdigest(),
    ):
        assert digest not in plain
