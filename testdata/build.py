#!/usr/bin/env python3
"""Build the small VM disk images that imgscan's tests scan.

The images are made without root, loop devices or hand-made binaries:

* ``trees/<disk>/<volume>/`` hold the file system contents as templates. Every
  ``{{NAME}}`` placeholder is replaced by a value generated here at build time
  (Python ``secrets`` and ``cryptography``), so the repository holds no secret.
* Directories named ``*.zip.d`` / ``*.tar.gz.d`` become zip / tar.gz archives.
* ``mke2fs -d`` turns each rendered tree into an ext2/3/4 image, ``sfdisk``
  writes the partition table onto a sparse raw file, ``dd conv=notrunc`` places
  the file systems, and ``qemu-img convert`` produces qcow2 and vmdk files.
* ``manifest.json`` (written last) lists every image, its volumes, the planted
  secrets (with the exact value a scanner must capture and its byte offset) and
  the decoys a scanner must not report.

The output goes to ``<out>/<key>/`` where ``key`` hashes this file and every
file under ``trees/``; an existing ``<out>/<key>/manifest.json`` is reused.
``<out>`` defaults to ``$IMGSCAN_TESTDATA_CACHE``, else ``$XDG_CACHE_HOME/imgscan/testdata``, else
``~/.cache/imgscan/testdata``.

Usage: ``python testdata/build.py [--out DIR] [--force]``; the last stdout
line is the image directory. Tests call :func:`build`.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import datetime as dt
import fcntl
import gzip
import hashlib
import hmac
import io
import json
import os
import random
import re
import secrets
import shlex
import shutil
import signal
import string
import subprocess
import sys
import tarfile
import time
import uuid
import warnings
import zipfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID

HERE = Path(__file__).resolve().parent
TREES = HERE / "trees"
MIB = 1024 * 1024
SECTOR = 512
MANIFEST = "manifest.json"
MANIFEST_VERSION = 1
#: Every file in the images gets this mtime (2024-03-01T12:00:00Z).
FIXED_MTIME = 1709294400
LINUX_FS_GUID = "0FC63DAF-8483-4772-8E79-3D69D8477DE4"
UUID_NAMESPACE = uuid.UUID("6f1c6a52-8d0e-4f44-9a51-9b1d2c7e0a11")

ALNUM = string.ascii_letters + string.digits
B64 = ALNUM + "+/"
B64URL = ALNUM + "-_"
BASE32 = string.ascii_uppercase + "234567"
BASE62 = string.digits + string.ascii_uppercase + string.ascii_lowercase
UPPER_ALNUM = string.ascii_uppercase + string.digits
PLACEHOLDER = re.compile(r"\{\{([A-Z0-9_]+)\}\}")


# --------------------------------------------------------------------------
# Disk layouts
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Volume:
    """One file system (or one unreadable partition) of a disk.

    ``tree`` is relative to ``trees/``; ``fstype`` None means the partition is
    filled with random bytes (an unknown file system).
    """

    device: str
    start_mib: int
    size_mib: int
    fstype: str | None
    label: str | None
    tree: str | None
    mountpoint: str | None
    status: str = "scanned"
    block_size: int | None = None

    @property
    def uuid(self) -> str | None:
        """Deterministic file system UUID (so fstab can name it)."""
        if self.fstype is None or self.tree is None:
            return None
        return str(uuid.uuid5(UUID_NAMESPACE, self.tree))

    @property
    def short(self) -> str:
        """``sda1`` for ``/dev/sda1``."""
        return self.device.rsplit("/", 1)[-1]


@dataclass(frozen=True)
class Disk:
    """A raw disk: a partition table (``gpt``, ``dos`` or None) and volumes."""

    name: str
    table: str | None
    size_mib: int
    volumes: tuple[Volume, ...]
    os: dict[str, str] | None
    coverage_complete: bool = True

    @property
    def disk_id(self) -> str:
        """Deterministic GPT disk GUID / MBR disk signature."""
        if self.table == "dos":
            return "0x" + hashlib.sha256(self.name.encode()).hexdigest()[:8]
        return str(uuid.uuid5(UUID_NAMESPACE, "disk-" + self.name)).upper()


DISKS: dict[str, Disk] = {
    "server": Disk(
        name="server",
        table="gpt",
        size_mib=64,
        volumes=(
            Volume("/dev/sda1", 1, 32, "ext4", "root", "server/root", "/", block_size=4096),
            Volume("/dev/sda2", 33, 16, "ext4", "srv", "server/srv", "/srv", block_size=4096),
            Volume("/dev/sda3", 49, 12, "ext2", "backups", "server/backups", "/var/backups"),
        ),
        os={"id": "debian", "version_id": "12", "hostname": "app01"},
    ),
    "mbr": Disk(
        name="mbr",
        table="dos",
        size_mib=48,
        volumes=(
            Volume("/dev/sda1", 1, 20, "ext3", "root", "mbr/root", "/", block_size=4096),
            Volume("/dev/sda2", 21, 12, "ext2", "data", "mbr/data", "/@dev/sda2"),
            Volume("/dev/sda3", 33, 4, None, None, None, None, status="unsupported"),
        ),
        os={"id": "ubuntu", "version_id": "22.04", "hostname": "legacy01"},
        coverage_complete=False,
    ),
    "bare": Disk(
        name="bare",
        table=None,
        size_mib=8,
        volumes=(Volume("/dev/sda", 0, 8, "ext2", "tiny", "bare", "/"),),
        os={"id": "alpine", "version_id": "3.19.1", "hostname": "tiny01"},
    ),
}


@dataclass(frozen=True)
class Image:
    """One file in the output directory and the disk it holds."""

    name: str
    file: str
    format: str
    subformat: str | None
    disk: str
    copy_of: str | None = None


IMAGES: tuple[Image, ...] = (
    Image("server-raw", "server.raw", "raw", None, "server"),
    Image("server-qcow2", "server.qcow2", "qcow2", None, "server"),
    Image("server-vmdk", "server.vmdk", "vmdk", "monolithicSparse", "server"),
    Image("server-stream-vmdk", "server-stream.vmdk", "vmdk", "streamOptimized", "server"),
    Image("demo-qcow2", "demo.qcow2", "qcow2", None, "server", copy_of="server-qcow2"),
    Image("mbr-qcow2", "mbr.qcow2", "qcow2", None, "mbr"),
    Image("bare-raw", "bare.raw", "raw", None, "bare"),
)


# --------------------------------------------------------------------------
# What is planted, what is a decoy
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Plant:
    """A secret a scanner must report.

    ``value`` names a generated value; the secret is that value verbatim.
    ``path`` is the guest path; ``archive!/member`` for archive members.
    ``after`` makes the offset search start after that anchor text.
    """

    disk: str
    path: str
    kind: str
    value: str
    after: str | None = None
    detail: str | None = None  # for a secret in raw bytes (swap): what kind of value it is


@dataclass(frozen=True)
class Decoy:
    """Text that looks like a secret and must not be reported.

    ``value`` is literal text, or ``@NAME`` for a generated value.
    """

    disk: str
    path: str
    kind: str
    value: str
    after: str | None = None


S, M, B = "server", "mbr", "bare"
BIGLOG = "/var/log/myapp/big.log"
#: value name -> the file offset the planted key must straddle
BIGLOG_BOUNDARIES = {"BIGLOG_AWS_KEY_1": 1 * MIB, "BIGLOG_AWS_KEY_2": 2 * MIB}
BIGLOG_SIZE = int(2.2 * MIB)
BIGLOG_KEY_PREFIX = " WARN  [main] myapp.config: legacy credentials loaded: aws_access_key_id = "
STAMP_LEN = len("2024-02-26T06:00:00.000Z")

PLANTED: tuple[Plant, ...] = (
    Plant(S, "/etc/myapp/app.conf", "password-assignment", "HR_DB_PASSWORD"),
    Plant(S, "/srv/app/.env", "url-password", "HR_DB_PASSWORD"),
    Plant(S, "/srv/app/.env", "url-password", "REDIS_PASSWORD"),
    Plant(S, "/srv/app/.env", "stripe-secret-key", "STRIPE_SECRET_KEY"),
    Plant(S, "/srv/app/.env", "sendgrid-api-key", "SENDGRID_API_KEY"),
    Plant(S, "/srv/app/config/database.yml", "password-assignment", "MYSQL_PROD_PASSWORD"),
    Plant(S, "/srv/app/config/mongo.js", "url-password", "MONGO_PASSWORD"),
    Plant(S, "/srv/app/WEB-INF/jdbc.properties", "connection-string-password", "JDBC_PASSWORD"),
    Plant(S, "/srv/app/appsettings.json", "connection-string-password", "ADO_PASSWORD"),
    Plant(S, "/srv/app/tokens.txt", "jwt", "JWT_TOKEN"),
    Plant(S, "/srv/app/celeryconfig.py", "url-password", "AMQP_PASSWORD"),
    Plant(S, "/srv/app/gcp-sa.json", "gcp-service-account", "GCP_SA_PRIVATE_KEY_JSON_BLOCK"),
    Plant(S, "/srv/app/azure.env", "azure-storage-key", "AZURE_ACCOUNT_KEY"),
    Plant(
        S,
        "/srv/app/releases/config-bundle.zip!/settings.ini",
        "password-assignment",
        "ZIP_SETTINGS_PASSWORD",
    ),
    Plant(S, "/root/.aws/credentials", "aws-access-key-id", "AWS_KEY_ID"),
    Plant(S, "/root/.aws/credentials", "aws-secret-access-key", "AWS_SECRET_KEY"),
    Plant(S, "/root/.pgpass", "pgpass-password", "HR_DB_PASSWORD"),
    Plant(S, "/root/.netrc", "netrc-password", "NETRC_PASSWORD"),
    Plant(S, "/root/.my.cnf", "password-assignment", "MYCNF_PASSWORD"),
    Plant(S, "/root/.git-credentials", "git-credentials", "GIT_CRED_TOKEN"),
    Plant(S, "/root/.docker/config.json", "docker-auth", "DOCKER_AUTH"),
    Plant(S, "/root/.kube/config", "kubeconfig-token", "KUBE_TOKEN"),
    Plant(S, "/root/.kube/config", "kubeconfig-client-key", "KUBE_CLIENT_KEY_DATA"),
    Plant(S, "/home/alice/deploy.sh", "github-token", "GITHUB_TOKEN"),
    Plant(S, "/home/alice/deploy.sh", "gitlab-token", "GITLAB_TOKEN"),
    Plant(S, "/home/alice/.slack", "slack-bot-token", "SLACK_BOT_TOKEN"),
    Plant(S, "/opt/tools/notify.py", "slack-webhook", "SLACK_WEBHOOK_URL"),
    Plant(S, "/etc/ssh/ssh_host_ed25519_key", "openssh-private-key", "SSH_HOST_ED25519_KEY"),
    Plant(S, "/etc/ssl/private/server.key", "rsa-private-key", "TLS_RSA_KEY"),
    Plant(S, "/etc/wireguard/wg0.conf", "wireguard-private-key", "WG_PRIVATE_KEY"),
    Plant(S, "/home/alice/.ssh/id_rsa", "openssh-private-key", "ALICE_ID_RSA"),
    Plant(S, "/home/alice/keys/deploy.ppk", "putty-private-key", "ALICE_PPK"),
    Plant(S, "/home/alice/keys/secret.asc", "pgp-private-key", "ALICE_PGP_PRIVATE"),
    Plant(S, "/etc/shadow", "shadow-hash", "SHADOW_ROOT_HASH"),
    Plant(S, BIGLOG, "aws-access-key-id", "BIGLOG_AWS_KEY_1"),
    Plant(S, BIGLOG, "aws-access-key-id", "BIGLOG_AWS_KEY_2"),
    Plant(S, "/var/backups/.pgpass", "pgpass-password", "HR_DB_PASSWORD"),
    Plant(
        S,
        "/var/backups/etc-backup.tar.gz!/etc/myapp/app.conf",
        "password-assignment",
        "OLD_HR_DB_PASSWORD",
    ),
    Plant(M, "/etc/myapp/app.conf", "password-assignment", "MBR_APP_PASSWORD"),
    Plant(M, "/root/.pgpass", "pgpass-password", "MBR_PGPASS_PASSWORD"),
    Plant(M, "/@dev/sda2/data/token.txt", "github-token", "MBR_GITHUB_TOKEN"),
    Plant(M, "/@dev/sda2/home/bob/.netrc", "netrc-password", "MBR_NETRC_PASSWORD"),
    Plant(B, "/etc/myapp/app.conf", "password-assignment", "BARE_APP_PASSWORD"),
    Plant(B, "/root/deploy.env", "gitlab-token", "BARE_GITLAB_TOKEN"),
)

DOC = "/usr/share/doc/myapp/README.md"
DECOYS: tuple[Decoy, ...] = (
    Decoy(S, DOC, "aws-doc-example", "AKIAIOSFODNN7EXAMPLE"),
    Decoy(S, DOC, "aws-doc-example", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"),
    Decoy(S, DOC, "doc-url-example", "postgres://user:password@localhost/db"),
    Decoy(S, DOC, "placeholder-token", "ghp_" + "x" * 36),
    Decoy(S, "/etc/myapp/app.conf.example", "placeholder-password", "changeme"),
    Decoy(S, "/etc/myapp/template.ini", "template-placeholder", "<password>"),
    Decoy(S, "/etc/myapp/mail.ini", "empty-password", "password = "),
    Decoy(S, "/etc/myapp/policy.conf", "non-secret-setting", "password_min_length = 8"),
    Decoy(S, "/srv/app/docker-compose.yml", "env-reference", "${DB_PASSWORD}"),
    Decoy(S, "/srv/app/settings.py", "env-reference", 'os.environ["DB_PASSWORD"]'),
    Decoy(
        S,
        "/srv/app/settings.py",
        "env-reference",
        'os.environ["DB_PASSWORD"]',
        after="\nPASSWORD = ",
    ),
    Decoy(S, "/srv/app/config/database.yml", "empty-password", "password:", after="development:"),
    Decoy(S, "/srv/app/templates/login.html", "form-field", 'type="password"'),
    Decoy(S, "/home/alice/deploy.sh", "env-reference", "${GITHUB_TOKEN}"),
    Decoy(S, "/etc/ssh/ssh_host_ed25519_key.pub", "public-key", "@SSH_HOST_ED25519_PUB"),
    Decoy(S, "/home/alice/.ssh/id_rsa.pub", "public-key", "@ALICE_ID_RSA_PUB"),
    Decoy(S, "/home/alice/.ssh/authorized_keys", "public-key", "@ALICE_ID_RSA_PUB"),
    Decoy(S, "/home/alice/.ssh/authorized_keys", "public-key", "@ALICE_LAPTOP_PUB"),
    Decoy(S, "/home/alice/.ssh/known_hosts", "public-key", "@KNOWN_HOST_GITHUB_PUB"),
    Decoy(S, "/home/alice/.ssh/known_hosts", "public-key", "@KNOWN_HOST_GIT_PUB"),
    Decoy(S, "/root/.ssh/authorized_keys", "public-key", "@ADMIN_ED25519_PUB"),
    Decoy(S, "/root/.ssh/known_hosts", "public-key", "@KNOWN_HOSTS_HASHED"),
    Decoy(S, "/root/.ssh/known_hosts", "public-key", "@KNOWN_HOST_GIT_PUB"),
    Decoy(S, "/etc/ssl/certs/server.crt", "certificate", "@TLS_CERT"),
    Decoy(S, "/etc/wireguard/wg0.conf", "public-key", "@WG_PEER_PUBLIC_KEY"),
    Decoy(S, "/etc/ssl/certs/ca-certificates.crt", "certificate", "@CA_CERT_ROOT"),
    Decoy(S, "/etc/ssl/certs/ca-certificates.crt", "certificate", "@CA_CERT_ISSUING"),
    Decoy(S, "/root/.kube/config", "certificate", "@KUBE_CA_DATA"),
    Decoy(S, "/root/.kube/config", "certificate", "@KUBE_CLIENT_CERT_DATA"),
    Decoy(S, "/etc/shadow", "shadow-locked", "*", after="\ndaemon:"),
    Decoy(S, "/etc/shadow", "shadow-locked", "!*", after="\nsystemd-network:"),
    Decoy(S, "/etc/shadow", "shadow-locked", "!", after="\nmessagebus:"),
    Decoy(S, "/etc/shadow", "shadow-locked", "!!", after="\nsshd:"),
    Decoy(S, "/etc/shadow", "shadow-locked-hash", "@SHADOW_ALICE_LOCKED_HASH"),
    Decoy(M, "/etc/myapp/app.conf.example", "placeholder-password", "changeme"),
    Decoy(M, "/@dev/sda2/data/README", "aws-doc-example", "AKIAIOSFODNN7EXAMPLE"),
    Decoy(B, "/etc/myapp/template.ini", "template-placeholder", "<password>"),
)


# --------------------------------------------------------------------------
# Random values of the right shape
# --------------------------------------------------------------------------


def rand_chars(alphabet: str, n: int) -> str:
    """``n`` random characters of ``alphabet``.

    The first and last characters are alphanumeric, so the value never ends in
    ``-``, ``_``, ``/`` or ``+`` and ``\\b`` anchored patterns always match it.
    """
    while True:
        value = "".join(secrets.choice(alphabet) for _ in range(n))
        if value[0].isalnum() and value[-1].isalnum():
            return value


def rand_digits(n: int) -> str:
    """``n`` random digits, the first one non-zero."""
    return secrets.choice("123456789") + "".join(
        secrets.choice(string.digits) for _ in range(n - 1)
    )


def rand_password(n: int = 20) -> str:
    """An alphanumeric password with at least one lower, upper and digit."""
    while True:
        value = rand_chars(ALNUM, n)
        if (
            any(c.islower() for c in value)
            and any(c.isupper() for c in value)
            and any(c.isdigit() for c in value)
        ):
            return value


def b64url(data: bytes) -> str:
    """Unpadded base64url, as used by JWTs."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def base62(number: int, width: int) -> str:
    """``number`` in base 62 (0-9A-Za-z), left-padded with ``0`` to ``width``."""
    digits = ""
    while number:
        number, rem = divmod(number, 62)
        digits = BASE62[rem] + digits
    return digits.rjust(width, "0")


def github_token(prefix: str = "ghp_") -> str:
    """A GitHub token: 30 random base62 characters and a CRC32 checksum."""
    body = rand_chars(ALNUM, 30)
    return prefix + body + base62(zlib.crc32(body.encode()), 6)


def aws_key_id() -> str:
    """``AKIA`` and 16 characters of A-Z2-7."""
    return "AKIA" + rand_chars(BASE32, 16)


def jwt_token() -> str:
    """An HS256 JWT with a real JSON header and payload."""
    header = b64url(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
    key = secrets.token_bytes(32)
    while True:
        claims = {
            "sub": "reporting-job",
            "iss": "hr.example.internal",
            "iat": 1706745600,
            "exp": 1738368000,
            "jti": secrets.token_hex(8),
        }
        payload = b64url(json.dumps(claims, separators=(",", ":")).encode())
        signing_input = f"{header}.{payload}"
        mac = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
        token = f"{signing_input}.{b64url(mac)}"
        if all(part[0].isalnum() and part[-1].isalnum() for part in token.split(".")):
            return token


def sha512_crypt(password: str) -> str:
    """A ``$6$`` sha512-crypt hash (``crypt`` module, else ``openssl passwd -6``)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            import crypt

        hashed = crypt.crypt(password, crypt.mksalt(crypt.METHOD_SHA512))
        if hashed and hashed.startswith("$6$"):
            return hashed
    except ImportError:
        pass
    out = subprocess.run(
        [tool("openssl"), "passwd", "-6", "-stdin"],
        input=password,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    if not out.startswith("$6$"):
        raise BuildError(f"openssl passwd -6 returned {out!r}")
    return out


def ssh_string(data: bytes) -> bytes:
    """SSH wire-format ``string``."""
    return len(data).to_bytes(4, "big") + data


def ssh_mpint(number: int) -> bytes:
    """SSH wire-format ``mpint`` of a non-negative integer."""
    raw = number.to_bytes((number.bit_length() + 8) // 8, "big") if number else b""
    return ssh_string(raw)


def wrap(text: str, width: int = 64) -> list[str]:
    """Split ``text`` into lines of ``width`` characters."""
    return [text[i : i + width] for i in range(0, len(text), width)]


def putty_ppk(key: ed25519.Ed25519PrivateKey, comment: str) -> str:
    """A PuTTY-User-Key-File-3 (unencrypted) for an Ed25519 key, MAC included."""
    algorithm = b"ssh-ed25519"
    pub_raw = key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    seed = key.private_bytes(
        serialization.Encoding.Raw,
        serialization.PrivateFormat.Raw,
        serialization.NoEncryption(),
    )
    public_blob = ssh_string(algorithm) + ssh_string(pub_raw)
    private_blob = ssh_mpint(int.from_bytes(seed, "little"))
    mac_data = b"".join(
        ssh_string(part)
        for part in (algorithm, b"none", comment.encode(), public_blob, private_blob)
    )
    mac = hmac.new(b"", mac_data, hashlib.sha256).hexdigest()
    pub_lines = wrap(base64.b64encode(public_blob).decode())
    priv_lines = wrap(base64.b64encode(private_blob).decode())
    lines = [
        f"PuTTY-User-Key-File-3: {algorithm.decode()}",
        "Encryption: none",
        f"Comment: {comment}",
        f"Public-Lines: {len(pub_lines)}",
        *pub_lines,
        f"Private-Lines: {len(priv_lines)}",
        *priv_lines,
        f"Private-MAC: {mac}",
    ]
    return "\n".join(lines)


def crc24(data: bytes) -> int:
    """OpenPGP ASCII-armor CRC-24 (RFC 4880 section 6.1)."""
    crc = 0xB704CE
    for byte in data:
        crc ^= byte << 16
        for _ in range(8):
            crc <<= 1
            if crc & 0x1000000:
                crc ^= 0x1864CFB
    return crc & 0xFFFFFF


def pgp_private_block() -> str:
    """An armored PGP private key block: random packet body, valid CRC-24."""
    body = secrets.token_bytes(940)
    packet = bytes([0x95, 0x03, 0xB1, 0x04]) + (1706745600).to_bytes(4, "big") + b"\x01" + body
    checksum = base64.b64encode(crc24(packet).to_bytes(3, "big")).decode()
    lines = [
        "-----BEGIN PGP PRIVATE KEY BLOCK-----",
        "",
        *wrap(base64.b64encode(packet).decode()),
        f"={checksum}",
        "-----END PGP PRIVATE KEY BLOCK-----",
    ]
    return "\n".join(lines)


def pem(data: bytes) -> str:
    """PEM bytes as text without the trailing newline."""
    return data.decode().rstrip("\n")


def openssh_public(key: ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey, comment: str) -> str:
    """``ssh-xxx AAAA... comment``."""
    line = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    return f"{line.decode()} {comment}"


def hashed_known_host(host: str, key_line: str) -> str:
    """A hashed ``known_hosts`` line (``|1|salt|hmac keytype key``)."""
    salt = secrets.token_bytes(20)
    digest = hmac.new(salt, host.encode(), hashlib.sha1).digest()
    return f"|1|{base64.b64encode(salt).decode()}|{base64.b64encode(digest).decode()} {key_line}"


def make_cert(
    subject_cn: str,
    key: Any,
    *,
    issuer: tuple[str, Any] | None = None,
    ca: bool = False,
    days: int = 825,
    san: str | None = None,
) -> x509.Certificate:
    """A certificate for ``key``; self-signed unless ``issuer`` = (cn, key)."""
    issuer_cn, issuer_key = issuer if issuer else (subject_cn, key)
    now = dt.datetime(2024, 1, 15, tzinfo=dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject_cn)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer_cn)]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if san:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(san)]), critical=False
        )
    return builder.sign(issuer_key, hashes.SHA256())


def cert_pem(cert: x509.Certificate) -> str:
    """PEM text of a certificate, no trailing newline."""
    return pem(cert.public_bytes(serialization.Encoding.PEM))


def make_values() -> dict[str, str]:
    """Generate every placeholder value (and derived secrets) for one build."""
    v: dict[str, str] = {}
    for disk in DISKS.values():
        for vol in disk.volumes:
            if vol.uuid and vol.label:
                # UUID_SERVER_ROOT, UUID_SERVER_SRV, UUID_MBR_ROOT, ...
                v[f"UUID_{disk.name.upper()}_{vol.label.upper()}"] = vol.uuid

    for name in (
        "HR_DB_PASSWORD",
        "OLD_HR_DB_PASSWORD",
        "MYSQL_PROD_PASSWORD",
        "MONGO_PASSWORD",
        "JDBC_PASSWORD",
        "ADO_PASSWORD",
        "AMQP_PASSWORD",
        "NETRC_PASSWORD",
        "MYCNF_PASSWORD",
        "ZIP_SETTINGS_PASSWORD",
        "DOCKER_PASSWORD",
        "ROOT_PASSWORD",
        "MBR_APP_PASSWORD",
        "MBR_PGPASS_PASSWORD",
        "MBR_NETRC_PASSWORD",
        "BARE_APP_PASSWORD",
    ):
        v[name] = rand_password(20)
    v["REDIS_PASSWORD"] = rand_password(32)
    v["STRIPE_SECRET_KEY"] = "sk_live_" + rand_chars(ALNUM, 24)
    v["SENDGRID_API_KEY"] = f"SG.{rand_chars(B64URL, 22)}.{rand_chars(B64URL, 43)}"
    v["AWS_KEY_ID"] = aws_key_id()
    v["AWS_SECRET_KEY"] = rand_chars(B64, 40)
    for name in BIGLOG_BOUNDARIES:
        v[name] = aws_key_id()
    v["GIT_CRED_TOKEN"] = github_token()
    v["GITHUB_TOKEN"] = github_token()
    v["MBR_GITHUB_TOKEN"] = github_token()
    v["GITLAB_TOKEN"] = "glpat-" + rand_chars(B64URL, 20)
    v["BARE_GITLAB_TOKEN"] = "glpat-" + rand_chars(B64URL, 20)
    v["DOCKER_AUTH"] = base64.b64encode(f"deploy:{v['DOCKER_PASSWORD']}".encode()).decode()
    v["KUBE_TOKEN"] = rand_chars(ALNUM, 64)
    v["SLACK_BOT_TOKEN"] = f"xoxb-{rand_digits(12)}-{rand_digits(13)}-{rand_chars(ALNUM, 24)}"
    v["SLACK_WEBHOOK_URL"] = (
        "https://hooks.slack.com/services/"
        f"T{rand_chars(UPPER_ALNUM, 8)}/B{rand_chars(UPPER_ALNUM, 8)}/{rand_chars(ALNUM, 24)}"
    )
    v["JWT_TOKEN"] = jwt_token()
    v["AZURE_ACCOUNT_KEY"] = rand_azure_key()
    v["GCP_PRIVATE_KEY_ID"] = secrets.token_hex(20)
    v["GCP_CLIENT_ID"] = rand_digits(21)
    # Curve25519 keys as wg(8) prints them: base64 of 32 bytes.
    v["WG_PRIVATE_KEY"] = base64.b64encode(secrets.token_bytes(32)).decode()
    v["WG_PEER_PUBLIC_KEY"] = base64.b64encode(secrets.token_bytes(32)).decode()

    # Key material.
    host_key = ed25519.Ed25519PrivateKey.generate()
    v["SSH_HOST_ED25519_KEY"] = pem(
        host_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        )
    )
    v["SSH_HOST_ED25519_PUB"] = openssh_public(host_key, "root@app01")

    tls_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    v["TLS_RSA_KEY"] = pem(
        tls_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    v["TLS_CERT"] = cert_pem(make_cert("hr.example.internal", tls_key, san="hr.example.internal"))

    root_ca = ec.generate_private_key(ec.SECP256R1())
    issuing_ca = ec.generate_private_key(ec.SECP256R1())
    root_name = "Example Internal Root CA"
    v["CA_CERT_ROOT"] = cert_pem(make_cert(root_name, root_ca, ca=True, days=3650))
    v["CA_CERT_ISSUING"] = cert_pem(
        make_cert("Example Internal Issuing CA", issuing_ca, issuer=(root_name, root_ca), ca=True)
    )

    gcp_key = ec.generate_private_key(ec.SECP256R1())
    gcp_pem = gcp_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    escaped = json.dumps(gcp_pem)[1:-1]  # the JSON string body, with \n escapes
    v["GCP_SA_PRIVATE_KEY_JSON"] = escaped
    v["GCP_SA_PRIVATE_KEY_JSON_BLOCK"] = escaped.removesuffix("\\n")

    kube_ca = ec.generate_private_key(ec.SECP256R1())
    kube_client = ec.generate_private_key(ec.SECP256R1())
    kube_ca_cert = make_cert("kubernetes", kube_ca, ca=True, days=3650)
    kube_client_cert = make_cert("kubernetes-admin", kube_client, issuer=("kubernetes", kube_ca))
    v["KUBE_CA_DATA"] = base64.b64encode(
        kube_ca_cert.public_bytes(serialization.Encoding.PEM)
    ).decode()
    v["KUBE_CLIENT_CERT_DATA"] = base64.b64encode(
        kube_client_cert.public_bytes(serialization.Encoding.PEM)
    ).decode()
    v["KUBE_CLIENT_KEY_DATA"] = base64.b64encode(
        kube_client.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    ).decode()

    alice_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    v["ALICE_ID_RSA"] = pem(
        alice_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        )
    )
    v["ALICE_ID_RSA_PUB"] = openssh_public(alice_key, "alice@app01")
    v["ALICE_LAPTOP_PUB"] = openssh_public(ed25519.Ed25519PrivateKey.generate(), "alice@laptop")
    v["ADMIN_ED25519_PUB"] = openssh_public(ed25519.Ed25519PrivateKey.generate(), "ops@bastion")
    v["KNOWN_HOST_GITHUB_PUB"] = openssh_public(ed25519.Ed25519PrivateKey.generate(), "").strip()
    v["KNOWN_HOST_GIT_PUB"] = openssh_public(ed25519.Ed25519PrivateKey.generate(), "").strip()
    v["KNOWN_HOSTS_HASHED"] = hashed_known_host(
        "db.internal", openssh_public(ed25519.Ed25519PrivateKey.generate(), "").strip()
    )
    v["ALICE_PPK"] = putty_ppk(ed25519.Ed25519PrivateKey.generate(), "deploy@jump")
    v["ALICE_PGP_PRIVATE"] = pgp_private_block()

    v["SHADOW_ROOT_HASH"] = sha512_crypt(v["ROOT_PASSWORD"])
    v["SHADOW_ALICE_LOCKED_HASH"] = "!" + sha512_crypt(rand_password(16))
    return v


def rand_azure_key() -> str:
    """88 base64 characters ending in ``==`` (64 random bytes)."""
    while True:
        key = base64.b64encode(secrets.token_bytes(64)).decode()
        if key[0].isalnum():
            return key


# --------------------------------------------------------------------------
# Generated (non-template) content
# --------------------------------------------------------------------------

PACKAGES: tuple[tuple[str, str], ...] = (
    ("base-files", "locale-check"),
    ("bash", "bash"),
    ("coreutils", "ls"),
    ("grep", "grep"),
    ("sed", "sed"),
    ("tar", "tar"),
    ("gzip", "gzip"),
    ("findutils", "find"),
    ("util-linux", "lsblk"),
    ("procps", "ps"),
    ("openssh-server", "sshd"),
    ("openssh-client", "ssh"),
    ("openssl", "openssl"),
    ("ca-certificates", "update-ca-certificates"),
    ("curl", "curl"),
    ("wget", "wget"),
    ("nginx", "nginx"),
    ("python3.11", "python3.11"),
    ("python3-pip", "pip3"),
    ("git", "git"),
    ("vim-tiny", "vim.tiny"),
    ("less", "less"),
    ("rsync", "rsync"),
    ("cron", "crontab"),
    ("logrotate", "logrotate"),
    ("sudo", "sudo"),
    ("systemd", "systemctl"),
    ("dbus", "dbus-daemon"),
    ("iproute2", "ip"),
    ("iputils-ping", "ping"),
    ("netcat-openbsd", "nc.openbsd"),
    ("postgresql-client-15", "pg_dump"),
    ("mariadb-client", "mariadb"),
    ("redis-tools", "redis-cli"),
    ("jq", "jq"),
    ("htop", "htop"),
    ("tmux", "tmux"),
    ("unzip", "unzip"),
    ("zip", "zip"),
    ("bzip2", "bzip2"),
    ("xz-utils", "xz"),
    ("lsof", "lsof"),
    ("strace", "strace"),
    ("tzdata", "tzselect"),
    ("locales", "locale-gen"),
    ("e2fsprogs", "chattr"),
    ("dpkg", "dpkg"),
    ("apt", "apt"),
)

LICENSE_TEXT = """\
 This program is free software; you can redistribute it and/or modify
 it under the terms of the GNU General Public License as published by
 the Free Software Foundation; either version 2, or (at your option)
 any later version.
 .
 This program is distributed in the hope that it will be useful,
 but WITHOUT ANY WARRANTY; without even the implied warranty of
 MERCHANTABILITY or FITNESS FOR A PARTICULAR PURPOSE.  See the
 GNU General Public License for more details.
 .
 On Debian systems, the complete text of the GNU General Public
 License version 2 can be found in `/usr/share/common-licenses/GPL-2'.
"""

CHANGES = (
    "New upstream release.",
    "Fix a crash when the input file is empty.",
    "Update Standards-Version to 4.6.2, no changes needed.",
    "Drop obsolete Breaks/Replaces.",
    "Rebuild against the new libc.",
    "Backport upstream fix for a buffer over-read (Closes: #{bug}).",
    "Add autopkgtest smoke test.",
    "Translations updated.",
)

LOG_LINES = (
    "INFO  [worker-{w}] myapp.http: GET /api/v1/employees/{id} 200 {ms}ms req_id={req}",
    "INFO  [worker-{w}] myapp.http: POST /api/v1/timesheets 201 {ms}ms req_id={req}",
    "INFO  [worker-{w}] myapp.reports: rendered vacation report for department {dept} in {ms}ms",
    "WARN  [worker-{w}] myapp.db: slow query ({ms}ms): SELECT id, name FROM employees"
    " WHERE department_id = %s",
    "INFO  [celery-{w}] myapp.tasks: task sync_payroll[{req}] succeeded in 0.{ms}s",
    "INFO  [worker-{w}] myapp.auth: password reset requested for employee_id={id}",
    "DEBUG [worker-{w}] myapp.cache: cache miss key=employee:{id}",
    "ERROR [worker-{w}] myapp.http: GET /api/v1/reports/headcount 500 {ms}ms req_id={req}"
    " upstream timed out",
    "INFO  [worker-{w}] myapp.auth: login ok user=u{id} from 10.20.{a}.{b}",
)
DEPARTMENTS = ("finance", "engineering", "sales", "support", "legal", "operations")
COLUMNS = [
    "employee_id",
    "first_name",
    "last_name",
    "department",
    "cost_center",
    "hire_date",
    "contract_type",
    "weekly_hours",
    "vacation_days_left",
    "manager_id",
    "location",
    "badge_number",
]


class LogWriter:
    """Produce realistic application log lines with increasing timestamps."""

    def __init__(self, rng: random.Random, start: dt.datetime) -> None:
        """Start the clock at ``start``."""
        self.rng = rng
        self.now = start

    def stamp(self) -> str:
        """Advance the clock a little and return an ISO timestamp."""
        self.now += dt.timedelta(milliseconds=self.rng.randint(5, 4000))
        return self.now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{self.now.microsecond // 1000:03d}Z"

    def line(self) -> str:
        """One ordinary log line, newline included."""
        r = self.rng
        msg = r.choice(LOG_LINES).format(
            w=r.randint(1, 4),
            id=r.randint(1000, 9999),
            ms=r.randint(2, 900),
            req=f"{r.getrandbits(48):012x}",
            dept=r.choice(DEPARTMENTS),
            a=r.randint(0, 9),
            b=r.randint(2, 250),
        )
        return f"{self.stamp()} {msg}\n"

    def padded(self, length: int) -> str:
        """A log line (newline included) of exactly ``length`` bytes."""
        head = f"{self.stamp()} INFO  [worker-2] myapp.reports: export columns="
        body = ""
        while len(head) + len(body) < length:
            body += self.rng.choice(COLUMNS) + ","
        text = (head + body)[: length - 2] + "."
        return text + "\n"


def make_big_log(values: dict[str, str]) -> bytes:
    """~2.2 MiB of log lines with AWS key ids straddling the 1 and 2 MiB offsets."""
    rng = random.Random("imgscan-big-log")
    log = LogWriter(rng, dt.datetime(2024, 2, 26, 6, 0, 0))
    out = io.StringIO()
    size = 0
    for name, boundary in sorted(BIGLOG_BOUNDARIES.items(), key=lambda kv: kv[1]):
        key = values[name]
        key_start = boundary - 8  # 8 characters before the boundary, 12 after
        # Ordinary lines until 250-400 bytes are left before the key line,
        # then one line padded to the exact length that puts the key in place.
        while (room := key_start - STAMP_LEN - len(BIGLOG_KEY_PREFIX) - size) > 400:
            line = log.line()
            out.write(line)
            size += len(line)
        pad = log.padded(room)
        out.write(pad)
        size += len(pad)
        line = f"{log.stamp()}{BIGLOG_KEY_PREFIX}{key}\n"
        if size + line.index(key) != key_start:
            raise BuildError("big.log key placement is off")
        out.write(line)
        size += len(line)
    while size < BIGLOG_SIZE:
        line = log.line()
        out.write(line)
        size += len(line)
    return out.getvalue().encode()


def make_app_log() -> bytes:
    """A small ordinary application log."""
    log = LogWriter(random.Random("imgscan-app-log"), dt.datetime(2024, 3, 1, 6, 0, 0))
    return "".join(log.line() for _ in range(300)).encode()


def make_skeleton(root: Path, extra: tuple[str, ...] = ()) -> None:
    """Create the usual empty top-level directories (and mount points)."""
    for d in (
        "bin",
        "boot",
        "dev",
        "home",
        "media",
        "mnt",
        "proc",
        "run",
        "sys",
        "tmp",
        "usr/bin",
        "usr/lib",
        "usr/local/bin",
        "usr/sbin",
        "var/cache",
        "var/lib",
        "var/log",
        "var/tmp",
        *extra,
    ):
        (root / d).mkdir(parents=True, exist_ok=True)


def make_packages(root: Path, rng: random.Random, packages: tuple[tuple[str, str], ...]) -> None:
    """Debian-like package files: docs, a binary blob, dpkg lists and md5sums."""
    status: list[str] = []
    for pkg, binary in packages:
        doc = root / "usr/share/doc" / pkg
        doc.mkdir(parents=True, exist_ok=True)
        copyright_text = (
            "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n"
            f"Upstream-Name: {pkg}\n\n"
            f"Files: *\nCopyright: {rng.randint(1990, 2015)}-2023 The {pkg} authors\n"
            f"License: GPL-2+\n{LICENSE_TEXT}"
        )
        (doc / "copyright").write_text(copyright_text)
        entries = []
        major, minor = rng.randint(1, 9), rng.randint(0, 30)
        for i in range(rng.randint(3, 8)):
            day = dt.datetime(2023, 6, 1) - dt.timedelta(days=97 * i)
            changes = "\n".join(
                "  * " + rng.choice(CHANGES).format(bug=rng.randint(900000, 1060000))
                for _ in range(rng.randint(1, 4))
            )
            entries.append(
                f"{pkg} ({major}.{minor}-{8 - i}) unstable; urgency=medium\n\n{changes}\n\n"
                f" -- Debian Maintainers <{pkg}@packages.debian.org>  "
                f"{day.strftime('%a, %d %b %Y')} 10:00:00 +0000\n"
            )
        (doc / "changelog.Debian").write_text("\n".join(entries))
        blob = root / "usr/bin" / binary
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(
            b"\x7fELF\x02\x01\x01" + bytes(9) + rng.randbytes(rng.randint(2048, 12288))
        )
        info = root / "var/lib/dpkg/info"
        info.mkdir(parents=True, exist_ok=True)
        files = [
            f"/usr/bin/{binary}",
            f"/usr/share/doc/{pkg}/copyright",
            f"/usr/share/doc/{pkg}/changelog.Debian",
        ]
        dirs = ["/.", "/usr", "/usr/bin", "/usr/share", "/usr/share/doc", f"/usr/share/doc/{pkg}"]
        (info / f"{pkg}.list").write_text("\n".join(dirs + files) + "\n")
        sums = "".join(
            f"{hashlib.md5((root / f[1:]).read_bytes()).hexdigest()}  {f[1:]}\n" for f in files
        )
        (info / f"{pkg}.md5sums").write_text(sums)
        status.append(
            f"Package: {pkg}\nStatus: install ok installed\nPriority: optional\n"
            f"Architecture: amd64\nVersion: {major}.{minor}-8\n"
            f"Description: {pkg} (test image package)\n"
        )
    (root / "var/lib/dpkg/status").write_text("\n".join(status))


def gen_server_root(root: Path, values: dict[str, str]) -> None:
    """Extra content of the server's root file system."""
    make_skeleton(root, ("srv", "var/backups", "var/log/nginx", "var/log/myapp", "var/www"))
    make_packages(root, random.Random("imgscan-server-packages"), PACKAGES)
    (root / "var/log/myapp/big.log").write_bytes(make_big_log(values))
    (root / "var/log/myapp/app.log").write_bytes(make_app_log())


def gen_mbr_root(root: Path, values: dict[str, str]) -> None:
    """Extra content of the MBR disk's root file system."""
    make_skeleton(root)
    make_packages(root, random.Random("imgscan-mbr-packages"), PACKAGES[:12])


def gen_bare(root: Path, values: dict[str, str]) -> None:
    """Extra content of the bare file system."""
    make_skeleton(root)


GENERATORS: dict[str, Callable[[Path, dict[str, str]], None]] = {
    "server/root": gen_server_root,
    "mbr/root": gen_mbr_root,
    "bare": gen_bare,
}

SECRET_FILE_NAMES = frozenset(
    {
        ".pgpass",
        ".netrc",
        ".env",
        ".my.cnf",
        ".git-credentials",
        ".slack",
        "id_rsa",
        "deploy.ppk",
        "secret.asc",
        "deploy.env",
        "azure.env",
        "gcp-sa.json",
    }
)
PRIVATE_DIRS = frozenset({"root", ".ssh", ".aws", ".docker", ".kube", "keys", "private"})


#: (volume tree, path prefix inside the fs) -> uid:gid; everything else is 0:0
OWNERS: tuple[tuple[str, str, int], ...] = (
    ("server/root", "home/alice", 1000),
    ("server/root", "var/log/myapp", 999),
    ("server/root", "var/lib/myapp", 999),
    ("server/srv", "app", 999),
    ("mbr/data", "home/bob", 1001),
)


def owner_for(tree: str, rel: str) -> int:
    """uid (= gid) owning ``rel`` in the file system built from ``trees/<tree>``."""
    for owner_tree, prefix, uid in OWNERS:
        if tree == owner_tree and (rel == prefix or rel.startswith(prefix + "/")):
            return uid
    return 0


def mode_for(rel: str, is_dir: bool) -> int:
    """The permission bits a real system would give ``rel`` (path in the fs)."""
    name = rel.rsplit("/", 1)[-1]
    if is_dir:
        if name in PRIVATE_DIRS:
            return 0o700
        return 0o1777 if rel in ("tmp", "var/tmp") else 0o755
    if rel == "etc/shadow":
        return 0o640
    if name in SECRET_FILE_NAMES or rel.startswith(("root/", "etc/ssl/private/")):
        return 0o600
    if rel.startswith(("etc/ssh/ssh_host_", "etc/wireguard/")) and not rel.endswith(".pub"):
        return 0o600
    if name.endswith(".sh") or rel.startswith(("usr/bin/", "opt/tools/")):
        return 0o755
    return 0o644


# --------------------------------------------------------------------------
# Build machinery
# --------------------------------------------------------------------------


class BuildError(RuntimeError):
    """The build failed; the message says where."""


def tool(name: str) -> str:
    """Absolute path of an external tool (``/usr/sbin`` and ``/sbin`` included)."""
    path = os.environ.get("PATH", "") + os.pathsep + "/usr/sbin:/sbin:/usr/local/sbin"
    found = shutil.which(name, path=path)
    if not found:
        raise BuildError(f"{name} not found (install e2fsprogs, fdisk/util-linux, qemu-utils)")
    return found


class Runner:
    """Run external commands in the staging directory and record them."""

    def __init__(self, cwd: Path) -> None:
        """Commands run with ``cwd`` as working directory (relative paths)."""
        self.cwd = cwd
        self.log: list[str] = []

    def __call__(
        self, *args: str, stdin: str | None = None, ok: tuple[int, ...] = (0,)
    ) -> subprocess.CompletedProcess[str]:
        """Run ``args``; raise :class:`BuildError` on an unexpected exit status."""
        shown = shlex.join(args)
        if stdin is not None:
            shown += " <<'EOF'\n" + stdin + "EOF"
        self.log.append(shown)
        argv = [tool(args[0]), *args[1:]]
        proc = subprocess.run(
            argv, cwd=self.cwd, input=stdin, capture_output=True, text=True, check=False
        )
        if proc.returncode not in ok:
            raise BuildError(
                f"command failed ({proc.returncode}): {shown}\n{proc.stdout}{proc.stderr}"
            )
        return proc


def source_key() -> str:
    """First 16 hex digits of sha256 over build.py and every file under trees/."""
    digest = hashlib.sha256()
    files = [Path(__file__).resolve()]
    files += sorted(
        (p for p in TREES.rglob("*") if p.is_file() or p.is_symlink()),
        key=lambda p: p.relative_to(TREES).as_posix(),
    )
    for path in files:
        data = os.readlink(path).encode() if path.is_symlink() else path.read_bytes()
        digest.update(path.relative_to(HERE).as_posix().encode() + b"\0")
        digest.update(len(data).to_bytes(8, "big") + data)
    return digest.hexdigest()[:16]


def default_out() -> Path:
    """``$IMGSCAN_TESTDATA_CACHE``, else ``$XDG_CACHE_HOME/imgscan/testdata``, else
    ``~/.cache/imgscan/testdata``."""
    env = os.environ.get("IMGSCAN_TESTDATA_CACHE")
    if env:
        return Path(env).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME")
    return (Path(cache) if cache else Path.home() / ".cache") / "imgscan" / "testdata"


def render_file(path: Path, values: dict[str, str]) -> None:
    """Replace ``{{NAME}}`` placeholders in ``path`` (text files only)."""
    data = path.read_bytes()
    if b"{{" not in data:
        return
    text = data.decode()

    def sub(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in values:
            raise BuildError(f"{path}: unknown placeholder {{{{{name}}}}}")
        return values[name]

    rendered = PLACEHOLDER.sub(sub, text)
    if "{{" in rendered:
        raise BuildError(f"{path}: malformed placeholder left after rendering")
    path.write_text(rendered)


def make_archives(root: Path) -> None:
    """Turn ``X.zip.d`` / ``X.tar.gz.d`` directories into archives ``X``."""
    stamp = time.gmtime(FIXED_MTIME)[:6]
    sources = [
        p for p in root.rglob("*.d") if p.is_dir() and p.name.endswith((".zip.d", ".tar.gz.d"))
    ]
    for src in sorted(sources, key=lambda p: -len(p.parts)):
        members = sorted(p for p in src.rglob("*") if p.is_file())
        target = src.with_name(src.name[:-2])
        if src.name.endswith(".zip.d"):
            with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED) as zf:
                for member in members:
                    zinfo = zipfile.ZipInfo(member.relative_to(src).as_posix(), date_time=stamp)
                    zinfo.compress_type = zipfile.ZIP_DEFLATED
                    zinfo.external_attr = 0o644 << 16
                    zf.writestr(zinfo, member.read_bytes())
        elif src.name.endswith(".tar.gz.d"):
            buf = io.BytesIO()
            with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tf:
                for item in sorted(src.rglob("*")):
                    tinfo = tf.gettarinfo(str(item), item.relative_to(src).as_posix())
                    tinfo.uid = tinfo.gid = 0
                    tinfo.uname = tinfo.gname = "root"
                    tinfo.mtime = FIXED_MTIME
                    tinfo.mode = 0o755 if item.is_dir() else 0o644
                    if item.is_file():
                        with item.open("rb") as fh:
                            tf.addfile(tinfo, fh)
                    else:
                        tf.addfile(tinfo)
            with gzip.GzipFile(target, "wb", mtime=FIXED_MTIME) as gz:
                gz.write(buf.getvalue())
        shutil.rmtree(src)


def finish_tree(root: Path) -> None:
    """Set realistic permissions and a fixed mtime on everything in ``root``."""
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = path.relative_to(root).as_posix()
            if not path.is_symlink():
                path.chmod(mode_for(rel, path.is_dir()))
    for dirpath, dirnames, filenames in os.walk(root, topdown=False):
        for name in dirnames + filenames:
            os.utime(Path(dirpath) / name, (FIXED_MTIME, FIXED_MTIME), follow_symlinks=False)
    os.utime(root, (FIXED_MTIME, FIXED_MTIME))


def render_tree(vol: Volume, dest: Path, values: dict[str, str]) -> None:
    """Copy ``trees/<vol.tree>`` to ``dest`` and render it completely."""
    assert vol.tree is not None
    shutil.copytree(TREES / vol.tree, dest, symlinks=True)
    for path in sorted(dest.rglob("*")):
        if path.is_file() and not path.is_symlink():
            render_file(path, values)
    make_archives(dest)
    generator = GENERATORS.get(vol.tree)
    if generator:
        generator(dest, values)
    finish_tree(dest)


def volume_for(disk: Disk, guest_path: str) -> tuple[Volume, str]:
    """The volume holding ``guest_path`` and the path inside that file system."""
    best: tuple[Volume, str] | None = None
    for vol in disk.volumes:
        mp = vol.mountpoint
        if mp is None or vol.tree is None:
            continue
        prefix = mp.rstrip("/") + "/"
        if guest_path.startswith(prefix) or mp == "/":
            inner = guest_path[len(mp.rstrip("/")) :].lstrip("/")
            if best is None or len(mp) > len(best[0].mountpoint or ""):
                best = (vol, inner)
    if best is None:
        raise BuildError(f"{disk.name}: no volume holds {guest_path}")
    return best


def read_guest(disk: Disk, guest_path: str, rendered: dict[tuple[str, str], Path]) -> bytes:
    """Content of a guest file (or ``archive!/member``) in the rendered trees."""
    outer, _, member = guest_path.partition("!/")
    vol, inner = volume_for(disk, outer)
    path = rendered[(disk.name, vol.device)] / inner
    if not path.is_file():
        raise BuildError(f"{disk.name}: {guest_path} does not exist in the rendered tree")
    if not member:
        return path.read_bytes()
    if outer.endswith(".zip"):
        with zipfile.ZipFile(path) as zf:
            return zf.read(member)
    with tarfile.open(path, "r:*") as tf:
        fh = tf.extractfile(member)
        if fh is None:
            raise BuildError(f"{guest_path}: not a regular archive member")
        return fh.read()


def locate(data: bytes, value: str, after: str | None, where: str) -> tuple[int, int]:
    """Byte offset and 1-based line number of ``value`` in ``data``."""
    start = 0
    if after is not None:
        anchor = data.find(after.encode())
        if anchor < 0:
            raise BuildError(f"{where}: anchor {after!r} not found")
        start = anchor + len(after.encode())
    offset = data.find(value.encode(), start)
    if offset < 0:
        raise BuildError(f"{where}: {value[:40]!r} not found")
    return offset, data.count(b"\n", 0, offset) + 1


def manifest_entries(
    plants: Iterable[Plant],
    decoys: Iterable[Decoy],
    values: dict[str, str],
    read: Callable[[str], bytes],
    boundaries: dict[str, int],
    where: str,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Manifest ``planted`` and ``decoys`` entries, each located (offset, line) in the content
    ``read(path)`` returns. ``boundaries`` names values that must straddle a byte offset."""
    planted: list[dict[str, Any]] = []
    for plant in plants:
        secret = values[plant.value]
        offset, line = locate(read(plant.path), secret, plant.after, f"{where}:{plant.path}")
        entry: dict[str, Any] = {
            "path": plant.path,
            "kind": plant.kind,
            "secret": secret,
            "offset": offset,
            "line": line,
        }
        if plant.detail:
            entry["detail"] = plant.detail
        boundary = boundaries.get(plant.value)
        if boundary is not None:
            if not offset < boundary < offset + len(secret):
                raise BuildError(f"{plant.value} does not straddle {boundary}")
            entry["boundary"] = boundary
        planted.append(entry)
    found: list[dict[str, Any]] = []
    for decoy in decoys:
        value = values[decoy.value[1:]] if decoy.value.startswith("@") else decoy.value
        offset, line = locate(read(decoy.path), value, decoy.after, f"{where}:{decoy.path}")
        found.append(
            {"path": decoy.path, "kind": decoy.kind, "value": value, "offset": offset, "line": line}
        )
    return planted, found


def describe(
    disk: Disk, values: dict[str, str], rendered: dict[tuple[str, str], Path]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Manifest ``planted`` and ``decoys`` entries of ``disk``, checked against the trees."""
    return manifest_entries(
        [p for p in PLANTED if p.disk == disk.name],
        [d for d in DECOYS if d.disk == disk.name],
        values,
        lambda path: read_guest(disk, path, rendered),
        BIGLOG_BOUNDARIES,
        disk.name,
    )


def iter_files(root: Path) -> Iterator[Path]:
    """Regular files under ``root`` (symlinks excluded), sorted."""
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.is_symlink():
            yield path


def verify_fs(run: Runner, image: str, tree: Path, scratch: Path) -> None:
    """Dump every file of ``tree`` back out of ``image`` with debugfs and compare."""
    scratch.mkdir(parents=True)
    files = list(iter_files(tree))
    script = scratch / "debugfs.cmd"
    script.write_text(
        "".join(
            f'dump "/{p.relative_to(tree).as_posix()}" "{scratch / str(i)}"\n'
            for i, p in enumerate(files)
        )
    )
    run("debugfs", "-f", str(script.relative_to(run.cwd)), image)
    for i, path in enumerate(files):
        dumped = scratch / str(i)
        if not dumped.is_file() or dumped.read_bytes() != path.read_bytes():
            raise BuildError(f"{image}: {path.relative_to(tree)} differs after mke2fs -d")
    shutil.rmtree(scratch)


def set_owners(run: Runner, image: str, vol: Volume, tree: Path, scratch: Path) -> None:
    """Give every inode a realistic owner with one ``debugfs -w`` pass.

    ``mke2fs -d`` copies the builder's uid/gid; this makes the image the same
    whether it was built by root or by an ordinary user.
    """
    assert vol.tree is not None
    scratch.mkdir(parents=True, exist_ok=True)
    lines = []
    for path in sorted(tree.rglob("*")):
        rel = path.relative_to(tree).as_posix()
        uid = owner_for(vol.tree, rel)
        for field in ("uid", "gid"):
            lines.append(f'set_inode_field "/{rel}" {field} {uid}\n')
    script = scratch / "owners.cmd"
    script.write_text("".join(lines))
    proc = run("debugfs", "-w", "-f", str(script.relative_to(run.cwd)), image)
    if "set_inode_field:" in proc.stderr:
        raise BuildError(f"{image}: debugfs could not set owners: {proc.stderr[-500:]}")


def sfdisk_script(disk: Disk) -> str:
    """The sfdisk input that creates ``disk``'s partition table."""
    lines = [f"label: {disk.table}", f"label-id: {disk.disk_id}", "unit: sectors"]
    if disk.table == "gpt":
        lines.append("first-lba: 2048")
    lines.append("")
    per_mib = MIB // SECTOR
    for idx, vol in enumerate(disk.volumes, 1):
        spec = f"start={vol.start_mib * per_mib}, size={vol.size_mib * per_mib}"
        if disk.table == "gpt":
            part_uuid = str(uuid.uuid5(UUID_NAMESPACE, f"{disk.name}-part{idx}")).upper()
            spec += f', type={LINUX_FS_GUID}, uuid={part_uuid}, name="{vol.label or "data"}"'
        else:
            spec += ", type=83" + (", bootable" if idx == 1 else "")
        lines.append(spec)
    return "\n".join(lines) + "\n"


def check_table(run: Runner, disk: Disk, raw: str) -> None:
    """Read the partition table back with ``sfdisk -J`` and compare it to ``disk``."""
    table = json.loads(run("sfdisk", "-J", raw).stdout)["partitiontable"]
    parts = table.get("partitions", [])
    per_mib = MIB // SECTOR
    want = [(v.start_mib * per_mib, v.size_mib * per_mib) for v in disk.volumes]
    got = [(p["start"], p["size"]) for p in parts]
    if table["label"] != disk.table or got != want:
        raise BuildError(f"{raw}: partition table {table} != {want}")


def build_disk(
    run: Runner, disk: Disk, values: dict[str, str], work: Path, raw_path: str
) -> dict[tuple[str, str], Path]:
    """Render, format and assemble ``disk`` into the raw file ``raw_path``."""
    rendered: dict[tuple[str, str], Path] = {}
    work_rel = work.relative_to(run.cwd)
    pieces: list[tuple[Volume, str]] = []
    for vol in disk.volumes:
        piece = f"{work_rel}/fs/{disk.name}-{vol.short}.img"
        (run.cwd / piece).parent.mkdir(parents=True, exist_ok=True)
        if vol.fstype is None:
            # An unknown file system: seeded random bytes, fixed across builds,
            # checked once more with blkid below.
            data = random.Random(f"imgscan-unknown-{disk.name}-{vol.short}").randbytes(
                vol.size_mib * MIB
            )
            (run.cwd / piece).write_bytes(data)
            if shutil.which("blkid", path="/usr/sbin:/sbin:" + os.environ.get("PATH", "")):
                probe = run("blkid", "-p", piece, ok=(0, 2))
                if probe.returncode == 0:
                    raise BuildError(f"random partition looks like a file system: {probe.stdout}")
        else:
            assert vol.tree is not None and vol.label is not None and vol.uuid is not None
            tree_rel = f"{work_rel}/trees/{disk.name}/{vol.short}"
            render_tree(vol, run.cwd / tree_rel, values)
            rendered[(disk.name, vol.device)] = run.cwd / tree_rel
            args = ["mke2fs", "-q", "-F", "-t", vol.fstype]
            if vol.block_size:
                args += ["-b", str(vol.block_size)]
            args += ["-L", vol.label, "-U", vol.uuid, "-E", "root_owner=0:0"]
            args += ["-d", tree_rel, piece, f"{vol.size_mib}M"]
            run(*args)
            set_owners(run, piece, vol, run.cwd / tree_rel, work / "owners" / vol.tree)
            verify_fs(run, piece, run.cwd / tree_rel, work / "verify" / f"{disk.name}-{vol.short}")
        if (run.cwd / piece).stat().st_size != vol.size_mib * MIB:
            raise BuildError(f"{piece}: unexpected size")
        pieces.append((vol, piece))

    if disk.table is None:
        [(_, piece)] = pieces
        os.replace(run.cwd / piece, run.cwd / raw_path)
        run.log.append(f"mv {piece} {raw_path}")
        return rendered
    run("truncate", "-s", f"{disk.size_mib}M", raw_path)
    run("sfdisk", "--no-reread", "--no-tell-kernel", "-q", raw_path, stdin=sfdisk_script(disk))
    check_table(run, disk, raw_path)
    for vol, piece in pieces:
        run(
            "dd",
            f"if={piece}",
            f"of={raw_path}",
            "bs=4K",
            f"seek={vol.start_mib * MIB // 4096}",
            "conv=notrunc,sparse",
            "status=none",
        )
        (run.cwd / piece).unlink()
    return rendered


def convert(run: Runner, raw: str, image: Image) -> None:
    """``qemu-img convert`` ``raw`` to ``image`` and compare the result."""
    args = ["qemu-img", "convert", "-f", "raw", "-O", image.format]
    if image.subformat:
        args += ["-o", f"subformat={image.subformat}"]
    run(*args, raw, image.file)
    run("qemu-img", "compare", "-q", "-f", "raw", "-F", image.format, raw, image.file)


def volume_entry(disk: Disk, vol: Volume) -> dict[str, Any]:
    """The manifest description of one volume."""
    return {
        "device": vol.device,
        "fstype": vol.fstype,
        "mountpoint": vol.mountpoint,
        "status": vol.status,
        "label": vol.label,
        "uuid": vol.uuid,
        "offset": vol.start_mib * MIB,
        "size": vol.size_mib * MIB,
    }


def build_into(stage: Path, key: str) -> None:
    """Build every image and the manifest into the empty directory ``stage``."""
    run = Runner(stage)
    work = stage / "work"
    work.mkdir()
    values = make_values()
    descriptions: dict[str, tuple[list[dict[str, Any]], list[dict[str, Any]]]] = {}

    for disk in DISKS.values():
        disk_images = [img for img in IMAGES if img.disk == disk.name]
        raw_image = next((img for img in disk_images if img.format == "raw"), None)
        raw = raw_image.file if raw_image else f"work/{disk.name}.raw"
        rendered = build_disk(run, disk, values, work, raw)
        descriptions[disk.name] = describe(disk, values, rendered)
        for img in disk_images:
            if img.format == "raw":
                continue
            if img.copy_of:
                source = next(i for i in IMAGES if i.name == img.copy_of)
                try:
                    os.link(stage / source.file, stage / img.file)
                    run.log.append(f"ln {source.file} {img.file}")
                except OSError:
                    shutil.copy2(stage / source.file, stage / img.file)
                    run.log.append(f"cp {source.file} {img.file}")
                continue
            convert(run, raw, img)
        run("qemu-img", "info", "--output=json", disk_images[0].file)

    shutil.rmtree(work)
    images: list[dict[str, Any]] = []
    for img in IMAGES:
        disk = DISKS[img.disk]
        planted, decoys = descriptions[disk.name]
        images.append(
            {
                "name": img.name,
                "file": img.file,
                "format": img.format,
                "subformat": img.subformat,
                "copy_of": img.copy_of,
                "disk_size": disk.size_mib * MIB,
                "partition_table": disk.table,
                "os": disk.os,
                "coverage_complete": disk.coverage_complete,
                "volumes": [volume_entry(disk, vol) for vol in disk.volumes],
                "planted": planted,
                "decoys": decoys,
            }
        )
    (stage / "commands.txt").write_text("\n".join(run.log) + "\n")
    manifest = {"version": MANIFEST_VERSION, "key": key, "images": images}
    tmp = stage / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    os.replace(tmp, stage / MANIFEST)


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (serialises concurrent builds)."""
    with path.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def cached(
    out: Path | None, key: str, build_into: Callable[[Path, str], None], force: bool
) -> Path:
    """Return ``out/<key>/``, building it with ``build_into(stage, key)`` unless it is cached.

    ``out`` is the cache root (default :func:`default_out`). A build happens in
    ``out/.staging-<key>-<pid>/`` and is renamed into place only when complete (the manifest
    is written last), so a cache entry is never partial; builds of one key take turns.
    Set IMGSCAN_TESTDATA_KEEP_FAILED to keep a failed build's staging directory.
    """
    base = (out if out is not None else default_out()).expanduser().resolve()
    base.mkdir(parents=True, exist_ok=True)
    final = base / key
    if not force and (final / MANIFEST).is_file():
        return final
    with locked(base / f".{key}.lock"):
        if not force and (final / MANIFEST).is_file():
            return final
        for stale in base.glob(f".staging-{key}-*"):
            shutil.rmtree(stale, ignore_errors=True)
        stage = base / f".staging-{key}-{os.getpid()}"
        stage.mkdir()
        try:
            build_into(stage, key)
            if final.exists():
                trash = base / f".trash-{key}-{os.getpid()}"
                os.rename(final, trash)
                shutil.rmtree(trash, ignore_errors=True)
            os.rename(stage, final)
        except BaseException:
            if not os.environ.get("IMGSCAN_TESTDATA_KEEP_FAILED"):
                shutil.rmtree(stage, ignore_errors=True)
            raise
    return final


def build(out: Path | None = None, *, force: bool = False) -> Path:
    """Build the images (or reuse the cached build) and return their directory."""
    return cached(out, source_key(), build_into, force)


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="cache root (default: $IMGSCAN_TESTDATA_CACHE or ~/.cache/imgscan/testdata)",
    )
    parser.add_argument("--force", action="store_true", help="rebuild even if cached")
    args = parser.parse_args(argv)
    # Turn SIGTERM into SystemExit so an interrupted build removes its staging dir.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    started = time.monotonic()
    try:
        result = build(args.out, force=args.force)
    except BuildError as exc:
        print(f"build.py: {exc}", file=sys.stderr)
        return 1
    print(f"build.py: ready in {time.monotonic() - started:.1f}s", file=sys.stderr)
    print(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
