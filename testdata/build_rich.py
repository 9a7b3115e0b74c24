#!/usr/bin/env python3
"""Build the rich test images: LVM, LUKS, MBR logical partitions, every file system and format.

``build.py`` makes the small ext-only images without root or a VM. The images here need
things no unprivileged host tool can write (LVM2 volume groups, xfs, btrfs subvolumes, ntfs
with an alternate data stream, an exfat with files, file systems inside LUKS), so they are
made in libguestfs appliances (KVM if it works, else TCG; two side by side, one launch each),
plus host tools for everything else:

* host: ``sfdisk`` partition tables (GPT and MBR with logical partitions), ``mke2fs -d`` for
  ext file systems on plain partitions, ``mkfs.vfat`` + ``mcopy`` for FAT, ``mkfs.exfat``,
  ``mkswap``, ``cryptsetup luksFormat``/``luksAddKey`` (cheap KDF settings) on partition
  files, ``dd`` to place them, ``qemu-img convert`` to every container format, ``tar`` for OVA;
* appliance: ``pvcreate``/``vgcreate``/``lvcreate``, ``mkfs`` xfs/btrfs/ntfs, ``mke2fs`` on
  LVs and opened LUKS volumes, ``tar_in`` of the rendered trees, per-file ``write`` on
  ntfs/exfat, ``setxattr user.<stream>`` for an ntfs alternate data stream, ``pwrite_device``
  of planted bytes into a swap LV.

Each appliance then verifies what it built (after ``sync`` and ``drop_caches``): volume types,
UUIDs and labels, ``inspect_os`` and the fstab mount points as libguestfs resolves them, and
every planted secret and decoy at its recorded offset. Host checks read the partition tables
back, test every LUKS key slot, compare every converted image with the verified raw disk
(``qemu-img compare``) and read the OVAs back. ``--verify DIR`` repeats the appliance checks
read-only on the finished files.

Trees live in ``trees-rich/<system>/<volume>/`` with ``{{NAME}}`` placeholders rendered at
build time (values from Python ``secrets``: the repository holds no secret). The output goes to
``<out>/rich-<key>/`` (``key`` hashes build.py, this file, ``trees/`` and ``trees-rich/``),
built in a staging directory under an ``flock`` and renamed into place when complete, like
build.py. ``manifest.json`` is written last.

Usage: ``python testdata/build_rich.py [--out DIR] [--force] | --verify DIR``; the last stdout
line is the image directory. Tests call :func:`build_rich`. See README.md for the images.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import random
import re
import shutil
import signal
import sys
import tarfile
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import build as base
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

HERE = base.HERE
RICH_TREES = HERE / "trees-rich"
MIB = base.MIB
SECTOR = base.SECTOR
MANIFEST = base.MANIFEST
MANIFEST_VERSION = 1
KEY_PREFIX = "rich-"
FIXED_MTIME = base.FIXED_MTIME

#: GPT partition type GUIDs.
GPT_EFI = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
GPT_LVM = "E6D6D379-F507-44C2-A23C-238F2A3DF928"
GPT_LINUX = base.LINUX_FS_GUID
GPT_SRV = "3B8F8425-20E0-4F3B-907F-1A25A76F98E8"
GPT_LUKS = "CA7D7CCB-63ED-4C53-861C-1742536059CC"
GPT_MSDATA = "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7"
#: A type GUID no tool knows (a vendor's private partition).
GPT_VENDOR = str(uuid.uuid5(base.UUID_NAMESPACE, "imgscan-vendor-partition-type")).upper()

#: Status a manifest gives a LUKS volume no key was given for (the report lists it, coverage
#: is incomplete). The model has no "encrypted" status yet; fstype "crypto_LUKS" says why.
LOCKED_STATUS = "unsupported"


def fixed_uuid(name: str) -> str:
    """Deterministic UUID for ``name`` (file systems, LUKS headers, swap)."""
    return str(uuid.uuid5(base.UUID_NAMESPACE, "rich-" + name))


def fat_serial(name: str) -> str:
    """Deterministic FAT volume serial as blkid prints it (``ABCD-1234``)."""
    digest = hashlib.sha256(("rich-" + name).encode()).hexdigest()[:8].upper()
    return f"{digest[:4]}-{digest[4:]}"


# --------------------------------------------------------------------------
# Disks, volumes and images
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Part:
    """A partition: GPT type GUID and name, or MBR type byte (hex)."""

    number: int
    start_mib: int
    size_mib: int
    ptype: str
    name: str = ""


@dataclass(frozen=True)
class Disk:
    """One raw disk of a system, partitioned on the host with sfdisk."""

    name: str
    table: str  # gpt | dos
    size_mib: int
    parts: tuple[Part, ...]

    @property
    def disk_id(self) -> str:
        """GPT disk GUID or MBR disk signature (``0x…``), fixed per disk."""
        if self.table == "dos":
            return "0x" + hashlib.sha256(("rich-" + self.name).encode()).hexdigest()[:8]
        return fixed_uuid("disk-" + self.name).upper()

    def part_uuid(self, number: int) -> str:
        """The PARTUUID blkid reports (GPT: the partition GUID; MBR: ``<signature>-NN``)."""
        if self.table == "dos":
            return f"{self.disk_id[2:]}-{number:02x}"
        return fixed_uuid(f"{self.name}-part{number}")

    def part(self, number: int) -> Part:
        """Partition ``number``."""
        return next(p for p in self.parts if p.number == number)


@dataclass(frozen=True)
class Vol:
    """A volume the report must list: a file system, a swap area, an unknown or locked area.

    ``device`` is the name in the system's own numbering (first disk ``/dev/sda``; LVs as
    ``/dev/VG/LV``; an opened LUKS volume as ``/dev/mapper/<crypttab name>``). ``mountpoint``
    is the fstab mount point, or the synthetic ``/@dev/...`` prefix when no fstab mounts it.
    ``uuid`` None means the file system's own random UUID (read back after the build).
    """

    device: str
    fstype: str | None
    mountpoint: str | None
    size_mib: int
    label: str | None = None
    uuid: str | None = None
    tree: str | None = None
    part: tuple[int, int] | None = None  # (disk index, partition number)
    parent: str | None = None  # the LUKS partition an unlocked file system lives in
    encryption: str | None = None
    subvolumes: tuple[tuple[str, str], ...] = ()  # btrfs (subvolume name, tree)
    status: str = "scanned"


@dataclass(frozen=True)
class System:
    """A machine: its disks, the volumes the report lists, LVM and LUKS facts."""

    name: str
    disks: tuple[Disk, ...]
    volumes: tuple[Vol, ...]
    lvm: tuple[tuple[str, tuple[str, ...], tuple[tuple[str, int], ...]], ...] = ()
    coverage_complete: bool = True


LVM_DISK = Disk(
    "lvm-server",
    "gpt",
    2304,
    (
        Part(1, 1, 40, GPT_EFI, "EFI System Partition"),
        Part(2, 41, 2262, GPT_LVM, "lvm"),
    ),
)
#: LVs in allocation order. ``gap`` is removed again, so var and swap sit past 2 GiB of the
#: disk (the second extent of the twoGbMaxExtentSparse vmdk).
LVM_LVS: tuple[tuple[str, int], ...] = (
    ("root", 64),
    ("home", 96),
    ("gap", 1856),
    ("var", 64),
    ("swap", 16),
)
LVM_SERVER = System(
    "lvm-server",
    (LVM_DISK,),
    (
        Vol(
            "/dev/sda1",
            "vfat",
            "/boot/efi",
            40,
            "EFI",
            fat_serial("lvm-server-efi"),
            "lvm-server/efi",
            part=(0, 1),
        ),
        Vol("/dev/vg0/root", "ext4", "/", 64, "root", fixed_uuid("lvm-root"), "lvm-server/root"),
        Vol("/dev/vg0/home", "xfs", "/home", 96, "home", fixed_uuid("lvm-home"), "lvm-server/home"),
        Vol("/dev/vg0/var", "ext4", "/var", 64, "var", fixed_uuid("lvm-var"), "lvm-server/var"),
        Vol("/dev/vg0/swap", "swap", "/@dev/vg0/swap", 16, "swap", fixed_uuid("lvm-swap")),
    ),
    lvm=(("vg0", ("/dev/sda2",), tuple(lv for lv in LVM_LVS if lv[0] != "gap")),),
)

MBRL_DISK = Disk(
    "mbr-logical",
    "dos",
    96,
    (
        Part(1, 1, 40, "83"),
        Part(2, 41, 16, "83"),
        Part(3, 57, 39, "5"),
        Part(5, 58, 24, "83"),
        Part(6, 83, 13, "82"),
    ),
)
MBR_LOGICAL = System(
    "mbr-logical",
    (MBRL_DISK,),
    (
        Vol(
            "/dev/sda1",
            "ext4",
            "/",
            40,
            "root",
            fixed_uuid("mbrl-root"),
            "mbr-logical/root",
            (0, 1),
        ),
        Vol(
            "/dev/sda2",
            "ext2",
            "/opt",
            16,
            "opt",
            fixed_uuid("mbrl-opt"),
            "mbr-logical/opt",
            (0, 2),
        ),
        Vol(
            "/dev/sda5",
            "ext4",
            "/srv",
            24,
            "srv",
            fixed_uuid("mbrl-srv"),
            "mbr-logical/srv",
            (0, 5),
        ),
        Vol("/dev/sda6", "swap", "/@dev/sda6", 13, None, fixed_uuid("mbrl-swap"), part=(0, 6)),
    ),
)

LUKS_DISK = Disk(
    "luks",
    "gpt",
    112,
    (
        Part(1, 1, 40, GPT_LINUX, "root"),
        Part(2, 41, 40, GPT_LUKS, "srv_crypt"),
        Part(3, 81, 30, GPT_LUKS, "backup"),
    ),
)
#: (partition, LUKS version, mapper name from /etc/crypttab, header UUID)
LUKS_CONTAINERS: tuple[tuple[int, int, str, str], ...] = (
    (2, 2, "srv_crypt", fixed_uuid("luks2-srv")),
    (3, 1, "backup_crypt", fixed_uuid("luks1-backup")),
)
LUKS = System(
    "luks",
    (LUKS_DISK,),
    (
        Vol("/dev/sda1", "ext4", "/", 40, "root", fixed_uuid("luks-root"), "luks/root", (0, 1)),
        Vol(
            "/dev/mapper/srv_crypt",
            "ext4",
            "/srv",
            24,
            "srv",
            fixed_uuid("luks-srv"),
            "luks/srv",
            parent="/dev/sda2",
            encryption="luks2",
        ),
        Vol(
            "/dev/mapper/backup_crypt",
            "ext4",
            "/var/backups",
            28,
            "backups",
            fixed_uuid("luks-backups"),
            "luks/backups",
            parent="/dev/sda3",
            encryption="luks1",
        ),
    ),
)

ZOO_DISK = Disk(
    "fs-zoo",
    "gpt",
    304,
    (
        Part(1, 1, 96, GPT_SRV, "xfs data"),
        Part(2, 97, 128, GPT_LINUX, "btrfs pool"),
        Part(3, 225, 16, GPT_MSDATA, "Basic data partition"),
        Part(4, 241, 16, GPT_MSDATA, "SHARED"),
        Part(5, 257, 32, GPT_MSDATA, "Données exFAT"),
        Part(6, 289, 8, GPT_VENDOR, "vendor blob"),
    ),
)
FS_ZOO = System(
    "fs-zoo",
    (ZOO_DISK,),
    (
        Vol(
            "/dev/sda1",
            "xfs",
            "/@dev/sda1",
            96,
            "zoo-xfs",
            fixed_uuid("zoo-xfs"),
            "fs-zoo/xfs",
            (0, 1),
        ),
        Vol(
            "/dev/sda2",
            "btrfs",
            "/@dev/sda2",
            128,
            "zoo-btrfs",
            part=(0, 2),
            subvolumes=(("@", "fs-zoo/btrfs-root"), ("@data", "fs-zoo/btrfs-data")),
        ),
        Vol("/dev/sda3", "ntfs", "/@dev/sda3", 16, "WINDATA", None, "fs-zoo/ntfs", (0, 3)),
        Vol(
            "/dev/sda4",
            "vfat",
            "/@dev/sda4",
            16,
            "SHARED",
            fat_serial("zoo-vfat"),
            "fs-zoo/vfat",
            (0, 4),
        ),
        Vol("/dev/sda5", "exfat", "/@dev/sda5", 32, "BACKUP", None, "fs-zoo/exfat", (0, 5)),
        Vol("/dev/sda6", None, None, 8, part=(0, 6), status="unsupported"),
    ),
    coverage_complete=False,
)
#: ntfs alternate data streams: (volume device, path in the fs, stream name, template file)
ZOO_STREAMS: tuple[tuple[str, str, str, str], ...] = (
    ("/dev/sda3", "Users/Public/Documents/notes.txt", "hidden", "fs-zoo/ntfs-ads/notes.txt.hidden"),
)

TWO_DISKS = (
    Disk("two-disk-1", "gpt", 64, (Part(1, 1, 32, GPT_LINUX, "root"), Part(2, 33, 30, GPT_LVM))),
    Disk("two-disk-2", "gpt", 64, (Part(1, 1, 62, GPT_LVM, "data"),)),
)
#: WAL segments preallocated (unwritten extents, no data) on the spanning LV before the tree
#: goes in, so the planted files land on the second disk's PV.
TWO_PREALLOC: tuple[tuple[str, int], ...] = (
    ("pgsql/pg_wal/000000010000000000000001", 16 * MIB),
    ("pgsql/pg_wal/000000010000000000000002", 16 * MIB),
)
TWO_DISK = System(
    "two-disk",
    TWO_DISKS,
    (
        Vol(
            "/dev/sda1",
            "ext4",
            "/",
            32,
            "files-root",
            fixed_uuid("two-root"),
            "two-disk/root",
            (0, 1),
        ),
        Vol(
            "/dev/vgdata/data",
            "ext4",
            "/srv/data",
            64,
            "data",
            fixed_uuid("two-data"),
            "two-disk/data",
        ),
    ),
    lvm=(("vgdata", ("/dev/sda2", "/dev/sdb1"), (("data", 64),)),),
)
SYSTEMS: dict[str, System] = {s.name: s for s in (LVM_SERVER, MBR_LOGICAL, LUKS, FS_ZOO, TWO_DISK)}


@dataclass(frozen=True)
class Image:
    """One image of the manifest: a file made from a system's disk(s)."""

    name: str
    file: str
    format: str
    subformat: str | None
    system: str
    convert: tuple[str, ...] = ()  # qemu-img convert options (format and subformat included)
    copy_of: str | None = None
    compression: str | None = None
    extents: tuple[str, ...] = ()  # further files the image consists of (same directory)
    ova_disks: tuple[str, ...] = ()
    locked: bool = False


def _vmdk(sub: str) -> tuple[str, ...]:
    return ("-O", "vmdk", "-o", f"subformat={sub}")


LVM_Q = "lvm-server-qcow2"
IMAGES: tuple[Image, ...] = (
    Image(LVM_Q, "lvm-server.qcow2", "qcow2", "v3", "lvm-server", ("-O", "qcow2")),
    Image(
        "lvm-server-vmdk",
        "lvm-server.vmdk",
        "vmdk",
        "monolithicSparse",
        "lvm-server",
        _vmdk("monolithicSparse"),
        LVM_Q,
    ),
    Image(
        "lvm-server-stream-vmdk",
        "lvm-server-stream.vmdk",
        "vmdk",
        "streamOptimized",
        "lvm-server",
        _vmdk("streamOptimized"),
        LVM_Q,
    ),
    Image(
        "lvm-server-flat-vmdk",
        "lvm-server-flat.vmdk",
        "vmdk",
        "monolithicFlat",
        "lvm-server",
        _vmdk("monolithicFlat"),
        LVM_Q,
        extents=("lvm-server-flat-flat.vmdk",),
    ),
    Image(
        "lvm-server-split-vmdk",
        "lvm-server-split.vmdk",
        "vmdk",
        "twoGbMaxExtentSparse",
        "lvm-server",
        _vmdk("twoGbMaxExtentSparse"),
        LVM_Q,
        extents=("lvm-server-split-s001.vmdk", "lvm-server-split-s002.vmdk"),
    ),
    Image(
        "lvm-server-vhd",
        "lvm-server.vhd",
        "vhd",
        "dynamic",
        "lvm-server",
        ("-O", "vpc", "-o", "subformat=dynamic,force_size=on"),
        LVM_Q,
    ),
    Image(
        "lvm-server-fixed-vhd",
        "lvm-server-fixed.vhd",
        "vhd",
        "fixed",
        "lvm-server",
        ("-O", "vpc", "-o", "subformat=fixed,force_size=on"),
        LVM_Q,
    ),
    Image("lvm-server-vhdx", "lvm-server.vhdx", "vhdx", None, "lvm-server", ("-O", "vhdx"), LVM_Q),
    Image("lvm-server-vdi", "lvm-server.vdi", "vdi", None, "lvm-server", ("-O", "vdi"), LVM_Q),
    Image(
        "lvm-server-z-qcow2",
        "lvm-server-z.qcow2",
        "qcow2",
        "v3",
        "lvm-server",
        ("-O", "qcow2", "-c"),
        LVM_Q,
        compression="zlib",
    ),
    Image(
        "lvm-server-zstd-qcow2",
        "lvm-server-zstd.qcow2",
        "qcow2",
        "v3",
        "lvm-server",
        ("-O", "qcow2", "-c", "-o", "compression_type=zstd"),
        LVM_Q,
        compression="zstd",
    ),
    Image(
        "lvm-server-v2-qcow2",
        "lvm-server-v2.qcow2",
        "qcow2",
        "v2",
        "lvm-server",
        ("-O", "qcow2", "-o", "compat=0.10"),
        LVM_Q,
    ),
    Image(
        "lvm-server-ova",
        "lvm-server.ova",
        "ova",
        None,
        "lvm-server",
        copy_of=LVM_Q,
        ova_disks=("lvm-server-disk1.vmdk",),
    ),
    Image("mbr-logical-raw", "mbr-logical.raw", "raw", None, "mbr-logical"),
    Image("luks-qcow2", "luks.qcow2", "qcow2", "v3", "luks", ("-O", "qcow2")),
    Image("luks-locked-qcow2", "luks.qcow2", "qcow2", "v3", "luks", locked=True),
    Image("fs-zoo-qcow2", "fs-zoo.qcow2", "qcow2", "v3", "fs-zoo", ("-O", "qcow2")),
    Image(
        "two-disk-ova",
        "two-disk.ova",
        "ova",
        None,
        "two-disk",
        ova_disks=("two-disk-disk1.vmdk", "two-disk-disk2.vmdk"),
    ),
)

#: OVF facts per OVA: (virtual system name, vmware osType)
OVA_SYSTEMS = {
    "lvm-server": ("db01", "debian12_64Guest"),
    "two-disk": ("files01", "debian12_64Guest"),
}
LUKS_KEY_FILE = "luks.key"


# --------------------------------------------------------------------------
# Planted secrets and decoys
# --------------------------------------------------------------------------


# A secret a scanner must report (build.Plant): ``disk`` names the system here; kind
# ``swap-bytes`` marks a secret in a swap area's raw bytes, ``detail`` says what they hold.
Plant = base.Plant


L, M, K, Z, T = "lvm-server", "mbr-logical", "luks", "fs-zoo", "two-disk"
LVM_SWAP = "/@dev/vg0/swap"
MBRL_SWAP = "/@dev/sda6"
ZOO_ADS = "/@dev/sda3/Users/Public/Documents/notes.txt:hidden"

PLANTED: tuple[Plant, ...] = (
    Plant(L, "/etc/myapp/app.conf", "password-assignment", "LVM_APP_PASSWORD"),
    Plant(L, "/root/.my.cnf", "password-assignment", "LVM_MYCNF_PASSWORD"),
    Plant(L, "/home/alice/.pgpass", "pgpass-password", "LVM_PGPASS_PASSWORD"),
    Plant(L, "/home/alice/.ssh/id_ed25519", "openssh-private-key", "ALICE_ED25519"),
    Plant(L, "/home/bob/.netrc", "netrc-password", "BOB_NETRC_PASSWORD"),
    Plant(L, "/var/lib/myapp/app.conf", "password-assignment", "LVM_VAR_APP_PASSWORD"),
    Plant(L, "/boot/efi/EFI/notes.txt", "github-token", "EFI_NOTES_TOKEN"),
    Plant(L, LVM_SWAP, "swap-bytes", "LVM_SWAP_PASSWORD", detail="password-assignment"),
    Plant(L, LVM_SWAP, "swap-bytes", "LVM_SWAP_AWS_KEY", detail="aws-access-key-id"),
    Plant(M, "/etc/myapp/app.conf", "password-assignment", "MBRL_APP_PASSWORD"),
    Plant(M, "/opt/legacy/config.ini", "password-assignment", "MBRL_OPT_PASSWORD"),
    Plant(M, "/srv/www/wp-config.php", "password-assignment", "MBRL_WP_PASSWORD"),
    Plant(M, MBRL_SWAP, "swap-bytes", "MBRL_SWAP_GITLAB_TOKEN", detail="gitlab-token"),
    Plant(K, "/root/.pgpass", "pgpass-password", "LUKS_ROOT_PGPASS"),
    Plant(K, "/srv/app/.env", "url-password", "LUKS_SRV_DB_PASSWORD"),
    Plant(K, "/srv/app/.env", "stripe-secret-key", "LUKS_SRV_STRIPE_KEY"),
    Plant(K, "/var/backups/db-backup.conf", "password-assignment", "LUKS_BACKUP_PASSWORD"),
    Plant(Z, "/@dev/sda1/exports/payroll/db.ini", "password-assignment", "ZOO_XFS_PASSWORD"),
    Plant(Z, "/@dev/sda2/@/etc/myapp/app.conf", "password-assignment", "ZOO_BTRFS_ROOT_PASSWORD"),
    Plant(
        Z, "/@dev/sda2/@data/projects/.git-credentials", "git-credentials", "ZOO_BTRFS_DATA_TOKEN"
    ),
    Plant(
        Z,
        "/@dev/sda3/inetpub/wwwroot/web.config",
        "connection-string-password",
        "ZOO_NTFS_PASSWORD",
    ),
    Plant(Z, ZOO_ADS, "slack-bot-token", "ZOO_ADS_SLACK_TOKEN"),
    Plant(Z, "/@dev/sda4/deploy/settings.env", "sendgrid-api-key", "ZOO_VFAT_SENDGRID_KEY"),
    Plant(Z, "/@dev/sda5/backup/credentials", "aws-access-key-id", "ZOO_EXFAT_AWS_KEY_ID"),
    Plant(Z, "/@dev/sda5/backup/credentials", "aws-secret-access-key", "ZOO_EXFAT_AWS_SECRET"),
    Plant(T, "/etc/myapp/app.conf", "password-assignment", "TWO_ROOT_PASSWORD"),
    Plant(T, "/srv/data/exports/.pgpass", "pgpass-password", "TWO_DATA_PASSWORD"),
    Plant(T, "/srv/data/exports/deploy.env", "gitlab-token", "TWO_DATA_GITLAB_TOKEN"),
)

DECOYS: tuple[base.Decoy, ...] = (
    base.Decoy(L, "/etc/myapp/app.conf.example", "placeholder-password", "changeme"),
    base.Decoy(L, "/home/alice/.ssh/id_ed25519.pub", "public-key", "@ALICE_ED25519_PUB"),
    base.Decoy(L, "/home/alice/.ssh/authorized_keys", "public-key", "@ALICE_ED25519_PUB"),
    base.Decoy(L, "/var/lib/myapp/README", "aws-doc-example", "AKIAIOSFODNN7EXAMPLE"),
    base.Decoy(M, "/srv/www/wp-config-sample.php", "placeholder-password", "password_here"),
    base.Decoy(
        K, "/srv/app/.env.example", "doc-url-example", "postgres://user:password@localhost/db"
    ),
    base.Decoy(
        Z, "/@dev/sda3/inetpub/wwwroot/web.config.example", "placeholder-password", "changeme"
    ),
    base.Decoy(Z, "/@dev/sda4/README.TXT", "aws-doc-example", "AKIAIOSFODNN7EXAMPLE"),
)

#: Raw bytes planted into swap areas: system -> (volume offset, bytes before, value, bytes after).
#: The AWS key id in the LVM swap starts 8 bytes before the 8 MiB offset (``boundary``).
SWAP_BOUNDARY = 8 * MIB
SWAP_PLANTS: dict[str, tuple[tuple[int, bytes, str, bytes], ...]] = {
    L: (
        (
            5 * MIB + 1234,
            b"\0\0[database]\nhost = localhost\nuser = reports_rw\npassword=",
            "LVM_SWAP_PASSWORD",
            b"\nname = reports\n\0",
        ),
        (
            SWAP_BOUNDARY - 8 - len(b"\0aws_access_key_id = "),
            b"\0aws_access_key_id = ",
            "LVM_SWAP_AWS_KEY",
            b"\n\0",
        ),
    ),
    M: ((3 * MIB + 777, b"\0\0export GITLAB_TOKEN=", "MBRL_SWAP_GITLAB_TOKEN", b"\n\0"),),
}


def make_values() -> dict[str, str]:
    """Every placeholder value and generated secret of one build."""
    v: dict[str, str] = {}
    for name in (
        "LVM_APP_PASSWORD",
        "LVM_MYCNF_PASSWORD",
        "LVM_PGPASS_PASSWORD",
        "BOB_NETRC_PASSWORD",
        "LVM_VAR_APP_PASSWORD",
        "LVM_SWAP_PASSWORD",
        "MBRL_APP_PASSWORD",
        "MBRL_OPT_PASSWORD",
        "MBRL_WP_PASSWORD",
        "LUKS_ROOT_PGPASS",
        "LUKS_SRV_DB_PASSWORD",
        "LUKS_BACKUP_PASSWORD",
        "ZOO_XFS_PASSWORD",
        "ZOO_BTRFS_ROOT_PASSWORD",
        "ZOO_NTFS_PASSWORD",
        "TWO_ROOT_PASSWORD",
        "TWO_DATA_PASSWORD",
        "LUKS_PASSPHRASE",
    ):
        v[name] = base.rand_password(20)
    v["LUKS_KEY_FILE"] = base.rand_chars(base.ALNUM, 64)
    v["EFI_NOTES_TOKEN"] = base.github_token()
    v["ZOO_BTRFS_DATA_TOKEN"] = base.github_token()
    v["LVM_SWAP_AWS_KEY"] = base.aws_key_id()
    v["ZOO_EXFAT_AWS_KEY_ID"] = base.aws_key_id()
    v["ZOO_EXFAT_AWS_SECRET"] = base.rand_chars(base.B64, 40)
    v["MBRL_SWAP_GITLAB_TOKEN"] = "glpat-" + base.rand_chars(base.B64URL, 20)
    v["TWO_DATA_GITLAB_TOKEN"] = "glpat-" + base.rand_chars(base.B64URL, 20)
    v["LUKS_SRV_STRIPE_KEY"] = "sk_live_" + base.rand_chars(base.ALNUM, 24)
    v["ZOO_VFAT_SENDGRID_KEY"] = (
        f"SG.{base.rand_chars(base.B64URL, 22)}.{base.rand_chars(base.B64URL, 43)}"
    )
    v["ZOO_ADS_SLACK_TOKEN"] = (
        f"xoxb-{base.rand_digits(12)}-{base.rand_digits(13)}-{base.rand_chars(base.ALNUM, 24)}"
    )
    key = ed25519.Ed25519PrivateKey.generate()
    v["ALICE_ED25519"] = base.pem(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        )
    )
    v["ALICE_ED25519_PUB"] = base.openssh_public(key, "alice@db01")

    lvm = {vol.device: vol for vol in LVM_SERVER.volumes}
    v["LVM_UUID_ROOT"] = str(lvm["/dev/vg0/root"].uuid)
    v["LVM_UUID_HOME"] = str(lvm["/dev/vg0/home"].uuid)
    v["LVM_UUID_EFI"] = str(lvm["/dev/sda1"].uuid)
    v["MBRL_PARTUUID_OPT"] = MBRL_DISK.part_uuid(2)
    v["LUKS_PARTUUID_ROOT"] = LUKS_DISK.part_uuid(1)
    v["LUKS_PARTUUID_BACKUP"] = LUKS_DISK.part_uuid(3)
    v["LUKS_UUID_SRV_CRYPT"] = LUKS_CONTAINERS[0][3]
    v["LUKS_UUID_SRV"] = str(LUKS.volumes[1].uuid)
    return v


# --------------------------------------------------------------------------
# Rendering trees
# --------------------------------------------------------------------------

#: (system, guest path prefix) -> uid (= gid); everything else is root's.
OWNERS: tuple[tuple[str, str, int], ...] = (
    (L, "home/alice", 1000),
    (L, "home/bob", 1001),
    (L, "var/lib/myapp", 999),
    (L, "var/log/myapp", 999),
    (M, "srv/www", 33),
    (K, "srv/app", 999),
    (K, "home/carol", 1000),
    (T, "home/dave", 1000),
)


def owner_for(system: str, guest_rel: str) -> int:
    """uid owning ``guest_rel`` (guest path without the leading ``/``)."""
    for owner_system, prefix, uid in OWNERS:
        if system == owner_system and (guest_rel == prefix or guest_rel.startswith(prefix + "/")):
            return uid
    return 0


def mode_for(guest_rel: str, is_dir: bool) -> int:
    """Permission bits: build.py's rules plus private keys and service configs."""
    name = guest_rel.rsplit("/", 1)[-1]
    if not is_dir and name.startswith("id_") and not name.endswith(".pub"):
        return 0o600
    if not is_dir and name in ("app.conf", "config.ini", "db-backup.conf", "wp-config.php"):
        return 0o640
    return base.mode_for(guest_rel, is_dir)


def guest_prefix(vol: Vol) -> str:
    """Guest path of the volume's root without the leading ``/`` ("" for /)."""
    return (vol.mountpoint or "").strip("/")


def render_tree(tree: str, dest: Path, values: dict[str, str]) -> None:
    """Copy ``trees-rich/<tree>`` to ``dest`` and replace its placeholders."""
    shutil.copytree(RICH_TREES / tree, dest, symlinks=True)
    for path in sorted(dest.rglob("*")):
        if path.is_file() and not path.is_symlink():
            base.render_file(path, values)
    base.make_archives(dest)


def finish_tree(root: Path, prefix: str) -> None:
    """Modes (as if ``root`` were mounted at ``/prefix``) and a fixed mtime."""
    for path in sorted(root.rglob("*")):
        if not path.is_symlink():
            rel = path.relative_to(root).as_posix()
            path.chmod(mode_for(f"{prefix}/{rel}".lstrip("/"), path.is_dir()))
    for path in sorted(root.rglob("*"), key=lambda p: -len(p.parts)):
        os.utime(path, (FIXED_MTIME, FIXED_MTIME), follow_symlinks=False)
    os.utime(root, (FIXED_MTIME, FIXED_MTIME))


def skeleton(root: Path, dirs: tuple[str, ...]) -> None:
    """Create empty directories."""
    for d in dirs:
        (root / d).mkdir(parents=True, exist_ok=True)


ROOT_DIRS: tuple[str, ...] = ("bin", "boot", "dev", "etc", "home", "media", "mnt", "opt")
ROOT_DIRS += ("proc", "root", "run")
ROOT_DIRS += ("sbin", "srv", "sys", "tmp", "usr/bin", "usr/lib", "usr/local/bin", "usr/sbin")
VAR_DIRS = ("backups", "cache", "lib", "local", "log", "mail", "opt", "spool", "tmp")


def packages_split(root: Path, var: Path, seed: str, count: int) -> None:
    """build.py's Debian-like package files, /usr on ``root`` and /var on ``var``."""
    with_var = root.parent / (root.name + ".pkg")
    base.make_packages(with_var, random.Random(seed), base.PACKAGES[:count])
    for top in sorted(with_var.iterdir()):
        target = var if top.name == "var" else root / top.name
        shutil.copytree(top, target, dirs_exist_ok=True)
    shutil.rmtree(with_var)


def generate(system: str, trees: dict[str, Path]) -> None:
    """Generated (non-template) content of one system's trees."""
    if system == L:
        root, var = trees["lvm-server/root"], trees["lvm-server/var"]
        skeleton(root, (*ROOT_DIRS, "boot/efi", "media/cdrom0", "var"))
        skeleton(var, VAR_DIRS)
        packages_split(root, var, "imgscan-rich-lvm-packages", 24)
        (var / "log/myapp").mkdir(parents=True, exist_ok=True)
        (var / "log/myapp/app.log").write_bytes(base.make_app_log())
    elif system == M:
        root = trees["mbr-logical/root"]
        skeleton(root, (*ROOT_DIRS, *(f"var/{d}" for d in VAR_DIRS)))
        base.make_packages(root, random.Random("imgscan-rich-mbrl-packages"), base.PACKAGES[:12])
    elif system == K:
        root = trees["luks/root"]
        skeleton(root, (*ROOT_DIRS, *(f"var/{d}" for d in VAR_DIRS)))
        base.make_packages(root, random.Random("imgscan-rich-luks-packages"), base.PACKAGES[:8])
    elif system == T:
        root = trees["two-disk/root"]
        skeleton(root, (*ROOT_DIRS, "srv/data", *(f"var/{d}" for d in VAR_DIRS)))
        base.make_packages(root, random.Random("imgscan-rich-two-packages"), base.PACKAGES[:8])
    elif system == Z:
        skeleton(trees["fs-zoo/btrfs-root"], ("usr/bin", "var/log", "home"))


def system_trees(system: System) -> list[tuple[str, str]]:
    """(tree, guest prefix) of every tree of ``system``."""
    out: list[tuple[str, str]] = []
    for vol in system.volumes:
        if vol.tree:
            out.append((vol.tree, guest_prefix(vol)))
        for sub, tree in vol.subvolumes:
            out.append((tree, f"{guest_prefix(vol)}/{sub}"))
    if system.name == Z:
        out += [(tree, "") for _, _, _, tree in ZOO_STREAMS]
    return out


def render_system(system: System, values: dict[str, str], work: Path) -> dict[str, Path]:
    """Render every tree of ``system`` under ``work/trees``; tree name -> directory."""
    trees: dict[str, Path] = {}
    for tree, _ in system_trees(system):
        if tree in trees:
            continue
        dest = work / "trees" / tree
        dest.parent.mkdir(parents=True, exist_ok=True)
        if (RICH_TREES / tree).is_dir():
            render_tree(tree, dest, values)
        else:  # a single template file (ntfs stream contents)
            shutil.copy(RICH_TREES / tree, dest)
            base.render_file(dest, values)
        trees[tree] = dest
    generate(system.name, trees)
    for tree, prefix in system_trees(system):
        if trees[tree].is_dir():
            finish_tree(trees[tree], prefix)
    return trees


def make_tar(system: str, root: Path, prefix: str, dest: Path) -> None:
    """A tar of ``root`` for ``tar_in``: numeric owners, modes and mtimes as rendered."""
    with tarfile.open(dest, "w", format=tarfile.GNU_FORMAT) as tf:
        for path in [root, *sorted(root.rglob("*"))]:
            rel = path.relative_to(root).as_posix()
            info = tf.gettarinfo(str(path), "." if rel == "." else "./" + rel)
            guest = prefix if rel == "." else f"{prefix}/{rel}".strip("/")
            info.uid = info.gid = owner_for(system, guest)
            info.uname = info.gname = ""
            info.mtime = FIXED_MTIME
            if rel == ".":
                info.mode = 0o755
            if path.is_file():
                with path.open("rb") as fh:
                    tf.addfile(info, fh)
            else:
                tf.addfile(info)


def os_info(root: Path) -> dict[str, Any]:
    """The manifest ``os`` object, from the rendered root tree's own files."""
    release: dict[str, str] = {}
    for line in (root / "etc/os-release").read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep:
            release[key.strip()] = value.strip().strip('"')
    users = []
    for line in (root / "etc/passwd").read_text().splitlines():
        fields = line.split(":")
        if len(fields) < 7:
            continue
        name, uid, home, shell = fields[0], int(fields[2]), fields[5], fields[6]
        login = not shell.endswith(("/nologin", "/false"))
        if uid == 0 or (1000 <= uid < 65534 and login):
            users.append({"name": name, "uid": uid, "home": home})
    return {
        "type": "linux",
        "distro": release.get("ID"),
        "version": release.get("VERSION_ID"),
        "name": release.get("PRETTY_NAME"),
        "hostname": (root / "etc/hostname").read_text().strip(),
        "users": users,
    }


# --------------------------------------------------------------------------
# Host side: partition tables and file systems made without the appliance
# --------------------------------------------------------------------------


def sfdisk_script(disk: Disk) -> str:
    """sfdisk input for ``disk`` (MBR: partitions 5+ go into the extended partition)."""
    lines = [f"label: {disk.table}", f"label-id: {disk.disk_id}", "unit: sectors"]
    if disk.table == "gpt":
        lines.append("first-lba: 2048")
    lines.append("")
    per_mib = MIB // SECTOR
    for part in disk.parts:
        spec = f"start={part.start_mib * per_mib}, size={part.size_mib * per_mib}"
        if disk.table == "gpt":
            spec += f", type={part.ptype}, uuid={disk.part_uuid(part.number).upper()}"
            if part.name:
                spec += f', name="{part.name}"'
        else:
            spec += f", type={part.ptype}" + (", bootable" if part.number == 1 else "")
        lines.append(spec)
    return "\n".join(lines) + "\n"


def check_table(run: base.Runner, disk: Disk, raw: str) -> None:
    """Read the table back with ``sfdisk -J``: numbers, offsets, sizes, types, names, ids."""
    table = json.loads(run("sfdisk", "-J", raw).stdout)["partitiontable"]
    per_mib = MIB // SECTOR
    got = {
        int(re.sub(r"^.*?(\d+)$", r"\1", p["node"])): (
            p["start"],
            p["size"],
            p["type"].upper(),
            p.get("name", ""),
            p.get("uuid", "").lower(),
        )
        for p in table.get("partitions", [])
    }
    want = {
        p.number: (
            p.start_mib * per_mib,
            p.size_mib * per_mib,
            p.ptype.upper(),
            p.name,
            disk.part_uuid(p.number) if disk.table == "gpt" else "",
        )
        for p in disk.parts
    }
    if table["label"] != disk.table or table["id"].lower() != disk.disk_id.lower() or got != want:
        raise base.BuildError(f"{raw}: partition table {got} != {want}")


def mkext(
    run: base.Runner,
    system: str,
    vol: Vol,
    fstype: str,
    tree: Path,
    piece: str,
    work: Path,
) -> None:
    """``mke2fs -d`` an ext file system from ``tree``, set owners, read it back."""
    assert vol.label is not None and vol.uuid is not None
    args = ["mke2fs", "-q", "-F", "-t", fstype, "-L", vol.label, "-U", vol.uuid]
    if fstype != "ext2":
        args += ["-b", "4096"]
    run(*args, "-E", "root_owner=0:0", "-d", str(tree.relative_to(run.cwd)), piece)
    prefix = guest_prefix(vol)
    lines = []
    for path in sorted(tree.rglob("*")):
        rel = path.relative_to(tree).as_posix()
        uid = owner_for(system, f"{prefix}/{rel}".strip("/"))
        lines += [f'set_inode_field "/{rel}" uid {uid}\n', f'set_inode_field "/{rel}" gid {uid}\n']
    script = work / f"owners-{Path(piece).stem}.cmd"
    script.write_text("".join(lines))
    proc = run("debugfs", "-w", "-f", str(script.relative_to(run.cwd)), piece)
    if "set_inode_field:" in proc.stderr:
        raise base.BuildError(f"{piece}: debugfs could not set owners: {proc.stderr[-500:]}")
    base.verify_fs(run, piece, tree, work / f"verify-{Path(piece).stem}")


def mkvfat(run: base.Runner, vol: Vol, tree: Path, piece: str, fat: int) -> None:
    """``mkfs.vfat`` then ``mcopy`` the tree in (mtools: no mount, no root)."""
    assert vol.label is not None and vol.uuid is not None
    serial = vol.uuid.replace("-", "")
    args = ["mkfs.vfat", "-F", str(fat), "-i", serial, "-n", vol.label]
    if fat == 32:
        args += ["-s", "1"]
    run(*args, piece)
    for top in sorted(tree.iterdir()):
        run("mcopy", "-s", "-p", "-m", "-i", piece, str(top.relative_to(run.cwd)), "::/")
    listing = run("mdir", "-/", "-b", "-i", piece, "::/").stdout
    for path in base.iter_files(tree):
        if f"::/{path.relative_to(tree).as_posix()}" not in listing:
            raise base.BuildError(f"{piece}: {path.relative_to(tree)} missing after mcopy")


def place(run: base.Runner, piece: str, raw: str, start_mib: int) -> None:
    """``dd`` a partition image into the raw disk and delete it."""
    run(
        "dd",
        f"if={piece}",
        f"of={raw}",
        "bs=1M",
        f"seek={start_mib}",
        "conv=notrunc,sparse",
        "status=none",
    )
    (run.cwd / piece).unlink()


def random_piece(run: base.Runner, path: Path, name: str, size: int) -> None:
    """Seeded random bytes that must look like no known file system."""
    path.write_bytes(random.Random(f"imgscan-rich-unknown-{name}").randbytes(size))
    probe = run("blkid", "-p", str(path.relative_to(run.cwd)), ok=(0, 2))
    if probe.returncode == 0:
        raise base.BuildError(f"random partition looks like a file system: {probe.stdout}")


def swap_bytes(system: str, values: dict[str, str]) -> list[tuple[int, bytes]]:
    """(offset, bytes) to write into ``system``'s swap area."""
    return [
        (offset, before + values[name].encode() + after)
        for offset, before, name, after in SWAP_PLANTS[system]
    ]


def luks_format(run: base.Runner, piece: str, version: int, uuid_: str, label: str) -> None:
    """LUKS header with two key slots, both cheap to open.

    Slot 0: the passphrase (LUKS2: argon2id with 32 MiB, 4 iterations; LUKS1: pbkdf2 with 1000
    iterations). Slot 1: the key file (pbkdf2, 1000 iterations).
    """
    args = ["cryptsetup", "luksFormat", "--batch-mode", f"--type=luks{version}"]
    args += [f"--uuid={uuid_}", "--key-file=work/passphrase"]
    if version == 2:
        args += [f"--label={label}", "--pbkdf=argon2id", "--pbkdf-memory=32768"]
        args += ["--pbkdf-parallel=1", "--pbkdf-force-iterations=4"]
    else:
        args += ["--pbkdf=pbkdf2", "--pbkdf-force-iterations=1000"]
    run(*args, piece)
    run(
        "cryptsetup",
        "luksAddKey",
        "--batch-mode",
        "--key-file=work/passphrase",
        "--pbkdf=pbkdf2",
        "--pbkdf-force-iterations=1000",
        piece,
        LUKS_KEY_FILE,
    )
    for key in ("work/passphrase", LUKS_KEY_FILE):
        run("cryptsetup", "open", "--test-passphrase", f"--key-file={key}", piece)
    dump = run("cryptsetup", "luksDump", piece).stdout
    if uuid_ not in dump or f"Version:       \t{version}" not in dump:
        raise base.BuildError(f"{piece}: unexpected LUKS header:\n{dump}")


def host_disks(
    run: base.Runner, values: dict[str, str], trees: dict[str, dict[str, Path]], work: Path
) -> None:
    """Partition every raw disk and place what the host can make itself."""
    for system in SYSTEMS.values():
        for disk in system.disks:
            raw = f"work/{disk.name}.raw"
            run("truncate", "-s", f"{disk.size_mib}M", raw)
            run("sfdisk", "--no-reread", "--no-tell-kernel", "-q", raw, stdin=sfdisk_script(disk))
            check_table(run, disk, raw)
        for vol in system.volumes:
            if vol.part is None:
                continue
            disk = system.disks[vol.part[0]]
            part = disk.part(vol.part[1])
            raw = f"work/{disk.name}.raw"
            piece = f"work/{disk.name}-p{part.number}.img"
            piece_path = run.cwd / piece
            size = part.size_mib * MIB
            tree = trees[system.name][vol.tree] if vol.tree else None
            if vol.fstype in ("ext2", "ext3", "ext4"):
                assert tree is not None
                run("truncate", "-s", str(size), piece)
                mkext(run, system.name, vol, vol.fstype, tree, piece, work)
            elif vol.fstype == "vfat":
                assert tree is not None
                run("truncate", "-s", str(size), piece)
                mkvfat(run, vol, tree, piece, 32 if system.name == L else 16)
            elif vol.fstype == "exfat":
                run("truncate", "-s", str(size), piece)
                run("mkfs.exfat", "-L", str(vol.label), piece)
            elif vol.fstype == "swap":
                run("truncate", "-s", str(size), piece)
                run("mkswap", "-U", str(vol.uuid), piece)
                with piece_path.open("r+b") as fh:
                    for offset, data in swap_bytes(system.name, values):
                        fh.seek(offset)
                        fh.write(data)
            elif vol.fstype is None:
                random_piece(run, piece_path, f"{disk.name}-p{part.number}", size)
            else:
                continue  # made in the appliance
            if piece_path.stat().st_size != size:
                raise base.BuildError(f"{piece}: size changed")
            place(run, piece, raw, part.start_mib)
    # LUKS containers: formatted here, filled in the appliance.
    (run.cwd / "work/passphrase").write_text(values["LUKS_PASSPHRASE"])
    (run.cwd / LUKS_KEY_FILE).write_text(values["LUKS_KEY_FILE"])
    os.chmod(run.cwd / LUKS_KEY_FILE, 0o600)
    for number, version, name, uuid_ in LUKS_CONTAINERS:
        part = LUKS_DISK.part(number)
        piece = f"work/luks-p{number}.img"
        run("truncate", "-s", f"{part.size_mib}M", piece)
        luks_format(run, piece, version, uuid_, name)
        place(run, piece, f"work/{LUKS_DISK.name}.raw", part.start_mib)


# --------------------------------------------------------------------------
# The appliance
# --------------------------------------------------------------------------

_kvm_failed = False
#: Called with a line per finished build phase (the CLI prints them on stderr).
progress: list[Callable[[str], None]] = []


class Phases:
    """Time the build's phases into the log (and ``progress``)."""

    def __init__(self, log: list[str]) -> None:
        """Start the clock."""
        self.log = log
        self.started = self.last = time.monotonic()

    def done(self, what: str) -> None:
        """Record that ``what`` just finished."""
        now = time.monotonic()
        line = f"{what}: {now - self.last:.1f} s (total {now - self.started:.1f} s)"
        self.last = now
        self.log.append(f"# {line}")
        for callback in progress:
            callback(line)


def _shown(value: Any) -> str:
    if isinstance(value, bytes):
        return f"<{len(value)} bytes>"
    if isinstance(value, list):
        return " ".join(_shown(v) for v in value)
    text = str(value)
    return repr(text) if not text or " " in text else text


# A launch under the default accelerator (KVM) that is not up by then is stopped and TCG is
# tried: on some hosts qemu hangs under KVM instead of failing (imgscan's reader does the same).
KVM_LAUNCH_TIMEOUT = 60.0


def _qemu_children() -> set[int]:
    """Pids of this process's children running qemu (libguestfs starts qemu as a child)."""
    found: set[int] = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            if ppid == os.getpid() and os.readlink(entry / "exe").rsplit("/", 1)[-1].startswith(
                "qemu"
            ):
                found.add(int(entry.name))
        except (OSError, ValueError, IndexError):
            continue
    return found


def _launch(g: Any, timeout: float | None) -> None:
    """``g.launch()``; with ``timeout``, the qemu it started is killed if the appliance is not up
    by then, which makes the launch fail (RuntimeError)."""
    if timeout is None:
        g.launch()
        return
    before = _qemu_children()
    done = threading.Event()

    def watchdog() -> None:
        if not done.wait(timeout):
            for pid in _qemu_children() - before:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)

    threading.Thread(target=watchdog, name="launch-watchdog", daemon=True).start()
    try:
        g.launch()
    finally:
        done.set()


class Appliance:
    """A launched libguestfs handle whose calls are recorded in the build log."""

    def __init__(
        self, log: list[str], drives: list[tuple[Path, str, bool]], shown_from: Path
    ) -> None:
        """Launch with ``drives`` [(path, format, readonly)]: KVM first, TCG if that fails."""
        global _kvm_failed
        import guestfs  # Debian's python3-guestfs (not on PyPI)

        self.log = log
        self.shown_from = f"{shown_from}/"
        forced = "force_tcg" in os.environ.get("LIBGUESTFS_BACKEND_SETTINGS", "").split(":")
        attempts = [True] if forced or _kvm_failed else [False, True]
        error: Exception | None = None
        for tcg in attempts:
            g = guestfs.GuestFS(python_return_dict=True)
            if tcg:
                g.set_backend_settings([*g.get_backend_settings(), "force_tcg"])
            for path, fmt, readonly in drives:
                g.add_drive_opts(str(path), format=fmt, readonly=readonly)
            started = time.monotonic()
            try:
                _launch(g, None if tcg else KVM_LAUNCH_TIMEOUT)
            except RuntimeError as exc:
                error = exc
                g.close()
                _kvm_failed = True
                continue
            for path, fmt, readonly in drives:
                shown = os.path.relpath(path, shown_from)
                self.log.append(f"guestfs: add_drive {shown} format:{fmt} readonly:{readonly}")
            accel = "TCG (force_tcg)" if tcg else "the default accelerator"
            self.log.append(f"guestfs: launch  # under {accel}, {time.monotonic() - started:.1f} s")
            self.g: Any = g
            return
        raise base.BuildError(f"libguestfs launch failed: {error}")

    def __call__(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """Call ``g.<name>`` and log it guestfish-style."""
        shown = " ".join(_shown(a) for a in args)
        shown += "".join(f" {k}:{_shown(v)}" for k, v in kwargs.items())
        shown = shown.replace(self.shown_from, "")
        self.log.append(f"guestfs: {name} {shown}".rstrip())
        started = time.monotonic()
        try:
            return getattr(self.g, name)(*args, **kwargs)
        except RuntimeError as exc:
            raise base.BuildError(f"guestfs {name} {shown}: {exc}") from None
        finally:
            if time.monotonic() - started > 1:
                self.log[-1] += f"  # {time.monotonic() - started:.1f} s"

    def close(self) -> None:
        """Shut the appliance down (writes are flushed first)."""
        self.g.shutdown()
        self.g.close()


#: The systems each appliance handles (two appliances run side by side: the machines here
#: have 2 cores, and under TCG libguestfs spends ~0.4 s on every external command, so
#: ``inspect_os`` alone takes 30-60 s). mbr-logical comes first in its group: its fstab names
#: /dev/sda5, which libguestfs takes literally; it is only read (the host made it).
GROUPS: tuple[tuple[str, ...], ...] = ((M, L, T), (K, Z))
#: Files of each system's disks among the finished images (two-disk: inside the OVA).
FINAL_DRIVES: dict[str, tuple[tuple[str, str], ...]] = {
    M: (("mbr-logical.raw", "raw"),),
    L: (("lvm-server.qcow2", "qcow2"),),
    K: (("luks.qcow2", "qcow2"),),
    Z: (("fs-zoo.qcow2", "qcow2"),),
    T: (("two-disk-disk1.vmdk", "vmdk"), ("two-disk-disk2.vmdk", "vmdk")),
}


def drive_offsets(order: tuple[str, ...]) -> dict[str, int]:
    """System -> index of its first disk among the appliance's drives."""
    offsets: dict[str, int] = {}
    index = 0
    for name in order:
        offsets[name] = index
        index += len(SYSTEMS[name].disks)
    return offsets


def to_appliance(device: str, first: int) -> str:
    """A system's ``/dev/sdXN`` as the appliance names it when its disks start at ``first``."""
    match = re.fullmatch(r"/dev/sd([a-z])(\d*)", device)
    if not match:
        return device
    return f"/dev/sd{chr(ord(match.group(1)) + first)}{match.group(2)}"


def mkfs_xfs(app: Appliance, vol: Vol, device: str | None = None) -> None:
    """mkfs.xfs with a fixed UUID and a small log.

    mkfs.xfs >= 5.19 refuses file systems under 300 MB and logs under 64 MB (and writes every
    log block: 64 MiB of data in every image) unless it runs under fstests; these variables are
    how fstests makes small ones. The guestfs ``mkfs`` call has no way to pass them, hence the
    appliance shell (``debug sh``).
    """
    dev = device or vol.device
    env = f"TEST_DIR=/tmp TEST_DEV={dev} QA_CHECK_FS=xfs"
    cmd = f"{env} mkfs.xfs -f -q -L {vol.label} -m uuid={vol.uuid} {dev} && echo mkfs-ok"
    out = app("debug", "sh", [cmd])
    if "mkfs-ok" not in out:
        raise base.BuildError(f"mkfs.xfs {dev}: {out}")


def tar_in(app: Appliance, system: str, tree: Path, prefix: str, target: str, work: Path) -> None:
    """``tar_in`` the rendered ``tree`` at ``target`` (owners as on the guest)."""
    tar = work / "tars" / f"{system}-{tree.name}.tar"
    tar.parent.mkdir(parents=True, exist_ok=True)
    make_tar(system, tree, prefix, tar)
    app("tar_in", str(tar), target)


def write_files(app: Appliance, tree: Path) -> None:
    """Copy ``tree`` into the mounted file system file by file (ntfs, exfat: no chown)."""
    for path in sorted(tree.rglob("*")):
        rel = "/" + path.relative_to(tree).as_posix()
        if path.is_dir():
            app("mkdir_p", rel)
        else:
            app("write", rel, path.read_bytes())


def build_lvm_server(
    app: Appliance, first: int, values: dict[str, str], trees: dict[str, Path], work: Path
) -> None:
    """PV, VG vg0, LVs (the gap LV is removed so var and swap sit past 2 GiB), file systems."""
    pv = to_appliance("/dev/sda2", first)
    app("pvcreate", pv)
    app("vgcreate", "vg0", [pv])
    for lv, mbytes in LVM_LVS:
        app("lvcreate", lv, "vg0", mbytes)
    app("lvremove", "/dev/vg0/gap")
    vols = {vol.device: vol for vol in LVM_SERVER.volumes}
    root, home, var, swap = (vols[f"/dev/vg0/{lv}"] for lv in ("root", "home", "var", "swap"))
    for vol in (root, var):
        app("mke2fs", vol.device, fstype="ext4", blocksize=4096, label=vol.label, uuid=vol.uuid)
    mkfs_xfs(app, home)
    app("mkswap", swap.device, label=swap.label, uuid=swap.uuid)
    for offset, data in swap_bytes(L, values):
        app("pwrite_device", swap.device, data, offset)
    for vol in (root, home, var):
        assert vol.tree is not None and vol.mountpoint is not None
        app("mount", vol.device, vol.mountpoint)
        tar_in(app, L, trees[vol.tree], guest_prefix(vol), vol.mountpoint, work)
    app("umount_all")


def build_luks(
    app: Appliance, first: int, values: dict[str, str], trees: dict[str, Path], work: Path
) -> None:
    """Open each container (p2 with the passphrase, p3 with the key file), mke2fs, fill."""
    keys = (values["LUKS_PASSPHRASE"], values["LUKS_KEY_FILE"])
    for (number, _, name, _), key in zip(LUKS_CONTAINERS, keys, strict=True):
        vol = next(v for v in LUKS.volumes if v.parent == f"/dev/sda{number}")
        assert vol.tree is not None
        app("cryptsetup_open", to_appliance(f"/dev/sda{number}", first), key, name)
        # lazyjournalinit: a zeroed journal would be 4 MiB of ciphertext in the image.
        app(
            "mke2fs",
            vol.device,
            fstype="ext4",
            blocksize=4096,
            label=vol.label,
            uuid=vol.uuid,
            lazyjournalinit=True,
        )
        app("mount", vol.device, "/")
        tar_in(app, K, trees[vol.tree], guest_prefix(vol), "/", work)
        app("umount_all")
        app("cryptsetup_close", vol.device)


def build_fs_zoo(
    app: Appliance, first: int, values: dict[str, str], trees: dict[str, Path], work: Path
) -> None:
    """xfs; btrfs with subvolumes @ and @data (default @); ntfs with a stream; exfat files."""
    vols = {vol.device: vol for vol in FS_ZOO.volumes}
    xfs, btrfs, ntfs, exfat = (vols[f"/dev/sda{n}"] for n in (1, 2, 3, 5))
    dev = to_appliance(xfs.device, first)
    mkfs_xfs(app, xfs, dev)
    app("mount", dev, "/")
    assert xfs.tree is not None
    tar_in(app, Z, trees[xfs.tree], "", "/", work)
    app("umount_all")
    dev = to_appliance(btrfs.device, first)
    app("mkfs_btrfs", [dev], label=btrfs.label)
    app("mount", dev, "/")
    for sub, tree in btrfs.subvolumes:
        app("btrfs_subvolume_create", f"/{sub}")
        tar_in(app, Z, trees[tree], "", f"/{sub}", work)
    ids = {
        s["btrfssubvolume_path"]: s["btrfssubvolume_id"] for s in app("btrfs_subvolume_list", "/")
    }
    app("btrfs_subvolume_set_default", ids["@"], "/")
    app("umount_all")
    dev = to_appliance(ntfs.device, first)
    app("mkfs", "ntfs", dev, label=ntfs.label)
    app("mount", dev, "/")
    assert ntfs.tree is not None and exfat.tree is not None
    write_files(app, trees[ntfs.tree])
    for _, path, stream, tree in ZOO_STREAMS:
        data = trees[tree].read_bytes()
        # ntfs-3g's default streams_interface=xattr: user.<name> is the named stream <name>.
        app("setxattr", f"user.{stream}", data.decode(), len(data), f"/{path}")
    app("umount_all")
    app("mount", to_appliance(exfat.device, first), "/")
    write_files(app, trees[exfat.tree])
    app("umount_all")


def build_two_disk(
    app: Appliance, first: int, values: dict[str, str], trees: dict[str, Path], work: Path
) -> None:
    """One VG over a PV on each disk, one LV spanning both, WAL preallocated first."""
    (vg, pv_names, ((lv, mbytes),)) = TWO_DISK.lvm[0]
    pvs = [to_appliance(d, first) for d in pv_names]
    for dev in pvs:
        app("pvcreate", dev)
    app("vgcreate", vg, pvs)
    app("lvcreate", lv, vg, mbytes)
    vol = TWO_DISK.volumes[1]
    assert vol.tree is not None
    app("mke2fs", vol.device, fstype="ext4", blocksize=4096, label=vol.label, uuid=vol.uuid)
    app("mount", vol.device, "/")
    for path, size in TWO_PREALLOC:
        app("mkdir_p", "/" + path.rsplit("/", 1)[0])
        app("fallocate64", "/" + path, size)
    tar_in(app, T, trees[vol.tree], guest_prefix(vol), "/", work)
    app("umount_all")


BUILDERS: dict[str, Callable[[Appliance, int, dict[str, str], dict[str, Path], Path], None]] = {
    L: build_lvm_server,
    K: build_luks,
    Z: build_fs_zoo,
    T: build_two_disk,
}


# --------------------------------------------------------------------------
# What is where: manifest entries from the rendered trees and swap bytes
# --------------------------------------------------------------------------


def prefixes(system: System) -> list[tuple[str, Vol, str | None]]:
    """(guest path prefix, volume, tree) for every volume, longest prefix first."""
    out: list[tuple[str, Vol, str | None]] = []
    for vol in system.volumes:
        if vol.mountpoint is None:
            continue
        out.append((vol.mountpoint.rstrip("/") or "/", vol, vol.tree))
        for sub, tree in vol.subvolumes:
            out.append((f"{vol.mountpoint}/{sub}", vol, tree))
    return sorted(out, key=lambda item: -len(item[0]))


def locate_path(system: System, path: str) -> tuple[Vol, str | None, str]:
    """The volume holding guest ``path``, the tree it comes from and the path inside it."""
    for prefix, vol, tree in prefixes(system):
        if prefix == "/" or path == prefix or path.startswith(prefix + "/"):
            inner = path[len(prefix) :].lstrip("/") if prefix != "/" else path.lstrip("/")
            return vol, tree, inner
    raise base.BuildError(f"{system.name}: no volume holds {path}")


def stream_tree(system: System, vol: Vol, inner: str) -> str | None:
    """Template tree of the ntfs stream ``file:stream`` (None if ``inner`` names no stream)."""
    for vol_dev, path, stream, tree in ZOO_STREAMS:
        if system.name == Z and vol.device == vol_dev and inner == f"{path}:{stream}":
            return tree
    return None


def content(
    system: System, path: str, trees: dict[str, Path], swaps: dict[tuple[str, str], bytes]
) -> bytes:
    """What the guest holds at ``path`` (a file, an ntfs stream, a swap area's bytes)."""
    if (system.name, path) in swaps:
        return swaps[(system.name, path)]
    vol, tree, inner = locate_path(system, path)
    stream = stream_tree(system, vol, inner)
    if stream is not None:
        return trees[stream].read_bytes()
    if tree is None or not (trees[tree] / inner).is_file():
        raise base.BuildError(f"{system.name}: {path} is not in a rendered tree")
    return (trees[tree] / inner).read_bytes()


def describe(
    system: System,
    values: dict[str, str],
    trees: dict[str, Path],
    swaps: dict[tuple[str, str], bytes],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Manifest ``planted`` and ``decoys`` of ``system``, located in what was rendered."""
    return base.manifest_entries(
        [p for p in PLANTED if p.disk == system.name],
        [d for d in DECOYS if d.disk == system.name],
        values,
        lambda path: content(system, path, trees, swaps),
        {"LVM_SWAP_AWS_KEY": SWAP_BOUNDARY},
        system.name,
    )


# --------------------------------------------------------------------------
# Container formats and OVA
# --------------------------------------------------------------------------


def qemu_format(fmt: str) -> str:
    """qemu's driver name for a manifest format."""
    return {"vhd": "vpc"}.get(fmt, fmt)


def convert(run: base.Runner, raw: str, target: str, options: tuple[str, ...], fmt: str) -> None:
    """``qemu-img convert`` and ``qemu-img compare`` with the raw source."""
    run("qemu-img", "convert", "-f", "raw", *options, raw, target)
    run("qemu-img", "compare", "-q", "-f", "raw", "-F", qemu_format(fmt), raw, target)


def check_info(run: base.Runner, img: Image, size: int) -> None:
    """``qemu-img info``: the format, subformat and exact virtual size qemu sees."""
    info = json.loads(
        run("qemu-img", "info", "--output=json", "-f", qemu_format(img.format), img.file).stdout
    )
    problems = []
    if info.get("virtual-size") != size:
        problems.append(f"virtual size {info.get('virtual-size')} != {size}")
    data = info.get("format-specific", {}).get("data", {})
    if img.format == "qcow2":
        compat = "0.10" if img.subformat == "v2" else "1.1"
        if data.get("compat") != compat:
            problems.append(f"compat {data.get('compat')}")
        if img.compression == "zstd" and data.get("compression-type") != "zstd":
            problems.append(f"compression {data.get('compression-type')}")
    if img.format == "vmdk" and data.get("create-type") != img.subformat:
        problems.append(f"create-type {data.get('create-type')}")
    for extra in img.extents:
        if not (run.cwd / extra).is_file():
            problems.append(f"extent file {extra} missing")
    if img.format == "vmdk" and len(data.get("extents", [])) != max(1, len(img.extents)):
        problems.append(f"{len(data.get('extents', []))} extents")
    if problems:
        raise base.BuildError(f"{img.file}: " + "; ".join(problems))


OVF_TEMPLATE = """\
<?xml version="1.0" encoding="UTF-8"?>
<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1"
    xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1"
    xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData"
    xmlns:vssd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData"
    xmlns:vmw="http://www.vmware.com/schema/ovf"
    xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
  <References>
{files}
  </References>
  <DiskSection>
    <Info>Virtual disk information</Info>
{disks}
  </DiskSection>
  <NetworkSection>
    <Info>The list of logical networks</Info>
    <Network ovf:name="VM Network">
      <Description>The VM Network network</Description>
    </Network>
  </NetworkSection>
  <VirtualSystem ovf:id="{vm}">
    <Info>A virtual machine</Info>
    <Name>{vm}</Name>
    <OperatingSystemSection ovf:id="96" vmw:osType="{os_type}">
      <Info>The kind of installed guest operating system</Info>
    </OperatingSystemSection>
    <VirtualHardwareSection>
      <Info>Virtual hardware requirements</Info>
      <System>
        <vssd:ElementName>Virtual Hardware Family</vssd:ElementName>
        <vssd:InstanceID>0</vssd:InstanceID>
        <vssd:VirtualSystemIdentifier>{vm}</vssd:VirtualSystemIdentifier>
        <vssd:VirtualSystemType>vmx-19</vssd:VirtualSystemType>
      </System>
      <Item>
        <rasd:AllocationUnits>hertz * 10^6</rasd:AllocationUnits>
        <rasd:ElementName>2 virtual CPU(s)</rasd:ElementName>
        <rasd:InstanceID>1</rasd:InstanceID>
        <rasd:ResourceType>3</rasd:ResourceType>
        <rasd:VirtualQuantity>2</rasd:VirtualQuantity>
      </Item>
      <Item>
        <rasd:AllocationUnits>byte * 2^20</rasd:AllocationUnits>
        <rasd:ElementName>2048MB of memory</rasd:ElementName>
        <rasd:InstanceID>2</rasd:InstanceID>
        <rasd:ResourceType>4</rasd:ResourceType>
        <rasd:VirtualQuantity>2048</rasd:VirtualQuantity>
      </Item>
      <Item>
        <rasd:Address>0</rasd:Address>
        <rasd:ElementName>SCSI controller 0</rasd:ElementName>
        <rasd:InstanceID>3</rasd:InstanceID>
        <rasd:ResourceSubType>VirtualSCSI</rasd:ResourceSubType>
        <rasd:ResourceType>6</rasd:ResourceType>
      </Item>
{disk_items}
    </VirtualHardwareSection>
  </VirtualSystem>
</Envelope>
"""
VMDK_STREAM_URI = "http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"


def ovf_descriptor(vm: str, os_type: str, disks: list[tuple[str, int, int]]) -> str:
    """An OVF 1.0 descriptor for ``disks`` [(file name, file size, capacity in bytes)]."""
    files, disk_lines, items = [], [], []
    for i, (href, size, capacity) in enumerate(disks, 1):
        files.append(f'    <File ovf:href="{href}" ovf:id="file{i}" ovf:size="{size}"/>')
        disk_lines.append(
            f'    <Disk ovf:capacity="{capacity}" ovf:capacityAllocationUnits="byte" '
            f'ovf:diskId="vmdisk{i}" ovf:fileRef="file{i}" ovf:format="{VMDK_STREAM_URI}"/>'
        )
        items.append(
            "      <Item>\n"
            f"        <rasd:AddressOnParent>{i - 1}</rasd:AddressOnParent>\n"
            f"        <rasd:ElementName>Hard disk {i}</rasd:ElementName>\n"
            f"        <rasd:HostResource>ovf:/disk/vmdisk{i}</rasd:HostResource>\n"
            f"        <rasd:InstanceID>{3 + i}</rasd:InstanceID>\n"
            "        <rasd:Parent>3</rasd:Parent>\n"
            "        <rasd:ResourceType>17</rasd:ResourceType>\n"
            "      </Item>"
        )
    return OVF_TEMPLATE.format(
        files="\n".join(files),
        disks="\n".join(disk_lines),
        disk_items="\n".join(items),
        vm=vm,
        os_type=os_type,
    )


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(MIB), b""):
            digest.update(block)
    return digest.hexdigest()


def make_ova(run: base.Runner, img: Image, disks: list[tuple[Path, int]]) -> None:
    """USTAR archive: the .ovf first, then the .mf, then the disks in OVF order."""
    stem = img.file.removesuffix(".ova")
    vm, os_type = OVA_SYSTEMS[img.system]
    members = list(zip(img.ova_disks, disks, strict=True))
    ovf = ovf_descriptor(
        vm, os_type, [(name, path.stat().st_size, size) for name, (path, size) in members]
    ).encode()
    mf = f"SHA256({stem}.ovf)= {hashlib.sha256(ovf).hexdigest()}\n"
    mf += "".join(f"SHA256({name})= {sha256_file(path)}\n" for name, (path, _) in members)
    tmp = run.cwd / (img.file + ".tmp")
    with tarfile.open(tmp, "w", format=tarfile.USTAR_FORMAT) as tf:
        for name, data in ((f"{stem}.ovf", ovf), (f"{stem}.mf", mf.encode())):
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), FIXED_MTIME, 0o644
            tf.addfile(info, io.BytesIO(data))
        for name, (path, _) in members:
            info = tf.gettarinfo(str(path), name)
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            info.mtime, info.mode = FIXED_MTIME, 0o644
            with path.open("rb") as fh:
                tf.addfile(info, fh)
    os.replace(tmp, run.cwd / img.file)
    run.log.append(f"tar -cf {img.file} {stem}.ovf {stem}.mf " + " ".join(img.ova_disks))
    # Read it back: member order, the manifest digests, the disks byte for byte.
    with tarfile.open(run.cwd / img.file) as tf:
        names = tf.getnames()
        if names != [f"{stem}.ovf", f"{stem}.mf", *img.ova_disks]:
            raise base.BuildError(f"{img.file}: members {names}")
        for name, (path, _) in members:
            member = tf.extractfile(name)
            assert member is not None
            if hashlib.sha256(member.read()).hexdigest() != sha256_file(path):
                raise base.BuildError(f"{img.file}: {name} differs from {path.name}")


# --------------------------------------------------------------------------
# Verification: a read-only appliance over the finished images
# --------------------------------------------------------------------------


Expect = dict[str, tuple[dict[str, Any] | None, list[dict[str, Any]], list[dict[str, Any]]]]
Measured = dict[tuple[str, str], tuple[str, str]]


def fstab_entries(root: Path) -> list[tuple[str, str, str]]:
    """(spec, mount point, type) of the rendered /etc/fstab, devices only."""
    entries = []
    for line in (root / "etc/fstab").read_text().splitlines():
        fields = line.split()
        if len(fields) < 3 or fields[0].startswith("#"):
            continue
        if fields[0].startswith(("/dev/sr", "tmpfs", "proc")):
            continue
        entries.append((fields[0], fields[1], fields[2]))
    return entries


def resolve_spec(system: System, spec: str) -> Vol | None:
    """The volume an fstab ``spec`` names, by this builder's own facts."""
    key, _, value = spec.partition("=")
    for vol in system.volumes:
        part = system.disks[vol.part[0]].part_uuid(vol.part[1]) if vol.part else None
        if (
            (key == "UUID" and vol.uuid and vol.uuid.lower() == value.lower())
            or (key == "LABEL" and vol.label == value)
            or (key == "PARTUUID" and part == value.lower())
            or spec == vol.device
            or spec == "/dev/mapper/" + vol.device.removeprefix("/dev/").replace("/", "-")
        ):
            return vol
    return None


def check_fstab(system: System, root: Path) -> tuple[dict[str, str], dict[str, str]]:
    """Every fstab line must name the volume the manifest puts there.

    Returns the mount points libguestfs inspection should report (mount point -> device; it
    ignores PARTUUID=) and each volume's fstab spec (device -> spec).
    """
    want: dict[str, str] = {}
    specs: dict[str, str] = {}
    for spec, mountpoint, fstype in fstab_entries(root):
        vol = resolve_spec(system, spec)
        if vol is None:
            raise base.BuildError(f"{system.name}: fstab {spec} names no volume")
        expected = f"/@dev/{vol.device.removeprefix('/dev/')}" if fstype == "swap" else mountpoint
        if vol.mountpoint != expected or (fstype != "swap") == (vol.fstype == "swap"):
            raise base.BuildError(f"{system.name}: fstab {spec} {mountpoint} != {vol}")
        specs[vol.device] = spec
        if fstype != "swap" and not spec.startswith("PARTUUID="):
            want[mountpoint] = vol.device
    return want, specs


def from_appliance(device: str, offsets: dict[str, int]) -> str:
    """The system an appliance device name belongs to."""
    match = re.fullmatch(r"/dev/sd([a-z])\d*", device)
    if match:
        index = ord(match.group(1)) - ord("a")
        return max((first, name) for name, first in offsets.items() if first <= index)[1]
    for system in SYSTEMS.values():
        if any(vol.device == device for vol in system.volumes):
            return system.name
    raise base.BuildError(f"verify: cannot place {device}")


def verify_checks(
    app: Appliance,
    names: tuple[str, ...],
    keys: tuple[str, str],
    expect: Expect,
    mounts: dict[str, dict[str, str]],
) -> tuple[list[str], Measured]:
    """Check the systems ``names`` (disks in that order) in a launched appliance.

    LUKS containers are opened with ``keys`` (p2, p3), LVs activated; then every volume's
    type, UUID, label and size, the VGs, ``inspect_os`` (type, distro, version, hostname and
    the fstab as libguestfs resolves it) and every planted secret and decoy at its offset.
    Returns the errors and (system, device) -> (uuid, label) as read.
    """
    offsets = drive_offsets(names)
    errors: list[str] = []
    measured: Measured = {}
    if K in names:
        for (number, _, name, uuid_), key in zip(LUKS_CONTAINERS, keys, strict=True):
            dev = to_appliance(f"/dev/sda{number}", offsets[K])
            if app("vfs_type", dev) != "crypto_LUKS" or app("vfs_uuid", dev) != uuid_:
                errors.append(f"luks: {dev} is not the LUKS container {uuid_}")
            app("cryptsetup_open", dev, key, name, readonly=True)
    app("lvm_scan", True)
    for name in names:
        system, first = SYSTEMS[name], offsets[name]
        for vol in system.volumes:
            dev = to_appliance(vol.device, first)
            got_type = app("vfs_type", dev)
            if got_type != (vol.fstype or ""):
                errors.append(f"{name}: {vol.device} is {got_type!r}, not {vol.fstype}")
                continue
            if vol.fstype is None:
                continue
            got_uuid, got_label = app("vfs_uuid", dev), app("vfs_label", dev)
            measured[(name, vol.device)] = (got_uuid, got_label)
            if vol.uuid is not None and got_uuid.lower() != vol.uuid.lower():
                errors.append(f"{name}: {vol.device} uuid {got_uuid} != {vol.uuid}")
            if (vol.label or "") != got_label:
                errors.append(f"{name}: {vol.device} label {got_label!r}")
            if vol.part is None and app("blockdev_getsize64", dev) != vol.size_mib * MIB:
                errors.append(f"{name}: {vol.device} is not {vol.size_mib} MiB")
        for vg, pvs, lvs in system.lvm:
            if len(app("vgpvuuids", vg)) != len(pvs):
                errors.append(f"{vg}: not {len(pvs)} PVs")
            want_lvs = sorted(f"/dev/{vg}/{lv}" for lv, _ in lvs)
            got_lvs = sorted(lv for lv in app("lvs") if lv.startswith(f"/dev/{vg}/"))
            if got_lvs != want_lvs:
                errors.append(f"{vg}: LVs {got_lvs} != {want_lvs}")

    roots = {from_appliance(r, offsets): r for r in app("inspect_os")}
    for name in names:
        os_want, first = expect[name][0], offsets[name]
        root = roots.get(name)
        if os_want is None or root is None:
            if (os_want is None) != (root is None):
                errors.append(f"{name}: inspection found root {root}, expected {os_want}")
            continue
        version = str(app("inspect_get_major_version", root))
        if "." in (os_want["version"] or ""):
            minor = app("inspect_get_minor_version", root)
            version += f".{minor:02d}" if os_want["distro"] == "ubuntu" else f".{minor}"
        got = (
            app("inspect_get_type", root),
            app("inspect_get_distro", root),
            version,
            app("inspect_get_hostname", root),
        )
        want = ("linux", os_want["distro"], os_want["version"], os_want["hostname"])
        if got != want:
            errors.append(f"{name}: inspection says {got}, not {want}")
        got_mounts = app("inspect_get_mountpoints", root)
        want_mounts = {mp: to_appliance(dev, first) for mp, dev in mounts[name].items()}
        if got_mounts != want_mounts:
            errors.append(f"{name}: fstab resolves to {got_mounts}, not {want_mounts}")

    for name in names:
        system, first = SYSTEMS[name], offsets[name]
        _, planted, decoys = expect[name]
        items = [(p["path"], p["secret"], p["offset"]) for p in planted]
        items += [(d["path"], d["value"], d["offset"]) for d in decoys]
        by_volume: dict[str, list[tuple[str, bytes, int, str | None]]] = {}
        for path, value, offset in items:
            vol, _, inner = locate_path(system, path)
            assert vol.mountpoint is not None
            stream = None
            if stream_tree(system, vol, inner) is not None:
                stream = inner.partition(":")[2]
            # The path inside the file system (btrfs: from the top level, subvolid 5).
            inner = path.removeprefix(vol.mountpoint.rstrip("/")).lstrip("/")
            inner = inner.partition(":")[0] if stream else inner
            by_volume.setdefault(vol.device, []).append((inner, value.encode(), offset, stream))
        for device, entries in by_volume.items():
            vol = next(v for v in system.volumes if v.device == device)
            dev = to_appliance(device, first)
            if vol.fstype == "swap":
                for _, value, offset, _ in entries:
                    if app("pread_device", dev, len(value), offset) != value:
                        errors.append(f"{name}: {device} lacks its value at {offset}")
                continue
            app("mount_options", "ro,subvolid=5" if vol.fstype == "btrfs" else "ro", dev, "/")
            for inner, value, offset, stream in entries:
                if stream:
                    data = app("getxattr", "/" + inner, "user." + stream)
                else:
                    data = app("read_file", "/" + inner)
                if data[offset : offset + len(value)] != value:
                    errors.append(f"{name}: {device} /{inner} lacks its value at {offset}")
            if name == L and device == "/dev/vg0/home":
                owner = app("lstatns", "/alice/.pgpass")["st_uid"]
                if owner != 1000:
                    errors.append(f"lvm-server: /home/alice/.pgpass belongs to uid {owner}")
            if vol.fstype == "btrfs":
                ids = {
                    s["btrfssubvolume_path"]: s["btrfssubvolume_id"]
                    for s in app("btrfs_subvolume_list", "/")
                }
                if sorted(ids) != sorted(s for s, _ in vol.subvolumes):
                    errors.append(f"{name}: btrfs subvolumes {sorted(ids)}")
                if app("btrfs_subvolume_get_default", "/") != ids.get("@"):
                    errors.append(f"{name}: btrfs default subvolume is not @")
            app("umount_all")
    return errors, measured


def describe_systems(
    names: tuple[str, ...],
    values: dict[str, str],
    trees: dict[str, dict[str, Path]],
    swaps: dict[tuple[str, str], bytes],
) -> tuple[Expect, dict[str, dict[str, str]], dict[str, dict[str, str]]]:
    """(os, planted, decoys), the libguestfs mount points and the fstab specs per system."""
    expect: Expect = {}
    mounts: dict[str, dict[str, str]] = {}
    specs: dict[str, dict[str, str]] = {}
    for name in names:
        system = SYSTEMS[name]
        root = next((v for v in system.volumes if v.mountpoint == "/"), None)
        os_ = None
        mounts[name], specs[name] = {}, {}
        if root and root.tree:
            os_ = os_info(trees[name][root.tree])
            mounts[name], specs[name] = check_fstab(system, trees[name][root.tree])
        planted, decoys = describe(system, values, trees[name], swaps)
        expect[name] = (os_, planted, decoys)
    return expect, mounts, specs


@dataclass
class GroupResult:
    """What one appliance group found out."""

    expect: Expect
    mounts: dict[str, dict[str, str]]
    specs: dict[str, dict[str, str]]
    measured: Measured


def build_group(
    names: tuple[str, ...],
    stage: Path,
    values: dict[str, str],
    trees: dict[str, dict[str, Path]],
    log: list[str],
) -> GroupResult:
    """One appliance: build the systems ``names``, flush, then verify them in place.

    The checks read the raw disks after ``sync`` and ``drop_caches``; ``qemu-img compare``
    later ties every finished image to these raw disks byte for byte.
    """
    work = stage / "work"
    drives = [
        (stage / "mbr-logical.raw", "raw", True)
        if name == M
        else (work / f"{disk.name}.raw", "raw", False)
        for name in names
        for disk in SYSTEMS[name].disks
    ]
    offsets = drive_offsets(names)
    app = Appliance(log, drives, stage)
    try:
        for name in names:
            if name in BUILDERS:
                BUILDERS[name](app, offsets[name], values, trees[name], work)
        app("sync")
        app("drop_caches", 3)
        swaps: dict[tuple[str, str], bytes] = {}
        if L in names:
            app("download", "/dev/vg0/swap", str(work / "lvm-swap.img"))
            swaps[(L, LVM_SWAP)] = (work / "lvm-swap.img").read_bytes()
        if M in names:
            with (stage / "mbr-logical.raw").open("rb") as fh:
                fh.seek(MBRL_DISK.part(6).start_mib * MIB)
                swaps[(M, MBRL_SWAP)] = fh.read(MBRL_DISK.part(6).size_mib * MIB)
        expect, mounts, specs = describe_systems(names, values, trees, swaps)
        keys = (values["LUKS_KEY_FILE"], values["LUKS_PASSPHRASE"])  # the build used the reverse
        errors, measured = verify_checks(app, names, keys, expect, mounts)
    finally:
        app.close()
    if errors:
        raise base.BuildError("verification failed:\n  " + "\n  ".join(errors))
    return GroupResult(expect, mounts, specs, measured)


def in_parallel(jobs: list[Callable[[list[str]], Any]], log: list[str]) -> list[Any]:
    """Run ``jobs`` (one per appliance) in threads; their logs are appended in order."""
    logs: list[list[str]] = [[] for _ in jobs]
    with ThreadPoolExecutor(len(jobs)) as pool:
        futures = [pool.submit(job, job_log) for job, job_log in zip(jobs, logs, strict=True)]
        try:
            return [f.result() for f in futures]
        finally:
            for job_log in logs:
                log.extend(job_log)


def verify_dir(directory: Path) -> None:
    """Check a finished build read-only against its own manifest.json.

    Opens the finished images (the two-disk OVA's disks extracted to a temporary directory)
    in two read-only appliances and runs :func:`verify_checks`; compares every copy with its
    source with ``qemu-img compare``; checks each volume UUID the manifest states.
    """
    images = {i["name"]: i for i in json.loads((directory / MANIFEST).read_text())["images"]}
    primary = {
        L: LVM_Q,
        M: "mbr-logical-raw",
        K: "luks-qcow2",
        Z: "fs-zoo-qcow2",
        T: "two-disk-ova",
    }
    expect: Expect = {}
    mounts: dict[str, dict[str, str]] = {}
    for name, image_name in primary.items():
        image = images[image_name]
        expect[name] = (image["os"], image["planted"], image["decoys"])
        mounts[name] = {
            v["mountpoint"]: v["device"]
            for v in image["volumes"]
            if v["mountpoint"]
            and not v["mountpoint"].startswith("/@dev")
            and not (v.get("fstab") or "").startswith("PARTUUID=")
        }
    luks = images["luks-qcow2"]["luks"]
    keys = ((directory / luks["key_file"]).read_text(), luks["passphrase"])
    with tempfile.TemporaryDirectory(prefix="imgscan-verify-") as tmp:
        run = base.Runner(Path(tmp))
        for image in images.values():
            if image["format"] == "ova":
                with tarfile.open(directory / image["file"]) as tf:
                    for disk in image["ova_disks"]:
                        member = tf.extractfile(disk)
                        assert member is not None
                        with (Path(tmp) / disk).open("wb") as out:
                            shutil.copyfileobj(member, out)
        where = {f: directory / f for drives in FINAL_DRIVES.values() for f, _ in drives}
        where.update({d: Path(tmp) / d for i in images.values() for d in i.get("ova_disks", [])})

        def group(names: tuple[str, ...]) -> Callable[[list[str]], tuple[list[str], Measured]]:
            def job(log: list[str]) -> tuple[list[str], Measured]:
                drives = [(where[f], fmt, True) for n in names for f, fmt in FINAL_DRIVES[n]]
                app = Appliance(log, drives, directory)
                try:
                    return verify_checks(app, names, keys, expect, mounts)
                finally:
                    app.close()

            return job

        results = in_parallel([group(names) for names in GROUPS], run.log)
        errors = [e for errs, _ in results for e in errs]
        measured = {k: v for _, m in results for k, v in m.items()}
        for name, image_name in primary.items():
            for vol in images[image_name]["volumes"]:
                got = measured.get((name, vol["device"]))
                if got and vol["uuid"] and got[0].lower() != vol["uuid"].lower():
                    errors.append(f"{image_name}: {vol['device']} uuid {got[0]} != {vol['uuid']}")
        for image in images.values():
            source = images.get(image["copy_of"] or "")
            if source is None:
                continue
            copy = image["file"]
            fmt = qemu_format(image["format"])
            if image["format"] == "ova":
                copy, fmt = str(where[image["ova_disks"][0]]), "vmdk"
            proc = run(
                "qemu-img",
                "compare",
                "-q",
                "-f",
                qemu_format(source["format"]),
                "-F",
                fmt,
                str(directory / source["file"]),
                str(directory / copy),
                ok=(0, 1),
            )
            if proc.returncode:
                errors.append(f"{image['name']}: differs from {source['name']}")
    if errors:
        raise base.BuildError("verification failed:\n  " + "\n  ".join(errors))


# --------------------------------------------------------------------------
# Manifest
# --------------------------------------------------------------------------


def volume_entry(
    system: System, vol: Vol, measured: Measured, specs: dict[str, dict[str, str]]
) -> dict[str, Any]:
    """The manifest description of one volume."""
    uuid_ = vol.uuid
    if uuid_ is None and (system.name, vol.device) in measured:
        uuid_ = measured[(system.name, vol.device)][0]
    entry: dict[str, Any] = {
        "device": vol.device,
        "fstype": vol.fstype,
        "mountpoint": vol.mountpoint,
        "status": vol.status,
        "label": vol.label,
        "uuid": uuid_,
        "offset": None,
        "size": vol.size_mib * MIB,
        "fstab": specs.get(system.name, {}).get(vol.device),
    }
    if vol.part is not None:
        disk = system.disks[vol.part[0]]
        entry["offset"] = disk.part(vol.part[1]).start_mib * MIB
    if vol.parent:
        entry["parent"] = vol.parent
        entry["encryption"] = vol.encryption
    if vol.subvolumes:
        entry["subvolumes"] = [sub for sub, _ in vol.subvolumes]
    return entry


def locked_volumes(measured: Measured, specs: dict[str, dict[str, str]]) -> list[dict[str, Any]]:
    """luks-locked: the root file system, and each LUKS partition listed as locked."""
    volumes = [volume_entry(LUKS, LUKS.volumes[0], measured, specs)]
    for number, version, name, uuid_ in LUKS_CONTAINERS:
        part = LUKS_DISK.part(number)
        volumes.append(
            {
                "device": f"/dev/sda{number}",
                "fstype": "crypto_LUKS",
                "mountpoint": None,
                "status": LOCKED_STATUS,
                "label": name if version == 2 else None,
                "uuid": uuid_,
                "offset": part.start_mib * MIB,
                "size": part.size_mib * MIB,
                "fstab": None,
                "encryption": f"luks{version}",
            }
        )
    return volumes


def luks_entry(values: dict[str, str]) -> dict[str, Any]:
    """How to unlock luks.qcow2 (both containers take the passphrase and the key file)."""
    return {
        "device": "/dev/sda2",
        "passphrase": values["LUKS_PASSPHRASE"],
        "key_file": LUKS_KEY_FILE,
        "containers": [
            {
                "device": f"/dev/sda{number}",
                "version": version,
                "uuid": uuid_,
                "name": name,
                "keyslots": {
                    "0": "passphrase, " + ("argon2id" if version == 2 else "pbkdf2"),
                    "1": "key file, pbkdf2",
                },
            }
            for number, version, name, uuid_ in LUKS_CONTAINERS
        ],
    }


def image_entry(
    img: Image,
    values: dict[str, str],
    descriptions: Expect,
    specs: dict[str, dict[str, str]],
    measured: Measured,
) -> dict[str, Any]:
    """One manifest image."""
    system = SYSTEMS[img.system]
    os_, planted, decoys = descriptions[img.system]
    disk = system.disks[0]
    entry: dict[str, Any] = {
        "name": img.name,
        "file": img.file,
        "format": img.format,
        "subformat": img.subformat,
        "copy_of": img.copy_of,
        "disk_size": disk.size_mib * MIB,
        "partition_table": disk.table,
        "os": os_,
        "coverage_complete": system.coverage_complete and not img.locked,
        "volumes": [volume_entry(system, vol, measured, specs) for vol in system.volumes],
        "planted": planted,
        "decoys": decoys,
    }
    if img.compression:
        entry["compression"] = img.compression
    if img.extents:
        entry["extent_files"] = list(img.extents)
    if img.ova_disks:
        entry["ova_disks"] = list(img.ova_disks)
    if len(system.disks) > 1:
        entry["disks"] = [
            {
                "device": f"/dev/sd{chr(ord('a') + i)}",
                "file": img.ova_disks[i] if img.ova_disks else None,
                "size": d.size_mib * MIB,
                "partition_table": d.table,
            }
            for i, d in enumerate(system.disks)
        ]
    if system.lvm:
        entry["lvm"] = [
            {
                "vg": vg,
                "pvs": list(pvs),
                "lvs": [
                    {"name": lv, "device": f"/dev/{vg}/{lv}", "size": mb * MIB} for lv, mb in lvs
                ],
            }
            for vg, pvs, lvs in system.lvm
        ]
    if img.system == K and not img.locked:
        entry["luks"] = luks_entry(values)
    if img.locked:
        inside = {v.device for v in LUKS.volumes if v.parent}
        entry["variant_of"] = "luks-qcow2"
        entry["volumes"] = locked_volumes(measured, specs)
        entry["luks"] = None
        entry["planted"] = [
            p for p in planted if locate_path(system, p["path"])[0].device not in inside
        ]
        entry["locked_planted"] = [
            p for p in planted if locate_path(system, p["path"])[0].device in inside
        ]
        entry["decoys"] = [
            d for d in decoys if locate_path(system, d["path"])[0].device not in inside
        ]
    return entry


# --------------------------------------------------------------------------
# Build, cache
# --------------------------------------------------------------------------


def check_span(run: base.Runner, values: dict[str, str]) -> None:
    """The files planted on the spanning LV must lie on the second disk's PV only."""
    one = (run.cwd / "work/two-disk-1.raw").read_bytes()
    two = (run.cwd / "work/two-disk-2.raw").read_bytes()
    for name in ("TWO_DATA_PASSWORD", "TWO_DATA_GITLAB_TOKEN"):
        secret = values[name].encode()
        if secret in one or secret not in two:
            raise base.BuildError(f"two-disk: {name} is not (only) on the second disk")


def build_into(stage: Path, key: str) -> None:
    """Build every image and the manifest into the empty directory ``stage``."""
    run = base.Runner(stage)
    try:
        build_steps(stage, key, run)
    finally:
        (stage / "commands.txt").write_text("\n".join(run.log) + "\n")


def build_steps(stage: Path, key: str, run: base.Runner) -> None:
    """The build proper (``run`` records every command)."""
    work = stage / "work"
    work.mkdir()
    phases = Phases(run.log)
    values = make_values()
    trees = {name: render_system(system, values, work) for name, system in SYSTEMS.items()}
    phases.done("trees rendered")
    host_disks(run, values, trees, work)
    os.replace(stage / "work/mbr-logical.raw", stage / "mbr-logical.raw")
    run.log.append("mv work/mbr-logical.raw mbr-logical.raw")
    phases.done("host: partition tables, ext/vfat/exfat/swap/LUKS headers")

    def group(names: tuple[str, ...]) -> Callable[[list[str]], GroupResult]:
        return lambda log: build_group(names, stage, values, trees, log)

    results: list[GroupResult] = in_parallel([group(names) for names in GROUPS], run.log)
    check_span(run, values)
    phases.done("appliances: LVM, xfs, btrfs, ntfs, exfat, LUKS contents; verification")
    expect: Expect = {k: v for r in results for k, v in r.expect.items()}
    specs = {k: v for r in results for k, v in r.specs.items()}
    measured = {k: v for r in results for k, v in r.measured.items()}

    # Container formats: each compared with the verified raw disk.
    lvm_size = LVM_DISK.size_mib * MIB
    for img in IMAGES:
        if img.convert:
            raw = f"work/{SYSTEMS[img.system].disks[0].name}.raw"
            convert(run, raw, img.file, img.convert, img.format)
            if img.system == L:
                check_info(run, img, lvm_size)
    two_vmdks = []
    for disk, member in zip(TWO_DISKS, IMAGES[-1].ova_disks, strict=True):
        convert(run, f"work/{disk.name}.raw", f"work/{member}", _vmdk("streamOptimized"), "vmdk")
        two_vmdks.append((work / member, disk.size_mib * MIB))
    for img in IMAGES:
        if img.format == "ova":
            disks = two_vmdks if img.system == T else [(stage / "lvm-server-stream.vmdk", lvm_size)]
            make_ova(run, img, disks)
    phases.done("qemu-img convert + compare, OVA")

    shutil.rmtree(work)
    images = [image_entry(img, values, expect, specs, measured) for img in IMAGES]
    manifest = {"version": MANIFEST_VERSION, "key": key, "images": images}
    tmp = stage / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    os.replace(tmp, stage / MANIFEST)


def source_key() -> str:
    """``rich-`` and 16 hex digits of sha256 over both builders and every tree file."""
    digest = hashlib.sha256()
    files = [HERE / "build.py", Path(__file__).resolve()]
    for tree_root in (base.TREES, RICH_TREES):
        files += sorted(
            (p for p in tree_root.rglob("*") if p.is_file() or p.is_symlink()),
            key=lambda p: p.relative_to(HERE).as_posix(),
        )
    for path in files:
        data = os.readlink(path).encode() if path.is_symlink() else path.read_bytes()
        digest.update(path.relative_to(HERE).as_posix().encode() + b"\0")
        digest.update(len(data).to_bytes(8, "big") + data)
    return KEY_PREFIX + digest.hexdigest()[:16]


def build_rich(out: Path | None = None, *, force: bool = False) -> Path:
    """Build the rich images (or reuse the cached build) and return their directory:
    ``out/rich-<key>/`` under build.py's cache root, built and cached the same way."""
    return base.cached(out, source_key(), build_into, force)


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="cache root (default: $IMGSCAN_TESTDATA_CACHE, $XDG_CACHE_HOME/imgscan/testdata "
        "or ~/.cache/imgscan/testdata)",
    )
    parser.add_argument("--force", action="store_true", help="rebuild even if cached")
    parser.add_argument(
        "--verify",
        type=Path,
        metavar="DIR",
        help="check a finished build read-only against its manifest instead of building",
    )
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    progress.append(lambda line: print(f"build_rich.py: {line}", file=sys.stderr, flush=True))
    started = time.monotonic()
    try:
        if args.verify:
            verify_dir(args.verify.resolve())
            print(f"build_rich.py: verified in {time.monotonic() - started:.1f}s", file=sys.stderr)
            print(args.verify.resolve())
            return 0
        result = build_rich(args.out, force=args.force)
    except base.BuildError as exc:
        print(f"build_rich.py: {exc}", file=sys.stderr)
        return 1
    print(f"build_rich.py: ready in {time.monotonic() - started:.1f}s", file=sys.stderr)
    print(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
