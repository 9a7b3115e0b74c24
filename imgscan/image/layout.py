"""Where each volume is mounted in the guest, rebuilt from the guest's own /etc/fstab.

Both readers use this same function, so they place every file at the same guest path. A volume
no fstab entry mounts is reported under a synthetic prefix (`/@dev/sda2`) rather than dropped.

The layout maps mount sources to guest mountpoints. A source is a device, or a btrfs subvolume
named as libguestfs names it, `btrfsvol:<device>/<path from the top level>`: readers walk a
btrfs volume from its top level (every subvolume is a directory there), and `relocate` moves
the paths under a mounted subvolume to its mountpoint.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from imgscan.image.interface import Reader, VolumeInfo, join_guest_path
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


class FstabEntry(NamedTuple):
    spec: str
    mountpoint: str
    options: str = ""


def parse_fstab(text: str) -> list[FstabEntry]:
    """The fstab entries that mount a filesystem into the tree (spec, mountpoint, options)."""
    entries = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        fields = line.split()
        if len(fields) < 2 or not fields[1].startswith("/"):
            continue  # swap ("none"/"swap"), comments, junk
        spec, mountpoint = fields[0], _unescape(fields[1])
        options = fields[3] if len(fields) > 3 else ""
        entries.append(FstabEntry(spec, mountpoint.rstrip("/") or "/", options))
    return entries


def subvolume_source(device: str, path: str) -> str:
    """The mount source of btrfs subvolume `path` (from the top level) on `device`."""
    return f"btrfsvol:{device}/{path}" if path else device


def _mounted_subvolume(volume: VolumeInfo, options: str) -> str:
    """The subvolume an fstab entry with `options` mounts ("" = the top level)."""
    for option in options.split(","):
        key, _, value = option.partition("=")
        if key == "subvol":
            return value.strip("/")
        if key == "subvolid" and value.isdigit():
            wanted = int(value)
            return next((path for id_, path in volume.subvolumes if id_ == wanted), "")
    return volume.default_subvolume


def relocations(layout: dict[str, str], device: str) -> list[tuple[str, str]]:
    """(path prefix as the top-level walk writes it, mountpoint) of each mounted subvolume of
    `device`, longest prefix first."""
    marker = f"btrfsvol:{device}/"
    top = layout.get(device)
    if top is None:
        return []
    moves = [
        (join_guest_path(top, "/" + source.removeprefix(marker)), mountpoint)
        for source, mountpoint in layout.items()
        if source.startswith(marker)
    ]
    return sorted(moves, key=lambda move: -len(move[0]))


def relocate(path: str, moves: list[tuple[str, str]]) -> str:
    """`path` moved under the mountpoint of the mounted subvolume that holds it, if any."""
    for prefix, mountpoint in moves:
        if path == prefix:
            return mountpoint
        if path.startswith(prefix + "/"):
            return join_guest_path(mountpoint, path[len(prefix) :])
    return path


def root_filesystem(layout: dict[str, str], volumes: list[VolumeInfo]) -> tuple[str, str] | None:
    """(device, directory inside it) of the guest's `/`, or None when there is none."""
    for source, mountpoint in layout.items():
        if mountpoint != "/":
            continue
        for volume in volumes:
            if source == volume.device:
                return volume.device, ""
            if source.startswith(f"btrfsvol:{volume.device}/"):
                return volume.device, "/" + source.removeprefix(f"btrfsvol:{volume.device}/")
    return None


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
    reader: Reader, root: VolumeInfo, root_dir: str, volumes: list[VolumeInfo]
) -> dict[str, VolumeInfo]:
    """/dev/mapper/<name> -> the unlocked content of the encrypted volume /etc/crypttab names.

    Readers name an unlocked volume by its container (/dev/mapper/luks-sda2); the guest's
    fstab uses the name its crypttab gives it.
    """
    data = reader.read_small(root.device, root_dir + "/etc/crypttab")
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
    """Map each mount source to the guest mountpoint its files appear under; every readable
    volume's device is among the sources.

    The root is the readable volume (or btrfs subvolume) whose /etc/fstab mounts it at `/` (or,
    failing that, the first one holding an /etc/fstab, or a lone filesystem that is not a
    Windows system volume). Other volumes and btrfs subvolumes (`subvol=`, `subvolid=`, or the
    default subvolume) take the mountpoint the root's fstab gives them. A Windows system
    volume (`windows`) and the volumes its registry gives letters appear under their drive
    ("C:\\"). Any other volume gets a synthetic prefix.
    """
    readable = [v for v in volumes if v.status is VolumeStatus.SCANNED]
    # Swap is scanned as raw bytes but holds no tree: it is never the root, nor mounted.
    trees = [v for v in readable if v.fstype != "swap"]
    layout: dict[str, str] = {}
    # Every fstab on the image, with the volume and the directory (a btrfs subvolume) it is in.
    candidates: list[tuple[VolumeInfo, str, list[FstabEntry]]] = []
    for volume in trees:
        # A root lives in a top-level subvolume (@, root) or in the default one (openSUSE's
        # @/.snapshots/1/snapshot); nested ones (container layers: hundreds) are not tried.
        places = [path for _, path in volume.subvolumes if "/" not in path]
        if volume.default_subvolume and volume.default_subvolume not in places:
            places.append(volume.default_subvolume)
        for subvolume in ("", *places):
            root_dir = "/" + subvolume if subvolume else ""
            fstab = reader.read_small(volume.device, root_dir + "/etc/fstab")
            if fstab is not None:
                entries = parse_fstab(fstab.decode("utf-8", "replace"))
                candidates.append((volume, subvolume, entries))
    chosen = next(
        (
            (volume, subvolume, entries)
            for volume, subvolume, entries in candidates
            if any(
                e.mountpoint == "/"
                and _resolve(e.spec, volumes) == volume
                and _mounted_subvolume(volume, e.options) == subvolume
                for e in entries
            )
        ),
        candidates[0] if candidates else None,
    )
    if chosen is None and len(trees) == 1 and windows is None:
        chosen = (trees[0], "", [])
    if chosen is not None:
        root, root_subvolume, entries = chosen
        layout[subvolume_source(root.device, root_subvolume)] = "/"
        aliases = _crypttab_aliases(
            reader, root, "/" + root_subvolume if root_subvolume else "", volumes
        )
        for spec, mountpoint, options in entries:
            target = aliases.get(spec) or _resolve(spec, trees)
            if target is None or mountpoint == "/":
                continue
            source = target.device
            if target.fstype == "btrfs":
                source = subvolume_source(target.device, _mounted_subvolume(target, options))
            layout.setdefault(source, mountpoint)
    if windows is not None:
        layout.setdefault(windows.device, drive_root(windows.drive))
        for device, letter in windows.letters.items():
            layout.setdefault(device, drive_root(letter))
    for volume in readable:
        layout.setdefault(volume.device, synthetic_mountpoint(volume.device))
    return layout
