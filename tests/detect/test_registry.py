"""Registry hives: the rule loader, the value decoders and the hive walk (detect/registry.py),
on hives written at test time by testdata/hives.py (hivex)."""

from __future__ import annotations

import random
import string
from pathlib import Path

import hives  # testdata/hives.py
import pytest

from imgscan.detect import registry
from imgscan.detect.decoders import (
    REG_BINARY,
    REG_DWORD,
    REG_MULTI_SZ,
    REG_SZ,
    sam_user_name,
    vnc_des,
    vnc_password,
    winscp,
    winscp_password,
)
from imgscan.detect.registry import RegistryMatcher, is_hive, value_path
from imgscan.detect.rules import load_pack
from imgscan.errors import RulePackError
from imgscan.model import FileRef, Finding, Skipped
from imgscan.scan.worker import FileScanner

GOOD = """
[[registry]]
id = "demo-registry"
name = "Demo"
category = "password"
severity = "high"
keys = ["Software/Demo/Sessions/*"]
value = "Password"
context = { user = "UserName", session = "@key" }
comment = "clear text"
examples = [{ key = "Software/Demo/Sessions/a", data = "{{rand:alnum:12}}", secret = "{{1}}" }]
negative_examples = [{ key = "Software/Demo/Sessions/a", data = "" }]
"""


def _pack_dir(tmp_path: Path, text: str) -> Path:
    (tmp_path / "registry.toml").write_text(text)
    return tmp_path


def _rng() -> random.Random:
    return random.Random()  # fresh vectors every run: the decoders must hold for any value


def _password(rng: random.Random, length: int) -> str:
    return "".join(rng.choice(string.ascii_letters + string.digits + "!#%&") for _ in range(length))


# --- loader -------------------------------------------------------------------------------


def test_registry_rule_loads(tmp_path: Path) -> None:
    pack = load_pack(_pack_dir(tmp_path, GOOD))
    (rule,) = pack.registry
    assert rule.keys == ("Software/Demo/Sessions/*",)
    assert rule.decoder == "plain"
    assert rule.validators == ("placeholder",)  # decoded secrets drop placeholders by default
    assert rule.context == (("session", "@key"), ("user", "UserName"))
    assert pack.meta("demo-registry").severity.value == "high"


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ('keys = ["Software/Demo/Sessions/*"]', "keys = []", "keys"),
        ('keys = ["Software/Demo/Sessions/*"]', 'keys = ["Software/**/Sessions"]', "no **"),
        ('keys = ["Software/Demo/Sessions/*"]', 'keys = ["Software\\\\Demo"]', "keys"),
        ('value = "Password"', "value = 3", "value"),
        ('value = "Password"', 'value = "Password"\ndecoder = "rot13"', "decoder"),
        ('context = { user = "UserName", session = "@key" }', "context = { User = 1 }", "context"),
        ('comment = "clear text"', "", "comment"),
        ('negative_examples = [{ key = "Software/Demo/Sessions/a", data = "" }]', "", "negative"),
        ('data = "{{rand:alnum:12}}"', "data = 12", "data must be a string"),
        ('category = "password"', 'category = "misc"', "unknown category"),
    ],
)
def test_malformed_registry_rule_names_file_and_id(
    tmp_path: Path, old: str, new: str, message: str
) -> None:
    assert old in GOOD
    with pytest.raises(RulePackError) as info:
        load_pack(_pack_dir(tmp_path, GOOD.replace(old, new)))
    text = str(info.value)
    assert "registry.toml" in text and "demo-registry" in text and message in text


# --- decoders -----------------------------------------------------------------------------


def test_winscp_round_trip() -> None:
    rng = _rng()
    for length in (1, 8, 20, 40):
        password = _password(rng, length)
        stored = hives.winscp_obfuscate("deploy", "files.corp.internal", password, rng)
        assert winscp_password("deploy", "files.corp.internal", stored) == password
        # Keyed by user and host: another session's pair does not decode it.
        assert winscp_password("other", "files.corp.internal", stored) is None


def test_winscp_not_simple_scheme_is_reported_undecoded() -> None:
    stored = "not hex at all"
    decoded = winscp(REG_SZ, (stored + "\0").encode("utf-16-le"), {})
    assert decoded is not None and decoded.secret == stored.encode()
    assert "not decoded" in decoded.checks[0].detail
    assert winscp_password("u", "h", "A35C") is None  # truncated


def test_vnc_round_trip_binary_and_hex_string() -> None:
    rng = _rng()
    for length in (1, 6, 8):
        password = _password(rng, length)
        block = hives.vnc_encrypt(password)
        assert len(block) == 8 and block != password.encode().ljust(8, b"\0")
        assert vnc_password(block) == password.encode()
        binary = vnc_des(REG_BINARY, block, {})
        text = vnc_des(REG_SZ, (block.hex() + "\0").encode("utf-16-le"), {})
        assert binary is not None and text is not None
        assert binary.secret == text.secret == password.encode()
    assert vnc_des(REG_BINARY, b"", {}) is None
    assert vnc_des(REG_BINARY, b"\x01\x02\x03", {}) is None  # not whole DES blocks


def test_vnc_decoder_matches_a_known_vector() -> None:
    # The fixed key's published test: DES-ECB of eight NULs under e84ad660c4721ae0.
    from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
    from cryptography.hazmat.primitives.ciphers import Cipher, modes

    key = bytes.fromhex("e84ad660c4721ae0")
    encryptor = Cipher(TripleDES(key * 3), modes.ECB()).encryptor()
    plaintext = _password(_rng(), 8).encode()
    block = encryptor.update(plaintext) + encryptor.finalize()
    assert vnc_password(block) == plaintext
    assert hives.vnc_encrypt(plaintext.decode()) == block


def test_sam_user_name() -> None:
    record = hives.sam_v("alice", _rng())
    assert sam_user_name(record) == "alice"
    assert sam_user_name(record[:0x20]) is None
    broken = bytearray(record)
    broken[0x10:0x14] = (10_000).to_bytes(4, "little")  # name runs past the record
    assert sam_user_name(bytes(broken)) is None


# --- hive walk and findings ---------------------------------------------------------------


def _hive(tmp_path: Path, keys: dict[str, dict[str, hives.Value]]) -> bytes:
    file = tmp_path / "hive"
    hives.write_hive(file, keys)
    return file.read_bytes()


def _scan(scanner: FileScanner, path: str, data: bytes) -> tuple[list[Finding], list[Skipped]]:
    outcome = scanner.scan(FileRef("/dev/sda3", path, len(data), "-", inline=data))
    return list(outcome.findings), list(outcome.skipped)


NTUSER = "C:\\Users\\bob\\NTUSER.DAT"


def test_values_found_with_key_path_and_context(
    inline_scanner: FileScanner, tmp_path: Path
) -> None:
    rng = _rng()
    proxy, winscp_pw = _password(rng, 16), _password(rng, 16)
    data = _hive(
        tmp_path,
        {
            "Software\\SimonTatham\\PuTTY\\Sessions\\Web%20Proxy": {
                "HostName": (REG_SZ, "web01.corp.internal"),
                "ProxyHost": (REG_SZ, "proxy.corp.internal"),
                "ProxyUsername": (REG_SZ, "bob"),
                "ProxyPassword": (REG_SZ, proxy),
            },
            # Key names are matched regardless of case, as Windows does.
            "Software\\martin prikryl\\WINSCP 2\\sessions\\bob@sftp": {
                "HostName": (REG_SZ, "sftp.corp.internal"),
                "UserName": (REG_SZ, "bob"),
                "PortNumber": (REG_DWORD, 2222),
                "Password": (
                    REG_SZ,
                    hives.winscp_obfuscate("bob", "sftp.corp.internal", winscp_pw, rng),
                ),
            },
        },
    )
    findings, skipped = _scan(inline_scanner, NTUSER, data)
    assert skipped == []
    by_path = {f.path: f for f in findings}
    putty = by_path[f"{NTUSER}!/Software/SimonTatham/PuTTY/Sessions/Web%20Proxy:ProxyPassword"]
    assert (putty.rule, putty.secret, putty.preview) == (
        "putty-proxy-password",
        proxy,
        f"…({len(proxy)})",
    )
    assert dict(putty.context) == {
        "session": "Web%20Proxy",
        "host": "proxy.corp.internal",
        "user": "bob",
        "server": "web01.corp.internal",
    }
    scp = by_path[f"{NTUSER}!/Software/martin prikryl/WINSCP 2/sessions/bob@sftp:Password"]
    assert scp.secret == winscp_pw
    assert dict(scp.context)["port"] == "2222"
    assert len(findings) == 2


def test_secrets_are_not_in_the_finding_without_show_secrets(
    inline_scanner: FileScanner, tmp_path: Path
) -> None:
    from dataclasses import replace

    scanner = FileScanner(replace(inline_scanner.spec, show_secrets=False), inline_scanner.opener)
    password = _password(_rng(), 16)
    winlogon = "Microsoft\\Windows NT\\CurrentVersion\\Winlogon"
    data = _hive(tmp_path, {winlogon: {"DefaultPassword": (REG_SZ, password)}})
    findings, _ = _scan(scanner, "C:\\Windows\\System32\\config\\SOFTWARE", data)
    assert [(f.rule, f.secret) for f in findings] == [("windows-autologon-password", None)]
    assert password not in repr(findings)


def test_presence_values_are_never_shown(inline_scanner: FileScanner, tmp_path: Path) -> None:
    rng = _rng()
    blob = rng.randbytes(48)
    data = _hive(
        tmp_path,
        {
            "Policy\\Secrets\\$MACHINE.ACC\\CurrVal": {"": (REG_BINARY, blob)},
            "SAM\\Domains\\Account\\Users\\000001F4": {"V": (REG_BINARY, hives.sam_v("adm", rng))},
        },
    )
    findings, _ = _scan(inline_scanner, "C:\\backup\\security.hiv", data)
    got = {f.path.split("!/", 1)[1]: (f.rule, f.secret, f.preview) for f in findings}
    assert got == {
        "Policy/Secrets/$MACHINE.ACC/CurrVal:(default)": (
            "windows-lsa-secret",
            None,
            "value of 48 bytes",
        ),
        "SAM/Domains/Account/Users/000001F4:V": (
            "windows-sam-account-hash",
            None,
            f"value of {len(hives.sam_v('adm', random.Random(0)))} bytes",
        ),
    }


def test_hive_bytes_still_go_through_the_content_engine(
    inline_scanner: FileScanner, tmp_path: Path
) -> None:
    import build  # testdata/build.py

    key_id = build.aws_key_id()
    data = _hive(tmp_path, {"Software\\Vendor": {"Blob": (REG_BINARY, f"key={key_id}".encode())}})
    findings, _ = _scan(inline_scanner, NTUSER, data)
    assert [(f.rule, f.path, f.secret) for f in findings] == [("aws-access-key-id", NTUSER, key_id)]


def test_transaction_logs_and_other_files_are_not_parsed(
    inline_scanner: FileScanner, tmp_path: Path
) -> None:
    data = _hive(tmp_path, {"Software\\Demo": {}})
    assert is_hive(data)
    log = bytearray(data)
    log[0x1C:0x20] = (2).to_bytes(4, "little")  # a .LOG1/.LOG2 base block
    assert not is_hive(bytes(log))
    assert not is_hive(b"regf")
    findings, skipped = _scan(inline_scanner, NTUSER + ".LOG1", bytes(log))
    assert (findings, skipped) == ([], [])


def test_corrupt_hive_is_recorded_not_fatal(inline_scanner: FileScanner, tmp_path: Path) -> None:
    data = bytearray(_hive(tmp_path, {"Software\\Demo": {}}))
    data[0x1000:0x2000] = b"\xff" * 0x1000  # the first bin, root key included
    findings, skipped = _scan(inline_scanner, NTUSER, bytes(data))
    assert findings == []
    assert [s.reason.split(":")[0] for s in skipped] == ["registry hive unreadable"]


def test_bounds_are_reported(
    inline_scanner: FileScanner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sessions = "Software\\SimonTatham\\PuTTY\\Sessions"
    keys: dict[str, dict[str, hives.Value]] = {
        f"{sessions}\\s{i}": {"ProxyPassword": (REG_SZ, _password(_rng(), 12))} for i in range(6)
    }
    data = _hive(tmp_path, keys)
    monkeypatch.setattr(registry, "MAX_KEYS", 5)
    findings, skipped = _scan(inline_scanner, NTUSER, data)
    assert [s.reason for s in skipped] == ["registry hive has more than 5 keys; rest not read"]
    assert len(findings) < 6
    monkeypatch.setattr(registry, "MAX_KEYS", 200_000)
    monkeypatch.setattr(registry, "MAX_HIVE_SIZE", len(data) - 1)
    findings, skipped = _scan(inline_scanner, NTUSER, data)
    assert findings == [] and [s.reason for s in skipped] == [
        "registry hive larger than 0 MiB, not parsed"
    ]


def test_walk_only_enters_keys_a_rule_can_match(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import io

    rule = load_pack(_pack_dir(tmp_path, GOOD)).registry[0]
    keys: dict[str, dict[str, hives.Value]] = {
        f"Software\\Other\\k{i}": {"Password": (REG_SZ, "x")} for i in range(50)
    }
    keys["Software\\Demo\\Sessions\\one"] = {
        "Password": (REG_MULTI_SZ, "a\nb"),
        "UserName": (REG_SZ, "carol"),
    }
    data = _hive(tmp_path, keys)
    # Software, Other, Demo, Sessions, one: 5 keys listed; entering Other would list 50 more.
    monkeypatch.setattr(registry, "MAX_KEYS", 8)
    hits, unread = RegistryMatcher((rule,)).scan(io.BytesIO(data), len(data))
    assert unread is None
    assert [(h.key, h.value, h.secret, h.context) for h in hits] == [
        ("Software/Demo/Sessions/one", "Password", b"a\nb", (("session", "one"), ("user", "carol")))
    ]
    assert value_path("C:\\h", "A/B", "") == "C:\\h!/A/B:(default)"


def test_gate_policies_may_name_registry_rules(tmp_path: Path) -> None:
    from imgscan.options import default_signatures_dir
    from imgscan.policy import check_rule_ids, load_policy

    policy = tmp_path / "policy.toml"
    policy.write_text(
        '[[rule]]\naction = "allow"\nreason = "lab images"\nrule = ["windows-lsa-secret"]\n'
    )
    check_rule_ids(load_policy(policy), load_pack(default_signatures_dir()))
