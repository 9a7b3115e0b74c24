"""Is an image file in use by a running VM?

qemu takes open file description (OFD) locks on a few bytes of every image it opens (bytes
100 and up for the permissions it uses, 200 and up for those it refuses to share), so that a
second qemu cannot write the same disk; `qemu-img info` refuses such an image unless given
`-U`. imgscan reads images without taking locks (a running VM's disk can be scanned), and asks
the kernel instead whether any process holds a lock on the file: a disk in use by a live VM
may hold file systems in the middle of a change, so a scan of it says so.
"""

from __future__ import annotations

import fcntl
import os
import struct

# <fcntl.h> on Linux; Python's fcntl module does not name it.
F_OFD_GETLK = 36
# struct flock on Linux: l_type, l_whence (short), l_start, l_len (off_t), l_pid (pid_t),
# with the padding of the native ABI.
_FLOCK = "hhqqi"
_FLOCK_SIZE = 32


def lock_holder(path: str) -> str | None:
    """A description of the lock another process holds on `path` ("a write lock", "a read
    lock", with the process id when it is a classic POSIX lock), or None when there is none
    or the kernel cannot say (a file system without locks, a platform without OFD locks)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        # Would a write lock over the whole file conflict with anything? (A write lock
        # conflicts with every lock another open file description holds.)
        query = struct.pack(_FLOCK, fcntl.F_WRLCK, os.SEEK_SET, 0, 0, 0)
        query = query.ljust(_FLOCK_SIZE, b"\0")
        answer = fcntl.fcntl(fd, F_OFD_GETLK, query)
    except OSError:
        return None
    finally:
        os.close(fd)
    kind, _, _, _, pid = struct.unpack(_FLOCK, answer[: struct.calcsize(_FLOCK)])
    if kind == fcntl.F_UNLCK:
        return None
    what = "a write lock" if kind == fcntl.F_WRLCK else "a read lock"
    # An OFD lock (what qemu takes) has no single owner: the kernel reports pid -1.
    return f"{what} (process {pid})" if pid > 0 else what


def in_use_warning(path: str, holder: str) -> str:
    """The warning a report gives for an image another process holds `holder` on."""
    return (
        f"{path}: the image is in use: another process holds {holder} on it (a running VM's "
        "qemu locks its disks); file systems of a live VM may be inconsistent or mid-change, "
        "so this scan may miss or misread what the disk will hold once the VM stops"
    )
