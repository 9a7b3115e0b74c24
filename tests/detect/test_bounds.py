"""Bounded work per file (issue 20): per-hit work independent of the line's length, findings
capped per rule and per file (and counted), a time budget per file."""

from __future__ import annotations

import io
import time

import build as testdata
import pytest

from imgscan.detect.context import secret_context
from imgscan.detect.engine import (
    MAX_FINDINGS_PER_FILE,
    MAX_FINDINGS_PER_RULE,
    Engine,
    FileTimeout,
    Quota,
)
from imgscan.image.interface import OpenerSpec
from imgscan.model import FileRef
from imgscan.scan.worker import FileScanner, InlineOpener, WorkerSpec


def test_one_line_of_assignments_is_linear_and_capped(engine: Engine) -> None:
    # 1.3 MiB on one line: every hit used to read its whole line for context.
    data = b"auth_token=Qz8kL2mX9vB4nR7t\t" * 48_000
    quota = Quota()
    started = time.monotonic()
    hits = engine.scan(io.BytesIO(data), "/srv/app/.env", 1 << 20, quota=quota)
    assert time.monotonic() - started < 20.0
    assert len(hits) == MAX_FINDINGS_PER_RULE
    assert {h.line for h in hits} == {1}
    assert [h.offset for h in hits] == sorted(h.offset for h in hits)
    assert hits[0].offset == len(b"auth_token=")  # the first ones are kept
    (rule,) = quota.withheld
    assert quota.reported[rule] + quota.withheld[rule] == 48_000


def test_line_numbers_are_counted_across_hits_and_chunks(engine: Engine) -> None:
    keys = [testdata.aws_key_id() for _ in range(80)]
    filler = b"x" * 40_000 + b"\n"  # lines and chunk boundaries between the keys
    data = b"".join(filler + f"aws_access_key_id = {k}\n".encode() for k in keys)
    hits = engine.scan(io.BytesIO(data), "/srv/keys.txt", 1 << 20)
    found = [(h.secret.decode(), h.line) for h in hits if h.rule.id == "aws-access-key-id"]
    assert found == [(k, 2 * (i + 1)) for i, k in enumerate(keys)]


def test_file_cap_spans_rules(engine: Engine) -> None:
    quota = Quota(per_rule=3, per_file=5)
    keys = " ".join(testdata.aws_key_id() for _ in range(10))
    tokens = "\n".join(f"GITHUB_TOKEN={testdata.github_token()}" for _ in range(10))
    hits = engine.scan_bytes(f"{keys}\n{tokens}\n".encode(), "/srv/x.txt")
    assert len(hits) == 20  # the defaults are far above
    hits = engine.scan(
        io.BytesIO(f"{keys}\n{tokens}\n".encode()), "/srv/x.txt", 1 << 20, quota=quota
    )
    assert len(hits) == 5 and quota.total == 5
    assert sum(quota.withheld.values()) == 15
    assert MAX_FINDINGS_PER_FILE >= MAX_FINDINGS_PER_RULE


def test_deadline_stops_the_file_with_what_was_found(engine: Engine) -> None:
    quota = Quota(deadline=time.monotonic() - 1)
    with pytest.raises(FileTimeout) as stopped:
        engine.scan(
            io.BytesIO(b"password = Xk29vLq0Zr\n" * 10), "/etc/app.conf", 1 << 20, quota=quota
        )
    assert stopped.value.hits == []


def test_context_of_a_secret_on_a_long_line_is_read_nearby() -> None:
    secret = b"Sup3rS3cretPw"
    url = b"postgresql://hr_app:" + secret + b"@db.internal:5432/hr"
    for padding in (0, 10, 1 << 20):
        buf = b"x " * padding + url + b" y" * padding + b"\n"
        start = buf.index(secret)
        context = dict(secret_context(buf, start, start + len(secret)))
        assert context == {
            "database": "hr",
            "host": "db.internal",
            "port": "5432",
            "scheme": "postgresql",
            "user": "hr_app",
        }, padding


def test_worker_reports_caps_and_time_budget(inline_scanner: FileScanner) -> None:
    keys = " ".join(testdata.aws_key_id() for _ in range(MAX_FINDINGS_PER_RULE + 7))
    text = keys.encode()
    outcome = inline_scanner.scan(FileRef("/dev/sda1", "/srv/keys.txt", len(text), "-", text))
    assert len(outcome.findings) == MAX_FINDINGS_PER_RULE
    assert outcome.capped == (("/srv/keys.txt", "aws-access-key-id", MAX_FINDINGS_PER_RULE, 7),)
    assert outcome.skipped == ()


def test_a_file_past_its_time_budget_is_skipped(engine: Engine) -> None:
    # 8 MiB of candidates the validators drop (seconds of work) against a 0.2 s budget.
    spec = WorkerSpec(engine.spec, OpenerSpec("inline", "-", "raw"), 1 << 20, 1 << 30, False, 0.2)
    scanner = FileScanner(spec, InlineOpener(), engine)
    text = b"password = Zx81kq0Lw7\n" + b"password = changeme\n" * (8 << 20 >> 5)
    started = time.monotonic()
    outcome = scanner.scan(FileRef("/dev/sda1", "/srv/app.conf", len(text), "-", text))
    assert time.monotonic() - started < 5.0
    (skipped,) = outcome.skipped
    assert skipped.path == "/srv/app.conf"
    assert skipped.reason.startswith("time budget of 0.2 s exceeded")
    # What was found before the budget ran out is still reported.
    assert [f.line for f in outcome.findings] == [1]
