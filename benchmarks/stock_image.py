"""The stock-image benchmark: does a clean server image, nothing planted, pass the gate?

Builds a Debian 12 (bookworm) server the way an operator would, with nothing planted:

- debootstrap with a server package set (OpenSSH, nginx, PostgreSQL, a JDK, Perl, GnuTLS's
  tools, WireGuard's tools, sudo, man pages and their translations, locales); the packages'
  own maintainer scripts generate what a real install generates (SSH host keys, the snakeoil
  TLS key, a machine ID);
- a Python application's dependencies installed by the guest's pip, as published on PyPI, into
  /srv/app/venv (boto3, SQLAlchemy, Celery, redis, Twisted, ansible-core, Django, ...);
- a Node application's dependencies installed by npm, as published, into
  /srv/web/node_modules (aws-sdk, jsonwebtoken, node-forge, pg, mongoose, express).

It then scans the image with this checkout's imgscan (JSON report, default options) and prints
the findings at severity low or above, apart from the OS-generated identity (the exposures of
kind ``identity``: host keys, the snakeoil key, the machine ID), which a copy really carries.
Issue 16's target: the identity found, and at most 2 other findings at low or above (goal 0).

The image (`stock.raw`: GPT, one ext4 partition) and `manifest.json` are cached under
``$XDG_CACHE_HOME/imgscan/bench/stock-<key>/`` (key: this file's source); building needs root
and the Debian mirror, PyPI and the npm registry, and takes about 10-15 minutes.

    .venv/bin/python benchmarks/stock_image.py [--force] [--json FILE] [--reader R]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import ssl
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

from server_image import _debootstrap, _disk  # noqa: E402

CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "imgscan" / "bench"
PACKAGES = (
    "openssh-server", "nginx", "postgresql", "openjdk-17-jdk-headless", "perl", "gnutls-bin",
    "wireguard-tools", "sudo", "man-db", "manpages", "locales", "ssl-cert", "ca-certificates",
    "curl", "cron", "rsyslog", "logrotate", "python3", "python3-venv", "systemd", "dbus",
)  # fmt: skip
PIP_PACKAGES = (
    "boto3", "sqlalchemy", "celery", "redis", "twisted", "ansible-core", "django",
    "psycopg2-binary", "requests", "flask", "paramiko", "cryptography", "gunicorn",
)  # fmt: skip
NPM_PACKAGES = ("aws-sdk", "jsonwebtoken", "node-forge", "pg", "mongoose", "express")
SEVERITIES = ("info", "low", "medium", "high", "critical")


def source_key() -> str:
    return hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:12]


def _run(*argv: str, cwd: Path | None = None) -> None:
    subprocess.run(argv, check=True, cwd=cwd)


def _pip(root: Path) -> None:
    """The application's Python dependencies, installed by the guest's own pip into a venv (so
    their `*.dist-info/RECORD` files are the ones pip writes on a real install)."""
    print(f"pip install {len(PIP_PACKAGES)} packages into /srv/app/venv", file=sys.stderr)
    resolv = root / "etc/resolv.conf"
    saved = resolv.read_bytes() if resolv.is_file() else None
    shutil.copyfile("/etc/resolv.conf", resolv)
    # The host's CA bundle, for networks whose HTTPS proxy the guest's bundle does not trust;
    # removed again with the resolver configuration.
    bundle = root / "tmp/host-ca.pem"
    paths = ssl.get_default_verify_paths()
    shutil.copyfile(paths.cafile or paths.openssl_cafile, bundle)
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "PIP_CERT": "/tmp/host-ca.pem"}
    try:
        _run("chroot", str(root), "python3", "-m", "venv", "/srv/app/venv")
        subprocess.run(
            ["chroot", str(root), "/srv/app/venv/bin/pip", "install", "-q",
             "--no-cache-dir", *PIP_PACKAGES],
            check=True, env=env,
        )  # fmt: skip
    finally:
        bundle.unlink()
        if saved is None:
            resolv.unlink()
        else:
            resolv.write_bytes(saved)


def _npm(root: Path) -> None:
    """The web application's Node dependencies, as `npm install` lays them out."""
    print(f"npm install {len(NPM_PACKAGES)} packages into /srv/web", file=sys.stderr)
    web = root / "srv/web"
    web.mkdir(parents=True, exist_ok=True)
    (web / "package.json").write_text(
        json.dumps({"name": "web", "version": "1.0.0", "private": True}, indent=2) + "\n"
    )
    _run(
        "npm", "install", "--no-audit", "--no-fund", "--loglevel=error",
        "--cache", str(root.parent / "npm-cache"), *NPM_PACKAGES, cwd=web,
    )  # fmt: skip
    shutil.rmtree(root.parent / "npm-cache", ignore_errors=True)


def build(force: bool = False) -> Path:
    """Build (or reuse) the stock image; returns its directory (stock.raw, manifest.json)."""
    folder = CACHE / f"stock-{source_key()}"
    if (folder / "manifest.json").exists() and not force:
        return folder
    if os.geteuid() != 0:
        raise SystemExit("stock_image.py: debootstrap, chroot and mke2fs -d need root")
    stage = folder.with_name(folder.name + ".partial")
    shutil.rmtree(stage, ignore_errors=True)
    root = stage / "root"
    root.mkdir(parents=True)
    started = time.monotonic()
    _debootstrap(root, PACKAGES)
    _pip(root)
    _npm(root)
    # The package cache is not part of an installed server.
    shutil.rmtree(root / "var/cache/apt/archives", ignore_errors=True)
    (root / "etc/fstab").write_text("/dev/sda1 / ext4 errors=remount-ro 0 1\n")
    image = stage / "stock.raw"
    _disk(root, image)
    files = sum(len(names) for _, _, names in os.walk(root))
    shutil.rmtree(root)
    manifest = {
        "image": image.name,
        "bytes": image.stat().st_size,
        "files": files,
        "packages": list(PACKAGES),
        "pip": list(PIP_PACKAGES),
        "npm": list(NPM_PACKAGES),
        "build_seconds": round(time.monotonic() - started),
    }
    (stage / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    shutil.rmtree(folder, ignore_errors=True)
    stage.rename(folder)
    return folder


def scan(image: Path, reader: str) -> tuple[dict[str, Any], float, int]:
    """This checkout's imgscan on `image`: the JSON report, seconds, exit code."""
    imgscan = REPO / ".venv/bin/imgscan"
    started = time.monotonic()
    proc = subprocess.run(
        [str(imgscan), "scan", "--reader", reader, "-f", "json", str(image)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    seconds = time.monotonic() - started
    if proc.returncode not in (0, 1):
        raise SystemExit(f"imgscan failed ({proc.returncode}): {proc.stderr.strip()[-500:]}")
    return json.loads(proc.stdout), seconds, proc.returncode


def judge(report: dict[str, Any]) -> dict[str, Any]:
    """The figures of one report: identity found, other findings at low or above."""
    identity_paths = {
        path for e in report["exposures"] if e["kind"] == "identity" for path in e["paths"]
    }
    low = SEVERITIES.index("low")
    identity: list[dict[str, Any]] = []
    other: list[dict[str, Any]] = []
    for f in report["findings"]:
        if SEVERITIES.index(f["severity"]) < low:
            continue
        outer = f["path"].split("!/", 1)[0]
        (identity if outer in identity_paths else other).append(f)
    return {
        "identity": sorted({f"{f['rule']} {f['path']}" for f in identity}),
        "other": [
            {"rule": f["rule"], "severity": f["severity"], "path": f["path"], "line": f["line"]}
            for f in other
        ],
        "by_severity": dict(Counter(f["severity"] for f in report["findings"])),
        "vendor_info": sum(1 for f in report["findings"] if f.get("package")),
        "complete": report["coverage"]["complete"],
        "files": report["stats"]["files"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--force", action="store_true", help="rebuild even if cached")
    parser.add_argument("--json", type=Path, help="write the figures and findings here")
    parser.add_argument("--reader", default="auto", help="imgscan's --reader (default auto)")
    args = parser.parse_args()
    folder = build(args.force)
    manifest = json.loads((folder / "manifest.json").read_text())
    report, seconds, code = scan(folder / manifest["image"], args.reader)
    figures = judge(report)
    print(f"image: {folder / manifest['image']} ({manifest['files']} files)")
    print(f"imgscan exit {code} in {seconds:.1f} s; coverage complete: {figures['complete']}")
    print(f"findings by severity: {figures['by_severity']}")
    print(f"vendor findings (unmodified package files, info): {figures['vendor_info']}")
    print(f"OS-generated identity found ({len(figures['identity'])}):")
    for line in figures["identity"]:
        print(f"  {line}")
    print(f"other findings at low or above: {len(figures['other'])} (target <= 2, goal 0)")
    for f in figures["other"]:
        print(f"  {f['severity']:8} {f['rule']:32} {f['path']}:{f['line']}")
    if args.json:
        args.json.write_text(json.dumps({"manifest": manifest, **figures}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
