"""Mount layout from the guest's fstab, over an in-memory fake reader."""

from __future__ import annotations

from collections.abc import Iterator

from imgscan.image.interface import OpenerSpec, VolumeInfo
from imgscan.image.layout import (
    mount_layout,
    parse_fstab,
    relocate,
    relocations,
    root_filesystem,
)
from imgscan.model import FileRef, ImageInfo, ReaderInfo, Skipped, VolumeStatus

OK = VolumeStatus.SCANNED


class FakeReader:
    """A reader whose volumes hold a few small files in memory."""

    image = ImageInfo("fake", "raw", 0)
    info = ReaderInfo("fake")
    warnings: tuple[str, ...] = ()

    def __init__(self, volumes: list[VolumeInfo], files: dict[tuple[str, str], bytes]) -> None:
        self._volumes = volumes
        self._files = files

    def volumes(self) -> list[VolumeInfo]:
        return self._volumes

    def read_small(self, device: str, path: str, limit: int = 1 << 16) -> bytes | None:
        return self._files.get((device, path))

    def files(self, device: str, mountpoint: str) -> Iterator[FileRef | Skipped]:
        return iter(())

    def opener_spec(self) -> OpenerSpec:
        return OpenerSpec("fake", "fake", "raw")

    def close(self) -> None:
        pass


def test_parse_fstab_skips_swap_and_comments() -> None:
    text = (
        "# comment\nUUID=a / ext4 defaults 0 1\nUUID=b none swap sw 0 0\n"
        "LABEL=data /srv/my\\040data ext4 defaults 0 2\n\n"
    )
    assert parse_fstab(text) == [
        ("UUID=a", "/", "defaults"),
        ("LABEL=data", "/srv/my data", "defaults"),
    ]


def test_layout_by_uuid_label_and_device() -> None:
    volumes = [
        VolumeInfo("/dev/sda1", "ext4", OK, uuid="11111111-0000-0000-0000-000000000001"),
        VolumeInfo("/dev/sda2", "ext4", OK, label="home"),
        VolumeInfo("/dev/sda3", "ext2", OK),
        VolumeInfo("/dev/sda4", "ext4", OK),
        VolumeInfo("/dev/sda5", None, VolumeStatus.UNSUPPORTED, "no filesystem recognised"),
    ]
    fstab = (
        b"UUID=11111111-0000-0000-0000-000000000001 / ext4 defaults 0 1\n"
        b"LABEL=home /home ext4 defaults 0 2\n/dev/vda3 /boot ext2 defaults 0 2\n"
    )
    reader = FakeReader(volumes, {("/dev/sda1", "/etc/fstab"): fstab})
    assert mount_layout(reader, volumes) == {
        "/dev/sda1": "/",
        "/dev/sda2": "/home",
        "/dev/sda3": "/boot",
        "/dev/sda4": "/@dev/sda4",
    }


def test_lone_filesystem_without_fstab_is_root() -> None:
    volumes = [VolumeInfo("/dev/sda", "ext2", OK)]
    assert mount_layout(FakeReader(volumes, {}), volumes) == {"/dev/sda": "/"}


def test_two_filesystems_without_fstab_are_synthetic() -> None:
    volumes = [VolumeInfo("/dev/sda1", "ext4", OK), VolumeInfo("/dev/sda2", "ext4", OK)]
    assert mount_layout(FakeReader(volumes, {}), volumes) == {
        "/dev/sda1": "/@dev/sda1",
        "/dev/sda2": "/@dev/sda2",
    }


def test_layout_by_lvm_paths() -> None:
    volumes = [
        VolumeInfo("/dev/sda1", "vfat", OK, uuid="ABCD-1234"),
        VolumeInfo("/dev/my-vg/root", "ext4", OK, uuid="11111111-0000-0000-0000-000000000002"),
        VolumeInfo("/dev/my-vg/var", "ext4", OK),
        VolumeInfo("/dev/my-vg/home", "xfs", OK),
    ]
    fstab = (
        b"UUID=11111111-0000-0000-0000-000000000002 / ext4 defaults 0 1\n"
        b"/dev/mapper/my--vg-var /var ext4 defaults 0 2\n"
        b"/dev/my-vg/home /home xfs defaults 0 2\n"
        b"UUID=ABCD-1234 /boot/efi vfat umask=0077 0 1\n"
    )
    reader = FakeReader(volumes, {("/dev/my-vg/root", "/etc/fstab"): fstab})
    assert mount_layout(reader, volumes) == {
        "/dev/my-vg/root": "/",
        "/dev/my-vg/var": "/var",
        "/dev/my-vg/home": "/home",
        "/dev/sda1": "/boot/efi",
    }


def test_layout_through_crypttab() -> None:
    volumes = [
        VolumeInfo("/dev/sda1", "ext4", OK, uuid="11111111-0000-0000-0000-000000000003"),
        VolumeInfo(
            "/dev/sda2", "crypto_LUKS", VolumeStatus.SKIPPED, uuid="aaaa-bbbb", reason="unlocked"
        ),
        VolumeInfo("/dev/mapper/luks-sda2", "ext4", OK, parent="/dev/sda2"),
    ]
    files = {
        ("/dev/sda1", "/etc/fstab"): b"UUID=11111111-0000-0000-0000-000000000003 / ext4 d 0 1\n"
        b"/dev/mapper/srv_crypt /srv ext4 defaults 0 2\n",
        ("/dev/sda1", "/etc/crypttab"): b"srv_crypt UUID=aaaa-bbbb none luks\n",
    }
    assert mount_layout(FakeReader(volumes, files), volumes) == {
        "/dev/sda1": "/",
        "/dev/mapper/luks-sda2": "/srv",
    }


def test_btrfs_subvolumes_by_name_id_and_default() -> None:
    btrfs = VolumeInfo(
        "/dev/sda2",
        "btrfs",
        OK,
        uuid="22222222-0000-0000-0000-000000000001",
        subvolumes=((256, "@"), (257, "@home"), (258, "@log"), (259, "@/var/lib/machines/x")),
        default_subvolume="@",
    )
    volumes = [btrfs, VolumeInfo("/dev/sda1", "vfat", OK, uuid="ABCD-1234")]
    uuid = "UUID=22222222-0000-0000-0000-000000000001"
    fstab = (
        f"{uuid} / btrfs defaults 0 0\n"  # no subvol=: the default subvolume, @
        f"{uuid} /home btrfs subvol=/@home,compress=zstd 0 0\n"
        f"{uuid} /var/log btrfs subvolid=258 0 0\n"
        "UUID=ABCD-1234 /boot/efi vfat umask=0077 0 2\n"
    ).encode()
    reader = FakeReader(volumes, {("/dev/sda2", "/@/etc/fstab"): fstab})
    layout = mount_layout(reader, volumes)
    assert layout == {
        "btrfsvol:/dev/sda2/@": "/",
        "btrfsvol:/dev/sda2/@home": "/home",
        "btrfsvol:/dev/sda2/@log": "/var/log",
        "/dev/sda1": "/boot/efi",
        "/dev/sda2": "/@dev/sda2",
    }
    assert root_filesystem(layout, volumes) == ("/dev/sda2", "/@")
    moves = relocations(layout, "/dev/sda2")
    assert [
        relocate(path, moves)
        for path in (
            "/@dev/sda2/@/etc/passwd",
            "/@dev/sda2/@/var/lib/machines/x/etc/app.env",  # nested: inside its parent
            "/@dev/sda2/@home/alice/.pgpass",
            "/@dev/sda2/@log/app.log",
            "/@dev/sda2/@snapshots/1/etc/passwd",  # not mounted: stays under the top level
            "/@dev/sda2/@homework/x",  # a prefix of a name is not its directory
        )
    ] == [
        "/etc/passwd",
        "/var/lib/machines/x/etc/app.env",
        "/home/alice/.pgpass",
        "/var/log/app.log",
        "/@dev/sda2/@snapshots/1/etc/passwd",
        "/@dev/sda2/@homework/x",
    ]
