"""Which image files a batch is about: from directories, globs and list files.

A path named on the command line (or in a list file) is taken as an image whatever its name:
the scan itself decides, from the bytes, whether it is one. Inside a directory (walked
recursively) only files whose name ends in a disk image extension are taken, so that a store's
checksums, notes and manifests are not reported as broken images; a vmdk descriptor's extent
files (`disk-s001.vmdk`, `disk-flat.vmdk` beside `disk.vmdk`) are parts of that image, not
images of their own.

Only regular files are ever opened: a FIFO, device or socket (and, inside a walked directory or
a glob, a symlink) is reported as a problem, never read. A file leaves the batch as another
image's extent only when both hold: the descriptor names it as the scanner allows without
--allow-external-files (a plain name after the descriptor's, beside it), and its own bytes are
that kind of extent (a sparse extent's magic; a flat extent of at least the sectors mapped that
is no image itself). A descriptor naming any other file does not hide that file: it stays in
the batch and is scanned as itself (and the descriptor is refused by the scan).
"""

from __future__ import annotations

import contextlib
import glob
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from imgscan.image.formats import VMDK_DESCRIPTOR_MARKER, VMDK_SPARSE_MAGIC, extent_beside

# Lower-case name endings of the files a directory walk takes as images.
IMAGE_SUFFIXES = (
    ".qcow2",
    ".qcow",
    ".img",
    ".raw",
    ".vmdk",
    ".vhd",
    ".vhdx",
    ".vdi",
    ".ova",
)
_GLOB_CHARS = frozenset("*?[")


@dataclass(frozen=True)
class ImageFile:
    """One image of the batch: `path` as the user will recognise it (absolute), and `parts`,
    every file whose bytes make the image (the path itself first, then a vmdk descriptor's
    extents in descriptor order)."""

    path: Path
    parts: tuple[Path, ...]

    @property
    def size(self) -> int:
        """Bytes of all its files (0 for a part that vanished: the scan will say so)."""
        total = 0
        for part in self.parts:
            with contextlib.suppress(OSError):
                total += part.stat().st_size
        return total


@dataclass(frozen=True)
class Problem:
    """A name the user gave that yields no image: a missing file, an empty glob, an unreadable
    list file. Reported in the summary like an image that could not be opened."""

    path: str
    error: str


@dataclass(frozen=True)
class Discovery:
    images: tuple[ImageFile, ...]
    problems: tuple[Problem, ...]


def read_list_file(path: Path) -> tuple[list[str], list[Problem]]:
    """The names in a list file: one per line; blank lines and lines starting with `#` are
    ignored; a relative name is relative to the list file's directory."""
    try:
        text = path.read_text(encoding="utf-8", errors="surrogateescape")
    except OSError as exc:
        return [], [Problem(str(path), f"cannot read list file: {exc.strerror}")]
    names = []
    for line in text.splitlines():
        name = line.strip()
        if name and not name.startswith("#"):
            names.append(name if os.path.isabs(name) else str(path.parent / name))
    return names, []


def discover(specs: list[str], list_files: list[Path]) -> Discovery:
    """Every image named by `specs` (files, directories, globs, `@LIST` list files) and by the
    names in `list_files`, each once (by resolved path), in a stable order: the order given,
    directories and globs sorted."""
    names: list[str] = []
    problems: list[Problem] = []
    for spec in specs:
        if spec.startswith("@") and len(spec) > 1:
            found, trouble = read_list_file(Path(spec[1:]))
            names.extend(found)
            problems.extend(trouble)
        else:
            names.append(spec)
    for list_file in list_files:
        found, trouble = read_list_file(list_file)
        names.extend(found)
        problems.extend(trouble)

    candidates: list[tuple[Path, bool]] = []  # and whether the user named it explicitly
    for name in names:
        if _GLOB_CHARS & set(name):
            matches = sorted(glob.glob(name, recursive=True))
            if not matches:
                problems.append(Problem(name, "no file matches this pattern"))
            for match in matches:
                candidates.extend((p, False) for p in _expand(Path(match), walk_only_images=True))
        else:
            path = Path(name)
            if not path.exists() and not path.is_symlink():
                problems.append(Problem(name, "no such file or directory"))
                continue
            explicit = not path.is_dir()
            candidates.extend((p, explicit) for p in _expand(path, walk_only_images=False))

    images: dict[Path, ImageFile] = {}
    extents: set[Path] = set()
    for candidate, explicit in candidates:
        key = candidate.resolve()
        if key in images:
            continue
        # Never open what is not a regular file (a FIFO blocks open() for ever, a device reads
        # without end): one found by a walk is not even followed through a symlink.
        try:
            st = candidate.stat() if explicit else candidate.lstat()
        except OSError as exc:
            problems.append(Problem(str(candidate), f"cannot read: {exc.strerror}"))
            continue
        if not stat.S_ISREG(st.st_mode):
            kind = "a symlink" if stat.S_ISLNK(st.st_mode) else "not a regular file"
            problems.append(Problem(str(candidate), f"{kind}: not scanned"))
            continue
        parts = (candidate.absolute(), *vmdk_extents(candidate))
        extents.update(p.resolve() for p in true_extents(candidate))
        images[key] = ImageFile(candidate.absolute(), parts)
    # Extents are parts of their descriptor's image, even when a walk or a glob found them too;
    # but only files that really are extents of that descriptor (true_extents): a descriptor
    # naming another image must not take that image out of the batch.
    kept = tuple(image for key, image in images.items() if key not in extents)
    return Discovery(kept, tuple(problems))


def _expand(path: Path, walk_only_images: bool) -> list[Path]:
    """A directory's image files (recursively, sorted), or the path itself. A glob's match
    that is a file is taken only when it looks like an image (`*` matches notes too)."""
    if path.is_dir():
        found = []
        for folder, dirs, files in os.walk(path):
            dirs.sort()
            for name in sorted(files):
                if name.lower().endswith(IMAGE_SUFFIXES):
                    found.append(Path(folder) / name)
        return found
    if walk_only_images and not path.name.lower().endswith(IMAGE_SUFFIXES):
        return []
    return [path]


def read_regular(path: Path, limit: int) -> bytes | None:
    """Up to `limit` bytes from the start of `path` if it is a regular file, else None.

    Opened with O_NONBLOCK (a FIFO's open() would otherwise wait for a writer for ever) and
    checked with fstat on the open file, so that a file swapped for a FIFO or a device after
    a stat is still never read. Raises nothing: None when it cannot be read."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        with os.fdopen(fd, "rb", closefd=False) as fh:
            return fh.read(limit)
    except OSError:
        return None
    finally:
        os.close(fd)


@dataclass(frozen=True)
class _Extent:
    """One extent line of a vmdk descriptor that names a file."""

    name: str
    kind: str  # FLAT, SPARSE, VMFS, ... (upper case)
    sectors: int
    offset: int  # a flat extent's start in its file, in sectors


def _extent_lines(descriptor: bytes) -> list[_Extent]:
    """The extent lines of a descriptor that name a file, read as loosely as the scanner reads
    them (imgscan.image.formats: LF or CR line ends, access in any case, quotes optional)."""
    found: list[_Extent] = []
    for raw in descriptor.replace(b"\r", b"\n").split(b"\n"):
        line = raw.strip().decode("utf-8", "replace")
        words = line.split()
        if len(words) < 3 or words[0].upper() not in ("RW", "RDONLY", "NOACCESS"):
            continue
        fields = line.split('"')
        if len(fields) >= 3:
            name, rest = fields[1], fields[2].split()
        elif len(words) >= 4:
            name, rest = words[3], words[4:]
        else:
            continue
        sectors = int(words[1]) if words[1].isascii() and words[1].isdigit() else -1
        offset = int(rest[0]) if rest and rest[0].isascii() and rest[0].isdigit() else 0
        if words[2].upper() != "ZERO" and len(words[1]) <= 20:
            found.append(_Extent(name, words[2].upper(), sectors, offset))
    return found


def _descriptor_extents(path: Path) -> list[tuple[Path, _Extent]]:
    """The extents of the vmdk descriptor at `path` that the scanner reads without
    --allow-external-files (imgscan.image.formats.extent_beside: plain names after the
    descriptor's, regular files in its directory), in descriptor order; [] for any other file."""
    head = read_regular(path, 1 << 20)
    if head is None or not head.startswith(VMDK_DESCRIPTOR_MARKER):
        return []
    found: list[tuple[Path, _Extent]] = []
    for extent in _extent_lines(head):
        if not extent_beside(path, extent.name):
            continue
        file = (path.parent / extent.name).absolute()
        if all(file != known for known, _ in found):
            found.append((file, extent))
    return found


def vmdk_extents(path: Path) -> list[Path]:
    """The extent files of the vmdk descriptor at `path` that the scanner reads with it (see
    _descriptor_extents), in descriptor order; [] for any other file. They are part of the
    image's content, so of its digest."""
    return [file for file, _ in _descriptor_extents(path)]


# What a flat extent must not start with: a flat extent is raw disk bytes, not an image.
_IMAGE_MAGICS = (b"QFI\xfb", VMDK_SPARSE_MAGIC, b"COWD", b"conectix", b"vhdxfile", b"<<< ")


def _is_extent(file: Path, extent: _Extent) -> bool:
    """Whether `file`'s own bytes are what the descriptor's line says it is: a sparse extent
    starts with the sparse magic (KDMV, or COWD for vmfsSparse); a flat extent holds at least
    the sectors the line maps and is not itself a disk image of some format. Only such a file
    is dropped from a batch as part of another image."""
    head = read_regular(file, 512)
    if head is None:
        return False
    if "SPARSE" in extent.kind:
        return head.startswith((VMDK_SPARSE_MAGIC, b"COWD"))
    if extent.kind not in ("FLAT", "VMFS") or extent.sectors < 0:
        return False
    try:
        size = file.stat().st_size
    except OSError:
        return False
    vdi = len(head) >= 0x44 and head[0x40:0x44] == b"\x7f\x10\xda\xbe"
    return size >= (extent.offset + extent.sectors) * 512 and not (
        head.startswith(_IMAGE_MAGICS) or head.startswith(VMDK_DESCRIPTOR_MARKER) or vdi
    )


def true_extents(path: Path) -> list[Path]:
    """The files of vmdk_extents(path) whose own bytes are extents of the kind the descriptor
    names (see _is_extent): the only files a batch drops because a descriptor names them."""
    return [file for file, extent in _descriptor_extents(path) if _is_extent(file, extent)]
