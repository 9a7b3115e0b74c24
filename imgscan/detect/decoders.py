"""Registry value decoders: what a stored value means, for the registry rules
(imgscan/signatures/registry.toml, `decoder = ...`).

A decoder takes the value's registry type, its raw data and the other values of the same key
(`siblings`, as text by lower-cased name: WinSCP keys its obfuscation with the user and host
names) and returns a `Decoded`: the secret (None for a store whose content is encrypted and
is reported for its presence only), facts to report beside it (never the secret), and checks.
It returns None when the value holds nothing (empty, or not of a type the decoder reads): no
finding.

Every decoder here reverses a published, keyless scheme; nothing is guessed or cracked:

* ``plain``: REG_SZ / REG_EXPAND_SZ / REG_MULTI_SZ text as it is (Winlogon, PuTTY);
* ``winscp``: WinSCP's "simple" password obfuscation (WinSCP source, ``core/Security.cpp``:
  each byte ``~(b ^ 0xA3)`` as two hex digits, a header with the length and a random-length
  pad, the plaintext prefixed with user name + host name);
* ``vnc-des``: the 8-byte password block RealVNC/TightVNC/UltraVNC store, DES-ECB encrypted
  with the fixed key every VNC implementation shares (RFB's d3des key with its bits
  reversed, ``e84ad660c4721ae0``);
* ``presence``: any non-empty data (LSA secrets, whose content is encrypted with the boot key);
* ``sam-v``: a SAM user's ``V`` record (encrypted hashes): reported for its presence, with the
  account name the record holds.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from imgscan.model import Check, CheckResult

REG_SZ = 1
REG_EXPAND_SZ = 2
REG_BINARY = 3
REG_DWORD = 4
REG_MULTI_SZ = 7
REG_QWORD = 11

# The DES key of VNC's password obfuscation (RFB's fixed key 23 82 107 6 35 78 88 7, each
# byte's bits reversed, as d3des expects them): public since the first VNC releases.
VNC_KEY = bytes.fromhex("e84ad660c4721ae0")
_WINSCP_MAGIC = 0xA3
_WINSCP_FLAG = 0xFF
# A SAM V record: a 0xCC-byte table of (offset, length, unknown) triples; offsets count from
# the end of the table. The second triple (at 0x0C) is the account name, UTF-16LE.
_SAM_V_TABLE = 0xCC
_SAM_V_NAME = 0x0C


@dataclass(frozen=True)
class Decoded:
    """What a value holds: the secret (None: reported for presence only), facts about it (as
    `Finding.context` pairs) and offline checks."""

    secret: bytes | None
    facts: tuple[tuple[str, str], ...] = ()
    checks: tuple[Check, ...] = ()


Decoder = Callable[[int, bytes, Mapping[str, str]], "Decoded | None"]


def value_text(kind: int, data: bytes) -> str | None:
    """A string value's text (a REG_MULTI_SZ's strings joined by newlines), an integer's
    digits, or None for other types. Trailing NULs are dropped; bad UTF-16 is replaced."""
    if kind in (REG_SZ, REG_EXPAND_SZ, REG_MULTI_SZ):
        if len(data) % 2:
            data = data[:-1]
        text = data.decode("utf-16-le", "replace")
        if kind == REG_MULTI_SZ:
            return "\n".join(s for s in text.split("\0") if s)
        return text.split("\0", 1)[0]
    if kind == REG_DWORD and len(data) >= 4:
        return str(struct.unpack_from("<I", data)[0])
    if kind == REG_QWORD and len(data) >= 8:
        return str(struct.unpack_from("<Q", data)[0])
    return None


def plain(kind: int, data: bytes, siblings: Mapping[str, str]) -> Decoded | None:
    text = value_text(kind, data)
    if text is None or kind in (REG_DWORD, REG_QWORD) or not text:
        return None
    return Decoded(text.encode("utf-8"))


def winscp_password(user: str, host: str, stored: str) -> str | None:
    """WinSCP's stored `Password` (hex digits) deobfuscated, or None when it is not in the
    simple scheme (a master password encrypts it with AES instead) or does not decode."""
    try:
        nibbles = [int(c, 16) for c in stored.strip()]
    except ValueError:
        return None
    pos = 0

    def next_byte() -> int:
        nonlocal pos
        if pos + 2 > len(nibbles):
            raise ValueError("truncated")
        value = ~(((nibbles[pos] << 4) + nibbles[pos + 1]) ^ _WINSCP_MAGIC) & 0xFF
        pos += 2
        return value

    try:
        flag = next_byte()
        if flag == _WINSCP_FLAG:
            next_byte()  # the scheme's version byte
            length = next_byte()
        else:
            length = flag
        pad = next_byte()  # random bytes before the plaintext
        pos += pad * 2
        plain_bytes = bytes(next_byte() for _ in range(length))
    except ValueError:
        return None
    text = plain_bytes.decode("latin-1")
    if flag == _WINSCP_FLAG:
        # Newer versions key the value with user + host: a value that does not start with
        # them belongs to another session (or is not this scheme).
        key = user + host
        if not text.startswith(key):
            return None
        text = text[len(key) :]
    return text


def winscp(kind: int, data: bytes, siblings: Mapping[str, str]) -> Decoded | None:
    stored = value_text(kind, data)
    if not stored:
        return None
    user, host = siblings.get("username", ""), siblings.get("hostname", "")
    password = winscp_password(user, host, stored)
    if password is None:
        # Still a stored password: report the stored form, and say it was not decoded.
        check = Check("winscp", CheckResult.INFO, "not in WinSCP's simple scheme; not decoded")
        return Decoded(stored.encode("utf-8"), checks=(check,))
    if not password:
        return None
    check = Check("winscp", CheckResult.INFO, "WinSCP's obfuscation reversed")
    return Decoded(password.encode("latin-1"), checks=(check,))


def vnc_password(block: bytes) -> bytes:
    """VNC's DES-ECB password blocks decrypted with the fixed key, trailing NULs removed."""
    from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
    from cryptography.hazmat.primitives.ciphers import Cipher, modes

    # Triple DES with K1 = K2 = K3 is single DES (encrypt, decrypt, encrypt with one key):
    # the only way the cryptography package still offers DES.
    decryptor = Cipher(TripleDES(VNC_KEY * 3), modes.ECB()).decryptor()
    return (decryptor.update(block) + decryptor.finalize()).split(b"\0", 1)[0]


def vnc_des(kind: int, data: bytes, siblings: Mapping[str, str]) -> Decoded | None:
    if kind in (REG_SZ, REG_EXPAND_SZ):
        # RealVNC's vncserver key keeps the block as hex digits in a string.
        text = value_text(kind, data) or ""
        try:
            data = bytes.fromhex(text)
        except ValueError:
            return None
    if not data or len(data) % 8 or len(data) > 64:
        return None
    password = vnc_password(data)
    if not password:
        return None
    check = Check("vnc", CheckResult.INFO, "VNC's fixed-key DES reversed (at most 8 characters)")
    return Decoded(password, checks=(check,))


def presence(kind: int, data: bytes, siblings: Mapping[str, str]) -> Decoded | None:
    if not data.strip(b"\0"):
        return None
    return Decoded(None)


def sam_user_name(data: bytes) -> str | None:
    """The account name in a SAM user's V record, or None if the record is too short."""
    if len(data) < _SAM_V_TABLE:
        return None
    offset, length = struct.unpack_from("<II", data, _SAM_V_NAME)
    start = _SAM_V_TABLE + offset
    if length == 0 or length > 512 or start + length > len(data):
        return None
    name = data[start : start + length].decode("utf-16-le", "replace")
    return name if name.isprintable() else None


def sam_v(kind: int, data: bytes, siblings: Mapping[str, str]) -> Decoded | None:
    found = presence(kind, data, siblings)
    if found is None:
        return None
    name = sam_user_name(data)
    return Decoded(None, (("user", name),) if name else ())


DECODERS: dict[str, Decoder] = {
    "plain": plain,
    "winscp": winscp,
    "vnc-des": vnc_des,
    "presence": presence,
    "sam-v": sam_v,
}
#: Decoders that report a value's presence, never a secret.
PRESENCE_DECODERS = frozenset({"presence", "sam-v"})
