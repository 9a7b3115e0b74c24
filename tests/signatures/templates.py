"""Expansion of the value templates in rule examples (imgscan/signatures/README.md).

Examples build their secrets when the tests run, so the repository holds no realistic-looking
credential. Expansion is seeded by the rule id: a failing example fails the same way again.
"""

from __future__ import annotations

import random
import re
import string
import zlib

from build import base62  # testdata/build.py: GitHub tokens' checksum digits

CLASSES = {
    "alnum": string.ascii_letters + string.digits,
    "upper": string.ascii_uppercase,
    "lower": string.ascii_lowercase,
    "digit": string.digits,
    "hex": "0123456789abcdef",
    "HEX": "0123456789ABCDEF",
    "base32": string.ascii_uppercase + "234567",
    "b64": string.ascii_letters + string.digits + "+/",
    "b64url": string.ascii_letters + string.digits + "_-",
    "alnumlower": string.ascii_lowercase + string.digits,
}
_TEMPLATE = re.compile(r"\{\{rand:([A-Za-z0-9]+):(\d+)(?:\|([^}]*))?\}\}")
_REFERENCE = re.compile(r"\{\{(\d+)\}\}")


def expand(text: str, secret: str | None, seed: str) -> tuple[str, str | None]:
    """(text with every template expanded, secret with its {{n}} references resolved)."""
    rng = random.Random(seed)
    values: list[str] = []

    def one(match: re.Match[str]) -> str:
        kind, length, prefix = match.group(1), int(match.group(2)), match.group(3) or ""
        if kind == "checksummed":
            # GitHub/npm token body: random base62, then the CRC32 of it in 6 base62 digits.
            body = "".join(rng.choice(CLASSES["alnum"]) for _ in range(length - 6))
            value = prefix + body + base62(zlib.crc32(body.encode()), 6)
        else:
            value = prefix + "".join(rng.choice(CLASSES[kind]) for _ in range(length))
        values.append(value)
        return value

    expanded = _TEMPLATE.sub(one, text)
    if secret is not None:
        secret = _TEMPLATE.sub(one, secret) if _TEMPLATE.search(secret) else secret
        secret = _REFERENCE.sub(lambda m: values[int(m.group(1)) - 1], secret)
    return expanded, secret
