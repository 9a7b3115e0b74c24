#!/usr/bin/env python3
"""Build the Windows test image: a GPT disk laid out like a Windows Server install.

No Windows is installed or run. The disk holds what imgscan reads on a Windows system volume:

* GPT with an EFI system partition (FAT16, made on the host with ``mkfs.vfat`` + ``mcopy``),
  a Microsoft reserved partition (all zeros, as Windows leaves it) and a basic data partition
  with NTFS (made in a libguestfs appliance: ``mkfs ntfs``, then one ``write`` per file);
* on the NTFS volume, ``Windows\\System32`` with registry hives written by ``hives.py``
  through hivex (SOFTWARE: product, version, profile list, Winlogon auto-logon, a TightVNC
  server password; SYSTEM: computer and host name; SAM: two accounts' V records; SECURITY:
  LSA secrets), a stand-in ``cmd.exe``, user profiles with NTUSER.DAT (alice's: PuTTY and
  WinSCP saved sessions) and UsrClass.dat, DPAPI master key files, and the template tree
  ``trees-windows/win-server/`` with planted secrets and decoys.

Registry plants and decoys (``REG_PLANTED``, ``REG_DECOYS``) are recorded in the manifest at
the path form findings use, ``<hive>!/<key path with />:<value name>``, with the hive, key and
value as separate fields; their stored data (WinSCP-obfuscated, VNC-DES-encrypted: see
``hives.stored_value``) is read back with hivex from the finished file system. Presence plants
(SAM V records, LSA secrets, DPAPI master keys: encrypted, reported without a value) have a
null ``secret``.

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
import codecs
import hashlib
import json
import os
import random
import shutil
import struct
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import build as base
import build_rich as rich
import hives
import windows_files
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
CONFIG = "C:\\Windows\\System32\\config\\"
SOFTWARE = CONFIG + "SOFTWARE"
SAM = CONFIG + "SAM"
SECURITY = CONFIG + "SECURITY"
ALICE_NTUSER = "C:\\Users\\alice\\NTUSER.DAT"
ALICE_USRCLASS = "C:\\Users\\alice\\AppData\\Local\\Microsoft\\Windows\\UsrClass.dat"
WINLOGON = "Microsoft\\Windows NT\\CurrentVersion\\Winlogon"
PUTTY = "Software\\SimonTatham\\PuTTY\\Sessions"
WINSCP = "Software\\Martin Prikryl\\WinSCP 2\\Sessions"
SAM_USERS = "SAM\\Domains\\Account\\Users"
ALICE_SID = f"{MACHINE_SID}-1001"
ALICE_MASTER_KEY = (
    f"C:\\Users\\alice\\AppData\\Roaming\\Microsoft\\Protect\\{ALICE_SID}"
    "\\6f1c2b3a-4d5e-4f60-8172-9a0b1c2d3e4f"
)
SYSTEM_MASTER_KEY = (
    "C:\\Windows\\System32\\Microsoft\\Protect\\S-1-5-18\\User"
    "\\0a1b2c3d-4e5f-4061-8273-94a5b6c7d8e9"
)


@dataclass(frozen=True)
class RegPlant:
    """A registry value a scanner must report: in hive file ``hive`` (guest path), key
    ``key`` ("A\\\\B" below the hive root), value ``name``. ``value`` names the generated
    secret; None for a presence plant (encrypted content, reported without a value)."""

    hive: str
    key: str
    name: str
    kind: str
    value: str | None


@dataclass(frozen=True)
class RegDecoy:
    """A registry value (or its absence) that looks like a secret's place and must not be
    reported: ``value`` is the literal data stored there ("" also for an absent value)."""

    hive: str
    key: str
    name: str
    kind: str
    value: str


REG_PLANTED = (
    RegPlant(SOFTWARE, WINLOGON, "DefaultPassword", "windows-autologon-password", "WIN_AUTOLOGON"),
    RegPlant(SOFTWARE, "TightVNC\\Server", "Password", "tightvnc-server-password", "WIN_VNC"),
    RegPlant(
        ALICE_NTUSER, f"{PUTTY}\\jump%20host", "ProxyPassword", "putty-proxy-password", "WIN_PUTTY"
    ),
    RegPlant(
        ALICE_NTUSER,
        f"{WINSCP}\\deploy@files.corp.internal",
        "Password",
        "winscp-session-password",
        "WIN_WINSCP",
    ),
    RegPlant(SAM, f"{SAM_USERS}\\000001F4", "V", "windows-sam-account-hash", None),
    RegPlant(SAM, f"{SAM_USERS}\\000003E9", "V", "windows-sam-account-hash", None),
    RegPlant(SECURITY, "Policy\\Secrets\\_SC_BackupSvc\\CurrVal", "", "windows-lsa-secret", None),
    RegPlant(SECURITY, "Policy\\Secrets\\DefaultPassword\\CurrVal", "", "windows-lsa-secret", None),
)
REG_DECOYS = (
    # A 32-bit view of Winlogon with a placeholder, and a vendor key that borrows the name.
    RegDecoy(
        SOFTWARE,
        "WOW6432Node\\Microsoft\\Windows NT\\CurrentVersion\\Winlogon",
        "DefaultPassword",
        "placeholder-password",
        "<password>",
    ),
    RegDecoy(SOFTWARE, "Contoso\\Kiosk\\Winlogon", "DefaultPassword", "placeholder", "changeme"),
    RegDecoy(SOFTWARE, "Contoso\\Kiosk\\Winlogon", "AutoAdminLogon", "not-a-secret", "1"),
    RegDecoy(ALICE_NTUSER, f"{PUTTY}\\Default%20Settings", "ProxyPassword", "empty", ""),
    RegDecoy(ALICE_NTUSER, f"{PUTTY}\\lab", "ProxyPassword", "template-reference", "$(PROXY_PW)"),
    RegDecoy(ALICE_NTUSER, f"{WINSCP}\\backup@nas.corp.internal", "Password", "absent", ""),
    RegDecoy(SECURITY, "Policy\\Secrets\\NL$KM\\OldVal", "", "empty", ""),
)
#: Plants stored as plain REG_SZ text (the others are obfuscated, encrypted or presence only).
PLAIN_TEXT_KINDS = frozenset({"windows-autologon-password", "putty-proxy-password"})
#: Files reported for their presence (content encrypted): (guest path, rule id).
PRESENCE_FILES = (
    (ALICE_MASTER_KEY, "windows-dpapi-master-key"),
    (SYSTEM_MASTER_KEY, "windows-dpapi-master-key"),
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
        "WIN_AUTOLOGON": base.rand_password(18),
        "WIN_VNC": base.rand_chars(base.ALNUM, 8),  # VNC passwords are 8 characters at most
        "WIN_PUTTY": base.rand_password(16),
        "WIN_WINSCP": base.rand_password(20),
    }


def reg_path(hive: str, key: str, name: str) -> str:
    """Where findings put a registry value: ``<hive>!/<key with />:<value name>``, the
    unnamed (default) value as ``(default)``."""
    return f"{hive}!/{key.replace(chr(92), '/')}:{name or '(default)'}"


def guest_to_inner(path: str) -> str:
    """``C:\\a\\b`` -> ``a/b``: the path inside the NTFS volume."""
    if not path.startswith("C:\\"):
        raise base.BuildError(f"{path}: not on C:")
    return path[3:].replace("\\", "/")


def software_hive(values: dict[str, str]) -> dict[str, dict[str, hives.Value]]:
    """SOFTWARE: what the product is, whose profiles exist, auto-logon and a VNC server."""
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
    keys[WINLOGON] = {
        "AutoAdminLogon": (REG_SZ, "1"),
        "DefaultUserName": (REG_SZ, "alice"),
        "DefaultDomainName": (REG_SZ, HOSTNAME.upper()),
        "DefaultPassword": (REG_SZ, values["WIN_AUTOLOGON"]),
        "Shell": (REG_SZ, "explorer.exe"),
    }
    keys["TightVNC\\Server"] = {
        "Password": (REG_BINARY, hives.vnc_encrypt(values["WIN_VNC"])),
        "RfbPort": (REG_DWORD, 5900),
    }
    keys["WOW6432Node\\Microsoft\\Windows NT\\CurrentVersion\\Winlogon"] = {
        "DefaultPassword": (REG_SZ, "<password>"),
    }
    keys["Contoso\\Kiosk\\Winlogon"] = {
        "DefaultPassword": (REG_SZ, "changeme"),
        "AutoAdminLogon": (REG_SZ, "1"),
    }
    return keys


def alice_ntuser(values: dict[str, str], rng: random.Random) -> dict[str, dict[str, hives.Value]]:
    """alice's NTUSER.DAT: PuTTY sessions (one with a proxy password) and WinSCP sessions."""
    password = hives.winscp_obfuscate("deploy", "files.corp.internal", values["WIN_WINSCP"], rng)
    return {
        "Software\\Microsoft\\Windows\\CurrentVersion\\Explorer": {},
        f"{PUTTY}\\jump%20host": {
            "HostName": (REG_SZ, "bastion.corp.internal"),
            "PortNumber": (REG_DWORD, 22),
            "ProxyMethod": (REG_DWORD, 3),
            "ProxyHost": (REG_SZ, "proxy.corp.internal"),
            "ProxyUsername": (REG_SZ, "alice"),
            "ProxyPassword": (REG_SZ, values["WIN_PUTTY"]),
        },
        f"{PUTTY}\\Default%20Settings": {
            "HostName": (REG_SZ, ""),
            "ProxyPassword": (REG_SZ, ""),
        },
        f"{PUTTY}\\lab": {
            "HostName": (REG_SZ, "lab01.corp.internal"),
            "ProxyPassword": (REG_SZ, "$(PROXY_PW)"),
        },
        f"{WINSCP}\\deploy@files.corp.internal": {
            "HostName": (REG_SZ, "files.corp.internal"),
            "UserName": (REG_SZ, "deploy"),
            "PortNumber": (REG_DWORD, 22),
            "Password": (REG_SZ, password),
        },
        f"{WINSCP}\\backup@nas.corp.internal": {
            "HostName": (REG_SZ, "nas.corp.internal"),
            "UserName": (REG_SZ, "backup"),
        },
    }


def sam_hive(rng: random.Random) -> dict[str, dict[str, hives.Value]]:
    """SAM: each local account's V record (name, encrypted hashes) and the name index."""
    keys: dict[str, dict[str, hives.Value]] = {}
    for name, rid in USERS:
        keys[f"{SAM_USERS}\\{rid:08X}"] = {"V": (REG_BINARY, hives.sam_v(name, rng))}
        # The name index: the default value's type is the account's RID, its data empty.
        keys[f"{SAM_USERS}\\Names\\{name}"] = {"": (rid, b"")}
    return keys


def security_hive(rng: random.Random) -> dict[str, dict[str, hives.Value]]:
    """SECURITY: LSA secrets (encrypted blobs, random bytes here) and an emptied one."""
    secrets = "Policy\\Secrets"
    return {
        f"{secrets}\\_SC_BackupSvc\\CurrVal": {"": (REG_BINARY, rng.randbytes(60))},
        f"{secrets}\\DefaultPassword\\CurrVal": {"": (REG_BINARY, rng.randbytes(60))},
        f"{secrets}\\NL$KM\\OldVal": {"": (REG_BINARY, b"")},
    }


def master_key(guid: str, rng: random.Random) -> bytes:
    """A DPAPI master key file: version, the GUID as UTF-16, then (random) key material."""
    header = struct.pack("<IQ", 2, 0) + guid.encode("utf-16-le") + struct.pack("<II", 0, 5)
    return header + rng.randbytes(400)


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
    for guest in windows_files.UTF16:
        path = trees["c"] / guest_to_inner(guest)
        path.write_bytes(codecs.BOM_UTF16_LE + path.read_text().encode("utf-16-le"))
    system32 = trees["c"] / "Windows/System32"
    config = system32 / "config"
    config.mkdir(parents=True)
    rng = random.Random(values["WIN_WINSCP"])  # pads, hashes and keys: fresh with the values
    hives.write_hive(config / "SOFTWARE", software_hive(values))
    hives.write_hive(config / "SYSTEM", system_hive())
    hives.write_hive(config / "SAM", sam_hive(rng))
    hives.write_hive(config / "SECURITY", security_hive(rng))
    hives.write_hive(config / "DEFAULT", {})
    # libguestfs inspection takes a directory for a Windows system root only if it has
    # System32\cmd.exe, and reads the architecture from its PE header.
    (system32 / "cmd.exe").write_bytes(pe_stub())
    for name, _ in USERS:
        profile = trees["c"] / "Users" / name
        profile.mkdir(parents=True, exist_ok=True)
        if name != "alice":
            hives.write_hive(profile / "NTUSER.DAT", {"Software\\Microsoft": {}})
    hives.write_hive(trees["c"] / guest_to_inner(ALICE_NTUSER), alice_ntuser(values, rng))
    usrclass = trees["c"] / guest_to_inner(ALICE_USRCLASS)
    usrclass.parent.mkdir(parents=True, exist_ok=True)
    hives.write_hive(
        usrclass,
        {
            "Local Settings\\Software\\Microsoft\\Windows\\Shell\\BagMRU": {
                "NodeSlots": (REG_BINARY, b"\x02")
            }
        },
    )
    for guest, _ in PRESENCE_FILES:
        file = trees["c"] / guest_to_inner(guest)
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_bytes(master_key(guest.rsplit("\\", 1)[1], rng))
    return trees


def registry_entries(
    values: dict[str, str], trees: dict[str, Path]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Manifest entries of the registry and presence plants and of the registry decoys,
    each checked against the hives written on the host (read with hivex)."""
    planted: list[dict[str, Any]] = []
    for plant in REG_PLANTED:
        planted.append(
            {
                "path": reg_path(plant.hive, plant.key, plant.name),
                "kind": plant.kind,
                "secret": values[plant.value] if plant.value else None,
                "hive": plant.hive,
                "key": plant.key,
                "name": plant.name,
            }
        )
    for path, kind in PRESENCE_FILES + windows_files.STORES:
        planted.append({"path": path, "kind": kind, "secret": None})
    decoys = [
        {
            "path": reg_path(d.hive, d.key, d.name),
            "kind": d.kind,
            "value": d.value,
            "hive": d.hive,
            "key": d.key,
            "name": d.name,
        }
        for d in REG_DECOYS
    ]
    errors = check_registry(
        planted + decoys, lambda path: (trees["c"] / guest_to_inner(path)).read_bytes()
    )
    if errors:
        raise base.BuildError("registry plants not as written:\n  " + "\n  ".join(errors))
    return planted, decoys


def check_registry(items: list[dict[str, Any]], read: Callable[[str], bytes]) -> list[str]:
    """Every registry item's hive (``read(guest path)``) holds its key; a plant's value is
    there, not empty (a plain-text one holds its secret); a decoy's value is its literal text
    (or absent, for an empty decoy); a presence file is there and not empty."""
    import hivex

    errors = []
    for item in items:
        data = read(item["hive"] if "hive" in item else item["path"])
        if "hive" not in item:
            if not data:
                errors.append(f"{item['path']}: empty")
            continue
        with tempfile.NamedTemporaryFile(suffix=".hive") as file:
            file.write(data)
            file.flush()
            hive = hivex.Hivex(file.name)
            node = hive.root()
            for part in item["key"].split("\\"):
                node = hive.node_get_child(node, part) if node else None
            if not node:
                errors.append(f"{item['path']}: key missing")
                continue
            try:
                value = hive.node_get_value(node, item["name"])
            except RuntimeError:  # hivex's way of saying there is no such value
                value = None
            if "secret" in item:  # a plant
                stored = hive.value_value(value)[1] if value else b""
                if not stored:
                    errors.append(f"{item['path']}: value missing or empty")
                elif (
                    item["kind"] in PLAIN_TEXT_KINDS and hive.value_string(value) != item["secret"]
                ):
                    errors.append(f"{item['path']}: does not hold its secret")
            elif item["value"]:
                stored_text = hive.value_string(value) if value else None
                if stored_text != item["value"]:
                    errors.append(f"{item['path']}: holds {stored_text!r}")
    return errors


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
    located = [i for i in expect["planted"] + expect["decoys"] if "offset" in i]
    registry = [i for i in expect["planted"] + expect["decoys"] if "offset" not in i]
    errors += check_registry(registry, lambda path: app("read_file", "/" + guest_to_inner(path)))
    return errors + read_back(app, located, guest_to_inner)


def as_text(data: bytes) -> bytes:
    """A file's text as the scanner matches it: UTF-16 with a byte-order mark as UTF-8
    (offsets and lines in the manifest count in that), anything else as it is."""
    if data.startswith(codecs.BOM_UTF16_LE):
        return data[2:].decode("utf-16-le").encode()
    return data


def read_back(
    app: rich.Appliance, items: list[dict[str, Any]], inner: Callable[[str], str]
) -> list[str]:
    """Every planted secret and decoy at its recorded offset, read from the file system
    mounted at the appliance's root (``inner`` turns a guest path into a path there)."""
    errors = []
    for item in items:
        value = (item.get("secret") or item["value"]).encode()
        data = as_text(app("read_file", "/" + inner(item["path"])))
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
    values = make_values() | windows_files.make_values()
    trees = render(values, work)
    for tree in trees.values():
        for path in sorted(tree.rglob("*"), key=lambda p: -len(p.parts)):
            os.utime(path, (base.FIXED_MTIME, base.FIXED_MTIME))
    planted, decoys = base.manifest_entries(
        PLANTED + windows_files.PLANTED,
        DECOYS + windows_files.DECOYS,
        values,
        lambda path: as_text((trees["c"] / guest_to_inner(path)).read_bytes()),
        {},
        SYSTEM,
    )
    reg_planted, reg_decoys = registry_entries(values, trees)
    planted += reg_planted
    decoys += reg_decoys
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
    files = sorted(p for p in TREE.rglob("*") if p.is_file())
    return key_over(KEY_PREFIX, [HERE / "windows_files.py", *files])


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
