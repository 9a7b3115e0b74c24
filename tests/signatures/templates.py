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
_BECH32 = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"


def _age_key(rng: random.Random) -> str:
    """The 58 characters after AGE-SECRET-KEY-1: 32 random bytes in bech32, upper case, with
    their checksum (BIP 173, human-readable part "age-secret-key-")."""
    acc, bits, groups = 0, 0, []
    for byte in rng.randbytes(32):
        acc, bits = (acc << 8) | byte, bits + 8
        while bits >= 5:
            bits -= 5
            groups.append((acc >> bits) & 31)
    groups.append((acc << (5 - bits)) & 31)
    hrp = "age-secret-key-"
    values = [ord(c) >> 5 for c in hrp] + [0] + [ord(c) & 31 for c in hrp] + groups
    chk = 1
    for value in [*values, 0, 0, 0, 0, 0, 0]:
        top = chk >> 25
        chk = (chk & 0x1FFFFFF) << 5 ^ value
        for i, gen in enumerate((0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3)):
            chk ^= gen if (top >> i) & 1 else 0
    polymod = chk ^ 1
    checksum = [(polymod >> 5 * (5 - i)) & 31 for i in range(6)]
    return "".join(_BECH32[g] for g in groups + checksum).upper()


_TEMPLATE = re.compile(r"\{\{rand:([A-Za-z0-9]+):(\d+)(?:\|([^}]*))?\}\}")
_REFERENCE = re.compile(r"\{\{(\d+)\}\}")


def expand(text: str, secret: str | None, seed: str) -> tuple[str, str | None]:
    """(text with every template expanded, secret with its {{n}} references resolved)."""
    rng = random.Random(seed)
    values: list[str] = []

    def one(match: re.Match[str]) -> str:
        kind, length, prefix = match.group(1), int(match.group(2)), match.group(3) or ""
        if kind == "age":
            if length != 58:
                raise ValueError("{{rand:age:N}}: an age key body is 58 characters")
            value = prefix + _age_key(rng)
        elif kind == "crc32hex":
            # Private Packagist: random hex, then the CRC32 of prefix + random in 8 hex digits.
            body = prefix + "".join(rng.choice(CLASSES["hex"]) for _ in range(length - 8))
            value = body + f"{zlib.crc32(body.encode()):08x}"
        elif kind == "checksummed":
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
