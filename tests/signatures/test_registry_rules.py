"""Registry rules (imgscan/signatures/registry.toml): each example, stored in a hive built at
test time the way the software stores it, is found at its key path with its decoded secret and
context; no negative example is."""

from __future__ import annotations

import random
from pathlib import Path

import hives  # testdata/hives.py: hive writer and the stored forms of secrets
import pytest
from templates import expand

from imgscan.detect.registry import value_path
from imgscan.detect.rules import RegistryExample, RegistryRule, load_pack
from imgscan.model import FileRef, Finding
from imgscan.options import default_signatures_dir
from imgscan.scan.worker import FileScanner

_PACK = load_pack(default_signatures_dir())
HIVE = "C:\\Windows\\System32\\config\\RegBack\\HIVE"


def _hive_findings(
    scanner: FileScanner, tmp_path: Path, rule: RegistryRule, example: RegistryExample, seed: str
) -> tuple[list[Finding], str | None]:
    """Findings of `rule` in a hive holding the example, and the example's expanded secret."""
    data, secret = expand(example.data, example.secret, seed)
    siblings = dict(example.siblings)
    stored = hives.stored_value(rule.decoder, data, siblings, random.Random(seed))
    name = rule.value.replace("*", "")  # a glob's literal part names the value
    values: dict[str, hives.Value] = {k: (hives.REG_SZ, v) for k, v in siblings.items()}
    values[name] = stored
    file = tmp_path / "hive"
    hives.write_hive(file, {example.key.replace("/", "\\"): values})
    content = file.read_bytes()
    outcome = scanner.scan(FileRef("/dev/sda3", HIVE, len(content), "-", inline=content))
    assert outcome.skipped == ()
    return [f for f in outcome.findings if f.rule == rule.id], secret


def test_registry_rules_cover_the_issue() -> None:
    ids = {r.id for r in _PACK.registry}
    assert {
        "windows-autologon-password",
        "putty-proxy-password",
        "winscp-session-password",
        "realvnc-server-password",
        "tightvnc-server-password",
        "windows-sam-account-hash",
        "windows-lsa-secret",
    } <= ids


@pytest.mark.parametrize("rule", _PACK.registry, ids=lambda r: r.id)
def test_registry_examples(inline_scanner: FileScanner, tmp_path: Path, rule: RegistryRule) -> None:
    for number, example in enumerate(rule.examples):
        findings, secret = _hive_findings(
            inline_scanner, tmp_path, rule, example, f"{rule.id}/{number}"
        )
        name = rule.value.replace("*", "")
        want_path = value_path(HIVE, example.key, name)
        assert [f.path for f in findings] == [want_path], f"example {number}"
        found = findings[0]
        assert found.secret == secret, f"example {number}"
        if secret is None:
            assert found.preview.startswith("value of "), "presence rules never show the value"
        assert set(example.context) <= set(found.context), f"example {number}: {found.context}"


@pytest.mark.parametrize("rule", _PACK.registry, ids=lambda r: r.id)
def test_registry_negative_examples(
    inline_scanner: FileScanner, tmp_path: Path, rule: RegistryRule
) -> None:
    for number, example in enumerate(rule.negative_examples):
        findings, _ = _hive_findings(
            inline_scanner, tmp_path, rule, example, f"{rule.id}/neg/{number}"
        )
        assert findings == [], f"negative example {number} matched"
