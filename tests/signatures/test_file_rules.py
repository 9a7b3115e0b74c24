"""File rules (imgscan/signatures/files.toml): each rule's example paths are its own, its negative
paths are not, and a file is reported by its path only when no content rule fired on it."""

from __future__ import annotations

import secrets
import sqlite3
from pathlib import Path

import pytest

from imgscan.detect.engine import Engine
from imgscan.detect.rules import FileRule, load_pack
from imgscan.model import FileRef, Severity
from imgscan.options import default_signatures_dir
from imgscan.scan.worker import FileScanner

_PACK = load_pack(default_signatures_dir())


def test_there_are_file_rules() -> None:
    assert len(_PACK.files) >= 15


@pytest.mark.parametrize("rule", _PACK.files, ids=lambda r: r.id)
def test_file_rule_examples(engine: Engine, rule: FileRule) -> None:
    for path in rule.examples:
        found = engine.file_rule(path)
        assert found is not None and found.id == rule.id, path
    for path in rule.negative_examples:
        found = engine.file_rule(path)
        assert found is None or found.id != rule.id, path


def _scan(scanner: FileScanner, path: str, data: bytes) -> list[tuple[str, str, str]]:
    outcome = scanner.scan(FileRef("/dev/sda1", path, len(data), "-", inline=data))
    return [(f.rule, f.preview, f.severity.value) for f in outcome.findings]


def test_a_binary_store_is_reported_by_its_path(
    inline_scanner: FileScanner, tmp_path: Path
) -> None:
    database = tmp_path / "credentials.db"
    with sqlite3.connect(database) as db:
        db.execute("CREATE TABLE credentials (account_id TEXT PRIMARY KEY, value BLOB)")
        db.execute("INSERT INTO credentials VALUES (?, ?)", ("ops", secrets.token_bytes(64)))
    data = database.read_bytes()
    path = "/home/alice/.config/gcloud/credentials.db"
    assert _scan(inline_scanner, path, data) == [
        ("gcloud-credential-db", f"file of {len(data)} bytes", "high")
    ]
    # Not by any other name, and empty files are nothing.
    assert _scan(inline_scanner, "/home/alice/notes.db", data) == []
    assert _scan(inline_scanner, path, b"") == []


def test_content_findings_take_precedence(inline_scanner: FileScanner) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    key = ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    assert [r for r, _, _ in _scan(inline_scanner, "/home/alice/.ssh/id_ed25519", key)] == [
        "openssh-private-key"
    ]
    # A key file no content rule parses is still reported, by its name.
    damaged = secrets.token_bytes(300)
    assert _scan(inline_scanner, "/home/alice/.ssh/id_ed25519", damaged) == [
        ("ssh-private-key-file", "file of 300 bytes", Severity.HIGH.value)
    ]


def test_windows_paths_match_regardless_of_case(engine: Engine) -> None:
    found = engine.file_rule("C:\\WINDOWS\\system32\\config\\sam")
    assert found is not None and found.id == "windows-account-hives"
