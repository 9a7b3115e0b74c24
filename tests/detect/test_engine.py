"""The engine on in-memory data: chunk boundaries, line numbers, path rules, the fallback."""

from __future__ import annotations

import io
import secrets
import string
from dataclasses import replace
from pathlib import Path

import pytest

from imgscan.detect.engine import Engine, build_spec
from imgscan.detect.patterns import CompiledPatterns
from imgscan.detect.rules import load_pack

RULES = """
[[rules]]
id = "test-token"
name = "Test token"
category = "token"
severity = "high"
keywords = ["tok_"]
pattern = "\\\\b(?P<secret>tok_[A-Za-z0-9]{30})\\\\b"
comment = "fixed prefix and length"
preview_prefix = 4
examples = ["x tok_{{rand:alnum:30}} y"]
negative_examples = ["tok_short"]

[[rules]]
id = "test-block"
name = "Test block"
category = "private-key"
severity = "critical"
keywords = ["-----begin test-----"]
pattern = "(?s)(?P<secret>-----BEGIN TEST-----[A-Za-z0-9+/=\\\\s]{16,8000}?-----END TEST-----)"
locate = "-----BEGIN TEST-----"
window = 9000
comment = "armoured block"
examples = ["-----BEGIN TEST-----\\nabcdabcdabcdabcd\\n-----END TEST-----"]
negative_examples = ["-----BEGIN TEST-----"]

[[rules]]
id = "test-pathonly"
name = "Path-only rule"
category = "password"
severity = "medium"
keywords = [":"]
paths = ["**/.testpass"]
pattern = "(?m)^[^:\\\\n]+:(?P<secret>[^:\\\\n]{4,64})$"
validators = ["placeholder"]
comment = "user:password lines, only in .testpass files"
examples = [{ text = "bob:{{rand:alnum:12}}", path = "/home/bob/.testpass" }]
negative_examples = [{ text = "bob:changeme", path = "/home/bob/.testpass" }]
"""


@pytest.fixture(scope="module")
def small_engine(tmp_path_factory: pytest.TempPathFactory) -> Engine:
    root = tmp_path_factory.mktemp("pack")
    (root / "patterns").mkdir()
    (root / "yara").mkdir()
    (root / "patterns" / "test.toml").write_text(RULES)
    return Engine(build_spec(load_pack(root)))


def token() -> bytes:
    alphabet = string.ascii_letters + string.digits
    return ("tok_" + "".join(secrets.choice(alphabet) for _ in range(30))).encode()


def filler(size: int) -> bytes:
    line = b"the quick brown fox jumps over the lazy dog 0123456789\n"
    return (line * (size // len(line) + 1))[:size]


@pytest.mark.parametrize("chunk", [1 << 18, 300_001, 1 << 20])
def test_secret_at_every_offset_around_a_chunk_boundary(small_engine: Engine, chunk: int) -> None:
    real_chunk = max(chunk, 4 * (small_engine._reach + 256))
    for delta in range(-40, 8):
        value = token()
        data = filler(real_chunk + delta) + b" " + value + b" \n" + filler(5000)
        hits = small_engine.scan(io.BytesIO(data), "/f", chunk)
        assert [h.secret for h in hits] == [value], delta
        assert hits[0].offset == data.index(value)
        assert hits[0].line == data[: hits[0].offset].count(b"\n") + 1


def test_block_straddling_boundary_found_once(small_engine: Engine) -> None:
    chunk = 1 << 18
    body = b"\n".join(
        secrets.token_urlsafe(48).replace("-", "+").replace("_", "/").encode() for _ in range(40)
    )
    block = b"-----BEGIN TEST-----\n" + body + b"\n-----END TEST-----"
    for start in (chunk - 10, chunk - len(block) // 2, 2 * chunk - 3000):
        data = filler(start) + block + b"\n" + filler(chunk)
        hits = small_engine.scan(io.BytesIO(data), "/f", chunk)
        assert [h.secret for h in hits] == [block]


def test_same_hits_for_every_chunk_size(small_engine: Engine) -> None:
    values = [token() for _ in range(30)]
    parts = []
    for value in values:
        parts.append(filler(secrets.randbelow(200_000)))
        parts.append(b"key=" + value + b"\n")
    data = b"".join(parts)
    reference = small_engine.scan(io.BytesIO(data), "/f", len(data) + 1)
    assert [h.secret for h in reference] == values
    for chunk in (1 << 18, 500_000, 1 << 20):
        assert small_engine.scan(io.BytesIO(data), "/f", chunk) == reference


def test_path_rules_only_on_their_paths(small_engine: Engine) -> None:
    data = b"alice:" + token()[4:16] + b"\n"
    assert [h.rule.id for h in small_engine.scan_bytes(data, "/home/a/.testpass")] == [
        "test-pathonly"
    ]
    assert small_engine.scan_bytes(data, "/home/a/notes.txt") == []
    assert small_engine.scan_bytes(b"alice:changeme\n", "/home/a/.testpass") == []


def test_keyword_fallback_matches_hyperscan(small_engine: Engine, tmp_path: Path) -> None:
    """Without Hyperscan the engine still finds the same secrets (slower)."""
    spec = build_spec(small_engine.pack)
    slow_spec = replace(
        spec, compiled=CompiledPatterns.keyword_only(len(spec.pack.patterns), "slow")
    )
    slow = Engine(slow_spec)
    data = filler(10_000) + b"x " + token() + b" y\n" + b"bob:" + token()[4:16] + b"\n"
    for path in ("/f", "/root/.testpass"):
        assert slow.scan_bytes(data, path) == small_engine.scan_bytes(data, path)


def test_empty_file(small_engine: Engine) -> None:
    assert small_engine.scan(io.BytesIO(b""), "/empty", 1 << 20) == []
