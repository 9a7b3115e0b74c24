"""Windows system volumes: registry facts, drive letters and C:\\ paths, over a fake reader
holding real hive files written by testdata/hives.py (hivex)."""

from __future__ import annotations

import uuid
from pathlib import Path

import hives
import pytest
from hives import REG_BINARY, REG_DWORD, REG_EXPAND_SZ, REG_SZ
from test_layout import FakeReader

from imgscan.detect.engine import Engine
from imgscan.image.interface import VolumeInfo, join_guest_path
from imgscan.image.layout import mount_layout
from imgscan.image.windows import SOFTWARE_HIVE, SYSTEM_HIVE, find_windows
from imgscan.model import VolumeStatus

OK = VolumeStatus.SCANNED
CURRENT = "Microsoft\\Windows NT\\CurrentVersion"
DATA_GUID = "0f3a4b9e-6a61-4c1e-9d7b-3c2f8e5a1b44"
SID = "S-1-5-21-1-2-3"


def _hive(tmp_path: Path, name: str, keys: dict[str, dict[str, hives.Value]]) -> bytes:
    path = tmp_path / name
    hives.write_hive(path, keys)
    return path.read_bytes()


@pytest.fixture
def registry(tmp_path: Path) -> dict[str, bytes]:
    software = _hive(
        tmp_path,
        "SOFTWARE",
        {
            CURRENT: {
                "ProductName": (REG_SZ, "Windows Server 2019 Datacenter"),
                "CurrentMajorVersionNumber": (REG_DWORD, 10),
                "CurrentMinorVersionNumber": (REG_DWORD, 0),
                "SystemRoot": (REG_SZ, "C:\\Windows"),
            },
            f"{CURRENT}\\ProfileList\\S-1-5-18": {
                "ProfileImagePath": (REG_EXPAND_SZ, "%systemroot%\\system32\\config\\systemprofile")
            },
            f"{CURRENT}\\ProfileList\\{SID}-500": {
                "ProfileImagePath": (REG_EXPAND_SZ, "%SystemDrive%\\Users\\Administrator")
            },
            f"{CURRENT}\\ProfileList\\{SID}-1104": {
                "ProfileImagePath": (REG_EXPAND_SZ, "C:\\Users\\svc_sql")
            },
        },
    )
    system = _hive(
        tmp_path,
        "SYSTEM",
        {
            "Select": {"Current": (REG_DWORD, 2)},
            "ControlSet001\\Services\\Tcpip\\Parameters": {"Hostname": (REG_SZ, "stale-name")},
            "ControlSet002\\Control\\ComputerName\\ComputerName": {
                "ComputerName": (REG_SZ, "SQL02")
            },
            "MountedDevices": {
                "\\DosDevices\\C:": (REG_BINARY, b"DMIO:ID:" + uuid.uuid4().bytes_le),
                "\\DosDevices\\E:": (REG_BINARY, b"DMIO:ID:" + uuid.UUID(DATA_GUID).bytes_le),
                "\\??\\Volume{00000000-0000-0000-0000-000000000000}": (REG_BINARY, b"\0" * 12),
            },
        },
    )
    return {"software": software, "system": system}


def _volumes() -> list[VolumeInfo]:
    return [
        VolumeInfo("/dev/sda1", "vfat", OK),
        VolumeInfo("/dev/sda3", "ntfs", OK),
        VolumeInfo("/dev/sdb1", "ntfs", OK, partuuid=DATA_GUID),
    ]


def test_registry_gives_os_facts_and_drive_letters(registry: dict[str, bytes]) -> None:
    volumes = _volumes()
    files = {
        ("/dev/sda3", SOFTWARE_HIVE): registry["software"],
        ("/dev/sda3", SYSTEM_HIVE): registry["system"],
    }
    reader = FakeReader(volumes, files)
    windows = find_windows(reader, volumes)
    assert windows is not None
    assert (windows.device, windows.drive, windows.letters) == (
        "/dev/sda3",
        "C:",
        {"/dev/sdb1": "E:"},
    )
    os_info = windows.os
    assert (os_info.type, os_info.version, os_info.name) == (
        "windows",
        "10.0",
        "Windows Server 2019 Datacenter",
    )
    # The control set Select\Current names, not the first one.
    assert os_info.hostname == "SQL02"
    assert [(u.name, u.uid, u.home) for u in os_info.users] == [
        ("Administrator", 500, "C:\\Users\\Administrator"),
        ("svc_sql", 1104, "C:\\Users\\svc_sql"),
    ]
    assert mount_layout(reader, volumes, windows) == {
        "/dev/sda3": "C:\\",
        "/dev/sdb1": "E:\\",
        "/dev/sda1": "/@dev/sda1",
    }


def test_a_lone_windows_volume_is_not_mounted_at_slash(registry: dict[str, bytes]) -> None:
    volumes = [VolumeInfo("/dev/sda", "ntfs", OK)]
    reader = FakeReader(volumes, {("/dev/sda", SOFTWARE_HIVE): registry["software"]})
    windows = find_windows(reader, volumes)
    assert windows is not None and windows.os.hostname is None
    assert mount_layout(reader, volumes, windows) == {"/dev/sda": "C:\\"}


def test_ntfs_without_registry_is_no_windows() -> None:
    volumes = [VolumeInfo("/dev/sda1", "ntfs", OK), VolumeInfo("/dev/sda2", "ntfs", OK)]
    assert find_windows(FakeReader(volumes, {}), volumes) is None


def test_a_damaged_hive_is_a_warning_not_a_crash() -> None:
    volumes = [VolumeInfo("/dev/sda1", "ntfs", OK)]
    reader = FakeReader(volumes, {("/dev/sda1", SYSTEM_HIVE): b"regf" + b"\xff" * 8000})
    windows = find_windows(reader, volumes)
    assert windows is not None
    assert windows.os.hostname is None and windows.os.users == ()
    assert len(windows.warnings) == 1 and "registry hive unreadable" in windows.warnings[0]


def test_windows_paths_join_with_backslashes() -> None:
    assert join_guest_path("C:\\", "/Users/alice/notes.txt") == "C:\\Users\\alice\\notes.txt"
    assert join_guest_path("C:\\", "/") == "C:\\"
    assert join_guest_path("/@dev/sda3", "/Users/x") == "/@dev/sda3/Users/x"


def test_path_rules_match_windows_paths_regardless_of_case(engine: Engine) -> None:
    pgpass = next(i for i, r in enumerate(engine.pack.patterns) if "**/pgpass.conf" in r.paths)
    assert pgpass in engine.allowed_rules("C:\\Users\\a\\AppData\\Roaming\\postgresql\\PGPASS.CONF")
    assert pgpass not in engine.allowed_rules("/home/a/PGPASS.CONF")
