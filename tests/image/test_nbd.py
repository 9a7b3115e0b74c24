"""qemu's block layer under the native reader (nbd.py, served.py): what the server serves, what
it refuses by its own options, the client's block cache, and that no qemu-nbd ever outlives
imgscan, however imgscan ends.

The containers are `qemu-img convert` copies of the test images (testdata/build.py), made once
per session: zlib- and zstd-compressed qcow2 and VDI, the formats libyal cannot read.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from expect import finding_keys, scan
from procs import cmdline, pids, session_processes

from imgscan.image import ReaderKind
from imgscan.image.formats import detect_format
from imgscan.image.nbd import NbdDevice, NbdServer
from imgscan.image.served import served_by_qemu

# name -> qemu-img convert options
COPIES = {
    "server-zlib.qcow2": ("-O", "qcow2", "-c"),
    "server-zstd.qcow2": ("-O", "qcow2", "-c", "-o", "compression_type=zstd"),
    "server.vdi": ("-O", "vdi"),
}


@pytest.fixture(scope="session")
def copies(images: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("nbd-copies")
    for name, options in COPIES.items():
        subprocess.run(
            [
                "qemu-img",
                "convert",
                "-q",
                "-f",
                "qcow2",
                *options,
                str(images / "server.qcow2"),
                str(folder / name),
            ],
            check=True,
        )
    subprocess.run(
        [
            "qemu-img",
            "convert",
            "-q",
            "-f",
            "qcow2",
            "-O",
            "raw",
            str(images / "server.qcow2"),
            str(folder / "server.raw"),
        ],
        check=True,
    )
    return folder


def _qemu_nbd_serving(image: Path) -> list[int]:
    """qemu-nbd processes whose command line names `image`."""
    return [p for p in pids() if "qemu-nbd" in cmdline(p) and _names(p, image)]


def _names(pid: int, image: Path) -> bool:
    try:
        return str(image) in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return False


@pytest.mark.parametrize("name", sorted(COPIES))
def test_served_bytes_are_qemu_img_convert_bytes(copies: Path, name: str) -> None:
    """Random reads through the block cache, small and large, across block boundaries, give
    exactly the bytes of the raw conversion of the same disk."""
    image = copies / name
    fmt = detect_format(image)
    assert served_by_qemu(fmt.disks[0])
    server = NbdServer(str(image), fmt.disks[0])
    try:
        device = NbdDevice(server.socket, block_size=1 << 16, blocks=4)
        reference = (copies / "server.raw").read_bytes()
        assert device.size == len(reference)
        rng = random.Random(15)
        for _ in range(300):
            length = rng.choice((1, 512, 4096, 70_000, 1 << 20))
            offset = rng.randrange(0, device.size)
            assert device.pread(length, offset) == reference[offset : offset + length]
        assert device.pread(10, device.size) == b""
        device.close()
    finally:
        server.stop()
    assert _qemu_nbd_serving(image) == []


def test_backing_file_refused_by_the_options(tmp_path: Path) -> None:
    """A qcow2 naming a backing file, given to the server directly (past imgscan's own header
    check): the clusters the backing file holds read as zeros; the backing file is never read."""
    backing = tmp_path / "host-secret.raw"
    backing.write_bytes(b"HOST-SECRET-" * (1 << 16))
    image = tmp_path / "overlay.qcow2"
    subprocess.run(
        [
            "qemu-img",
            "create",
            "-q",
            "-f",
            "qcow2",
            "-F",
            "raw",
            "-b",
            str(backing),
            str(image),
            "1M",
        ],
        check=True,
    )
    fmt = detect_format(image, allow_external=True)
    assert fmt.external
    server = NbdServer(str(image), fmt.disks[0])
    try:
        data = NbdDevice(server.socket).pread(1 << 20, 0)
    finally:
        server.stop()
    assert data == bytes(1 << 20)


def test_qemu_cannot_open_is_one_line(tmp_path: Path, copies: Path) -> None:
    from imgscan.errors import ImageError

    """A header imgscan's own check lets through but qemu refuses (a VDI block size other than
    1 MiB): qemu's reason, on one line, and no server left."""
    image = tmp_path / "odd-block.vdi"
    data = bytearray((copies / "server.vdi").read_bytes())
    data[0x178:0x17C] = (4096).to_bytes(4, "little")  # block size
    image.write_bytes(bytes(data))
    fmt = detect_format(image)
    with pytest.raises(ImageError, match="qemu cannot open the image") as caught:
        NbdServer(str(image), fmt.disks[0])
    assert "\n" not in str(caught.value)
    assert _qemu_nbd_serving(image) == []


@pytest.mark.parametrize("name", sorted(COPIES))
def test_native_reader_reads_the_copy_natively(
    images: Path, manifest: dict[str, Any], copies: Path, name: str
) -> None:
    """The auto reader reads the copy with every volume native (no appliance) and finds what
    it finds in the qcow2 the copy was made from."""
    image = manifest["server-qcow2"]
    reference = finding_keys(scan(images, image, ReaderKind.NATIVE, jobs=2))
    result = scan(copies, {**image, "file": name}, ReaderKind.AUTO, jobs=2)
    assert result.volumes and all(v.reader == "native" for v in result.volumes)
    assert finding_keys(result) == reference
    assert _qemu_nbd_serving(copies / name) == []


def test_ova_member_is_served_in_place(
    images: Path, manifest: dict[str, Any], copies: Path, tmp_path: Path
) -> None:
    """A compressed qcow2 inside an OVA: qemu reads the member's byte range of the archive
    (a raw node with offset and size under the qcow2 driver), with no copy made."""
    import tarfile

    ova = tmp_path / "appliance.ova"
    with tarfile.open(ova, "w", format=tarfile.USTAR_FORMAT) as archive:
        descriptor = tmp_path / "appliance.ovf"
        descriptor.write_text('<?xml version="1.0"?><Envelope/>\n')
        archive.add(descriptor, arcname="appliance.ovf")
        archive.add(copies / "server-zstd.qcow2", arcname="appliance-disk1.qcow2")
    fmt = detect_format(ova)
    assert [(d.member, d.format, d.compressed) for d in fmt.disks] == [
        ("appliance-disk1.qcow2", "qcow2", True)
    ]
    image = manifest["server-qcow2"]
    reference = finding_keys(scan(images, image, ReaderKind.NATIVE, jobs=1))
    result = scan(tmp_path, {**image, "file": ova.name}, ReaderKind.AUTO, jobs=1)
    assert result.volumes and all(v.reader == "native" for v in result.volumes)
    assert finding_keys(result) == reference


def _start(image: Path, *extra: str) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-m", "imgscan", "scan", str(image), "--no-progress", *extra]
    return subprocess.Popen(
        argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )


def _wait_for_server(proc: subprocess.Popen[bytes], image: Path) -> None:
    deadline = time.monotonic() + 60
    while not _qemu_nbd_serving(image):
        assert proc.poll() is None, "imgscan ended before its qemu-nbd started"
        assert time.monotonic() < deadline, "no qemu-nbd started"
        time.sleep(0.005)


def _gone(image: Path, seconds: float = 5.0) -> list[int]:
    deadline = time.monotonic() + seconds
    while (left := _qemu_nbd_serving(image)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


@pytest.mark.parametrize("delay", [0.0, 0.15, 0.4, 0.8])
def test_sigkill_of_imgscan_leaves_no_qemu_nbd(copies: Path, delay: float) -> None:
    """SIGKILL of imgscan's main process as its server starts, while the reader process
    opens the image, and while the workers read: the kernel ends the server with it."""
    image = copies / "server-zstd.qcow2"
    with _start(image, "--jobs", "2") as proc:
        _wait_for_server(proc, image)
        time.sleep(delay)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        left = _gone(image)
    assert left == [], left


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_stops_qemu_nbd(copies: Path, signum: signal.Signals) -> None:
    """SIGINT or SIGTERM while the scan runs: exit 130, and the session holds nothing (the
    server stopped by imgscan itself, before it exited)."""
    image = copies / "server.vdi"
    with _start(image, "--jobs", "2") as proc:
        _wait_for_server(proc, image)
        time.sleep(0.3)
        os.kill(proc.pid, signum)
        code = proc.wait(timeout=60)
        left = session_processes(proc.pid)
    assert code in (130, 1)  # 1: the scan had already finished when the signal came
    assert left == [], left
    assert _qemu_nbd_serving(image) == []


def test_without_qemu_nbd_the_packages_are_named(copies: Path) -> None:
    """No qemu-nbd on PATH: the native reader says which packages to install, on one line
    (the auto reader would hand the image to libguestfs instead)."""
    argv = [sys.executable, "-m", "imgscan", "scan", str(copies / "server.vdi"), "--no-progress"]
    env = {**os.environ, "PATH": "/nonexistent"}
    done = subprocess.run(
        [*argv, "--reader", "native"], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "qemu-utils" in lines[0] and "python3-libnbd" in lines[0], lines
