"""What the guest's package managers say they installed: records read from files as they
stream past the workers, like the clues of detect/usage.py.

- dpkg: `/var/lib/dpkg/info/<package>[:<arch>].md5sums` (an md5 per file, paths relative to
  /) and `/var/lib/dpkg/status` (each package's version, and its conffiles with their md5 in
  the `Conffiles:` field: dpkg leaves conffiles out of md5sums).
- Python: every `<name>-<version>.dist-info/RECORD`, wherever it is (a virtualenv under /srv,
  a user's ~/.local): paths relative to the directory holding the dist-info, `sha256=` in
  urlsafe base64 without padding.
- apk: `/lib/apk/db/installed` (`P:` name, `V:` version, `F:` directory, `R:` file, `Z:Q1`
  base64 of the file's sha1).
- npm: the hidden lockfile `node_modules/.package-lock.json` that npm 7 and later write as it
  installs (a `packages` map from each package's directory, `node_modules/<name>` nested as
  npm lays them out, to its version and the `integrity` digest of the registry tarball). npm
  keeps no digest per installed file, so a package's files are placed by directory and their
  content cannot be checked (imgscan/ownership.py says so in each finding); only packages with
  an `integrity` (fetched from a registry, not linked or copied from a local directory) count.
- rpm: the SQLite database (`/var/lib/rpm/rpmdb.sqlite`, `/usr/lib/sysimage/rpm/rpmdb.sqlite`;
  Fedora 33+, RHEL 9): each row of `Packages` is an rpm header (name, version, release,
  epoch, and per file its directory, base name and digest in the header's own algorithm).
  The Berkeley DB of older releases (`/var/lib/rpm/Packages`) is not read.

The records are the guest's own data, so a hostile image can forge them: they only ever
demote a finding, never drop one (imgscan/ownership.py), and they are bounded like every
parser here: the first `MAX_BYTES` of a record file and `MAX_FILES` files per record file.
Digests are returned as lowercase hex with their algorithm name (hashlib's).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import csv
import json
import posixpath
import re
import shutil
import sqlite3
import struct
import tempfile
from collections.abc import Iterator
from typing import BinaryIO

from imgscan.model import PackageFiles

MAX_BYTES = 64 << 20
MAX_FILES = 500_000
# Files listed by all the records of one image, kept by the main process (a stock Debian server
# lists about 100,000); records beyond are ignored with a warning: fewer files are vendor
# content, never more.
MAX_TOTAL_FILES = 5_000_000

DPKG_STATUS = "/var/lib/dpkg/status"
APK_INSTALLED = "/lib/apk/db/installed"
RPMDB = ("/var/lib/rpm/rpmdb.sqlite", "/usr/lib/sysimage/rpm/rpmdb.sqlite")
# An rpm database is copied to a temporary file for SQLite (a server's is 50-150 MB).
MAX_RPMDB_BYTES = 1 << 30
_DPKG_MD5SUMS = re.compile(r"^/var/lib/dpkg/info/(?P<package>[^/]+)\.md5sums$")
_RECORD = re.compile(r"^(?P<site>(?:/[^/]+)*)/(?P<dist>[^/]+)\.dist-info/RECORD$")
_NPM_LOCK = re.compile(r"^(?P<root>(?:/[^/]+)*)/node_modules/\.package-lock\.json$")
# A lockfile key: node_modules/<name> (a scope is part of the name), nested for each level.
# npm's names never start with "." or "_", so no key climbs out with "..".
_NPM_NAME = r"(?:@[^/.][^/]*/)?[^/@._][^/]*"
_NPM_KEY = re.compile(rf"^(?:node_modules/{_NPM_NAME}/)*node_modules/(?P<name>{_NPM_NAME})$")
_HEX = {"md5": re.compile(r"^[0-9a-f]{32}$"), "sha1": re.compile(r"^[0-9a-f]{40}$")}

# Which digest each manager's records hold: the worker hashes a file with these (rpm: the
# header says; sha256 since RHEL 6 and Fedora 12).
ALGORITHMS = {"dpkg": "md5", "python": "sha256", "apk": "sha1", "rpm": "sha256"}


def wants(path: str) -> bool:
    """Whether the file at guest `path` is a package-manager record (never inside an archive:
    a record describes the file system it is on)."""
    if "!/" in path:
        return False
    return bool(
        path in (DPKG_STATUS, APK_INSTALLED, *RPMDB)
        or _DPKG_MD5SUMS.match(path)
        or _RECORD.match(path)
        or _NPM_LOCK.match(path)
    )


def read_records(path: str, stream: BinaryIO) -> tuple[PackageFiles, ...]:
    """The package records in the record file at `path`, read from `stream` (at its start)."""
    if path in RPMDB:
        return tuple(_rpmdb(path, stream))
    text = stream.read(MAX_BYTES).decode("utf-8", "surrogateescape")
    if path == DPKG_STATUS:
        return tuple(_dpkg_status(path, text))
    if path == APK_INSTALLED:
        return tuple(_apk_installed(path, text))
    match = _DPKG_MD5SUMS.match(path)
    if match is not None:
        name = match["package"].split(":", 1)[0]  # libc6:amd64.md5sums (Multi-Arch: same)
        return (PackageFiles("dpkg", name, "", path, tuple(_md5sums(text))),)
    match = _RECORD.match(path)
    if match is not None:
        return (_python_record(path, match["site"] or "/", match["dist"], text),)
    match = _NPM_LOCK.match(path)
    if match is not None:
        return tuple(_npm_lockfile(path, match["root"] or "", text))
    return ()


def _md5sums(text: str) -> Iterator[tuple[str, str, str]]:
    """`<md5>  <path relative to />` lines."""
    for count, line in enumerate(text.splitlines()):
        if count >= MAX_FILES:
            return
        digest, _, rel = line.partition("  ")
        digest = digest.lower()
        if rel and _HEX["md5"].match(digest):
            yield ("/" + rel.lstrip("/"), "md5", digest)


def _dpkg_status(path: str, text: str) -> Iterator[PackageFiles]:
    """One record per package stanza: its name, version and conffiles (md5 each)."""
    for stanza in re.split(r"\n[ \t]*\n", text):
        fields: dict[str, str] = {}
        current = ""
        for line in stanza.splitlines():
            if line[:1] in (" ", "\t") and current:
                fields[current] += "\n" + line.strip()
            elif ":" in line:
                current, _, value = line.partition(":")
                current = current.strip().lower()
                fields[current] = value.strip()
        name = fields.get("package", "")
        if not name:
            continue
        conffiles = []
        for entry in fields.get("conffiles", "").splitlines()[:MAX_FILES]:
            words = entry.split()
            # "/etc/mysql/debian.cnf <md5> [obsolete]"; "newconffile" is no digest.
            if len(words) >= 2 and words[0].startswith("/") and _HEX["md5"].match(words[1]):
                conffiles.append((words[0], "md5", words[1]))
        yield PackageFiles("dpkg", name, fields.get("version", ""), path, tuple(conffiles))


def _python_record(path: str, site: str, dist: str, text: str) -> PackageFiles:
    """A wheel's RECORD: `path,sha256=<urlsafe base64>,size` rows, paths relative to the
    directory holding the dist-info (`../../../bin/tool` for scripts)."""
    name, _, version = dist.partition("-")
    files = []
    rows = csv.reader(text.splitlines())
    for _ in range(MAX_FILES):
        try:
            row = next(rows)
        except StopIteration:
            break
        except csv.Error:  # a field over csv's size limit, a NUL: no RECORD pip wrote
            break
        if len(row) < 2 or not row[1].startswith("sha256="):
            continue  # RECORD itself, .pyc files written after installation
        digest = _urlsafe_hex(row[1][len("sha256=") :])
        if digest is None or not row[0]:
            continue
        files.append((posixpath.normpath(posixpath.join(site, row[0])), "sha256", digest))
    return PackageFiles("python", name, version, path, tuple(files))


def _npm_lockfile(path: str, root: str, text: str) -> Iterator[PackageFiles]:
    """Each registry package of a hidden lockfile, placed by its directory below `root` (the
    directory holding node_modules)."""
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        return
    entries = data.get("packages") if isinstance(data, dict) else None
    if not isinstance(entries, dict):
        return
    for count, (key, entry) in enumerate(entries.items()):
        if count >= MAX_FILES:
            return
        match = _NPM_KEY.match(key) if isinstance(key, str) else None
        if match is None or not isinstance(entry, dict) or entry.get("link"):
            continue
        version, integrity = entry.get("version"), entry.get("integrity")
        resolved = entry.get("resolved", "https://")
        if not (isinstance(version, str) and isinstance(integrity, str) and integrity):
            continue
        if not isinstance(resolved, str) or not resolved.startswith(("https://", "http://")):
            continue  # git, file: and local directories: not what a registry published
        directory = f"{root}/{key}"
        yield PackageFiles("npm", match["name"], version, path, (), directory)


def _apk_installed(path: str, text: str) -> Iterator[PackageFiles]:
    """apk's installed database: blank-line separated packages of `X:value` lines."""
    for block in re.split(r"\n\s*\n", text):
        name = version = directory = current = ""
        files: list[tuple[str, str, str]] = []
        for line in block.splitlines():
            key, _, value = line.partition(":")
            if key == "P":
                name = value
            elif key == "V":
                version = value
            elif key == "F":
                directory = value
            elif key == "R":
                current = posixpath.normpath("/" + posixpath.join(directory, value))
            elif key == "Z" and current and value.startswith("Q1") and len(files) < MAX_FILES:
                digest = _base64_hex(value[2:])
                if digest is not None and _HEX["sha1"].match(digest):
                    files.append((current, "sha1", digest))
                current = ""
        if name:
            yield PackageFiles("apk", name, version, path, tuple(files))


# rpm header tags and types (rpm's lib/rpmtag.h) and digest algorithms (PGP hash ids).
_NAME, _VERSION, _RELEASE, _EPOCH = 1000, 1001, 1002, 1003
_FILEDIGESTS, _DIRINDEXES, _BASENAMES, _DIRNAMES, _FILEDIGESTALGO = 1035, 1116, 1117, 1118, 5011
_INT32, _STRING, _STRING_ARRAY, _I18NSTRING = 4, 6, 8, 9
_RPM_ALGORITHMS = {1: "md5", 2: "sha1", 8: "sha256", 9: "sha384", 10: "sha512"}
_MAX_ENTRIES = 100_000


def _rpmdb(path: str, stream: BinaryIO) -> Iterator[PackageFiles]:
    """Every package of an rpm SQLite database: its rows are rpm headers."""
    with tempfile.NamedTemporaryFile(suffix=".sqlite") as copy:
        shutil.copyfileobj(_Bounded(stream, MAX_RPMDB_BYTES), copy, 1 << 20)
        copy.flush()
        uri = f"file:{copy.name}?mode=ro&immutable=1"
        with contextlib.closing(sqlite3.connect(uri, uri=True)) as db:
            try:
                rows = db.execute("SELECT blob FROM Packages ORDER BY hnum")
                for (blob,) in rows:
                    if isinstance(blob, bytes):
                        record = _rpm_header(path, blob)
                        if record is not None:
                            yield record
            except sqlite3.Error:
                return  # not an rpm database after all, or a corrupt one: what was read


def _rpm_header(path: str, blob: bytes) -> PackageFiles | None:
    """A package from one rpm header blob (`il`, `dl`, `il` index entries, the data store);
    None for a header that does not parse."""
    try:
        count, size = struct.unpack_from(">II", blob)
        if count > _MAX_ENTRIES:
            return None
        store = 8 + 16 * count
        data = blob[store : store + size]
        tags: dict[int, tuple[int, int, int]] = {}
        for i in range(count):
            tag, kind, offset, items = struct.unpack_from(">iIiI", blob, 8 + 16 * i)
            tags.setdefault(tag, (kind, offset, items))

        def strings(tag: int) -> list[str]:
            kind, offset, items = tags.get(tag, (0, 0, 0))
            if kind not in (_STRING, _STRING_ARRAY, _I18NSTRING) or not 0 <= offset < len(data):
                return []
            items = 1 if kind == _STRING else min(items, MAX_FILES)
            parts = data[offset:].split(b"\0", items)[:items]
            return [p.decode("utf-8", "surrogateescape") for p in parts]

        def ints(tag: int) -> list[int]:
            kind, offset, items = tags.get(tag, (0, 0, 0))
            if kind != _INT32 or offset < 0 or offset + 4 * items > len(data):
                return []
            return list(struct.unpack_from(f">{min(items, MAX_FILES)}i", data, offset))
    except struct.error:
        return None
    name = (strings(_NAME) or [""])[0]
    if not name:
        return None
    epoch = ints(_EPOCH)
    release = (strings(_VERSION) or [""])[0], (strings(_RELEASE) or [""])[0]
    version = "-".join(part for part in release if part)
    if epoch:
        version = f"{epoch[0]}:{version}"
    algorithm = _RPM_ALGORITHMS.get((ints(_FILEDIGESTALGO) or [1])[0])
    files: list[tuple[str, str, str]] = []
    if algorithm is not None:
        dirs, bases = strings(_DIRNAMES), strings(_BASENAMES)
        indexes, digests = ints(_DIRINDEXES), strings(_FILEDIGESTS)
        for base, index, digest in zip(bases, indexes, digests, strict=False):
            if digest and 0 <= index < len(dirs) and re.fullmatch(r"[0-9a-f]+", digest):
                files.append((posixpath.normpath(dirs[index] + base), algorithm, digest))
    return PackageFiles("rpm", name, version, path, tuple(files))


class _Bounded:
    """A read-only view of the first `limit` bytes of a stream."""

    def __init__(self, stream: BinaryIO, limit: int) -> None:
        self._stream = stream
        self._left = limit

    def read(self, size: int = -1) -> bytes:
        if self._left <= 0:
            return b""
        size = self._left if size < 0 else min(size, self._left)
        data = self._stream.read(size)
        self._left -= len(data)
        return data


def _urlsafe_hex(value: str) -> str | None:
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except (binascii.Error, ValueError):
        return None
    return raw.hex() if len(raw) == 32 else None


def _base64_hex(value: str) -> str | None:
    try:
        return base64.b64decode(value, validate=True).hex()
    except (binascii.Error, ValueError):
        return None
