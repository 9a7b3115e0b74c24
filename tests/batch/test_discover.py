"""Finding the images of a batch and their content digests (directories, globs, list files,
split vmdk), and how `--jobs` is shared."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

from imgscan.batch.digest import FileIdentity, image_digest
from imgscan.batch.discover import discover
from imgscan.batch.runner import split_jobs
from imgscan.batch.store import Store

from .batchstore import make_store


def test_directory_walk_takes_image_names_and_explicit_files_whatever_their_name(
    images: Path, tmp_path: Path
) -> None:
    store = make_store(images, tmp_path / "store" / "sub")
    (store / "SHA256SUMS").write_text("not an image\n")
    (store / "notes.txt").write_text("neither\n")
    explicit = tmp_path / "odd-name.bin"
    explicit.write_bytes((images / "bare.raw").read_bytes())
    found = discover([str(tmp_path / "store"), str(explicit), str(store / "bare.raw")], [])
    assert [i.path for i in found.images] == [
        store / "bare.raw",
        store / "server-stream.vmdk",
        explicit,
    ]
    assert found.problems == ()
    # A glob's matches are images only when named like one; a list file is read relative to it.
    listing = tmp_path / "list.txt"
    listing.write_text("store/sub/server-stream.vmdk\n\n# a comment\nmissing.qcow2\n")
    found = discover([str(tmp_path / "store" / "**" / "*")], [listing])
    assert [i.path.name for i in found.images] == ["bare.raw", "server-stream.vmdk"]
    assert [(p.path, p.error) for p in found.problems] == [
        (str(tmp_path / "missing.qcow2"), "no such file or directory")
    ]


def test_split_vmdk_is_one_image_whose_digest_covers_every_extent(
    images: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "split"
    folder.mkdir()
    convert = ["qemu-img", "convert", "-q", "-f", "raw", "-O", "vmdk"]
    split = ["-o", "subformat=twoGbMaxExtentSparse"]
    subprocess.run([*convert, *split, str(images / "bare.raw"), str(folder / "d.vmdk")], check=True)
    found = discover([str(folder)], [])
    assert len(found.images) == 1
    image = found.images[0]
    assert [p.name for p in image.parts] == ["d.vmdk", "d-s001.vmdk"]
    with Store(tmp_path / "r.sqlite") as store:
        digest, hashed = image_digest(image, store)
        assert digest.startswith("sha256set:")
        assert hashed == image.size
        # Cached by file identity: nothing is read again.
        assert image_digest(image, store) == (digest, 0)
        # A changed extent is a changed image.
        with (folder / "d-s001.vmdk").open("ab") as fh:
            fh.write(b"\0" * 512)
        changed, hashed = image_digest(image, store)
        assert changed != digest and hashed == (folder / "d-s001.vmdk").stat().st_size


def test_one_file_digest_is_its_sha256(images: Path, tmp_path: Path) -> None:
    store = make_store(images, tmp_path / "s", ("server-stream.vmdk",))
    (image,) = discover([str(store)], []).images
    with Store(tmp_path / "r.sqlite") as db:
        digest, _ = image_digest(image, db)
        expected = hashlib.sha256((store / "server-stream.vmdk").read_bytes()).hexdigest()
        assert digest == f"sha256:{expected}"
        assert db.cached_sha256(FileIdentity.of(store / "server-stream.vmdk")) == expected


def test_jobs_are_shared_between_images_and_their_workers() -> None:
    assert split_jobs(2, 10) == (1, 2)
    assert split_jobs(8, 10) == (4, 2)
    assert split_jobs(8, 1) == (1, 8)  # a lone image gets every worker
    assert split_jobs(4, 10, parallel_images=4) == (4, 1)
    assert split_jobs(1, 5) == (1, 1)
