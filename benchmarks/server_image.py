"""Build the end-to-end benchmark image: a Debian 12 server of about 2 GB, with secrets planted.

What it holds, so that a scan of it costs what a scan of a real application server costs:

- a debootstrap'd Debian 12 (bookworm) with common server packages: OpenSSH, nginx,
  PostgreSQL, MariaDB, Redis, PHP-FPM, a Java runtime, Python 3, git, curl, cron, sudo;
- the test server's application trees (testdata/trees/server: /srv web and API applications,
  configs, home directories, shell histories, keys, backups, archives), rendered with fresh fake
  secrets by testdata/build.py's machinery, on top of it: every planted secret is listed in
  `manifest.json` with its guest path, line and value;
- application payload: a Python virtual environment (a copy of this machine's interpreter
  library and imgscan's own site-packages) under /opt/venv, a few hundred MB of rotated
  application logs (plain and gzip) under /var/log/app, and a database dump under
  /var/backups, so that text, code, compressed files and many small files are all there.

The result is one raw disk (`server-2g.raw`: GPT, one ext4 partition at 1 MiB) that the native
reader, libguestfs and `trivy vm` all accept. It is cached under
`~/.cache/imgscan/bench/server-2g-<key>/` (key: this file and the test-data builder), built in
about 10 minutes (debootstrap downloads ~250 packages from the Debian mirror), as root.

    .venv/bin/python benchmarks/server_image.py [--force]    # prints the directory
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO / "testdata"))

import build as testdata  # noqa: E402  (testdata/build.py: trees, fake secrets, manifest)

CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "imgscan" / "bench"
MIRROR = "http://deb.debian.org/debian"
PACKAGES = (
    "openssh-server", "nginx", "postgresql", "mariadb-server", "redis-server", "php-fpm",
    "default-jre-headless", "python3", "git", "curl", "cron", "sudo", "rsyslog", "logrotate",
)  # fmt: skip
LOG_MB = 320  # rotated application logs, before compression of the older ones
DUMP_MB = 160  # the SQL dump
SEED = 20261127


def source_key() -> str:
    digest = hashlib.sha256()
    for path in (Path(__file__), REPO / "testdata" / "build.py"):
        digest.update(path.read_bytes())
    digest.update(" ".join(PACKAGES).encode())
    return digest.hexdigest()[:12]


def _run(*argv: str) -> None:
    subprocess.run(argv, check=True)


def _unmount_below(root: Path) -> None:
    """Unmount whatever is mounted inside `root` (debootstrap mounts /proc and /sys there while
    it configures packages, and leaves them behind when it fails), deepest first."""
    mounts = Path("/proc/self/mounts").read_text().splitlines()
    inside = [m.split()[1] for m in mounts if m.split()[1].startswith(str(root) + "/")]
    for target in sorted(inside, key=len, reverse=True):
        subprocess.run(["umount", "-l", target], check=False)


def _debootstrap(root: Path, packages: tuple[str, ...] = PACKAGES) -> None:
    """Debian 12 (minbase) with `packages` into `root`, from the mirror."""
    print(f"debootstrap bookworm with {len(packages)} packages (a few minutes)", file=sys.stderr)
    try:
        _run(
            "debootstrap", "--variant=minbase", f"--include={','.join(packages)}",
            "bookworm", str(root), MIRROR,
        )  # fmt: skip
    finally:
        _unmount_below(root)
    # The package cache is not part of an installed server.
    shutil.rmtree(root / "var/cache/apt/archives", ignore_errors=True)


def _server_trees(root: Path, values: dict[str, str]) -> list[dict[str, Any]]:
    """Render the test server's volumes into `root` at their mountpoints; the planted
    secrets, located in the merged tree."""
    disk = testdata.DISKS["server"]
    work = root.parent / "trees"
    for vol in disk.volumes:
        if vol.tree is None or vol.mountpoint is None:
            continue
        dest = work / vol.short
        testdata.render_tree(vol, dest, values)
        shutil.copytree(dest, root / vol.mountpoint.lstrip("/"), symlinks=True, dirs_exist_ok=True)
    shutil.rmtree(work)
    # One file system here: the test server's fstab names its three volumes.
    (root / "etc/fstab").write_text("/dev/sda1 / ext4 errors=remount-ro 0 1\n")

    def read(path: str) -> bytes:
        outer, _, member = path.partition("!/")
        data = (root / outer.lstrip("/")).read_bytes()
        if not member:
            return data
        import tarfile
        import zipfile

        local = root / outer.lstrip("/")
        if outer.endswith(".zip"):
            with zipfile.ZipFile(local) as zf:
                return zf.read(member)
        with tarfile.open(local, "r:*") as tf:
            fh = tf.extractfile(member)
            assert fh is not None
            return fh.read()

    plants = [p for p in testdata.PLANTED if p.disk == disk.name]
    planted, _ = testdata.manifest_entries(plants, [], values, read, {}, "bench")
    return planted


def _payload(root: Path, rng: random.Random) -> None:
    """Application payload: a virtual environment, rotated logs, a database dump."""
    venv = root / "opt/venv/lib/python3.11"
    shutil.copytree(sysconfig.get_paths()["stdlib"], venv, symlinks=True, dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("__pycache__", "test", "tests"))  # fmt: skip
    site = Path(sysconfig.get_paths()["purelib"])
    ours = REPO / ".venv/lib/python3.11/site-packages"
    shutil.copytree(ours if ours.is_dir() else site, venv / "site-packages", symlinks=True,
                    dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    logs = root / "var/log/app"
    logs.mkdir(parents=True, exist_ok=True)
    words = ("GET", "POST", "/api/v1/orders", "/api/v1/employees", "200", "404", "503", "ms")
    users = [f"user{n:05}" for n in range(5000)]
    per_file = 16 << 20
    for index in range(LOG_MB * (1 << 20) // per_file):
        lines = []
        size = 0
        while size < per_file:
            line = (
                f"2026-11-{1 + index % 28:02}T{rng.randrange(24):02}:{rng.randrange(60):02}:"
                f"{rng.randrange(60):02}Z INFO [worker-{rng.randrange(8)}] "
                f"{rng.choice(words[:2])} {rng.choice(words[2:4])}/{rng.randrange(10**6)} "
                f"user={rng.choice(users)} status={rng.choice(words[4:7])} "
                f"took={rng.randrange(2000)}ms trace={rng.getrandbits(64):016x}\n"
            )
            lines.append(line)
            size += len(line)
        text = "".join(lines).encode()
        if index < 4:
            (logs / f"app.log.{index}").write_bytes(text)
        else:
            (logs / f"app.log.{index}.gz").write_bytes(gzip.compress(text, 6))
    dump = root / "var/backups/hr-2026-11-26.sql"
    with dump.open("w") as out:
        out.write("-- PostgreSQL database dump\n")
        out.write("COPY public.employees (id, name, email, dept) FROM stdin;\n")
        written = 0
        row = 0
        while written < DUMP_MB << 20:
            row += 1
            line = (
                f"{row}\tEmployee {row}\temployee{row}@example.com\t"
                f"{rng.choice(('HR', 'IT', 'Sales', 'Finance', 'Ops'))}\n"
            )
            out.write(line)
            written += len(line)
        out.write("\\.\n")


def _disk(root: Path, out: Path) -> None:
    """`out`: a raw GPT disk with one ext4 partition at 1 MiB holding `root`."""
    used = int(subprocess.run(["du", "-sb", str(root)], capture_output=True, text=True,
                              check=True).stdout.split()[0])  # fmt: skip
    fs_mb = int(used * 1.3 / (1 << 20)) + 256
    fs = out.with_suffix(".ext4")
    _run("mke2fs", "-q", "-F", "-t", "ext4", "-b", "4096", "-L", "root", "-d", str(root),
         str(fs), f"{fs_mb}M")  # fmt: skip
    with out.open("wb") as disk:
        disk.truncate((fs_mb + 2) << 20)
    table = f"label: gpt\nstart=2048, size={fs_mb * 2048}, type=L\n"
    subprocess.run(["sfdisk", "-q", str(out)], input=table, text=True, check=True)
    _run(
        "dd", f"if={fs}", f"of={out}", "bs=4M", "seek=1M", "oflag=seek_bytes",
        "conv=notrunc,sparse", "status=none",
    )  # fmt: skip
    fs.unlink()


def build(force: bool = False) -> Path:
    """Build (or reuse) the benchmark image; returns its directory (server-2g.raw and
    manifest.json)."""
    folder = CACHE / f"server-2g-{source_key()}"
    if (folder / "manifest.json").exists() and not force:
        return folder
    if os.geteuid() != 0:
        raise SystemExit("server_image.py: debootstrap and mke2fs -d need root")
    stage = folder.with_name(folder.name + ".partial")
    shutil.rmtree(stage, ignore_errors=True)
    root = stage / "root"
    root.mkdir(parents=True)
    _debootstrap(root)
    values = testdata.make_values()
    planted = _server_trees(root, values)
    _payload(root, random.Random(SEED))
    image = stage / "server-2g.raw"
    _disk(root, image)
    files = sum(len(names) for _, _, names in os.walk(root))
    shutil.rmtree(root)
    manifest = {
        "image": image.name,
        "bytes": image.stat().st_size,
        "files": files,
        "packages": list(PACKAGES),
        "planted": planted,
    }
    (stage / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    shutil.rmtree(folder, ignore_errors=True)
    stage.rename(folder)
    return folder


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--force", action="store_true", help="rebuild even if cached")
    args = parser.parse_args()
    print(build(args.force))
    return 0


if __name__ == "__main__":
    sys.exit(main())
