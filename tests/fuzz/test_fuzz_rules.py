"""Fuzzing the rule-pack loader: whatever the signature files hold, `load_pack` loads the pack
or raises RulePackError naming the pack (imgscan prints it on one line and exits 2), never
another exception. The pack is data that people edit, so typos, truncation and odd TOML of
every kind are the inputs: pattern files, files.toml, YARA sources and their examples.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from imgscan.detect.rules import RulePack, load_pack
from imgscan.errors import RulePackError

from .fuzzing import corpus, fuzz, mutated, nested, seed_files, time_limit, toml_document

PATTERN_KEYS = [
    "id", "name", "category", "severity", "keywords", "pattern", "locate", "window",
    "validators", "paths", "comment", "examples", "negative_examples", "preview_prefix", "text",
    "path", "secret", "token", "password", "low", "critical", "demo-rule", "demo_",
    "(?P<secret>demo_[a-z]{8})", "(?P<secret>", "(?P<secret>a)(?P<secret>b)", "**/x.conf",
]  # fmt: skip
FILES_KEYS = [
    "id", "name", "category", "severity", "paths", "min_size", "comment", "examples",
    "negative_examples", "cloud", "high", "demo-db", "**/demo.db", "/home/a/demo.db",
]  # fmt: skip
YARA_EXAMPLE_KEYS = ["rule", "hex", "text", "expect", "demo-binary-key", "demo-text-key", "0a1"]
TOML_TOKENS = [b"[[", b"]]", b"[", b"]", b"{", b"}", b"=", b'"', b"'''", b'"""', b"\n", b","]
YARA_TOKENS = [
    b"rule ", b"meta:", b"strings:", b"condition:", b"{", b"}", b"\n", b'"', b"id = ",
    b"category = ", b"severity = ", b"preview_prefix = ", b"description = ", b"$a",
    b"private-key", b"critical", b"99", b"-1", b"\xff", b"\\", b"/*", b"*/", b"//",
]  # fmt: skip


def _write(root: Path, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)


def check_load(files: dict[str, bytes]) -> None:
    """A signatures directory holding `files` (relative path -> content) loads, or raises
    RulePackError whose message names the pack."""
    with tempfile.TemporaryDirectory() as tmp:
        _write(Path(tmp), files)
        try:
            with time_limit(20):
                pack = load_pack(Path(tmp))
        except RulePackError as exc:
            assert tmp in str(exc)
            return
    assert isinstance(pack, RulePack)
    assert pack.patterns or pack.yara or pack.files


def _valid(target: str) -> list[bytes]:
    return [data for name, data in seed_files(target) if name.startswith("valid")]


def test_rules_corpus() -> None:
    """Each seed on its own, and the valid ones together: they make a valid pack."""
    valid: dict[str, bytes] = {}
    for target, name in (
        ("rules-patterns", "patterns/{}.toml"),
        ("rules-files", "files.toml"),
        ("rules-yara", "yara/{}.yar"),
    ):
        for seed, data in seed_files(target):
            path = name.format(seed.removesuffix(".toml").removesuffix(".yar"))
            check_load({path: data})
            if seed.startswith("valid"):
                valid[path] = data
    for _, data in seed_files("rules-yara-examples"):
        check_load({"yara/demo.yar": _valid("rules-yara")[0], "yara/demo.examples.toml": data})
    with tempfile.TemporaryDirectory() as tmp:
        _write(Path(tmp), valid)
        assert isinstance(load_pack(Path(tmp)), RulePack)


def _toml(target: str, keys: list[str], table: str) -> st.SearchStrategy[bytes]:
    return st.one_of(
        mutated(corpus(target), tokens=TOML_TOKENS),
        toml_document(keys, [table]).map(str.encode),
        nested("[", "]").map(lambda deep: f"[[{table}]]\nid = {deep}\n".encode()),
        st.binary(max_size=64),
    )


_patterns = _toml("rules-patterns", PATTERN_KEYS, "rules")
_files = _toml("rules-files", FILES_KEYS, "files")
_yara = mutated(corpus("rules-yara"), tokens=YARA_TOKENS) | st.binary(max_size=64)
_yara_examples = _toml("rules-yara-examples", YARA_EXAMPLE_KEYS, "examples")


@st.composite
def _pack(draw: st.DrawFn) -> dict[str, bytes]:
    """A signatures directory: fuzzed pattern files beside valid ones (so ids collide), and
    maybe a fuzzed files.toml and YARA source with its examples."""
    files = {"patterns/fuzzed.toml": draw(_patterns)}
    if draw(st.booleans()):
        files["patterns/valid.toml"] = draw(st.sampled_from(_valid("rules-patterns")))
    if draw(st.booleans()):
        files["files.toml"] = draw(_files)
    if draw(st.booleans()):
        files["yara/demo.yar"] = draw(_yara | st.sampled_from(_valid("rules-yara")))
        if draw(st.booleans()):
            files["yara/demo.examples.toml"] = draw(_yara_examples)
    return files


@fuzz
@given(_pack())
def test_load_pack(files: dict[str, bytes]) -> None:
    check_load(files)
