"""Checksums the offline checks verify beyond GitHub's CRC32 (tests/detect/test_checks.py): an age
identity's bech32 and a Private Packagist token's CRC32. A value that fails is no secret."""

from __future__ import annotations

import pytest
from templates import expand

from imgscan.detect.checks import NotASecret, offline_checks
from imgscan.model import CheckResult


@pytest.mark.parametrize("seed", ["a", "b", "c"])
def test_age_key_checksum(seed: str) -> None:
    key, _ = expand("AGE-SECRET-KEY-1{{rand:age:58}}", None, seed)
    checks = offline_checks(key.encode())
    assert [(c.name, c.result) for c in checks] == [("age-checksum", CheckResult.PASS)]
    body = key[len("AGE-SECRET-KEY-1") :]
    changed = "Q" if body[10] != "Q" else "P"
    with pytest.raises(NotASecret, match="checksum"):
        offline_checks(("AGE-SECRET-KEY-1" + body[:10] + changed + body[11:]).encode())


def test_age_key_outside_the_alphabet_is_no_key() -> None:
    with pytest.raises(NotASecret, match="bech32"):
        offline_checks(b"AGE-SECRET-KEY-1" + b"B" * 58)


def test_packagist_token_checksum() -> None:
    token, _ = expand("{{rand:crc32hex:68|packagist_ort_}}", None, "p")
    checks = offline_checks(token.encode())
    assert [(c.name, c.result) for c in checks] == [("token-checksum", CheckResult.PASS)]
    changed = token[:-1] + ("0" if token[-1] != "0" else "1")
    with pytest.raises(NotASecret, match="checksum"):
        offline_checks(changed.encode())
