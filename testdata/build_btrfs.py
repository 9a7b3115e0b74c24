#!/usr/bin/env python3
"""Build the btrfs-root test image: a Linux root on btrfs subvolumes, as Fedora and openSUSE
install it.

A 160 MiB GPT disk: p1 an EFI system partition (FAT16, host-made, ``/boot/efi`` by its serial),
p2 btrfs (made in a libguestfs appliance) holding the subvolumes

* ``@`` mounted at ``/`` (fstab ``subvol=@``), with a nested subvolume ``@/var/lib/machines/dev``
  (as systemd-nspawn makes them: the guest sees it inside ``/`` without an fstab line);
* ``@home`` at ``/home`` (``subvol=/@home``: the leading slash is optional);
* ``@log`` at ``/var/log`` (``subvolid=<id>``: mounted by number, not by name);
* ``@snapshots`` that nothing mounts (a snapshot of an old /etc): reported under
  ``/@dev/sda2/@snapshots/…``.

fstab names the file system by its UUID, read back after ``mkfs`` (``mkfs_btrfs`` cannot set
one). The appliance checks the result with libguestfs' own inspection (root
``btrfsvol:/dev/sda2/@``, Fedora 39, the host name, ``/`` and ``/home`` mount points) and reads
every planted value back through the top-level subvolume. Output ``<cache>/btrfs-<key>/`` with
``btrfs-root.qcow2`` and ``manifest.json``, cached like the other builders'. Usage:
``python testdata/build_btrfs.py [--out DIR] [--force]``; tests call :func:`build_btrfs`.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from pathlib import Path
from typing import Any

import build as base
import build_rich as rich
import build_windows as small

TREE = base.HERE / "trees-btrfs"
KEY_PREFIX = "btrfs-"
SYSTEM = "btrfs-root"
MIB = base.MIB

DISK = rich.Disk(
    SYSTEM,
    "gpt",
    160,
    (
        rich.Part(1, 1, 16, rich.GPT_EFI, "EFI System Partition"),
        rich.Part(2, 17, 142, rich.GPT_LINUX, "root"),
    ),
)
EFI = rich.Vol(
    "/dev/sda1", "vfat", "/boot/efi", 16, "EFI", rich.fat_serial("btrfs-efi"), "efi", (0, 1)
)
# The top level itself is not mounted: what is not in a mounted subvolume is under /@dev/sda2.
BTRFS = rich.Vol("/dev/sda2", "btrfs", "/@dev/sda2", 142, "fedora", None, None, (0, 2))
#: (subvolume path from the top level, tree, guest mountpoint). Parents come before children.
SUBVOLUMES = (
    ("@", "root", "/"),
    ("@/var/lib/machines/dev", "machines-dev", "/var/lib/machines/dev"),
    ("@home", "home", "/home"),
    ("@log", "log", "/var/log"),
    ("@snapshots", "snapshot", None),
)
SNAPSHOT_DIR = "@snapshots/1/snapshot"  # the tree sits below the subvolume, as snapper's does

PLANTED = (
    base.Plant(SYSTEM, "/etc/myapp/app.conf", "password-assignment", "BTRFS_APP_PASSWORD"),
    base.Plant(SYSTEM, "/home/alice/.pgpass", "pgpass-password", "BTRFS_PGPASS_PASSWORD"),
    base.Plant(SYSTEM, "/var/log/app/deploy.log", "github-token", "BTRFS_LOG_GITHUB_TOKEN"),
    base.Plant(
        SYSTEM,
        "/var/lib/machines/dev/etc/app.env",
        "aws-access-key-id",
        "BTRFS_MACHINE_AWS_KEY_ID",
    ),
    base.Plant(
        SYSTEM,
        f"/@dev/sda2/{SNAPSHOT_DIR}/etc/myapp/app.conf",
        "password-assignment",
        "BTRFS_SNAPSHOT_PASSWORD",
    ),
)
DECOYS = (base.Decoy(SYSTEM, "/etc/myapp/app.conf.example", "placeholder-password", "changeme"),)


def make_values() -> dict[str, str]:
    """The secrets planted in this build (fresh random values every build)."""
    return {
        "BTRFS_APP_PASSWORD": base.rand_password(20),
        "BTRFS_PGPASS_PASSWORD": base.rand_password(20),
        "BTRFS_LOG_GITHUB_TOKEN": base.github_token(),
        "BTRFS_MACHINE_AWS_KEY_ID": base.aws_key_id(),
        "BTRFS_SNAPSHOT_PASSWORD": base.rand_password(20),
    }


def top_level_path(guest_path: str) -> str:
    """Where a guest path lives from the btrfs top level (subvolid 5)."""
    prefix = "/@dev/sda2/"
    if guest_path.startswith(prefix):
        return guest_path.removeprefix(prefix)
    mounted = sorted((m, s) for s, _, m in SUBVOLUMES if m is not None)
    for mountpoint, subvolume in sorted(mounted, key=lambda item: -len(item[0])):
        if mountpoint == "/" or guest_path.startswith(mountpoint + "/"):
            inner = guest_path if mountpoint == "/" else guest_path[len(mountpoint) :]
            return subvolume + inner
    raise base.BuildError(f"{guest_path}: on no subvolume")


def render(values: dict[str, str], work: Path) -> dict[str, Path]:
    """Copy and render every tree (fstab is written later, once the UUID is known)."""
    trees: dict[str, Path] = {}
    for name in ("root", "home", "log", "machines-dev", "snapshot", "efi"):
        dest = work / "trees" / name
        shutil.copytree(TREE / name, dest)
        for path in sorted(dest.rglob("*")):
            if path.is_file():
                base.render_file(path, values)
                os.utime(path, (base.FIXED_MTIME, base.FIXED_MTIME))
        trees[name] = dest
    return trees


def fstab(btrfs_uuid: str, log_id: int) -> str:
    """The guest's /etc/fstab: three forms of btrfs subvolume mounts and the EFI partition."""
    return (
        "# /etc/fstab, as anaconda writes it for a btrfs install\n"
        f"UUID={btrfs_uuid} /         btrfs subvol=@,compress=zstd:1 0 0\n"
        f"UUID={btrfs_uuid} /home     btrfs subvol=/@home,compress=zstd:1 0 0\n"
        f"UUID={btrfs_uuid} /var/log  btrfs subvolid={log_id},compress=zstd:1 0 0\n"
        f"UUID={EFI.uuid} /boot/efi vfat umask=0077,shortname=winnt 0 2\n"
    )


def build_steps(stage: Path, key: str, run: base.Runner) -> None:
    """The build proper (``run`` records every command)."""
    work = stage / "work"
    work.mkdir()
    phases = rich.Phases(run.log)
    values = make_values()
    trees = render(values, work)
    phases.done("trees rendered")

    raw = f"work/{DISK.name}.raw"
    run("truncate", "-s", f"{DISK.size_mib}M", raw)
    run("sfdisk", "--no-reread", "--no-tell-kernel", "-q", raw, stdin=rich.sfdisk_script(DISK))
    rich.check_table(run, DISK, raw)
    run("truncate", "-s", f"{EFI.size_mib}M", "work/efi.img")
    rich.mkvfat(run, EFI, trees["efi"], "work/efi.img", 16)
    rich.place(run, "work/efi.img", raw, DISK.part(1).start_mib)
    phases.done("host: GPT, EFI partition")

    app = rich.Appliance(run.log, [(stage / raw, "raw", False)], stage)
    try:
        app("mkfs_btrfs", [BTRFS.device], label=BTRFS.label)
        app("mount", BTRFS.device, "/")
        for subvolume, tree, _ in SUBVOLUMES:
            parent = subvolume.rsplit("/", 1)[0] if "/" in subvolume else None
            if parent:
                app("mkdir_p", "/" + parent)
            app("btrfs_subvolume_create", "/" + subvolume)
            target = "/" + (SNAPSHOT_DIR if subvolume == "@snapshots" else subvolume)
            app("mkdir_p", target)
            small_tree_in(app, trees[tree], target)
        ids = {
            s["btrfssubvolume_path"]: s["btrfssubvolume_id"]
            for s in app("btrfs_subvolume_list", "/")
        }
        btrfs_uuid = app("vfs_uuid", BTRFS.device)
        app("write", "/@/etc/fstab", fstab(btrfs_uuid, ids["@log"]).encode())
        app("umount_all")
        app("sync")
        app("drop_caches", 3)
        planted, decoys = base.manifest_entries(
            PLANTED,
            DECOYS,
            values,
            lambda path: (trees_path(trees, path)).read_bytes(),
            {},
            SYSTEM,
        )
        errors = verify(app, planted + decoys, ids)
    finally:
        app.close()
    if errors:
        raise base.BuildError("verification failed:\n  " + "\n  ".join(errors))
    phases.done("appliance: btrfs subvolumes, files; inspection and read-back")

    run("qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw, "btrfs-root.qcow2")
    run("qemu-img", "compare", "-q", "-f", "raw", "-F", "qcow2", raw, "btrfs-root.qcow2")
    shutil.rmtree(work)
    volumes = [
        rich.volume_entry(rich.System(SYSTEM, (DISK,), (EFI, BTRFS)), vol, {}, {})
        for vol in (EFI, BTRFS)
    ]
    volumes[1]["uuid"] = btrfs_uuid
    # Where each subvolume's files appear: its mountpoint, or under the volume's own prefix.
    volumes[1]["subvolumes"] = [
        {"path": sub, "mountpoint": mountpoint or f"{BTRFS.mountpoint}/{sub}", "id": ids[sub]}
        for sub, _, mountpoint in SUBVOLUMES
    ]
    image = {
        "name": "btrfs-root-qcow2",
        "file": "btrfs-root.qcow2",
        "format": "qcow2",
        "subformat": "v3",
        "copy_of": None,
        "disk_size": DISK.size_mib * MIB,
        "partition_table": DISK.table,
        "os": {
            "type": "linux",
            "distro": "fedora",
            "version": "39",
            "name": "Fedora Linux 39 (Server Edition)",
            "hostname": "files02",
            "users": [
                {"name": "root", "uid": 0, "home": "/root"},
                {"name": "alice", "uid": 1000, "home": "/home/alice"},
            ],
        },
        "coverage_complete": True,
        "volumes": volumes,
        "planted": planted,
        "decoys": decoys,
    }
    small.write_manifest(stage, key, [image])


def small_tree_in(app: rich.Appliance, tree: Path, target: str) -> None:
    """Copy ``tree`` into the mounted file system below ``target``, file by file."""
    for path in sorted(tree.rglob("*")):
        rel = f"{target}/{path.relative_to(tree).as_posix()}"
        if path.is_dir():
            app("mkdir_p", rel)
        else:
            app("write", rel, path.read_bytes())


def trees_path(trees: dict[str, Path], guest_path: str) -> Path:
    """The rendered file behind a guest path."""
    inner = top_level_path(guest_path)
    if inner.startswith(SNAPSHOT_DIR + "/"):
        return trees["snapshot"] / inner.removeprefix(SNAPSHOT_DIR + "/")
    for subvolume, tree, _ in sorted(SUBVOLUMES, key=lambda s: -len(s[0])):
        if inner.startswith(subvolume + "/"):
            return trees[tree] / inner.removeprefix(subvolume + "/")
    raise base.BuildError(f"{guest_path}: in no tree")


def verify(app: rich.Appliance, items: list[dict[str, Any]], ids: dict[str, int]) -> list[str]:
    """libguestfs inspection of the btrfs root, and every value at its offset."""
    errors: list[str] = []
    if sorted(ids) != sorted(s for s, _, _ in SUBVOLUMES):
        errors.append(f"subvolumes {sorted(ids)}")
    # The appliance names the one disk /dev/sda on most machines and /dev/sdb on some (the
    # order the kernel enumerates its own disk and ours in): compare below the device name.
    roots = app("inspect_os")
    device = roots[0].removeprefix("btrfsvol:").removesuffix("/@") if len(roots) == 1 else ""
    if not re.fullmatch(r"/dev/[sv]d[a-z]2", device):
        return [*errors, f"inspection found roots {roots}"]
    root = roots[0]
    got = (
        app("inspect_get_distro", root),
        app("inspect_get_major_version", root),
        app("inspect_get_hostname", root),
    )
    if got != ("fedora", 39, "files02"):
        errors.append(f"inspection says {got}")
    mounts = app("inspect_get_mountpoints", root)
    for mountpoint, wanted in (("/", root), ("/home", f"btrfsvol:{device}/@home")):
        # libguestfs keeps fstab's optional leading slash: btrfsvol:/dev/sda2//@home.
        if (mounts.get(mountpoint) or "").replace("//", "/") != wanted:
            errors.append(f"inspection mounts {mounts.get(mountpoint)} at {mountpoint}")
    app("mount_options", "ro,subvolid=5", BTRFS.device, "/")
    return errors + small.read_back(app, items, top_level_path)


def source_key() -> str:
    """``btrfs-`` and 16 hex digits of sha256 over the builders it uses and its trees."""
    files = [Path(__file__).resolve(), *sorted(p for p in TREE.rglob("*") if p.is_file())]
    return small.key_over(KEY_PREFIX, files)


def build_btrfs(out: Path | None = None, *, force: bool = False) -> Path:
    """Build the btrfs-root image (or reuse the cached build) and return its directory."""
    return base.cached(out, source_key(), small.logged(build_steps), force)


if __name__ == "__main__":
    sys.exit(small.cli("build_btrfs.py", __doc__, build_btrfs, sys.argv[1:]))
