"""What the package-ownership digests cost the worker: every file of a real tree through the
worker's own path (`FileScanner.scan`: archives expanded, the engine, file rules, usage and
package records), with the digests of every file taken on the stream as it is read, for each
choice of algorithms: none, sha256 only (what an image without dpkg or apk records costs),
sha256 + md5 (a Debian image), all three.

The corpus is the machine's own /usr (a stock Debian 12: libraries, binaries, Python's
standard library, docs, man pages), files read into memory first up to `--mb` megabytes, so
reading the disk is not timed; the image reader's own cost (decompressing qcow2, dfvfs) comes
on top in a real scan and makes the share of hashing smaller still. Runs are interleaved and
the best of `--repeat` is kept (the machine is shared and noisy).

    .venv/bin/python benchmarks/digest_cost.py [--mb 400] [--repeat 3] [--root /usr]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from imgscan.detect.engine import Engine, build_spec
from imgscan.detect.rules import load_pack
from imgscan.image.interface import OpenerSpec
from imgscan.model import FileRef
from imgscan.options import default_cache_dir, default_signatures_dir
from imgscan.scan.worker import FileScanner, InlineOpener, WorkerSpec

CHOICES = {
    "none": (),
    "sha256": ("sha256",),
    "sha256+md5": ("sha256", "md5"),
    "sha256+md5+sha1": ("sha256", "md5", "sha1"),
}


def corpus(root: Path, limit: int) -> list[FileRef]:
    """Regular files under `root` as inline FileRefs, up to `limit` bytes in total, taken
    evenly across the tree (every 3rd directory) so libraries and text are both in it."""
    refs: list[FileRef] = []
    total = 0
    for number, (directory, _dirs, names) in enumerate(os.walk(root)):
        if number % 3:
            continue
        for name in sorted(names):
            path = Path(directory) / name
            if path.is_symlink() or not path.is_file():
                continue
            try:
                data = path.read_bytes()
            except OSError:
                continue
            if not data or len(data) > 64 << 20:
                continue
            refs.append(FileRef("/dev/sda1", str(path), len(data), "", inline=data))
            total += len(data)
            if total >= limit:
                return refs
    return refs


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=int, default=400)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--root", type=Path, default=Path("/usr"))
    args = parser.parse_args()
    spec = build_spec(load_pack(default_signatures_dir()), default_cache_dir() / "hyperscan")
    engine = Engine(spec)
    refs = corpus(args.root, args.mb << 20)
    size = sum(r.size for r in refs)
    print(f"corpus: {len(refs)} files, {size / 1e6:.0f} MB under {args.root}")
    best: dict[str, float] = {}
    for _ in range(args.repeat):
        for name, algorithms in CHOICES.items():
            opener = OpenerSpec(reader="inline", image="", format="")
            worker = WorkerSpec(spec, opener, 1 << 20, 1 << 30, False, digests=algorithms)
            scanner = FileScanner(worker, InlineOpener(), engine)
            started = time.process_time()
            for ref in refs:
                scanner.scan(ref)
            seconds = time.process_time() - started
            best[name] = min(best.get(name, seconds), seconds)
    base = best["none"]
    for name, seconds in best.items():
        extra = (seconds - base) / base * 100
        print(f"{name:>16}: {seconds:6.2f} s CPU, {size / 1e6 / seconds:6.1f} MB/s, {extra:+5.1f}%")


if __name__ == "__main__":
    main()
