"""File-system metadata as FileRefs (imgscan/image/metadata.py): name batches and the place
of a finding inside one, and which extended attributes are scanned."""

from __future__ import annotations

from imgscan.image.metadata import (
    NAMES_BATCH,
    NameBatches,
    link_ref,
    name_at,
    wants_xattr,
    xattr_ref,
)


def test_a_finding_is_placed_on_the_name_that_holds_it() -> None:
    batches = NameBatches("/dev/sda1")
    for path, name in (("/srv/a", "a"), ("/srv/new\nline", "new\nline"), ("/srv/key=X", "key=X")):
        assert batches.add(path, name) is None
    assert batches.add("/", "") is None and batches.add("/srv/.", ".") is None
    ref = batches.flush()
    assert ref is not None and batches.flush() is None
    # A newline inside a name is a space: one name, one line.
    assert ref.inline == b"a\nnew line\nkey=X"
    assert ref.metadata == "names" and ref.path == "/srv/a#names"
    assert [name_at(ref, offset) for offset in (0, 2, 10, 11, 15)] == [
        "/srv/a",
        "/srv/new\nline",
        "/srv/new\nline",
        "/srv/key=X",
        "/srv/key=X",
    ]
    assert name_at(link_ref("/dev/sda1", "/l", b"x"), 0) is None


def test_batches_are_bounded() -> None:
    batches = NameBatches("/dev/sda1")
    full = [batches.add(f"/d/f{i}", f"f{i}") for i in range(NAMES_BATCH)]
    assert full[:-1] == [None] * (NAMES_BATCH - 1)
    assert full[-1] is not None and len(full[-1].names) == NAMES_BATCH
    big = batches.add("/d/" + "n" * 255, "n" * 255)
    assert big is None
    assert batches.add("/d/m", "m" * (1 << 20)) is not None  # the byte bound


def test_xattrs_scanned_and_their_place() -> None:
    assert wants_xattr("user.db") and wants_xattr("trusted.ci") and wants_xattr("x.other")
    assert not wants_xattr("security.selinux") and not wants_xattr("system.posix_acl_access")
    ref = xattr_ref("/dev/sda1", "/etc/app.conf", "user.db", b"v")
    assert (ref.path, ref.inline, ref.metadata) == ("/etc/app.conf#xattr:user.db", b"v", "xattr")
    link = link_ref("/dev/sda1", "/srv/l", b"postgresql://h/db")
    assert (link.path, link.metadata) == ("/srv/l#symlink-target", "symlink")
