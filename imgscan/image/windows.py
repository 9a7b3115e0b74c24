"""Windows guests: the system volume, its drive letters and what its registry says.

Reader-agnostic like `inspect.py`: the SYSTEM and SOFTWARE hives are read through
`Reader.read_small` and parsed in memory with libregf (libyal's registry library, the same
family as the native reader's filesystem libraries, maintained alongside dfvfs and used by
plaso). Nothing from the image is executed; only these values are read:

* SOFTWARE `Microsoft\\Windows NT\\CurrentVersion`: ProductName, the version, SystemRoot
  (whose drive letter is the system volume's), and `ProfileList` (local accounts and their
  profile directories);
* SYSTEM `Select\\Current` (the control set in use), its `Services\\Tcpip\\Parameters\\Hostname`
  (or `Control\\ComputerName\\ComputerName`), and `MountedDevices` (the letter of each
  further GPT volume, by partition GUID).
"""

from __future__ import annotations

import io
import logging
import re
import uuid
from dataclasses import dataclass
from typing import Any

from imgscan.image.interface import Reader, VolumeInfo
from imgscan.model import OsInfo, OsUser, VolumeStatus

_log = logging.getLogger(__name__)

SYSTEM_HIVE = "/Windows/System32/config/SYSTEM"
SOFTWARE_HIVE = "/Windows/System32/config/SOFTWARE"
# Real SOFTWARE hives reach a few hundred MB on long-lived servers; a hive is parsed in memory.
HIVE_LIMIT = 512 << 20
_CURRENT_VERSION = "Microsoft\\Windows NT\\CurrentVersion"
# Local and domain accounts (S-1-5-21-<domain>-<RID>); well-known service SIDs are not people.
_ACCOUNT_SID = re.compile(r"^S-1-5-21-\d+-\d+-\d+-(\d+)$")
_DRIVE_VALUE = re.compile(r"^\\DosDevices\\([A-Za-z]):$")
_GPT_MOUNT = b"DMIO:ID:"


@dataclass(frozen=True)
class WindowsSystem:
    """A Windows installation found on the image.

    `device` is the system volume and `drive` its letter ("C:"); `letters` maps further
    volumes to the letter Windows gave them ("D:"); `os` is what the registry says.
    """

    device: str
    drive: str
    os: OsInfo
    letters: dict[str, str]
    warnings: tuple[str, ...] = ()


def drive_root(drive: str) -> str:
    """The guest-path prefix of a drive letter: "C:" -> "C:\\"."""
    return drive.upper() + "\\"


def find_windows(reader: Reader, volumes: list[VolumeInfo]) -> WindowsSystem | None:
    """The first readable ntfs volume holding a Windows registry, read; None if there is none."""
    for volume in volumes:
        if volume.status is not VolumeStatus.SCANNED or volume.fstype != "ntfs":
            continue
        warnings: list[str] = []
        system = _open_hive(reader, volume.device, SYSTEM_HIVE, warnings)
        software = _open_hive(reader, volume.device, SOFTWARE_HIVE, warnings)
        if system is None and software is None and not warnings:
            continue
        facts = _software_facts(software)
        drive = facts.pop("drive") or "C:"
        os_info = OsInfo(
            type="windows",
            distro="windows",
            version=facts["version"],
            name=facts["name"],
            hostname=_hostname(system),
            users=_profiles(software, drive),
        )
        letters = _letters(system, volumes, exclude=volume.device)
        return WindowsSystem(volume.device, drive, os_info, letters, tuple(warnings))
    return None


def _open_hive(reader: Reader, device: str, path: str, warnings: list[str]) -> Any:
    import pyregf

    data = reader.read_small(device, path, HIVE_LIMIT + 1)
    if data is None:
        return None
    where = f"{device}:{path}"
    if len(data) > HIVE_LIMIT:
        warnings.append(f"{where}: hive larger than {HIVE_LIMIT >> 20} MiB, not parsed")
        return None
    hive = pyregf.file()
    try:
        hive.open_file_object(io.BytesIO(data))
    except OSError as exc:
        warnings.append(f"{where}: registry hive unreadable: {exc}")
        return None
    return hive


def _value(hive: Any, key_path: str, name: str) -> str | int | None:
    """A string or integer value, or None when the key or value is absent or of another type."""
    if hive is None:
        return None
    try:
        key = hive.get_key_by_path(key_path)
        value = key.get_value_by_name(name) if key is not None else None
        if value is None:
            return None
        if value.type in (1, 2):  # REG_SZ, REG_EXPAND_SZ
            return str(value.get_data_as_string())
        if value.type in (4, 11):  # REG_DWORD, REG_QWORD
            return int(value.get_data_as_integer())
    except OSError as exc:
        _log.debug("registry value %s\\%s unreadable: %s", key_path, name, exc)
    return None


def _software_facts(software: Any) -> dict[str, str | None]:
    name = _value(software, _CURRENT_VERSION, "ProductName")
    major = _value(software, _CURRENT_VERSION, "CurrentMajorVersionNumber")
    minor = _value(software, _CURRENT_VERSION, "CurrentMinorVersionNumber")
    if isinstance(major, int) and isinstance(minor, int):
        version: str | int | None = f"{major}.{minor}"
    else:  # before Windows 10 only the string "6.3" exists
        version = _value(software, _CURRENT_VERSION, "CurrentVersion")
    root = _value(software, _CURRENT_VERSION, "SystemRoot")
    drive = root[:2].upper() if isinstance(root, str) and re.match(r"^[A-Za-z]:", root) else None
    return {
        "name": name if isinstance(name, str) else None,
        "version": version if isinstance(version, str) else None,
        "drive": drive,
    }


def _control_set(system: Any) -> str:
    current = _value(system, "Select", "Current")
    return f"ControlSet{current if isinstance(current, int) else 1:03d}"


def _hostname(system: Any) -> str | None:
    control = _control_set(system)
    for key, name in (
        (f"{control}\\Services\\Tcpip\\Parameters", "Hostname"),
        (f"{control}\\Control\\ComputerName\\ComputerName", "ComputerName"),
    ):
        value = _value(system, key, name)
        if isinstance(value, str) and value:
            return value
    return None


def _profiles(software: Any, drive: str) -> tuple[OsUser, ...]:
    """Accounts with a profile directory, from ProfileList (RID as uid, home as a C:\\ path)."""
    if software is None:
        return ()
    try:
        key = software.get_key_by_path(f"{_CURRENT_VERSION}\\ProfileList")
        sids = [sub.name for sub in key.sub_keys] if key is not None else []
    except OSError:
        return ()
    users = []
    for sid in sids:
        match = _ACCOUNT_SID.match(sid)
        home = _value(software, f"{_CURRENT_VERSION}\\ProfileList\\{sid}", "ProfileImagePath")
        if not match or not isinstance(home, str) or not home:
            continue
        home = re.sub("%systemdrive%", drive, home, flags=re.IGNORECASE)
        name = home.rstrip("\\").rsplit("\\", 1)[-1]
        users.append(OsUser(name=name, uid=int(match.group(1)), home=home))
    return tuple(sorted(users, key=lambda u: u.uid))


def _letters(system: Any, volumes: list[VolumeInfo], exclude: str) -> dict[str, str]:
    """Device -> drive letter for GPT volumes named in MountedDevices (by partition GUID).

    MBR volumes are recorded there by disk signature and byte offset, which the readers do not
    report; they keep their synthetic prefix.
    """
    if system is None:
        return {}
    try:
        key = system.get_key_by_path("MountedDevices")
        values = list(key.values) if key is not None else []
    except OSError:
        return {}
    by_partuuid = {v.partuuid: v.device for v in volumes if v.partuuid and v.device != exclude}
    letters: dict[str, str] = {}
    for value in values:
        match = _DRIVE_VALUE.match(value.name or "")
        data = value.data or b""
        if not match or not data.startswith(_GPT_MOUNT) or len(data) != len(_GPT_MOUNT) + 16:
            continue
        guid = str(uuid.UUID(bytes_le=bytes(data[len(_GPT_MOUNT) :])))
        device = by_partuuid.get(guid)
        if device is not None:
            letters.setdefault(device, match.group(1).upper() + ":")
    return letters
