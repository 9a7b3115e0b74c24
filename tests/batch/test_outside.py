"""A batch over a hostile store (issue 17): what is not a regular file is never opened, a
descriptor cannot take another image out of the batch, and an image changed between hashing
and scanning never gets its result stored under the old digest."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from imgscan import __version__
from imgscan.batch.digest import file_sha256
from imgscan.batch.discover import discover
from imgscan.batch.runner import BatchSettings, run_batch
from imgscan.batch.store import Key, Store
from imgscan.detect.rules import load_pack

from .batchstore import by_name, make_store, summary_json


def _batch(*args: str | Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """The real command line, in its own process: a hang fails the test instead of hanging it."""
    return subprocess.run(
        [sys.executable, "-m", "imgscan", "batch", *map(str, args), "--no-progress"],
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
    )


def test_fifos_devices_and_symlinks_in_a_store_are_never_opened(
    images: Path, tmp_path: Path, signatures: Path
) -> None:
    store = make_store(images, tmp_path / "store", ("bare.raw",))
    os.mkfifo(store / "stuck.img")  # open() for reading would wait for a writer for ever
    (store / "tty.raw").symlink_to("/dev/zero")  # reads without end
    (store / "shadow.raw").symlink_to("/etc/shadow")
    started = time.monotonic()
    found = discover([str(store), str(store / "stuck.img")], [])
    assert [i.path.name for i in found.images] == ["bare.raw"]
    problems = {Path(p.path).name: p.error for p in found.problems}
    assert problems == {
        "shadow.raw": "a symlink: not scanned",
        "stuck.img": "not a regular file: not scanned",
        "tty.raw": "a symlink: not scanned",
    }
    try:
        file_sha256(store / "stuck.img")
        raise AssertionError("a FIFO was hashed")
    except OSError as exc:
        assert exc.strerror == "not a regular file"
    assert time.monotonic() - started < 10
    proc = _batch(
        store, "--db", tmp_path / "r.sqlite", "--summary-format", "json",
        "--signatures", signatures, "--jobs", "1",
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr  # the FIFO and the links are errors: fail closed
    summary = by_name(summary_json(proc.stdout))
    assert summary["bare.raw"]["status"] == "scanned"
    assert summary["stuck.img"]["status"] == "error"


def test_a_descriptor_cannot_take_another_image_out_of_the_batch(
    images: Path, tmp_path: Path, signatures: Path
) -> None:
    store = make_store(images, tmp_path / "store", ("bare.raw",))
    (store / "bare.raw").rename(store / "victim.qcow2")
    descriptor = (
        "# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\n"
        'createType="monolithicFlat"\nRW 16384 FLAT "{}" 0\n'
    )
    (store / "evil.vmdk").write_text(descriptor.format("victim.qcow2"))
    # Named as the scanner allows (after the descriptor), but an image, not a flat extent.
    shutil.copyfile(images / "server-stream.vmdk", store / "disk-flat.vmdk")
    (store / "disk.vmdk").write_text(descriptor.format("disk-flat.vmdk"))
    # A real flat extent: it is part of its descriptor's image, not an image of its own.
    (store / "good-flat.vmdk").write_bytes(bytes(16384 * 512))
    (store / "good.vmdk").write_text(descriptor.format("good-flat.vmdk"))
    found = discover([str(store)], [])
    assert sorted(i.path.name for i in found.images) == [
        "disk-flat.vmdk",
        "disk.vmdk",
        "evil.vmdk",
        "good.vmdk",
        "victim.qcow2",
    ]
    good = next(i for i in found.images if i.path.name == "good.vmdk")
    assert [p.name for p in good.parts] == ["good.vmdk", "good-flat.vmdk"]
    (store / "disk.vmdk").unlink()
    (store / "disk-flat.vmdk").unlink()
    (store / "good.vmdk").unlink()
    (store / "good-flat.vmdk").unlink()
    proc = _batch(
        store, "--db", tmp_path / "r.sqlite", "--summary-format", "json",
        "--signatures", signatures, "--jobs", "1",
    )  # fmt: skip
    summary = by_name(summary_json(proc.stdout))
    assert proc.returncode == 2, proc.stderr  # the descriptor is refused
    assert summary["evil.vmdk"]["status"] == "error"
    assert "--allow-external-files" in summary["evil.vmdk"]["error"]
    assert summary["victim.qcow2"]["status"] == "scanned"  # and the victim is still scanned


class _SwapBeforeScanning:
    """The batch's progress hook, used to act at the moment hashing has ended and scanning
    has not begun: it replaces `image` by `other`, as another process could."""

    def __init__(self, image: Path, other: Path) -> None:
        self.image, self.other = image, other

    def phase(self, name: str, images: int, size: int) -> None:
        if name == "scanning":
            replacement = self.image.with_name(".replacement")
            shutil.copyfile(self.other, replacement)
            os.replace(replacement, self.image)

    def advance(self, images: int, size: int) -> None:
        pass


def test_an_image_replaced_between_hashing_and_scanning_is_not_stored(
    images: Path, tmp_path: Path, signatures: Path
) -> None:
    store_dir = make_store(images, tmp_path / "store", ("bare.raw",))
    image = store_dir / "bare.raw"
    before = f"sha256:{file_sha256(image)}"
    pack = load_pack(signatures)
    discovery = discover([str(store_dir)], [])
    settings = BatchSettings(jobs=1, signatures=signatures, retries=0)
    swap = _SwapBeforeScanning(image, images / "server-stream.vmdk")
    with Store(tmp_path / "r.sqlite") as store, store.writer_lock():
        result = run_batch(discovery, store, settings, swap, None, pack)
        (outcome,) = result.outcomes
        assert outcome.digest == before
        assert outcome.status == "error"
        assert outcome.error is not None and "changed while the batch was scanning" in outcome.error
        assert not store.is_done(Key(before, __version__, pack.version))
        assert store.report(Key(before, __version__, pack.version)) is None
