"""Build the package-ownership test image: a small Debian-like root file system whose files
are listed by real-shaped package-manager records (dpkg, a Python virtualenv's RECORD, apk).

What it holds (every secret generated here, at build time: nothing credential-shaped is in
the repository), and what imgscan must say of it (`expect` in the manifest):

- `/usr/lib/x86_64-linux-gnu/libfakecrypt.so.1`: an ELF-looking library of dpkg package
  `libfakecrypt1` with a built-in test private key, listed in its md5sums with the right md5:
  vendor content, demoted to info, "public".
- `/usr/bin/fake-cli`: dpkg package `fake-tools` records it as `bin/fake-cli` (usrmerge: /bin
  is a symlink to /usr/bin), a connection URL in its help text: vendor content.
- `/etc/fakedb/debian.cnf`: a conffile of `fakedb-server` (status' `Conffiles:`), edited after
  installation (its md5 is the one of the original): keeps its severity, "modified".
- `/etc/forged/app.conf`: listed by package `forged` with an md5 that is not the file's: the
  record is forged, nothing demoted.
- `/srv/app/venv/lib/python3.11/site-packages/fakeorm/engine.py`: a docstring with an example
  URL holding a password, in a virtualenv at a non-standard path, with the right sha256 in
  `fakeorm-2.0.1.dist-info/RECORD`: vendor content; `fakeorm/forged.py` has a wrong sha256 there.
- `/usr/share/fakeapk/example.conf`: apk package `fakeapk` (`lib/apk/db/installed`, `Z:Q1`
  sha1): vendor content.
- `/usr/lib64/libfakessl.so.3`: rpm package `fakessl-libs` (`/var/lib/rpm/rpmdb.sqlite`, a
  `Packages` row holding an rpm header with the file's sha256) with a built-in test key: vendor
  content; its `/etc/pki/fakessl/fakessl.cnf` was edited after installation: modified.
- `fakeorm/__pycache__/engine.cpython-311.pyc`: compiled from engine.py (RECORD lists it
  without a digest, as pip does): vendor content by its source, `unmodified` None;
  `fakeorm/__pycache__/settings.cpython-311.pyc` holds a URL its (vendor, clean) source
  `settings.py` does not: judged as before.
- `/srv/web/node_modules/.package-lock.json`, npm's hidden lockfile: `fakepg` and the nested
  `fakepg/node_modules/inner` installed from the registry (an `integrity`), so files in their
  directories are vendor content, not verifiable (`unmodified` None); `localdep` was copied
  from a local directory (no integrity) and `notlisted` is in no lockfile: judged as before.
- `/srv/app/.env`: no package lists it: judged as before.

The image is one bare ext4 file system (`mke2fs -d`, a fixed UUID that its own /etc/fstab
mounts at /), so both readers place it at /. Usage (from tests): `build_packages(directory)`
returns the image path; the manifest beside it is `packages.json`.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import json
import marshal
import secrets
import sqlite3
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

UUID = "6a2f0d7e-3c41-4b7a-9f5e-2d8c1b0a4e11"
SITE = "/srv/app/venv/lib/python3.11/site-packages"


def _password() -> str:
    return "Pw" + secrets.token_hex(10)


def _url(user: str) -> str:
    return f"postgresql://{user}:{_password()}@db.internal:5432/{user}"


def _test_key() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def _md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).decode().rstrip("=")


def rpm_header(tags: list[tuple[int, int, Any]]) -> bytes:
    """An rpm header blob as rpm's SQLite backend stores it: `il` and `dl` (big-endian), the
    index entries (tag, type, offset, count) and the data store, with the immutable region
    (tag 63) first and its trailer last, as rpm writes it. Types: 4 INT32, 6 STRING,
    8 STRING_ARRAY."""
    data = bytearray()
    entries = []
    for tag, kind, value in sorted(tags, key=lambda t: t[0]):
        if kind == 4:
            data += bytes(-len(data) % 4)
            entries.append((tag, kind, len(data), len(value)))
            data += struct.pack(f">{len(value)}i", *value)
        elif kind == 6:
            entries.append((tag, kind, len(data), 1))
            data += value.encode() + b"\0"
        else:
            entries.append((tag, kind, len(data), len(value)))
            data += b"".join(v.encode() + b"\0" for v in value)
    count = len(entries) + 1
    data += struct.pack(">iIiI", 63, 7, -16 * count, 16)  # the region trailer
    entries.insert(0, (63, 7, len(data) - 16, 16))
    index = b"".join(struct.pack(">iIiI", *entry) for entry in entries)
    return struct.pack(">II", count, len(data)) + index + bytes(data)


def _compile(source: bytes, pyc: Path) -> None:
    """`pyc`: CPython's compiled form of `source`, as pip's compile step writes it."""
    pyc.parent.mkdir(parents=True, exist_ok=True)
    code = compile(source, "<fake>", "exec")
    header = importlib.util.MAGIC_NUMBER + bytes(4) + struct.pack("<II", 0, len(source))
    pyc.write_bytes(header + marshal.dumps(code))


def _write(root: Path, guest_path: str, data: bytes) -> bytes:
    path = root / guest_path.lstrip("/")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return data


def make_tree(root: Path) -> dict[str, Any]:
    """Write the file system tree under `root`; return what imgscan must report."""
    _write(root, "/etc/os-release", b'ID=debian\nVERSION_ID="12"\nPRETTY_NAME="Debian 12"\n')
    _write(root, "/etc/hostname", b"pkgtest\n")
    _write(root, "/etc/fstab", f"UUID={UUID} / ext4 defaults 0 1\n".encode())
    (root / "bin").symlink_to("usr/bin")

    # dpkg: a library with a built-in test key, a tool recorded under /bin (usrmerge).
    lib = "/usr/lib/x86_64-linux-gnu/libfakecrypt.so.1"
    lib_data = _write(
        root,
        lib,
        b"\x7fELF\x02\x01\x01"
        + bytes(9)
        + secrets.token_bytes(4096)
        + b"\0test vector for the self-test:\n"
        + _test_key().encode()
        + b"\0"
        + secrets.token_bytes(2048),
    )
    cli_data = _write(
        root,
        "/usr/bin/fake-cli",
        b"#!/bin/sh\n# usage example:\n#   fake-cli --url " + _url("demo").encode() + b"\n"
        b'exec /usr/lib/fake-tools/cli "$@"\n',
    )
    original_cnf = (
        f"[client]\nhost = localhost\nuser = debian-sys-maint\npassword = {_password()}\n"
    )
    cnf = "/etc/fakedb/debian.cnf"
    _write(root, cnf, f"[client]\nurl = {_url('debian-sys-maint')}\n".encode())
    forged = "/etc/forged/app.conf"
    _write(root, forged, f"DATABASE_URL={_url('app')}\n".encode())
    info = root / "var/lib/dpkg/info"
    info.mkdir(parents=True)
    (info / "libfakecrypt1:amd64.md5sums").write_text(
        f"{_md5(lib_data)}  {lib[1:]}\n"
        f"{_md5(b'changelog')}  usr/share/doc/libfakecrypt1/changelog.Debian.gz\n"
    )
    (info / "fake-tools.md5sums").write_text(f"{_md5(cli_data)}  bin/fake-cli\n")
    (info / "forged.md5sums").write_text(f"{_md5(b'not this file')}  {forged[1:]}\n")
    (info / "fakedb-server.md5sums").write_text("")
    status = [
        "Package: libfakecrypt1\nStatus: install ok installed\nArchitecture: amd64\n"
        "Multi-Arch: same\nVersion: 1.2.3-1\nDescription: fake crypto library\n",
        "Package: fake-tools\nStatus: install ok installed\nArchitecture: all\n"
        "Version: 0.9-2\nDescription: fake tools\n",
        "Package: fakedb-server\nStatus: install ok installed\nArchitecture: amd64\n"
        f"Version: 1:10.11.6-0+deb12u1\nConffiles:\n {cnf} {_md5(original_cnf.encode())}\n"
        " /etc/fakedb/obsolete.cnf newconffile\nDescription: fake database server\n",
        "Package: forged\nStatus: install ok installed\nArchitecture: all\nVersion: 6.6.6\n"
        "Description: a record that lies\n",
    ]
    _write(root, "/var/lib/dpkg/status", "\n".join(status).encode())

    # A virtualenv at a non-standard path, installed by pip: RECORD with sha256s.
    engine = f"{SITE}/fakeorm/engine.py"
    engine_data = _write(
        root,
        engine,
        b"def create_engine(url):\n"
        + f'    """Connect, e.g. create_engine("{_url("scott")}")."""\n'.encode(),
    )
    settings_data = _write(root, f"{SITE}/fakeorm/settings.py", b"POOL_SIZE = 5\n")
    compiled = f"{SITE}/fakeorm/__pycache__/engine.cpython-311.pyc"
    _compile(engine_data, root / compiled.lstrip("/"))
    planted_pyc = f"{SITE}/fakeorm/__pycache__/settings.cpython-311.pyc"
    _compile(f'URL = "{_url("pyc")}"\n'.encode(), root / planted_pyc.lstrip("/"))
    forged_py = f"{SITE}/fakeorm/forged.py"
    _write(root, forged_py, f'EXAMPLE = "{_url("tiger")}"\n'.encode())
    _write(root, f"{SITE}/fakeorm/__init__.py", b"")
    record = (
        f"fakeorm/__init__.py,{_record_hash(b'')},0\n"
        f"fakeorm/engine.py,{_record_hash(engine_data)},{len(engine_data)}\n"
        f"fakeorm/forged.py,{_record_hash(b'something else')},14\n"
        f"fakeorm/settings.py,{_record_hash(settings_data)},{len(settings_data)}\n"
        "fakeorm/__pycache__/settings.cpython-311.pyc,,\n"
        "fakeorm-2.0.1.dist-info/RECORD,,\n"
        "fakeorm/__pycache__/engine.cpython-311.pyc,,\n"
    )
    _write(root, f"{SITE}/fakeorm-2.0.1.dist-info/RECORD", record.encode())
    _write(
        root,
        f"{SITE}/fakeorm-2.0.1.dist-info/METADATA",
        b"Metadata-Version: 2.1\nName: fakeorm\nVersion: 2.0.1\n",
    )

    # apk's database (an image may hold several package managers' records).
    example = "/usr/share/fakeapk/example.conf"
    example_data = _write(root, example, f"dsn = {_url('apkdemo')}\n".encode())
    sha1 = base64.b64encode(hashlib.sha1(example_data).digest()).decode()
    _write(
        root,
        "/lib/apk/db/installed",
        f"C:Q1x\nP:fakeapk\nV:3.1-r0\nA:x86_64\nF:usr/share/fakeapk\nR:example.conf\n"
        f"a:0:0:644\nZ:Q1{sha1}\n\n".encode(),
    )

    # rpm's SQLite database (Fedora 33+, RHEL 9): one header per package.
    ssl = "/usr/lib64/libfakessl.so.3"
    ssl_data = _write(
        root, ssl, b"\x7fELF\x02\x01\x01" + bytes(9) + secrets.token_bytes(3000) + b"\0"
        + _test_key().encode() + b"\0",
    )  # fmt: skip
    ssl_cnf = "/etc/pki/fakessl/fakessl.cnf"
    _write(root, ssl_cnf, f"[db]\nurl = {_url('pki')}\n".encode())
    header = rpm_header(
        [
            (1000, 6, "fakessl-libs"),
            (1001, 6, "3.0.7"),
            (1002, 6, "24.el9"),
            (1003, 4, [1]),
            (1116, 4, [0, 1, 2]),
            (1117, 8, ["libfakessl.so.3", "fakessl.cnf", "fakessl"]),
            (1118, 8, ["/usr/lib64/", "/etc/pki/fakessl/", "/usr/share/doc/"]),
            (
                1035,
                8,
                [hashlib.sha256(ssl_data).hexdigest(), hashlib.sha256(b"original").hexdigest(), ""],
            ),
            (5011, 4, [8]),
        ]
    )
    rpmdb = root / "var/lib/rpm/rpmdb.sqlite"
    rpmdb.parent.mkdir(parents=True)
    with sqlite3.connect(rpmdb) as db:
        db.execute(
            "CREATE TABLE 'Packages' (hnum INTEGER PRIMARY KEY AUTOINCREMENT, blob BLOB NOT NULL)"
        )
        db.execute("INSERT INTO Packages (blob) VALUES (?)", (header,))
    db.close()

    # npm's hidden lockfile: what `npm install` put in node_modules, no digest per file.
    web = "/srv/web/node_modules"
    npm_files = {
        f"{web}/fakepg/README.md": f"Connect: `{_url('readme')}`\n",
        f"{web}/fakepg/node_modules/inner/index.js": f"// e.g. {_url('inner')}\n",
        f"{web}/localdep/config.js": f"module.exports = '{_url('local')}';\n",
        f"{web}/notlisted/x.js": f"const u = '{_url('stray')}';\n",
    }
    for path, text in npm_files.items():
        _write(root, path, text.encode())
    integrity = "sha512-" + base64.b64encode(secrets.token_bytes(64)).decode()
    lock = {
        "name": "web",
        "lockfileVersion": 3,
        "requires": True,
        "packages": {
            "node_modules/fakepg": {"version": "8.11.3", "integrity": integrity},
            "node_modules/fakepg/node_modules/inner": {
                "version": "1.0.2",
                "resolved": "https://registry.npmjs.org/inner/-/inner-1.0.2.tgz",
                "integrity": integrity,
            },
            "node_modules/localdep": {"version": "0.0.1", "resolved": "file:../localdep"},
            "node_modules/../../../etc": {"version": "1.0.0", "integrity": integrity},
            "node_modules/.bin": {"version": "1.0.0", "integrity": integrity},
        },
    }
    _write(root, f"{web}/.package-lock.json", json.dumps(lock, indent=2).encode())

    # A forged lockfile key that climbs out of node_modules must place nothing.
    _write(root, "/etc/stray.conf", f"url = {_url('stray')}\n".encode())
    _write(root, "/srv/app/.env", f"DATABASE_URL={_url('hr_app')}\n".encode())

    vendor = {"manager": "dpkg", "unmodified": True}
    return {
        "vendor": {
            lib: {**vendor, "name": "libfakecrypt1", "version": "1.2.3-1"},
            "/usr/bin/fake-cli": {**vendor, "name": "fake-tools", "version": "0.9-2"},
            engine: {
                "manager": "python",
                "name": "fakeorm",
                "version": "2.0.1",
                "unmodified": True,
            },
            example: {"manager": "apk", "name": "fakeapk", "version": "3.1-r0", "unmodified": True},
            ssl: {**vendor, "manager": "rpm", "name": "fakessl-libs", "version": "1:3.0.7-24.el9"},
        },
        "modified": {
            cnf: {"manager": "dpkg", "name": "fakedb-server", "version": "1:10.11.6-0+deb12u1"},
            forged: {"manager": "dpkg", "name": "forged", "version": "6.6.6"},
            forged_py: {"manager": "python", "name": "fakeorm", "version": "2.0.1"},
            ssl_cnf: {"manager": "rpm", "name": "fakessl-libs", "version": "1:3.0.7-24.el9"},
        },
        # In a package by its records, with no digest of the file to check.
        "unverified": {
            compiled: {"manager": "python", "name": "fakeorm", "version": "2.0.1"},
            f"{web}/fakepg/README.md": {"manager": "npm", "name": "fakepg", "version": "8.11.3"},
            f"{web}/fakepg/node_modules/inner/index.js": {
                "manager": "npm",
                "name": "inner",
                "version": "1.0.2",
            },
        },
        "unowned": [
            "/srv/app/.env",
            "/etc/stray.conf",
            planted_pyc,
            f"{web}/localdep/config.js",
            f"{web}/notlisted/x.js",
        ],
    }


def build_packages(directory: Path) -> Path:
    """Build the image into `directory` (its manifest: `packages.json`); return its path."""
    tree = directory / "tree"
    tree.mkdir(parents=True)
    expect = make_tree(tree)
    image = directory / "packages.raw"
    subprocess.run(
        ["mke2fs", "-q", "-t", "ext4", "-U", UUID, "-d", str(tree), str(image), "16M"],
        check=True,
    )
    (directory / "packages.json").write_text(json.dumps(expect, indent=2) + "\n")
    return image


if __name__ == "__main__":
    print(build_packages(Path(sys.argv[1])))
