"""Operating-system inspection: what the guest says about itself, for the report's `os` section.

Reader-agnostic: everything is read through `Reader.read_small` from the root filesystem that
`mount_layout` chose, so both readers report the same thing. Only plain configuration files are
parsed; nothing from the image is executed.
"""

from __future__ import annotations

import shlex

from imgscan.image.interface import Reader
from imgscan.model import OsInfo, OsUser

# Where os-release may live: /etc/os-release is usually a symlink to the second.
_OS_RELEASE = ("/etc/os-release", "/usr/lib/os-release")
_NO_LOGIN_SHELLS = ("/usr/sbin/nologin", "/sbin/nologin", "/bin/false", "/usr/bin/false")


def parse_os_release(text: str) -> dict[str, str]:
    """KEY=value pairs of an os-release file (shell quoting rules)."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, raw = line.partition("=")
        try:
            parts = shlex.split(raw)
        except ValueError:
            parts = [raw.strip("\"'")]
        values[key.strip()] = parts[0] if parts else ""
    return values


def parse_passwd(text: str) -> tuple[OsUser, ...]:
    """Accounts a person logs in with: root, and uid >= 1000 (not nobody) with a login shell."""
    users = []
    for line in text.splitlines():
        fields = line.split(":")
        # ASCII digits of a 32-bit uid: str.isdigit() also takes "²", which int() refuses, as
        # it refuses more than 4300 digits.
        uid_field = fields[2] if len(fields) >= 7 else ""
        if not (uid_field.isascii() and uid_field.isdigit() and len(uid_field) <= 10):
            continue
        name, uid, home, shell = fields[0], int(fields[2]), fields[5], fields[6]
        if uid == 0 or (1000 <= uid < 65534 and shell not in _NO_LOGIN_SHELLS):
            users.append(OsUser(name=name, uid=uid, home=home))
    return tuple(users)


def inspect_linux(reader: Reader, root_device: str, root_dir: str = "") -> OsInfo | None:
    """OS facts from the root filesystem in directory `root_dir` (a btrfs subvolume, or "")
    of `root_device`, or None if it is not a Linux root."""
    release: dict[str, str] = {}
    for path in _OS_RELEASE:
        data = reader.read_small(root_device, root_dir + path)
        if data is not None:
            release = parse_os_release(data.decode("utf-8", "replace"))
            break
    passwd = reader.read_small(root_device, root_dir + "/etc/passwd")
    if not release and passwd is None:
        return None
    hostname_data = reader.read_small(root_device, root_dir + "/etc/hostname", 256)
    hostname = hostname_data.decode("utf-8", "replace").strip() if hostname_data else None
    return OsInfo(
        type="linux",
        distro=release.get("ID") or None,
        version=release.get("VERSION_ID") or None,
        name=release.get("PRETTY_NAME") or None,
        hostname=hostname or None,
        users=parse_passwd(passwd.decode("utf-8", "replace")) if passwd else (),
    )
