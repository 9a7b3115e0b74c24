"""Offline checks of found values: token checksums, JWTs, AWS key ids, private keys, hashes.

Every value is generated here at test time (the repository holds no credential-shaped literal).
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
import secrets
import struct
import time
from collections.abc import Callable
from typing import Any

import build as testdata
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from imgscan.detect.checks import NotASecret, offline_checks
from imgscan.detect.engine import Engine
from imgscan.detect.validate import placeholder
from imgscan.model import CheckResult, FileRef, Severity, Validation, ValidationStatus
from imgscan.scan.worker import FileScanner


def _status(value: str | bytes) -> tuple[ValidationStatus, list[str]]:
    data = value.encode() if isinstance(value, str) else value
    checks = offline_checks(data)
    return Validation(checks).status, [c.detail for c in checks]


def _jwt(claims: dict[str, object]) -> str:
    def part(obj: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'HS256', 'typ': 'JWT'})}.{part(claims)}.{secrets.token_urlsafe(32)}"


@pytest.mark.parametrize("prefix", ["ghp_", "gho_", "ghs_", "npm_"])
def test_token_checksum(prefix: str) -> None:
    token = testdata.github_token(prefix)
    assert _status(token) == (ValidationStatus.WELL_FORMED, ["CRC32 checksum matches"])
    forged = token[:-1] + ("A" if token[-1] != "A" else "B")
    with pytest.raises(NotASecret):
        offline_checks(forged.encode())


def test_jwt_structure_and_expiry() -> None:
    now = time.time()
    live = _jwt({"sub": "job", "exp": int(now) + 3600})
    expired = _jwt({"sub": "job", "exp": 1_600_000_000})
    status, details = _status(live)
    assert status is ValidationStatus.WELL_FORMED and details[0].startswith("alg HS256; expires ")
    assert _status(expired) == (
        ValidationStatus.FAILED,
        ["alg HS256; expired 2020-09-13 12:26 UTC"],
    )
    assert _status(_jwt({"sub": "no expiry"}))[1] == ["alg HS256; no expiry"]
    garbage = "eyJub3QganNvbg." + "eyJ" + secrets.token_urlsafe(12) + "." + secrets.token_urlsafe(8)
    assert _status(garbage)[0] is ValidationStatus.FAILED


def test_aws_key_id_shape() -> None:
    assert _status(testdata.aws_key_id()) == (
        ValidationStatus.WELL_FORMED,
        ["well-formed long-term access key id"],
    )
    assert _status("ASIA" + testdata.aws_key_id()[4:])[1] == ["well-formed temporary (STS) key id"]


def _pem(key: Any, fmt: serialization.PrivateFormat, password: bytes | None = None) -> bytes:
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password)
        if password
        else serialization.NoEncryption()
    )
    data: bytes = key.private_bytes(serialization.Encoding.PEM, fmt, encryption)
    return data


def test_private_keys_parse_or_are_encrypted() -> None:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    ed_key = ed25519.Ed25519PrivateKey.generate()
    traditional = _pem(rsa_key, serialization.PrivateFormat.TraditionalOpenSSL)
    assert _status(traditional) == (ValidationStatus.WELL_FORMED, ["RSA key parses (2048 bits)"])
    pkcs8 = _pem(ec_key, serialization.PrivateFormat.PKCS8)
    assert _status(pkcs8)[0] is ValidationStatus.WELL_FORMED
    openssh = _pem(ed_key, serialization.PrivateFormat.OpenSSH)
    assert _status(openssh) == (ValidationStatus.WELL_FORMED, ["Ed25519 key parses"])
    locked = _pem(rsa_key, serialization.PrivateFormat.PKCS8, b"correct horse")
    needs = ["encrypted key: needs its passphrase"]
    assert _status(locked) == (ValidationStatus.WELL_FORMED, needs)
    escaped = traditional.replace(b"\n", b"\\n")  # as in a JSON string
    assert _status(escaped)[0] is ValidationStatus.WELL_FORMED
    truncated = traditional[:400] + b"\n-----END RSA PRIVATE KEY-----\n"
    assert _status(truncated) == (ValidationStatus.FAILED, ["does not parse as a private key"])


def test_password_hash_live_and_common() -> None:
    common = testdata.sha512_crypt("changeme")
    strong = testdata.sha512_crypt(secrets.token_urlsafe(16))
    assert _status(common) == (
        ValidationStatus.WELL_FORMED,
        ["live sha512-crypt hash of a common password (imgscan's built-in list)"],
    )
    assert _status(strong)[1] == [
        "live sha512-crypt hash; not one of imgscan's built-in common passwords"
    ]
    assert "changeme" not in " ".join(_status(common)[1])


def test_values_without_structure_are_unverified() -> None:
    assert _status(secrets.token_urlsafe(16)) == (ValidationStatus.UNVERIFIED, [])


def test_failed_validation_demotes_and_checksum_failure_drops(inline_scanner: FileScanner) -> None:
    expired = _jwt({"sub": "job", "exp": 1_600_000_000})
    token = testdata.github_token()
    forged = token[:-1] + ("A" if token[-1] != "A" else "B")
    text = f"AUTH_TOKEN={expired}\nGITHUB_TOKEN={token}\nOLD_GITHUB_TOKEN={forged}\n".encode()
    outcome = inline_scanner.scan(FileRef("/dev/sda1", "/srv/app/.env", len(text), "-", text))
    by_secret = {f.secret: f for f in outcome.findings}
    assert forged not in by_secret  # a forged checksum is not a token at all
    assert by_secret[token].validation.status is ValidationStatus.WELL_FORMED
    jwt = by_secret[expired]
    assert jwt.validation.status is ValidationStatus.FAILED
    assert jwt.severity is Severity.LOW
    assert [c.result for c in jwt.validation.checks] == [CheckResult.FAIL]


def _p12(password: bytes | None) -> bytes:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.serialization import pkcs12
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "app.internal")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password)
        if password
        else serialization.NoEncryption()
    )
    return pkcs12.serialize_key_and_certificates(b"app", key, cert, None, encryption)


def _jks(password: str) -> bytes:
    """A one-entry Java key store laid out as keytool writes it (the key blob is filler)."""
    alias = b"app"
    # EncryptedPrivateKeyInfo naming Sun's JKS key protector, 1.3.6.1.4.1.42.2.17.1.1.
    protector = bytes.fromhex("060a2b060104012a02110101")
    blob = b"\x30\x20\x30\x0e" + protector + b"\x05\x00\x04\x0c" + secrets.token_bytes(12)
    body = b"\xfe\xed\xfe\xed" + struct.pack(">III", 2, 1, 1)
    body += struct.pack(">H", len(alias)) + alias + struct.pack(">Q", 1_700_000_000_000)
    body += struct.pack(">I", len(blob)) + blob + struct.pack(">I", 0)
    digest = hashlib.sha1(password.encode("utf-16-be") + b"Mighty Aphrodite" + body).digest()
    return body + digest


@pytest.mark.parametrize(
    ("store", "detail"),
    [
        (lambda: _p12(None), "opens without a password"),
        (lambda: _p12(b"changeit"), "opens with a common password (imgscan's built-in list)"),
        (lambda: _p12(secrets.token_urlsafe(12).encode()), "does not open with a common password"),
        (lambda: _jks("changeit"), "opens with a common password (imgscan's built-in list)"),
        (lambda: _jks(""), "opens with an empty password"),
        (lambda: _jks(secrets.token_urlsafe(12)), "does not open with a common password"),
    ],
)
def test_key_stores_are_tried_with_common_passwords(
    engine: Engine, store: Callable[[], bytes], detail: str
) -> None:
    hits = engine.scan_bytes(store(), "/etc/ssl/private/app.store")
    assert len(hits) == 1
    assert [c.detail for c in hits[0].checks] == [detail]
    assert "changeit" not in detail


def test_fixture_locations_are_listed_but_demoted(inline_scanner: FileScanner) -> None:
    token = testdata.github_token()
    text = f"GITHUB_TOKEN={token}\n".encode()
    for path, severity in (
        ("/srv/app/.env", Severity.HIGH),
        ("/usr/lib/python3/dist-packages/lib/tests/fixtures/.env", Severity.INFO),
        ("/opt/tool/spec/data.zip!/.env", Severity.INFO),
    ):
        outcome = inline_scanner.scan(FileRef("/dev/sda1", path, len(text), "-", text))
        assert [(f.secret, f.severity) for f in outcome.findings] == [(token, severity)], path


def test_references_and_documentation_samples_are_dropped(inline_scanner: FileScanner) -> None:
    sample = (  # the token jwt.io shows, assembled so the source holds no token literal
        base64.urlsafe_b64encode(b'{"alg":"HS256","typ":"JWT"}').rstrip(b"=").decode()
        + "."
        + base64.urlsafe_b64encode(b'{"sub":"1234567890","name":"John Doe","iat":1516239022}')
        .rstrip(b"=")
        .decode()
        + "."
        + secrets.token_urlsafe(32)
    )
    text = f'{{"password": "DB_PASSWORD", "token": "{sample}"}}\n'.encode()
    outcome = inline_scanner.scan(
        FileRef("/dev/sda1", "/srv/app/config.json", len(text), "-", text)
    )
    assert outcome.findings == ()
    # Each is dropped by its own judge, not merely missed by the rules.
    assert placeholder(b"DB_PASSWORD") == "name of an environment variable"
    assert placeholder(b"Db_Passw0rd_2024") is None
    with pytest.raises(NotASecret):
        offline_checks(sample.encode())


def test_unattend_base64_password_decodes(inline_scanner: FileScanner) -> None:
    password = secrets.token_urlsafe(12)
    encoded = base64.b64encode((password + "Password").encode("utf-16-le")).decode()
    text = (
        "<AutoLogon><Password><Value>"
        + encoded
        + "</Value><PlainText>false</PlainText></Password></AutoLogon>\n"
    ).encode()
    outcome = inline_scanner.scan(FileRef("/dev/sda3", "C:\\unattend.xml", len(text), "-", text))
    assert [(f.secret, [c.detail for c in f.validation.checks]) for f in outcome.findings] == [
        (encoded, ["base64 of the password + 'Password': decodes offline"])
    ]
