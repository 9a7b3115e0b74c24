"""Checks and validators of credentials in Windows files: Group Policy Preferences cpassword
(decrypted with the published key), answer-file "encrypted" values, DPAPI blobs (saved RDP
passwords), PowerShell environment references, and the KeePass database of the test image.

Every value is generated at test time with testdata/windows_files.py's encoders, the ones the
Windows test image is built with.
"""

from __future__ import annotations

import base64
import uuid
from pathlib import Path

import build as testdata
import windows_files
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from imgscan.detect.checks import (
    dpapi_blob,
    gpp_cpassword,
    gpp_decrypt,
    offline_checks,
    unattend_decode,
    unattend_encoding,
)
from imgscan.detect.engine import Engine
from imgscan.detect.validate import VALIDATORS, placeholder
from imgscan.model import CheckResult

TREE = Path(testdata.HERE) / "trees-windows" / "win-server" / "c"


def _details(secret: bytes) -> str:
    return " ".join(c.detail for c in offline_checks(secret))


def test_cpassword_decrypts_with_the_published_key() -> None:
    password = testdata.rand_password(16)
    cpassword = windows_files.gpp_cpassword(password).encode()
    assert b"=" not in cpassword  # the Group Policy editor strips base64 padding
    assert gpp_decrypt(cpassword) == password
    check = gpp_cpassword(cpassword)
    assert check is not None and check.result is CheckResult.PASS
    assert password not in _details(cpassword)
    assert VALIDATORS["gpp_cpassword"](cpassword) is None


def test_cpassword_of_nothing_or_a_placeholder_is_dropped() -> None:
    empty = windows_files.gpp_cpassword("").encode()
    assert gpp_decrypt(empty) == ""
    assert gpp_cpassword(empty) is None
    assert VALIDATORS["gpp_cpassword"](empty) == "decrypts to an empty password"
    assert VALIDATORS["gpp_cpassword"](windows_files.gpp_cpassword("changeme").encode())
    # The sample every MS14-025 write-up decrypts.
    sample = windows_files.gpp_cpassword("Local*P4ssword!").encode()
    assert VALIDATORS["gpp_cpassword"](sample) == "documentation example"


def test_value_that_is_not_a_cpassword_is_left_alone() -> None:
    # 15 bytes: not whole AES blocks.
    short = base64.b64encode(testdata.rand_chars(testdata.ALNUM, 15).encode())
    assert gpp_decrypt(short) is None
    # Whole blocks under the right key whose last byte is no PKCS#7 padding.
    encryptor = Cipher(algorithms.AES(windows_files.GPP_KEY), modes.CBC(bytes(16))).encryptor()
    block = testdata.rand_chars(testdata.ALNUM, 15).encode() + b"\0"
    unpadded = base64.b64encode(encryptor.update(block) + encryptor.finalize())
    assert gpp_decrypt(unpadded) is None
    assert gpp_cpassword(unpadded) is None
    # Kept by the validator: reported, but not confirmed.
    assert VALIDATORS["gpp_cpassword"](unpadded) is None


def test_unattend_value_decodes_and_placeholders_are_dropped() -> None:
    password = testdata.rand_password(14)
    for setting in ("AdministratorPassword", "Password"):
        value = windows_files.unattend_value(password, setting).encode()
        assert unattend_decode(value) == password
        check = unattend_encoding(value)
        assert check is not None and check.result is CheckResult.PASS
        assert setting in check.detail and password not in check.detail
        assert VALIDATORS["unattend_password"](value) is None
    placeholder_value = windows_files.unattend_value("changeme", "AdministratorPassword")
    assert VALIDATORS["unattend_password"](placeholder_value.encode()) == "placeholder word"
    empty = windows_files.unattend_value("", "AdministratorPassword").encode()
    assert unattend_decode(empty) == ""
    assert unattend_encoding(empty) is None
    assert VALIDATORS["unattend_password"](empty) == "encodes an empty password"
    # A plain-text answer-file password is not base64 of UTF-16LE: the validator keeps it.
    assert VALIDATORS["unattend_password"](password.encode()) is None


def test_dpapi_blob_names_its_master_key() -> None:
    blob = windows_files.dpapi_blob_hex()
    master_key = str(uuid.UUID(bytes_le=bytes.fromhex(blob)[24:40]))
    check = dpapi_blob(blob.encode())
    assert check is not None and check.result is CheckResult.PASS
    assert master_key in check.detail
    assert dpapi_blob(blob.lower().encode()) is not None
    # Remote Desktop Connection Manager (.rdg) keeps the same blob in base64.
    as_base64 = base64.b64encode(bytes.fromhex(blob))
    check = dpapi_blob(as_base64)
    assert check is not None and master_key in check.detail
    assert dpapi_blob(testdata.rand_chars("0123456789ABCDEF", len(blob)).encode()) is None


def test_powershell_environment_reference_is_a_placeholder() -> None:
    assert placeholder(b"$env:SVC_PASSWORD") == "template or environment reference"
    assert placeholder(testdata.rand_password(16).encode()) is None


def test_keepass_database_of_the_test_image_and_its_note(engine: Engine) -> None:
    kdbx = (TREE / "Users/alice/Documents/Passwords.kdbx").read_bytes()
    hits = engine.scan_bytes(kdbx, "C:\\Users\\alice\\Documents\\Passwords.kdbx")
    assert [h.rule.id for h in hits] == ["keepass-database"]
    master = testdata.rand_password(22)
    note = (TREE / "Users/alice/Documents/keepass.txt").read_text()
    note = note.replace("{{WIN_KEEPASS_MASTER}}", master)
    hits = engine.scan_bytes(note.encode(), "C:\\Users\\alice\\Documents\\keepass.txt")
    assert [(h.rule.id, h.secret) for h in hits] == [
        ("keepass-master-password-note", master.encode())
    ]


def test_group_policy_file_is_confirmed_and_empty_one_dropped(engine: Engine) -> None:
    path = "C:\\Windows\\SYSVOL\\domain\\Policies\\{X}\\Machine\\Preferences\\Groups\\Groups.xml"
    line = '<Properties action="U" cpassword="{}" userName="Administrator (built-in)"/>'
    cpassword = windows_files.gpp_cpassword(testdata.rand_password(16))
    hits = engine.scan_bytes(line.format(cpassword).encode(), path)
    assert [(h.rule.id, h.secret) for h in hits] == [("gpp-cpassword", cpassword.encode())]
    assert [c.name for c in hits[0].checks] == ["gpp-cpassword"]
    empty = windows_files.gpp_cpassword("")
    assert engine.scan_bytes(line.format(empty).encode(), path) == []


def test_saved_rdp_password_names_host_and_user(engine: Engine) -> None:
    rdp = (TREE / "Users/alice/Documents/ts01.rdp").read_text()
    blob = windows_files.dpapi_blob_hex()
    text = rdp.replace("{{WIN_RDP_PASSWORD_BLOB}}", blob).replace("\n", "\r\n")
    hits = engine.scan_bytes(text.encode(), "C:\\Users\\alice\\Documents\\ts01.rdp")
    assert [(h.rule.id, h.secret) for h in hits] == [("rdp-file-password", blob.encode())]
    assert hits[0].context == (("host", "ts01.corp.internal"), ("user", "CORP\\alice"))
    assert [c.name for c in hits[0].checks] == ["dpapi-blob"]
