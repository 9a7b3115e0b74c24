"""A malformed rule stops the load with the file and the rule id in the message."""

from __future__ import annotations

from pathlib import Path

import pytest

from imgscan.detect.rules import load_pack
from imgscan.errors import RulePackError

GOOD = """
[[rules]]
id = "demo-rule"
name = "Demo"
category = "token"
severity = "low"
keywords = ["demo_"]
pattern = "(?P<secret>demo_[a-z]{8})"
comment = "fixed prefix"
examples = ["demo_abcdefgh"]
negative_examples = ["demo_abc"]
"""


def _pack(tmp_path: Path, text: str) -> Path:
    (tmp_path / "patterns").mkdir(exist_ok=True)
    (tmp_path / "patterns" / "r.toml").write_text(text)
    return tmp_path


def test_good_rule_loads(tmp_path: Path) -> None:
    pack = load_pack(_pack(tmp_path, GOOD))
    assert [r.id for r in pack.patterns] == ["demo-rule"]


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("(?P<secret>demo_[a-z]{8})", "(demo_[a-z]{8})", "named group"),
        ("(?P<secret>demo_[a-z]{8})", "(?P<secret>demo_[a-z{8})", "does not compile"),
        ('severity = "low"', 'severity = "urgent"', "unknown severity"),
        ('category = "token"', 'category = "misc"', "unknown category"),
        ('keywords = ["demo_"]', 'keywords = ["DEMO_"]', "keywords"),
        ('negative_examples = ["demo_abc"]', "", "negative_examples"),
        ('comment = "fixed prefix"', "", "comment"),
        ('id = "demo-rule"', 'id = "Demo Rule"', "id"),
    ],
)
def test_malformed_rule_names_file_and_id(tmp_path: Path, old: str, new: str, message: str) -> None:
    root = _pack(tmp_path, GOOD.replace(old, new))
    with pytest.raises(RulePackError) as info:
        load_pack(root)
    text = str(info.value)
    assert "r.toml" in text
    assert message in text
    if "id =" not in old:
        assert "demo-rule" in text


def test_duplicate_id(tmp_path: Path) -> None:
    root = _pack(tmp_path, GOOD + GOOD)
    with pytest.raises(RulePackError, match="already used"):
        load_pack(root)
