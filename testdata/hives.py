"""Write Windows registry hive files for the test images.

hivex (Debian's ``python3-hivex``) edits hives but cannot create one from nothing, and no
maintained library writes a hive from scratch. So :func:`empty_hive` lays out the smallest
valid hive by hand (a base block, one 4 KiB bin holding the root key and its security
descriptor: the layout documented by libyal's "Windows NT Registry File (REGF) format"), and
:func:`write_hive` fills it through hivex, which builds the subkey and value lists itself.
"""

from __future__ import annotations

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
