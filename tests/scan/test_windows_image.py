"""The Windows image: C:\\ paths, OS facts from the registry, both readers, both formats."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from expect import finding_keys, missing_planted, reported_decoys, scan, volume_mismatches

from imgscan.image import ReaderKind
from imgscan.model import ScanResult

pytestmark = pytest.mark.guestfs

_cache: dict[tuple[str, ReaderKind], ScanResult] = {}


def _scan(folder: Path, image: dict[str, Any], reader: ReaderKind) -> ScanResult:
    if (image["name"], reader) not in _cache:
        _cache[(image["name"], reader)] = scan(folder, image, reader)
    return _cache[(image["name"], reader)]


@pytest.mark.parametrize("name", ["win-server-qcow2", "win-server-vhdx"])
def test_auto_reader(windows_images: Path, windows_manifest: dict[str, Any], name: str) -> None:
    image = windows_manifest[name]
    result = _scan(windows_images, image, ReaderKind.AUTO)
    assert missing_planted(result, image) == []
    assert reported_decoys(result, image) == []
    assert volume_mismatches(result, image) == []
    assert result.complete is True
    assert all(f.path.startswith(("C:\\", "/@dev/")) for f in result.findings)
    assert result.os is not None
    got = {
        "type": result.os.type,
        "distro": result.os.distro,
        "version": result.os.version,
        "name": result.os.name,
        "hostname": result.os.hostname,
        "users": [{"name": u.name, "uid": u.uid, "home": u.home} for u in result.os.users],
    }
    assert got == image["os"]


def test_formats_give_identical_findings(
    windows_images: Path, windows_manifest: dict[str, Any]
) -> None:
    qcow2, vhdx = (
        finding_keys(_scan(windows_images, windows_manifest[n], ReaderKind.AUTO))
        for n in ("win-server-qcow2", "win-server-vhdx")
    )
    assert qcow2 and qcow2 == vhdx


def test_native_and_guestfs_agree(windows_images: Path, windows_manifest: dict[str, Any]) -> None:
    image = windows_manifest["win-server-qcow2"]
    native = _scan(windows_images, image, ReaderKind.NATIVE)
    guest = _scan(windows_images, image, ReaderKind.GUESTFS)

    def volumes(result: ScanResult) -> list[tuple[Any, ...]]:
        return [
            (v.device, v.fstype, v.mountpoint, v.status, v.files, v.bytes) for v in result.volumes
        ]

    assert volumes(native) == volumes(guest)
    assert finding_keys(native) == finding_keys(guest)
    assert native.os == guest.os


@pytest.mark.parametrize("reader", [ReaderKind.NATIVE, ReaderKind.GUESTFS])
def test_registry_plants_found_at_their_key_paths(
    windows_images: Path, windows_manifest: dict[str, Any], reader: ReaderKind
) -> None:
    """Both readers: every registry plant at `<hive>!/<key>:<value>` (decoded where it has a
    value, without one for encrypted stores), no registry decoy, the whole image read."""
    image = windows_manifest["win-server-qcow2"]
    result = _scan(windows_images, image, reader)
    registry = [p for p in image["planted"] if "hive" in p]
    assert {p["kind"] for p in registry} >= {
        "windows-autologon-password",
        "putty-proxy-password",
        "winscp-session-password",
        "tightvnc-server-password",
        "windows-sam-account-hash",
        "windows-lsa-secret",
    }
    by_path = {f.path: f for f in result.findings}
    for plant in registry:
        hive, key, name = plant["hive"], plant["key"], plant["name"]
        path = f"{hive}!/{key.replace(chr(92), '/')}:{name or '(default)'}"
        assert plant["path"] == path
        found = by_path.get(path)
        assert found is not None, path
        assert (found.rule, found.secret) == (plant["kind"], plant["secret"])
    assert missing_planted(result, image) == []
    assert reported_decoys(result, image) == []
    assert result.complete is True, result.skipped
    # Hive transaction logs and UsrClass.dat are read like any file, and give nothing.
    assert not [f for f in result.findings if "UsrClass.dat" in f.path]


def test_windows_exposures(windows_images: Path, windows_manifest: dict[str, Any]) -> None:
    """The exposures section names what a copy of the Windows image grants."""
    import json

    from imgscan.report.json import render_json

    image = windows_manifest["win-server-qcow2"]
    result = _scan(windows_images, image, ReaderKind.AUTO)
    got = {(e.kind, e.target, e.principal) for e in result.exposures}
    want = {
        ("account", "Local account password hashes (SAM)", "Administrator"),
        ("account", "Local account password hashes (SAM)", "alice"),
        ("credential", "LSA secrets (SECURITY hive)", None),
        ("key", "DPAPI master keys", "alice"),
        ("key", "DPAPI master keys", "SYSTEM"),
        ("login", "Windows auto-logon password", "WIN-APP01\\alice"),
        ("login", "proxy proxy.corp.internal (PuTTY session to bastion.corp.internal)", "alice"),
        ("login", "WinSCP session to files.corp.internal:22", "deploy"),
        ("login", "VNC server password (TightVNC)", None),
    }
    assert want <= got
    lsa = next(e for e in result.exposures if e.target == "LSA secrets (SECURITY hive)")
    assert dict(lsa.details)["secrets"] == "DefaultPassword; _SC_BackupSvc"
    autologon = next(e for e in result.exposures if e.target == "Windows auto-logon password")
    assert dict(autologon.details)["auto-logon"] == "on"
    assert autologon.paths == (
        "C:\\Windows\\System32\\config\\SOFTWARE!/Microsoft/Windows NT/CurrentVersion/Winlogon"
        ":DefaultPassword",
    )
    # The JSON report carries them.
    report = json.loads(render_json(result))
    targets = {(e["kind"], e["target"]) for e in report["exposures"]}
    assert {(k, t) for k, t, _ in want} <= targets
