"""Native reader throughput: read every regular file of an uncompressed image, one process.

Builds (and caches under ~/.cache/imgscan/bench) two raw ext4 images with mke2fs -d: one of
large files, one of many small files. Prints MB/s for the first and files/s for the second,
next to a plain sequential read of the image file itself (the machine's own limit).

    .venv/bin/python benchmarks/native_read.py [--large-mb 512] [--small-files 20000]

Targets (issue 3, 2-core machine): >= 300 MB/s on large files, >= 5,000 files/s on small ones.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from imgscan.image.formats import detect_format
from imgscan.image.layout import mount_layout
from imgscan.image.native import NativeOpener, NativeReader
from imgscan.model import FileRef

CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "imgscan" / "bench"


def _build(name: str, populate: object, size_mb: int) -> Path:
    image = CACHE / name
    if image.exists():
        return image
    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp) / "tree"
        tree.mkdir()
        populate(tree)  # type: ignore[operator]
        partial = image.with_suffix(".partial")
        subprocess.run(
            ["mke2fs", "-q", "-t", "ext4", "-d", str(tree), str(partial), f"{size_mb}M"],
            check=True,
        )
        partial.replace(image)
    return image


def _large(total_mb: int) -> object:
    def populate(tree: Path) -> None:
        block = os.urandom(1 << 20)
        for index in range(total_mb // 64):
            with (tree / f"blob{index}.bin").open("wb") as out:
                for _ in range(64):
                    out.write(block)

    return populate


def _small(count: int) -> object:
    def populate(tree: Path) -> None:
        for index in range(count):
            folder = tree / f"d{index // 500}"
            folder.mkdir(exist_ok=True)
            (folder / f"f{index}.conf").write_text(f"key{index} = value {index}\n" * 20)

    return populate


def _read_all(image: Path) -> tuple[int, int, float]:
    """(files, bytes, seconds) to walk the image and read every regular file in 1 MiB chunks."""
    started = time.perf_counter()
    reader = NativeReader(str(image), detect_format(image))
    opener = NativeOpener(reader.opener_spec())
    layout = mount_layout(reader, reader.volumes())
    files = total = 0
    for device, mountpoint in layout.items():
        for item in reader.files(device, mountpoint):
            if not isinstance(item, FileRef):
                continue
            stream = opener.open(item)
            while chunk := stream.read(1 << 20):
                total += len(chunk)
            files += 1
    reader.close()
    return files, total, time.perf_counter() - started


def _sequential(image: Path) -> float:
    started = time.perf_counter()
    with image.open("rb") as fh:
        while fh.read(8 << 20):
            pass
    return image.stat().st_size / (time.perf_counter() - started) / 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--large-mb", type=int, default=512)
    parser.add_argument("--small-files", type=int, default=20_000)
    args = parser.parse_args()
    large = _build(f"large-{args.large_mb}.raw", _large(args.large_mb), args.large_mb + 128)
    small = _build(
        f"small-{args.small_files}.raw", _small(args.small_files), max(64, args.small_files // 40)
    )
    print(f"sequential read of {large.name}: {_sequential(large):.0f} MB/s", flush=True)
    files, total, seconds = _read_all(large)
    print(
        f"native, large files: {files} files, {total / 1e6:.0f} MB in {seconds:.2f} s = "
        f"{total / seconds / 1e6:.0f} MB/s (target >= 300)"
    )
    files, total, seconds = _read_all(small)
    print(
        f"native, small files: {files} files, {total / 1e6:.1f} MB in {seconds:.2f} s = "
        f"{files / seconds:.0f} files/s (target >= 5000)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
