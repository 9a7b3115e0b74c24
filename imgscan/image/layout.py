"""Where each volume is mounted in the guest, rebuilt from the guest's own /etc/fstab.

Both readers use this same function, so they place every file at the same guest path. A volume
no fstab entry mounts is reported under a synthetic prefix (`/@dev/sda2`) rather than dropped.
"""

from __future__ import annotations

import re

from imgscan.image.interface import Reader, VolumeInfo
from imgscan.image.windows import WindowsSystem, drive_root
from imgscan.model import VolumeStatus

_DISK_DEVICE = re.compile(r"^/dev/(?:[shv]d|xvd)a(\d*)$")


def _mapper_name(device: str) -> str | None:
    """/dev/mapper/ name of an LVM logical volume /dev/VG/LV (dashes in names are doubled)."""
    parts = device.split("/")
    if len(parts) != 4 or parts[1] != "dev" or parts[2] in ("mapper", "disk"):
        return None
    vg, lv = (part.replace("-", "--") for part in parts[2:])
    return f"/dev/mapper/{vg}-{lv}"


def synthetic_mountpoint(device: str) -> str:
    """Guest-path prefix for a volume the guest does not mount: `/@dev/sda2`."""
    return "/@dev/" + device.removeprefix("/dev/")


def parse_fstab(text: str) -> list[tuple[str, str]]:
    """(spec, mountpoint) pairs of fstab entries that mount a filesystem into the tree."""
    entries = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        fields = line.split()
        if len(fields) < 2 or not fields[1].startswith("/"):
            continue  # swap ("none"/"swap"), comments, junk
        spec, mountpoint = fields[0], _unescape(fields[1])
        entries.append((spec, mountpoint.rstrip("/") or "/"))
    return entries


def _unescape(field: str) -> str:
    # fstab encodes spaces and tabs in octal (\040, \011).
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def _resolve(spec: str, volumes: list[VolumeInfo]) -> VolumeInfo | None:
    key, _, value = spec.partition("=")
    for volume in volumes:
        if key == "UUID" and volume.uuid and volume.uuid.lower() == value.strip('"').lower():
            return volume
        if key == "LABEL" and volume.label is not None and volume.label == value.strip('"'):
            return volume
        if key == "PARTUUID" and volume.partuuid and volume.partuuid == value.strip('"').lower():
            return volume
    by_path = spec
    for prefix, attr in (
        ("/dev/disk/by-uuid/", "uuid"),
        ("/dev/disk/by-label/", "label"),
        ("/dev/disk/by-partuuid/", "partuuid"),
    ):
        if spec.startswith(prefix):
            wanted = spec.removeprefix(prefix)
            return next((v for v in volumes if getattr(v, attr) == wanted), None)
    for volume in volumes:
        if spec in (volume.device, _mapper_name(volume.device)):
            return volume
    match = _DISK_DEVICE.match(by_path)
    if match:
        device = "/dev/sda" + match.group(1)
        return next((v for v in volumes if v.device == device), None)
    return None


def _crypttab_aliases(
    reader: Reader, root: VolumeInfo, volumes: list[VolumeInfo]
) -> dict[str, VolumeInfo]:
    """/dev/mapper/<name> -> the unlocked content of the encrypted volume /etc/crypttab names.

    Readers name an unlocked volume by its container (/dev/mapper/luks-sda2); the guest's
    fstab uses the name its crypttab gives it.
    """
    data = reader.read_small(root.device, "/etc/crypttab")
    if data is None:
        return {}
    aliases: dict[str, VolumeInfo] = {}
    for name, source in parse_crypttab(data.decode("utf-8", "replace")):
        container = _resolve(source, volumes)
        inner = next((v for v in volumes if container and v.parent == container.device), None)
        if inner is not None:
            aliases[f"/dev/mapper/{name}"] = inner
    return aliases


def parse_crypttab(text: str) -> list[tuple[str, str]]:
    """(mapped name, source device spec) pairs of /etc/crypttab."""
    entries = []
    for raw in text.splitlines():
        fields = raw.split("#", 1)[0].split()
        if len(fields) >= 2:
            entries.append((fields[0], fields[1]))
    return entries


def mount_layout(
    reader: Reader, volumes: list[VolumeInfo], windows: WindowsSystem | None = None
) -> dict[str, str]:
    """Map each readable volume's device to the guest mountpoint its files appear under.

    The root is the readable volume whose /etc/fstab mounts it at `/` (or, failing that, the
    first one holding an /etc/fstab, or a lone filesystem that is not a Windows system
    volume). Other volumes take the mountpoint the root's fstab gives them. A Windows system
    volume (`windows`) and the volumes its registry gives letters appear under their drive
    ("C:\\"). Any other volume gets a synthetic prefix.
    """
    readable = [v for v in volumes if v.status is VolumeStatus.SCANNED]
    # Swap is scanned as raw bytes but holds no tree: it is never the root, nor mounted.
    trees = [v for v in readable if v.fstype != "swap"]
    layout: dict[str, str] = {}
    root: VolumeInfo | None = None
    entries: list[tuple[str, str]] = []
    candidates = []
    for volume in trees:
        fstab = reader.read_small(volume.device, "/etc/fstab")
        if fstab is not None:
            candidates.append((volume, parse_fstab(fstab.decode("utf-8", "replace"))))
    for volume, fstab_entries in candidates:
        if any(mp == "/" and _resolve(spec, volumes) == volume for spec, mp in fstab_entries):
            root, entries = volume, fstab_entries
            break
    if root is None and candidates:
        root, entries = candidates[0]
    if root is None and len(trees) == 1 and windows is None:
        root = trees[0]
    if root is not None:
        layout[root.device] = "/"
        aliases = _crypttab_aliases(reader, root, volumes)
        for spec, mountpoint in entries:
            target = aliases.get(spec) or _resolve(spec, trees)
            if target is not None and target.device not in layout and mountpoint != "/":
                layout[target.device] = mountpoint
    if windows is not None:
        layout.setdefault(windows.device, drive_root(windows.drive))
        for device, letter in windows.letters.items():
            layout.setdefault(device, drive_root(letter))
    for volume in readable:
        layout.setdefault(volume.device, synthetic_mountpoint(volume.device))
    return layout
