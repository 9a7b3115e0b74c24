"""How long `imgscan batch` takes over an image store: the first run, and a rerun of the same,
unchanged store (which must only recognise every image and scan none).

The store is `--count` small raw images (a GPT disk with one ext4 file system of a few files,
one of them a planted password, each image different), made with mke2fs -d under
`~/.cache/imgscan/bench/store-<count>/`. The results database is fresh for every run of this
script. Printed: images, first-run wall time and images/s, rerun wall time, and how many scans
the store recorded (the rerun must add none).

    .venv/bin/python benchmarks/batch_rerun.py [--count 200]

Target (issue 7): a rerun of an unchanged store in seconds.
"""

from __future__ import annotations

import argparse
import os
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "imgscan" / "bench"
MIB = 1 << 20


def _image(path: Path, work: Path, index: int) -> None:
    tree = work / f"tree{index}"
    (tree / "etc").mkdir(parents=True)
    (tree / "etc" / "hostname").write_text(f"app{index:05}\n")
    (tree / "etc" / "app.conf").write_text(
        f"[db]\nuser = app{index}\npassword = {secrets.token_urlsafe(15)}\n"
    )
    fs = work / f"fs{index}.ext4"
    subprocess.run(["mke2fs", "-q", "-F", "-t", "ext4", "-d", str(tree), str(fs), "4M"], check=True)
    partial = path.with_suffix(".partial")
    with partial.open("wb") as disk:
        disk.truncate(6 * MIB)
    table = "label: gpt\nstart=2048, size=8192, type=L\n"
    subprocess.run(["sfdisk", "-q", str(partial)], input=table, text=True, check=True)
    with partial.open("r+b") as disk:
        disk.seek(MIB)
        disk.write(fs.read_bytes())
    fs.unlink()
    partial.rename(path)


def store(count: int) -> Path:
    """The directory of `count` distinct small images (built once, then reused)."""
    folder = CACHE / f"store-{count}"
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for index in range(count):
            path = folder / f"vm{index:05}.raw"
            if not path.exists():
                _image(path, Path(tmp), index)
    return folder


def _batch(folder: Path, db: Path) -> tuple[float, int]:
    argv = [sys.executable, "-m", "imgscan", "batch", str(folder), "--db", str(db), "-q"]
    started = time.monotonic()
    proc = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seconds = time.monotonic() - started
    if proc.returncode not in (0, 1):
        raise SystemExit(f"batch failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return seconds, proc.returncode


def _scans(db: Path) -> int:
    """How many scans the store recorded (the store's own count, as `Store.total_scans`)."""
    from imgscan.batch.store import Store

    with Store(db) as results:
        return results.total_scans()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=200, help="images in the store")
    args = parser.parse_args()
    folder = store(args.count)
    with tempfile.TemporaryDirectory(prefix="imgscan-store-") as tmp:
        db = Path(tmp) / "results.sqlite"
        first, code = _batch(folder, db)
        after_first = _scans(db)
        rerun, _ = _batch(folder, db)
        after_rerun = _scans(db)
    print(f"images: {args.count} ({folder}); {os.cpu_count()} cores")
    print(f"first run: {first:.1f} s ({args.count / first:.1f} images/s), exit {code}")
    print(f"rerun of the unchanged store: {rerun:.2f} s")
    print(f"scans recorded: {after_first} after the first run, {after_rerun} after the rerun")
    return 0


if __name__ == "__main__":
    sys.exit(main())
