"""Which image files a batch is about: from directories, globs and list files.

A path named on the command line (or in a list file) is taken as an image whatever its name:
the scan itself decides, from the bytes, whether it is one. Inside a directory (walked
recursively) only files whose name ends in a disk image extension are taken, so that a store's
checksums, notes and manifests are not reported as broken images; a vmdk descriptor's extent
files (`disk-s001.vmdk`, `disk-flat.vmdk` beside `disk.vmdk`) are parts of that image, not
images of their own.
"""

from __future__ import annotations

import contextlib
import glob
import os
from dataclasses import dataclass
from pathlib import Path

from imgscan.image.formats import VMDK_DESCRIPTOR_MARKER

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

    candidates: list[Path] = []
    for name in names:
        if _GLOB_CHARS & set(name):
            matches = sorted(glob.glob(name, recursive=True))
            if not matches:
                problems.append(Problem(name, "no file matches this pattern"))
            for match in matches:
                candidates.extend(_expand(Path(match), walk_only_images=True))
        else:
            path = Path(name)
            if not path.exists() and not path.is_symlink():
                problems.append(Problem(name, "no such file or directory"))
                continue
            candidates.extend(_expand(path, walk_only_images=False))

    images: dict[Path, ImageFile] = {}
    extents: set[Path] = set()
    for candidate in candidates:
        key = candidate.resolve()
        if key in images:
            continue
        parts = (candidate.absolute(), *vmdk_extents(candidate))
        extents.update(p.resolve() for p in parts[1:])
        images[key] = ImageFile(candidate.absolute(), parts)
    # Extents are parts of their descriptor's image, even when a walk or a glob found them too.
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


def vmdk_extents(path: Path) -> list[Path]:
    """The extent files a vmdk descriptor names that lie beside it (plain names, regular files
    in the same directory), in descriptor order; [] for any other file. These are the files
    the readers open with the descriptor, so they are part of the image's content."""
    try:
        with path.open("rb") as fh:
            head = fh.read(1 << 20)
    except OSError:
        return []
    if not head.startswith(VMDK_DESCRIPTOR_MARKER):
        return []
    found: list[Path] = []
    for raw in head.split(b"\n"):
        line = raw.strip().decode("utf-8", "replace")
        fields = line.split('"')
        if len(fields) < 3 or not line.split() or line.split()[0] not in ("RW", "RDONLY"):
            continue
        name = fields[1]
        if not name or os.path.basename(name) != name or name in (".", "..") or "\0" in name:
            continue
        extent = path.parent / name
        if extent.is_file() and extent not in found:
            found.append(extent.absolute())
    return found
