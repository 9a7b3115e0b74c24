"""age identities carry a bech32 checksum, which the offline checks verify as they do GitHub's
CRC32: a key whose checksum holds is confirmed, one with a changed character is no key."""

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
