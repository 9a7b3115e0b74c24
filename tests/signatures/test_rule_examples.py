"""Every rule's own examples: positives are found (with their secret), negatives are not."""

from __future__ import annotations

import pytest
from templates import expand

from imgscan.detect.engine import Engine
from imgscan.detect.rules import PatternRule, RulePack, load_pack
from imgscan.options import default_signatures_dir

DEFAULT_PATH = "/srv/app/example.txt"
_PACK = load_pack(default_signatures_dir())


def _rules() -> list[PatternRule]:
    return list(_PACK.patterns)


def test_pack_is_large_enough_and_covers_the_issue(pack: RulePack) -> None:
    assert len(pack.patterns) >= 200  # issue 4: at least 200 pattern rules
    categories = {r.meta.category for r in pack.patterns}
    assert {
        "private-key",
        "cloud",
        "vcs",
        "saas",
        "database",
        "password",
        "password-hash",
    } <= categories
    assert pack.yara, "YARA rules for binary formats"


@pytest.mark.parametrize("rule", _rules(), ids=lambda r: r.id)
def test_positive_examples(engine: Engine, rule: PatternRule) -> None:
    for number, example in enumerate(rule.examples):
        text, secret = expand(example.text, example.secret, f"{rule.id}/{number}")
        assert any(k in text.lower() for k in rule.keywords), "a keyword occurs in the example"
        hits = [
            h
            for h in engine.scan_bytes(text.encode(), example.path or DEFAULT_PATH)
            if h.rule.id == rule.id
        ]
        assert hits, f"example {number} not found: {text[:80]!r}"
        if secret is not None:
            assert secret.encode() in [h.secret for h in hits], f"example {number}"


@pytest.mark.parametrize("rule", _rules(), ids=lambda r: r.id)
def test_negative_examples(engine: Engine, rule: PatternRule) -> None:
    for number, example in enumerate(rule.negative_examples):
        text, _ = expand(example.text, None, f"{rule.id}/neg/{number}")
        hits = [
            h
            for h in engine.scan_bytes(text.encode(), example.path or DEFAULT_PATH)
            if h.rule.id == rule.id
        ]
        assert not hits, f"negative example {number} matched: {text[:80]!r}"


def test_yara_examples(engine: Engine, pack: RulePack) -> None:
    count = 0
    for source in pack.yara:
        for number, example in enumerate(source.examples):
            if example.data is not None:
                data = example.data
            else:
                data = expand(example.text or "", None, f"{example.rule}/{number}")[0].encode()
            found = {h.rule.id for h in engine.scan_bytes(data, DEFAULT_PATH)}
            assert (example.rule in found) is example.expect, (source.path, number)
            count += 1
    assert count >= 2 * sum(len(s.rules) for s in pack.yara)
