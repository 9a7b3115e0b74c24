"""Write Windows registry hive files for the test images.

hivex (Debian's ``python3-hivex``) edits hives but cannot create one from nothing, and no
maintained library writes a hive from scratch. So :func:`empty_hive` lays out the smallest
valid hive by hand (a base block, one 4 KiB bin holding the root key and its security
descriptor: the layout documented by libyal's "Windows NT Registry File (REGF) format"), and
:func:`write_hive` fills it through hivex, which builds the subkey and value lists itself.

:func:`stored_value` gives a secret the form Windows software stores it in (WinSCP's
obfuscation, VNC's fixed-key DES, a SAM ``V`` record): the inverses of the scanner's decoders,
written from the published schemes, so a build or a test plants values the scanner must decode.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Mapping
from pathlib import Path

REG_SZ = 1
REG_EXPAND_SZ = 2
REG_BINARY = 3
REG_DWORD = 4
REG_MULTI_SZ = 7

#: A value as the builders give it: (registry type, data). ``str`` data is stored as UTF-16LE
#: with its terminating NUL (REG_SZ, REG_EXPAND_SZ), ``int`` as a little-endian DWORD,
#: ``bytes`` as they are.
Value = tuple[int, "str | int | bytes"]

_BLOCK = 4096
_FILETIME = 133_000_000_000_000_000  # 2022-06-20, fixed so a build is reproducible
_NO_OFFSET = 0xFFFFFFFF


def _cell(payload: bytes) -> bytes:
    """An allocated cell: negative size (header included), padded to 8 bytes."""
    size = (len(payload) + 4 + 7) & ~7
    return struct.pack("<i", -size) + payload.ljust(size - 4, b"\0")


def empty_hive(root_name: str = "ROOT") -> bytes:
    """A hive holding only its root key, with an empty (self-relative) security descriptor."""
    root_at = 0x20  # cell offsets count from the first bin
    name = root_name.encode("ascii")
    nk_size = len(_cell(b"\0" * (76 + len(name))))
    sk_at = root_at + nk_size
    nk = b"nk" + struct.pack(
        "<HQIIIIIIIIIIIIIIIHH",
        0x2C,  # KEY_HIVE_ENTRY | KEY_NO_DELETE | KEY_COMP_NAME (ASCII name)
        _FILETIME,
        0,  # access bits
        0,  # parent
        0,  # subkeys
        0,  # volatile subkeys
        _NO_OFFSET,
        _NO_OFFSET,
        0,  # values
        _NO_OFFSET,
        sk_at,
        _NO_OFFSET,  # class name
        0,
        0,
        0,
        0,
        0,  # work var
        len(name),
        0,
    )
    # Revision 1, control SE_SELF_RELATIVE, no owner, group, SACL or DACL.
    descriptor = struct.pack("<BBHIIII", 1, 0, 0x8000, 0, 0, 0, 0)
    sk = b"sk" + struct.pack("<HIIII", 0, sk_at, sk_at, 1, len(descriptor)) + descriptor
    cells = _cell(nk + name) + _cell(sk)
    free = _BLOCK - 0x20 - len(cells)
    header = b"hbin" + struct.pack("<IIIIQI", 0, _BLOCK, 0, 0, _FILETIME, 0)
    hbin = header + cells + struct.pack("<i", free) + b"\0" * (free - 4)
    base = bytearray(_BLOCK)
    base[0:48] = b"regf" + struct.pack(
        "<IIQIIIIIII", 1, 1, _FILETIME, 1, 3, 0, 1, root_at, _BLOCK, 1
    )
    checksum = 0
    for (word,) in struct.iter_unpack("<I", bytes(base[:508])):
        checksum ^= word
    base[508:512] = struct.pack("<I", checksum or 1)
    return bytes(base) + hbin


def _encode(value: str | int | bytes, kind: int) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, int):
        return struct.pack("<I", value)
    if kind == REG_MULTI_SZ:
        return "".join(f"{s}\0" for s in value.split("\n")).encode("utf-16-le") + b"\0\0"
    return (value + "\0").encode("utf-16-le")


def write_hive(path: Path, keys: Mapping[str, Mapping[str, Value]]) -> None:
    """Write a hive at ``path`` holding ``keys`` ("Parent\\Child" -> {value name: value}).

    Every key is created with its parents; a key with an empty mapping is created bare. The
    default value of a key is named ``""``.
    """
    import hivex  # Debian's python3-hivex (not on PyPI)

    path.write_bytes(empty_hive())
    hive = hivex.Hivex(str(path), write=True)
    root = hive.root()
    for key_path, values in keys.items():
        node = root
        for part in key_path.split("\\"):
            child = hive.node_get_child(node, part)
            node = child if child else hive.node_add_child(node, part)
        if values:
            hive.node_set_values(
                node,
                [
                    {"key": name, "t": kind, "value": _encode(data, kind)}
                    for name, (kind, data) in values.items()
                ],
            )
    hive.commit(str(path))


# Stored forms of secrets, the inverses of imgscan/detect/decoders.py: the builders and the
# tests store a value as Windows software would, and the scanner must read it back.

_WINSCP_MAGIC = 0xA3
_WINSCP_FLAG = 0xFF
_WINSCP_MAXLEN = 50  # WinSCP pads short passwords to this many bytes with random bytes


def _winscp_byte(value: int) -> str:
    return f"{~(value ^ _WINSCP_MAGIC) & 0xFF:02X}"


def winscp_obfuscate(user: str, host: str, password: str, rng: random.Random) -> str:
    """``Password`` as WinSCP stores a session's password (core/Security.cpp,
    ``EncryptPassword``): flag, version, length, pad length, random pad, then
    user + host + password, every byte ``~(b ^ 0xA3)`` as two hex digits."""
    text = (user + host + password).encode("latin-1")
    shift = rng.randrange(_WINSCP_MAXLEN - len(text)) if len(text) < _WINSCP_MAXLEN else 0
    out = [_winscp_byte(_WINSCP_FLAG), _winscp_byte(0), _winscp_byte(len(text))]
    out.append(_winscp_byte(shift))
    out += [_winscp_byte(rng.randrange(256)) for _ in range(shift)]
    out += [_winscp_byte(b) for b in text]
    while len(out) < _WINSCP_MAXLEN:
        out.append(_winscp_byte(rng.randrange(256)))
    return "".join(out)


VNC_KEY = bytes.fromhex("e84ad660c4721ae0")  # VNC's fixed DES key (bits reversed, as d3des)


def vnc_encrypt(password: str) -> bytes:
    """The 8-byte block TightVNC/RealVNC store for a password (at most 8 characters used)."""
    from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
    from cryptography.hazmat.primitives.ciphers import Cipher, modes

    block = password.encode("latin-1")[:8].ljust(8, b"\0")
    encryptor = Cipher(TripleDES(VNC_KEY * 3), modes.ECB()).encryptor()
    return encryptor.update(block) + encryptor.finalize()


def sam_v(user: str, rng: random.Random) -> bytes:
    """A SAM user's ``V`` record: the 0xCC-byte offset table, then the account name and
    random bytes where the encrypted LM/NT hashes sit (offsets count from the table's end)."""
    name = user.encode("utf-16-le")
    hashes = rng.randbytes(40)
    table = bytearray(0xCC)
    struct.pack_into("<III", table, 0x0C, 0, len(name), 0)  # account name
    struct.pack_into("<III", table, 0xA8, len(name), 4, 0)  # LM hash header (empty)
    struct.pack_into("<III", table, 0xB4, len(name) + 4, len(hashes), 0)  # NT hash
    return bytes(table) + name + b"\x02\0\x01\0" + hashes


def stored_value(decoder: str, data: str, siblings: Mapping[str, str], rng: random.Random) -> Value:
    """``data`` as the registry would hold it for a rule with ``decoder``: plain text as
    REG_SZ, WinSCP's obfuscated form (keyed by the sibling UserName and HostName), a VNC
    DES block, a SAM V record of account ``data``, or ``data``'s bytes (presence rules)."""
    lowered = {k.lower(): v for k, v in siblings.items()}
    if decoder == "plain":
        return (REG_SZ, data)
    if decoder == "winscp":
        if not data:
            return (REG_SZ, "")
        user, host = lowered.get("username", ""), lowered.get("hostname", "")
        return (REG_SZ, winscp_obfuscate(user, host, data, rng))
    if decoder == "vnc-des":
        return (REG_BINARY, vnc_encrypt(data) if data else b"")
    if decoder == "sam-v":
        return (REG_BINARY, sam_v(data, rng) if data else b"")
    if decoder == "presence":
        return (REG_BINARY, data.encode())
    raise ValueError(f"no stored form for decoder {decoder!r}")
