"""Valid seed inputs built by code: archives, disk-image headers (qemu-img) and certificates.

`python -m tests.fuzz.seeds` (from the repository root) rewrites the `valid-*` files of the
binary corpus targets from these builders; the tests also call `image_seeds` at run time for
the images too large to keep (a monolithicSparse vmdk is 64 KiB of mostly zeros, a VHDX 8 MiB).
Inputs that found bugs (`bug-*`) are kept by hand. Nothing here holds a credential: member
text is placeholder configuration, and any certificate's private key is thrown away.
"""

from __future__ import annotations

import bz2
import datetime
import gzip
import io
import lzma
import shutil
import subprocess
import tarfile
import tempfile
import zipfile
from pathlib import Path

import zstandard

CORPUS = Path(__file__).resolve().parent / "corpus"
SETTINGS = b"[database]\nhost = db.internal\nuser = app\npassword = changeme\n"


def tar_of(members: dict[str, bytes], fmt: int = tarfile.GNU_FORMAT) -> bytes:
    """A tar of `members` (name -> content), byte-for-byte reproducible."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as archive:
        for name, content in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            info.mtime = 0
            archive.addfile(info, io.BytesIO(content))
    return buf.getvalue()


def zip_of(members: dict[str, bytes], method: int = zipfile.ZIP_DEFLATED) -> bytes:
    """A zip of `members` (name -> content), byte-for-byte reproducible."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", method) as archive:
        for name, content in members.items():
            archive.writestr(zipfile.ZipInfo(name, (1980, 1, 1, 0, 0, 0)), content, method)
    return buf.getvalue()


COMPRESSORS = {
    "gz": lambda data: gzip.compress(data, mtime=0),
    "bz2": bz2.compress,
    "xz": lzma.compress,
    "zst": zstandard.ZstdCompressor().compress,
}


def archive_seeds() -> dict[str, bytes]:
    """One small valid archive of every kind the expander knows, and a nested one."""
    members = {"app/settings.ini": SETTINGS, "app/README": b"plain text\n"}
    tar = tar_of(members)
    seeds = {
        "valid-app.zip": zip_of(members),
        "valid-stored.zip": zip_of(members, zipfile.ZIP_STORED),
        "valid-app.tar": tar,
        "valid-pax.tar": tar_of(members, tarfile.PAX_FORMAT),
        "valid-nested.zip": zip_of({"lib/inner.tar.xz": lzma.compress(tar)}),
        # Both once reported corrupt: a gzip inside another archive was opened for writing,
        # and zipfile's is_dir() raises IndexError on an empty member name.
        "valid-gzip-in-tar.tar": tar_of({"logs/app.log.gz": gzip.compress(SETTINGS, mtime=0)}),
        "valid-empty-name.zip": zip_of({"": SETTINGS, "b": b""}),
    }
    for suffix, compress in COMPRESSORS.items():
        seeds[f"valid-app.tar.{suffix}"] = compress(tar)
        seeds[f"valid-settings.ini.{suffix}"] = compress(SETTINGS)
    return seeds


# qemu-img invocations of the image seeds: name -> (format, options, kept in the corpus).
_IMAGES = {
    "valid-v3.qcow2": ("qcow2", ["-o", "cluster_size=512"], True),
    "valid-v2.qcow2": ("qcow2", ["-o", "cluster_size=512,compat=0.10"], True),
    "valid-backing.qcow2": (
        "qcow2",
        ["-o", "cluster_size=512", "-b", "base.raw", "-F", "raw"],
        True,
    ),
    "valid-datafile.qcow2": ("qcow2", ["-o", "cluster_size=512,data_file=data.raw"], True),
    "valid-dynamic.vhd": ("vpc", [], True),
    "valid.vdi": ("vdi", [], True),
    "valid-flat.vmdk": ("vmdk", ["-o", "subformat=monolithicFlat"], True),
    "valid-sparse.vmdk": ("vmdk", [], False),
    "valid-stream.vmdk": ("vmdk", ["-o", "subformat=streamOptimized"], False),
    "valid-fixed.vhd": ("vpc", ["-o", "subformat=fixed"], False),
    "valid.vhdx": ("vhdx", [], False),
}


def image_seeds(workdir: Path, kept_only: bool = False) -> dict[str, bytes]:
    """Small valid images of every format detect_format knows, made by qemu-img in `workdir`
    (1 MiB virtual size; qcow2 with 512-byte clusters so that its tables are tiny), plus
    qcow2 images with allocated and compressed clusters. Empty when qemu-img is missing."""
    qemu_img = shutil.which("qemu-img")
    if qemu_img is None:
        return {}

    def run(*args: str) -> None:
        subprocess.run([qemu_img, *args], cwd=workdir, check=True, capture_output=True)

    seeds: dict[str, bytes] = {}
    run("create", "-q", "-f", "raw", "base.raw", "64K")
    for name, (fmt, options, kept) in _IMAGES.items():
        if kept or not kept_only:
            run("create", "-q", "-f", fmt, *options, name, "1M")
            data = (workdir / name).read_bytes()
            # A VHDX is 8 MiB of mostly zeros; detection reads its headers, region tables and
            # metadata table (for a parent), which qemu-img puts in the first 4 MiB.
            seeds[name] = data[: 4 << 20] if fmt == "vhdx" else data
    with (workdir / "base.raw").open("r+b") as raw:
        raw.write(b"plain text on a disk\n" * 200)
    for name, extra in (("valid-data.qcow2", []), ("valid-compressed.qcow2", ["-c"])):
        run(
            "convert",
            "-q",
            "-f",
            "raw",
            "-O",
            "qcow2",
            *extra,
            "-o",
            "cluster_size=512",
            "base.raw",
            name,
        )
        seeds[name] = (workdir / name).read_bytes()
    return seeds


def certificate_seeds() -> dict[str, bytes]:
    """A self-signed TLS server certificate (PEM and DER) and a CA certificate; the private
    keys are generated here and discarded."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    def certificate(name: str, ca: bool) -> x509.Certificate:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        start = datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(1)
            .not_valid_before(start)
            .not_valid_after(start + datetime.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if not ca:
            names = [x509.DNSName(name), x509.DNSName("www." + name)]
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        return builder.sign(key, hashes.SHA256())

    server = certificate("app.example.internal", ca=False)
    authority = certificate("Example Internal CA", ca=True)
    pem = serialization.Encoding.PEM
    return {
        "valid-server.pem": server.public_bytes(pem),
        "valid-server.der": server.public_bytes(serialization.Encoding.DER),
        "valid-chain.pem": server.public_bytes(pem) + authority.public_bytes(pem),
    }


def main() -> None:
    """Rewrite the valid-* seeds of the binary targets (run from the repository root)."""
    with tempfile.TemporaryDirectory() as tmp:
        images = image_seeds(Path(tmp), kept_only=True)
    for target, seeds in (
        ("archives", archive_seeds()),
        ("formats", images),
        ("certificates", certificate_seeds()),
    ):
        folder = CORPUS / target
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.glob("valid*"):
            old.unlink()
        for name, data in seeds.items():
            (folder / name).write_bytes(data)
        print(f"{folder}: {len(seeds)} valid seeds")


if __name__ == "__main__":
    main()
