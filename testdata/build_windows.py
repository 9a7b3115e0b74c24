#!/usr/bin/env python3
"""Build the Windows test image: a GPT disk laid out like a Windows Server install.

No Windows is installed or run. The disk holds what imgscan reads on a Windows system volume:

* GPT with an EFI system partition (FAT16, made on the host with ``mkfs.vfat`` + ``mcopy``),
  a Microsoft reserved partition (all zeros, as Windows leaves it) and a basic data partition
  with NTFS (made in a libguestfs appliance: ``mkfs ntfs``, then one ``write`` per file);
* on the NTFS volume, ``Windows\\System32`` with registry hives (SOFTWARE: product, version,
  profile list; SYSTEM: computer and host name; SAM and SECURITY empty) written by
  ``hives.py`` through hivex, a stand-in ``cmd.exe``, user profiles with NTUSER.DAT, and the
  template tree ``trees-windows/win-server/`` with planted secrets and decoys.

The appliance then checks its work the way libguestfs inspection sees a Windows guest
(``inspect_os``: type, product name, version, host name, drive letter C:) and reads every
planted secret and decoy back at its recorded offset. ``qemu-img convert`` makes the qcow2 and
the VHDX (Hyper-V's format); each is compared with the verified raw disk.

Output: ``<cache>/win-<key>/`` with the images and ``manifest.json`` (same shape as the other
builders'), cached like them. Usage: ``python testdata/build_windows.py [--out DIR]
[--force]``; the last stdout line is the image directory. Tests call :func:`build_windows`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import struct
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import build as base
import build_rich as rich
import hives
from hives import REG_BINARY, REG_DWORD, REG_EXPAND_SZ, REG_SZ

HERE = base.HERE
TREE = HERE / "trees-windows" / "win-server"
KEY_PREFIX = "win-"
MANIFEST_VERSION = 1
MIB = base.MIB
SYSTEM = "win-server"

GPT_MSR = "E3C9E316-0B5C-4DB8-817D-F92DF00215AE"
DISK = rich.Disk(
    "win-server",
    "gpt",
    96,
    (
        rich.Part(1, 1, 16, rich.GPT_EFI, "EFI system partition"),
        rich.Part(2, 17, 16, GPT_MSR, "Microsoft reserved partition"),
        rich.Part(3, 33, 62, rich.GPT_MSDATA, "Basic data partition"),
    ),
)
EFI = rich.Vol(
    "/dev/sda1", "vfat", "/@dev/sda1", 16, "SYSTEM", rich.fat_serial("win-efi"), "efi", (0, 1)
)
MSR = rich.Vol("/dev/sda2", None, None, 16, part=(0, 2), status="empty")
WINDOWS = rich.Vol("/dev/sda3", "ntfs", "C:\\", 62, "Windows", None, "c", (0, 3))
VOLUMES = (EFI, MSR, WINDOWS)

PRODUCT = "Windows Server 2022 Standard"
HOSTNAME = "win-app01"
#: Local accounts with a profile: (name, RID). The machine SID is fixed.
MACHINE_SID = "S-1-5-21-3623811015-3361044348-30300820"
USERS = (("Administrator", 500), ("alice", 1001))

PLANTED = (
    base.Plant(
        SYSTEM,
        "C:\\inetpub\\wwwroot\\web.config",
        "connection-string-password",
        "WIN_WEBCONFIG_PASSWORD",
    ),
    base.Plant(
        SYSTEM,
        "C:\\ProgramData\\Contoso\\Billing\\app.conf",
        "password-assignment",
        "WIN_APP_PASSWORD",
    ),
    base.Plant(
        SYSTEM,
        "C:\\Users\\alice\\AppData\\Roaming\\Microsoft\\Windows\\PowerShell\\PSReadLine"
        "\\ConsoleHost_history.txt",
        "github-token",
        "WIN_PS_GITHUB_TOKEN",
    ),
    base.Plant(
        SYSTEM, "C:\\Users\\alice\\.aws\\credentials", "aws-access-key-id", "WIN_AWS_KEY_ID"
    ),
    base.Plant(
        SYSTEM, "C:\\Users\\alice\\.aws\\credentials", "aws-secret-access-key", "WIN_AWS_SECRET"
    ),
)
DECOYS = (
    base.Decoy(
        SYSTEM, "C:\\inetpub\\wwwroot\\web.config.example", "placeholder-password", "changeme"
    ),
    base.Decoy(
        SYSTEM,
        "C:\\Users\\alice\\Documents\\aws-notes.txt",
        "aws-doc-example",
        "AKIAIOSFODNN7EXAMPLE",
    ),
)
IMAGES = (
    ("win-server-qcow2", "win-server.qcow2", "qcow2", "v3", None),
    ("win-server-vhdx", "win-server.vhdx", "vhdx", None, "win-server-qcow2"),
)


def make_values() -> dict[str, str]:
    """The secrets planted in this build (fresh random values every build)."""
    return {
        "WIN_WEBCONFIG_PASSWORD": base.rand_password(20),
        "WIN_APP_PASSWORD": base.rand_password(20),
        "WIN_PS_GITHUB_TOKEN": base.github_token(),
        "WIN_AWS_KEY_ID": base.aws_key_id(),
        "WIN_AWS_SECRET": base.rand_chars(base.B64, 40),
    }


def guest_to_inner(path: str) -> str:
    """``C:\\a\\b`` -> ``a/b``: the path inside the NTFS volume."""
    if not path.startswith("C:\\"):
        raise base.BuildError(f"{path}: not on C:")
    return path[3:].replace("\\", "/")


def software_hive() -> dict[str, dict[str, hives.Value]]:
    """SOFTWARE: what the product is, and whose profiles exist."""
    current = "Microsoft\\Windows NT\\CurrentVersion"
    keys: dict[str, dict[str, hives.Value]] = {
        current: {
            "ProductName": (REG_SZ, PRODUCT),
            "EditionID": (REG_SZ, "ServerStandard"),
            "InstallationType": (REG_SZ, "Server"),
            "CurrentVersion": (REG_SZ, "6.3"),
            "CurrentMajorVersionNumber": (REG_DWORD, 10),
            "CurrentMinorVersionNumber": (REG_DWORD, 0),
            "CurrentBuildNumber": (REG_SZ, "20348"),
            "SystemRoot": (REG_SZ, "C:\\Windows"),
        },
        # Well-known service accounts have profiles too; they are not people.
        f"{current}\\ProfileList\\S-1-5-18": {
            "ProfileImagePath": (REG_EXPAND_SZ, "%systemroot%\\system32\\config\\systemprofile"),
        },
        f"{current}\\ProfileList\\S-1-5-19": {
            "ProfileImagePath": (
                REG_EXPAND_SZ,
                "%systemroot%\\ServiceProfiles\\LocalService",
            ),
        },
    }
    for name, rid in USERS:
        keys[f"{current}\\ProfileList\\{MACHINE_SID}-{rid}"] = {
            "ProfileImagePath": (REG_EXPAND_SZ, f"C:\\Users\\{name}"),
            "Flags": (REG_DWORD, 0),
        }
    return keys


def system_hive() -> dict[str, dict[str, hives.Value]]:
    """SYSTEM: the current control set, the NetBIOS computer name and the DNS host name."""
    return {
        "Select": {"Current": (REG_DWORD, 1), "Default": (REG_DWORD, 1)},
        "ControlSet001\\Control\\ComputerName\\ComputerName": {
            "ComputerName": (REG_SZ, HOSTNAME.upper()),
        },
        "ControlSet001\\Services\\Tcpip\\Parameters": {
            "Hostname": (REG_SZ, HOSTNAME),
            "Domain": (REG_SZ, "corp.internal"),
        },
        # GPT volumes: "DMIO:ID:" and the partition GUID (the letter Windows gave it).
        "MountedDevices": {
            "\\DosDevices\\C:": (REG_BINARY, b"DMIO:ID:" + uuid.UUID(DISK.part_uuid(3)).bytes_le),
        },
    }


def pe_stub() -> bytes:
    """Headers of an x86-64 console PE32+ executable with no sections: ``file`` and
    libguestfs read it as a 64-bit Windows program, but there is no code in it."""
    dos = bytearray(64)
    dos[0:2] = b"MZ"
    struct.pack_into("<I", dos, 0x3C, len(dos))  # e_lfanew: the PE header follows
    optional = bytearray(0xF0)
    struct.pack_into("<H", optional, 0, 0x20B)  # PE32+
    struct.pack_into("<II", optional, 32, 0x1000, 0x200)  # section and file alignment
    struct.pack_into("<H", optional, 68, 3)  # IMAGE_SUBSYSTEM_WINDOWS_CUI
    coff = struct.pack("<4sHHIIIHH", b"PE\0\0", 0x8664, 0, 0, 0, 0, len(optional), 0x22)
    return bytes(dos) + coff + bytes(optional)


def render(values: dict[str, str], work: Path) -> dict[str, Path]:
    """Render the template tree and add the generated files (hives, cmd.exe, profiles)."""
    trees: dict[str, Path] = {}
    for name in ("c", "efi"):
        dest = work / "trees" / name
        shutil.copytree(TREE / name, dest)
        for path in sorted(dest.rglob("*")):
            if path.is_file():
                base.render_file(path, values)
        trees[name] = dest
    system32 = trees["c"] / "Windows/System32"
    config = system32 / "config"
    config.mkdir(parents=True)
    hives.write_hive(config / "SOFTWARE", software_hive())
    hives.write_hive(config / "SYSTEM", system_hive())
    for name in ("SAM", "SECURITY", "DEFAULT"):
        hives.write_hive(config / name, {})
    # libguestfs inspection takes a directory for a Windows system root only if it has
    # System32\cmd.exe, and reads the architecture from its PE header.
    (system32 / "cmd.exe").write_bytes(pe_stub())
    for name, _ in USERS:
        profile = trees["c"] / "Users" / name
        profile.mkdir(parents=True, exist_ok=True)
        hives.write_hive(profile / "NTUSER.DAT", {"Software\\Microsoft": {}})
    return trees


def verify(app: rich.Appliance, values: dict[str, str], expect: dict[str, Any]) -> list[str]:
    """What libguestfs inspection says of the disk, and every planted value at its offset."""
    errors: list[str] = []
    for vol in VOLUMES:
        got = app("vfs_type", vol.device)
        if got != (vol.fstype or ""):
            errors.append(f"{vol.device} is {got!r}, not {vol.fstype}")
    if not app("is_zero_device", MSR.device):
        errors.append(f"{MSR.device} is not all zeros")
    roots = app("inspect_os")
    if roots != [WINDOWS.device]:
        return [*errors, f"inspection found roots {roots}"]
    root = roots[0]
    got = (
        app("inspect_get_type", root),
        app("inspect_get_product_name", root),
        app("inspect_get_major_version", root),
        app("inspect_get_minor_version", root),
        app("inspect_get_hostname", root),
        app("inspect_get_drive_mappings", root).get("C"),
    )
    want = ("windows", PRODUCT, 10, 0, HOSTNAME, WINDOWS.device)
    if got != want:
        errors.append(f"inspection says {got}, not {want}")
    app("mount_ro", WINDOWS.device, "/")
    return errors + read_back(app, expect["planted"] + expect["decoys"], guest_to_inner)


def read_back(
    app: rich.Appliance, items: list[dict[str, Any]], inner: Callable[[str], str]
) -> list[str]:
    """Every planted secret and decoy at its recorded offset, read from the file system
    mounted at the appliance's root (``inner`` turns a guest path into a path there)."""
    errors = []
    for item in items:
        value = (item.get("secret") or item["value"]).encode()
        data = app("read_file", "/" + inner(item["path"]))
        if data[item["offset"] : item["offset"] + len(value)] != value:
            errors.append(f"{item['path']} lacks its value at {item['offset']}")
    app("umount_all")
    return errors


def logged(
    steps: Callable[[Path, str, base.Runner], None],
) -> Callable[[Path, str], None]:
    """A ``build_into`` for :func:`build.cached` that runs ``steps`` and always leaves the
    command log in ``commands.txt``, even when a step fails."""

    def build_into(stage: Path, key: str) -> None:
        run = base.Runner(stage)
        try:
            steps(stage, key, run)
        finally:
            (stage / "commands.txt").write_text("\n".join(run.log) + "\n")

    return build_into


def build_steps(stage: Path, key: str, run: base.Runner) -> None:
    """The build proper (``run`` records every command)."""
    work = stage / "work"
    work.mkdir()
    phases = rich.Phases(run.log)
    values = make_values()
    trees = render(values, work)
    for tree in trees.values():
        for path in sorted(tree.rglob("*"), key=lambda p: -len(p.parts)):
            os.utime(path, (base.FIXED_MTIME, base.FIXED_MTIME))
    planted, decoys = base.manifest_entries(
        PLANTED,
        DECOYS,
        values,
        lambda path: (trees["c"] / guest_to_inner(path)).read_bytes(),
        {},
        SYSTEM,
    )
    phases.done("trees and hives rendered")

    raw = f"work/{DISK.name}.raw"
    run("truncate", "-s", f"{DISK.size_mib}M", raw)
    run("sfdisk", "--no-reread", "--no-tell-kernel", "-q", raw, stdin=rich.sfdisk_script(DISK))
    rich.check_table(run, DISK, raw)
    piece = "work/efi.img"
    run("truncate", "-s", f"{EFI.size_mib}M", piece)
    rich.mkvfat(run, EFI, trees["efi"], piece, 16)
    rich.place(run, piece, raw, DISK.part(1).start_mib)
    phases.done("host: GPT, EFI partition")

    app = rich.Appliance(run.log, [(stage / raw, "raw", False)], stage)
    try:
        app("mkfs", "ntfs", WINDOWS.device, label=WINDOWS.label)
        app("mount", WINDOWS.device, "/")
        rich.write_files(app, trees["c"])
        app("umount_all")
        app("sync")
        app("drop_caches", 3)
        ntfs_uuid = app("vfs_uuid", WINDOWS.device)
        errors = verify(app, values, {"planted": planted, "decoys": decoys})
    finally:
        app.close()
    if errors:
        raise base.BuildError("verification failed:\n  " + "\n  ".join(errors))
    phases.done("appliance: ntfs, files; inspection and read-back")

    for _, file, fmt, _, _ in IMAGES:
        rich.convert(run, raw, file, ("-O", fmt), fmt)
    phases.done("qemu-img convert + compare")
    shutil.rmtree(work)

    volumes = []
    for vol in VOLUMES:
        entry = rich.volume_entry(rich.System(SYSTEM, (DISK,), VOLUMES), vol, {}, {})
        if vol is WINDOWS:
            entry["uuid"] = ntfs_uuid
        volumes.append(entry)
    os_ = {
        "type": "windows",
        "distro": "windows",
        "version": "10.0",
        "name": PRODUCT,
        "hostname": HOSTNAME,
        "users": [{"name": n, "uid": rid, "home": f"C:\\Users\\{n}"} for n, rid in USERS],
    }
    images = [
        {
            "name": name,
            "file": file,
            "format": fmt,
            "subformat": subformat,
            "copy_of": copy_of,
            "disk_size": DISK.size_mib * MIB,
            "partition_table": DISK.table,
            "os": os_,
            "coverage_complete": True,
            "volumes": volumes,
            "planted": planted,
            "decoys": decoys,
        }
        for name, file, fmt, subformat, copy_of in IMAGES
    ]
    write_manifest(stage, key, images)


def write_manifest(stage: Path, key: str, images: list[dict[str, Any]]) -> None:
    """``manifest.json`` (written last, atomically: its presence marks a finished build)."""
    manifest = {"version": MANIFEST_VERSION, "key": key, "images": images}
    tmp = stage / (base.MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    os.replace(tmp, stage / base.MANIFEST)


def key_over(prefix: str, files: list[Path]) -> str:
    """``prefix`` and 16 hex digits of sha256 over the shared builders and ``files``."""
    digest = hashlib.sha256()
    shared = [
        HERE / "build.py",
        HERE / "build_rich.py",
        HERE / "hives.py",
        Path(__file__).resolve(),
    ]
    for path in shared + files:
        digest.update(path.relative_to(HERE).as_posix().encode() + b"\0")
        data = path.read_bytes()
        digest.update(len(data).to_bytes(8, "big") + data)
    return prefix + digest.hexdigest()[:16]


def source_key() -> str:
    """``win-`` and 16 hex digits of sha256 over the builders it uses and its tree."""
    return key_over(KEY_PREFIX, sorted(p for p in TREE.rglob("*") if p.is_file()))


def build_windows(out: Path | None = None, *, force: bool = False) -> Path:
    """Build the Windows images (or reuse the cached build) and return their directory."""
    return base.cached(out, source_key(), logged(build_steps), force)


def cli(
    program: str, doc: str | None, build_fn: Callable[..., Path], argv: list[str] | None
) -> int:
    """The command line of a small builder: ``[--out DIR] [--force]``, the directory on stdout."""
    parser = argparse.ArgumentParser(prog=program, description=(doc or "").split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=None, help="cache root (as build.py)")
    parser.add_argument("--force", action="store_true", help="rebuild even if cached")
    args = parser.parse_args(argv)
    rich.progress.append(lambda line: print(f"{program}: {line}", file=sys.stderr))
    started = time.monotonic()
    try:
        result = build_fn(args.out, force=args.force)
    except base.BuildError as exc:
        print(f"{program}: {exc}", file=sys.stderr)
        return 1
    print(f"{program}: ready in {time.monotonic() - started:.1f}s", file=sys.stderr)
    print(result)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    return cli("build_windows.py", __doc__, build_windows, argv)


if __name__ == "__main__":
    sys.exit(main())
