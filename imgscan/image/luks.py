"""LUKS key-derivation bounds, read from the volume's header before any key is tried.

Trying a passphrase runs every key slot's key derivation (PBKDF2 or Argon2) with the cost its
header declares, and the image's author chooses it: an Argon2id time cost of 2^32-1 runs for
ever, a memory cost of 4 GiB exhausts the appliance. A volume whose header declares a cost past
these bounds is not unlocked and is reported as not read. The bounds sit well above what
cryptsetup chooses (it benchmarks to about 2 s, with at most 1 GiB of memory), and a
derivation within them ends in seconds to a minute.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from typing import Any

LUKS_MAGIC = b"LUKS\xba\xbe"
# Argon2: memory in KiB (cryptsetup's own default cap, and what the appliance can hold).
MAX_ARGON2_MEMORY_KIB = 1 << 20
# Argon2: passes over the memory, and passes times memory (16 passes over 1 GiB).
MAX_ARGON2_TIME = 1000
MAX_ARGON2_WORK_KIB = 16 << 20
# PBKDF2 iterations (per key slot, and for the digest): cryptsetup picks a few million.
MAX_PBKDF2_ITERATIONS = 1 << 25
# LUKS2 header sizes: JSON area included, 16 KiB to 4 MiB (the LUKS2 on-disk format).
_LUKS2_HEADER_SIZES = tuple(1 << bits for bits in range(14, 23))
_LUKS1_KEY_SLOTS, _LUKS1_SLOT_ACTIVE = 8, 0x00AC71F3

#: Reads `length` bytes at `offset` of the volume.
ReadAt = Callable[[int, int], bytes]


def kdf_problem(read_at: ReadAt) -> str | None:
    """Why the LUKS volume `read_at` reads must not be unlocked, or None. A header imgscan
    cannot parse is a problem too (cryptsetup would parse it differently, or not at all)."""
    head = read_at(0, 4096)
    if not head.startswith(LUKS_MAGIC) or len(head) < 592:
        return "not a LUKS header"
    (version,) = struct.unpack_from(">H", head, 6)
    if version == 1:
        return _luks1_problem(head)
    if version == 2:
        return _luks2_problem(head, read_at)
    return f"LUKS version {version} not known"


def _pbkdf2(iterations: int, what: str) -> str | None:
    if iterations > MAX_PBKDF2_ITERATIONS:
        bound = MAX_PBKDF2_ITERATIONS
        return f"{what} asks for {iterations} PBKDF2 iterations (imgscan's bound: {bound})"
    return None


def _luks1_problem(head: bytes) -> str | None:
    (digest_iterations,) = struct.unpack_from(">I", head, 164)
    problem = _pbkdf2(digest_iterations, "the master key digest")
    for slot in range(_LUKS1_KEY_SLOTS):
        active, iterations = struct.unpack_from(">II", head, 208 + 48 * slot)
        if problem is None and active == _LUKS1_SLOT_ACTIVE:
            problem = _pbkdf2(iterations, f"key slot {slot}")
    return problem


def _luks2_problem(head: bytes, read_at: ReadAt) -> str | None:
    (size,) = struct.unpack_from(">Q", head, 8)
    if size not in _LUKS2_HEADER_SIZES:
        return f"LUKS2 header size {size} is not a valid one"
    area = bytearray()
    while len(area) < size - 4096:
        chunk = read_at(4096 + len(area), min(1 << 20, size - 4096 - len(area)))
        if not chunk:
            return "LUKS2 header cut short"
        area += chunk
    try:
        metadata = json.loads(bytes(area).split(b"\0", 1)[0])
        return _luks2_metadata_problem(metadata)
    except (ValueError, TypeError, AttributeError, KeyError):
        return "LUKS2 metadata (JSON) unreadable"


def _number(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError("not a count")
    return value


def _luks2_metadata_problem(metadata: dict[str, Any]) -> str | None:
    for slot, keyslot in metadata["keyslots"].items():
        kdf = keyslot.get("kdf") or {}
        kind = kdf.get("type")
        what = f"key slot {slot}"
        if kind == "pbkdf2":
            problem = _pbkdf2(_number(kdf["iterations"]), what)
            if problem:
                return problem
        elif kind in ("argon2i", "argon2id"):
            time, memory = _number(kdf["time"]), _number(kdf["memory"])
            if memory > MAX_ARGON2_MEMORY_KIB:
                return (
                    f"{what} asks for {memory} KiB of {kind} memory "
                    f"(imgscan's bound: {MAX_ARGON2_MEMORY_KIB} KiB)"
                )
            if time > MAX_ARGON2_TIME or time * memory > MAX_ARGON2_WORK_KIB:
                return (
                    f"{what} asks for {kind} time cost {time} over {memory} KiB "
                    f"(imgscan's bounds: {MAX_ARGON2_TIME} passes, "
                    f"{MAX_ARGON2_WORK_KIB} KiB passes in all)"
                )
        elif kind is not None:
            return f"{what} uses key derivation {kind!r}, not known"
    for name, digest in metadata.get("digests", {}).items():
        if digest.get("type") == "pbkdf2":
            problem = _pbkdf2(_number(digest["iterations"]), f"digest {name}")
            if problem:
                return problem
    return None
