"""The signature engine: every rule of the pack over one file, read in overlapping chunks.

No file is loaded whole. Each chunk is scanned together with the tail of the previous one (the
carry), and every match is accepted in exactly one chunk, by where it starts:

    buffer = carry + chunk
    accept a match starting in [lead, len(buffer) - reach)   (reach = 0 on the last chunk)

where `reach` is the largest rule window and `lead` is the part of the carry that the previous
buffer already accepted. A match that could still run past the end of the buffer is therefore
left to the next buffer, which sees it whole: secrets straddling a chunk boundary are found once.

Work per file is bounded (issue 20): the work per match does not depend on the length of its
line (line numbers are counted once per buffer, context is read from bounded windows), a file
reports at most MAX_FINDINGS_PER_RULE findings of one rule and MAX_FINDINGS_PER_FILE in all
(the matches past a cap are counted, not judged, and the caller says so in the report), and a
`Quota` may carry a deadline after which the scan of the file stops with `FileTimeout`.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from imgscan.detect.checks import NotASecret, file_checks, offline_checks
from imgscan.detect.context import Context, secret_context
from imgscan.detect.globs import Glob
from imgscan.detect.patterns import CompiledPatterns, PatternMatcher, compile_patterns
from imgscan.detect.rules import (
    FileRule,
    PatternRule,
    RuleMeta,
    RulePack,
    glob_form,
)
from imgscan.detect.validate import VALIDATORS, published_value
from imgscan.detect.yara import YaraMatcher
from imgscan.model import Check

RAW_PATH = "@raw"  # what path rules see for raw volume bytes
_LEAD = 256  # context kept before the accept zone, for word boundaries and prefixes
# Findings one file may report, per rule and in all. Every finding costs a PBKDF2 fingerprint
# (model.fingerprint, about 5 ms) and its checks: a file of 100,000 AWS key ids would take
# minutes and yield a report nobody reads. What a cap holds back is counted and reported.
MAX_FINDINGS_PER_RULE = 100
MAX_FINDINGS_PER_FILE = 500
# Confirmed matches handled between two looks at the clock.
_CLOCK_EVERY = 256


@dataclass(frozen=True)
class Hit:
    """One confirmed secret in one file: rule, secret bytes, byte offset and 1-based line."""

    rule: RuleMeta
    secret: bytes
    offset: int
    line: int
    checks: tuple[Check, ...] = ()  # offline checks of the secret (detect/checks.py)
    context: Context = ()  # what it opens: user, host, port, database (detect/context.py)


class FileTimeout(Exception):
    """The file's time budget (`Quota.deadline`) ran out; `hits` are those confirmed so far,
    in file order, which the caller may still report."""

    def __init__(self, hits: list[Hit]) -> None:
        super().__init__("time budget exceeded")
        self.hits = hits


@dataclass
class Quota:
    """What one file (with every archive member inside it) may still cost: findings per rule
    and in all, and a deadline (`time.monotonic()` seconds; None: no deadline).

    Shared by every `Engine.scan` of the file's content, so a zip of 10,000 members holds the
    same caps as one file. `withheld` counts, per rule id, the confirmed matches a cap held
    back: they passed the rule's validators but were not checked, fingerprinted or reported.
    """

    per_rule: int = MAX_FINDINGS_PER_RULE
    per_file: int = MAX_FINDINGS_PER_FILE
    deadline: float | None = None
    reported: dict[str, int] = field(default_factory=dict)
    withheld: dict[str, int] = field(default_factory=dict)
    total: int = 0

    def room(self, rule_id: str) -> bool:
        """Whether one more finding of `rule_id` may be reported."""
        return self.reported.get(rule_id, 0) < self.per_rule and self.total < self.per_file

    def take(self, rule_id: str) -> None:
        """Count one reported finding of `rule_id` (after `room` said yes)."""
        self.reported[rule_id] = self.reported.get(rule_id, 0) + 1
        self.total += 1

    def withhold(self, rule_id: str) -> None:
        """Count one match of `rule_id` that a cap held back."""
        self.withheld[rule_id] = self.withheld.get(rule_id, 0) + 1

    def expired(self) -> bool:
        """Whether the deadline has passed."""
        return self.deadline is not None and time.monotonic() > self.deadline


@dataclass(frozen=True)
class EngineSpec:
    """Plain data a worker needs to rebuild the engine: the pack and its compiled locator."""

    pack: RulePack
    compiled: CompiledPatterns


def build_spec(pack: RulePack, cache_dir: Path | None = None) -> EngineSpec:
    """Compile the pack's locator once; `cache_dir` keeps the compiled database across runs."""
    globs = tuple(rule.paths for rule in pack.files)
    return EngineSpec(pack, compile_patterns(pack.patterns, cache_dir, globs))


class Engine:
    """Runs every pattern and YARA rule of a pack. Build one per process."""

    def __init__(self, spec: EngineSpec) -> None:
        self.spec = spec
        self.pack = spec.pack
        self.warnings = spec.compiled.warnings
        rules: tuple[PatternRule, ...] = spec.pack.patterns
        self._rules = rules
        self._patterns = PatternMatcher(rules, spec.compiled)
        self._yara = YaraMatcher(spec.pack.yara)
        self._reach = max((r.window for r in rules), default=512) + 64
        self._free = frozenset(i for i, r in enumerate(rules) if not r.paths)
        # Without Hyperscan, globs are matched one regex per rule. Windows names are
        # case-insensitive: a rule for **/web.config also takes Web.Config.
        self._path_rules = _glob_matchers(rules)
        self._file_rules = _glob_matchers(spec.pack.files)
        published = published_value(spec.pack.published)
        self._validators = [[*(VALIDATORS[v] for v in r.validators), published] for r in rules]

    def allowed_rules(self, path: str) -> frozenset[int]:
        """Indices of the pattern rules that apply to a file at guest `path`.

        Globs use "/"; a Windows path (C:\\Users\\alice\\web.config) is matched as
        C:/Users/alice/web.config, regardless of case.
        """
        path, caseless = glob_form(path)
        extra = self._patterns.path_rules(path, caseless)
        if extra is None:  # no Hyperscan: match the globs one by one
            extra = {i for i, gs in self._path_rules[caseless] if any(g.match(path) for g in gs)}
        return self._free.union(extra) if extra else self._free

    def file_rule(self, path: str) -> FileRule | None:
        """The first file rule whose globs match guest `path`, if any."""
        path, caseless = glob_form(path)
        found = self._patterns.file_rules(path, caseless)
        if found is None:
            found = {i for i, gs in self._file_rules[caseless] if any(g.match(path) for g in gs)}
        return self.pack.files[min(found)] if found else None

    def scan_bytes(self, data: bytes, path: str) -> list[Hit]:
        """Scan an in-memory file (examples, small members)."""
        import io

        return self.scan(io.BytesIO(data), path, max(len(data), 1))

    def scan(
        self,
        stream: BinaryIO,
        path: str,
        chunk_size: int,
        raw: bool = False,
        quota: Quota | None = None,
    ) -> list[Hit]:
        """Every confirmed, validated secret in `stream`, in file order, within `quota`.

        `raw` marks the bytes of a whole volume (swap): path rules then apply if they list
        the pseudo-path `@raw` (paged-out memory holds config fragments of every kind).
        `quota` (default: a fresh one, no deadline) caps the findings and records what it
        held back; when its deadline passes, `FileTimeout` is raised with the hits so far.
        The deadline is looked at once per buffer and every _CLOCK_EVERY matches, so the
        overrun is bounded by one buffer's matching or that many matches.
        """
        quota = quota if quota is not None else Quota()
        allowed = self.allowed_rules(RAW_PATH if raw else path)
        chunk_size = max(chunk_size, 4 * (self._reach + _LEAD))
        hits: list[Hit] = []
        for buf, base, lead, stop, lines_before, first in _buffers(
            stream, chunk_size, self._reach + _LEAD
        ):
            if quota.expired():
                raise FileTimeout(sorted(hits, key=lambda h: (h.offset, h.rule.id)))
            if first and _binary(buf):
                whole = stop == len(buf)  # the first buffer is the whole file
                for yhit in self._yara.find(buf):
                    if not quota.room(yhit.meta.id):
                        quota.withhold(yhit.meta.id)
                        continue
                    try:
                        checks = offline_checks(yhit.secret)
                    except NotASecret:
                        continue
                    quota.take(yhit.meta.id)
                    if whole:
                        checks += file_checks(yhit.meta.id, buf)
                    line = buf.count(b"\n", 0, yhit.start) + 1
                    hits.append(Hit(yhit.meta, yhit.secret, yhit.start, line, checks))
            found = [p for p in self._patterns.find(buf, allowed) if lead <= p.start < stop]
            # In file order, so that a cap keeps a rule's first findings and the line number
            # is counted on from the previous hit's, not from the start of the buffer.
            found.sort(key=lambda p: (p.secret_start, p.rule))
            line, counted = lines_before + 1, 0
            for number, phit in enumerate(found):
                if number % _CLOCK_EVERY == _CLOCK_EVERY - 1 and quota.expired():
                    raise FileTimeout(sorted(hits, key=lambda h: (h.offset, h.rule.id)))
                secret = buf[phit.secret_start : phit.secret_end]
                if any(check(secret) for check in self._validators[phit.rule]):
                    continue
                meta = self._rules[phit.rule].meta
                if not quota.room(meta.id):
                    quota.withhold(meta.id)  # counted only: its checks are not worth running
                    continue
                try:
                    checks = offline_checks(secret)
                except NotASecret:
                    continue
                quota.take(meta.id)
                line += buf.count(b"\n", counted, phit.secret_start)
                counted = phit.secret_start
                context = secret_context(buf, phit.secret_start, phit.secret_end)
                hits.append(Hit(meta, secret, base + phit.secret_start, line, checks, context))
        hits.sort(key=lambda h: (h.offset, h.rule.id))
        return hits


# Bytes that plain text never holds: NUL and the C0 controls other than tab, line feed,
# vertical tab, form feed, carriage return and escape (ANSI colours in logs).
_NOT_TEXT = bytes(b for b in range(32) if b not in (9, 10, 11, 12, 13, 27))
_TEXT = bytes(b for b in range(256) if b not in _NOT_TEXT)


def _binary(buf: bytes) -> bool:
    """Whether the start of a file holds binary bytes: YARA rules are for binary formats (key
    stores, binary key files), and scanning every text file with them costs a third of the
    engine's time."""
    return bool(buf[:4096].translate(None, _TEXT))


def _glob_matchers(
    rules: Sequence[PatternRule | FileRule],
) -> dict[bool, list[tuple[int, tuple[Glob, ...]]]]:
    """For each rule with globs: (index, its compiled globs), exact and caseless. Linear-time
    matchers (detect/globs.py): the paths are the image's, and a regex backtracks."""
    return {
        caseless: [
            (i, tuple(Glob(g, caseless) for g in r.paths)) for i, r in enumerate(rules) if r.paths
        ]
        for caseless in (False, True)
    }


def _buffers(
    stream: BinaryIO, chunk_size: int, carry_size: int
) -> Iterator[tuple[bytes, int, int, int, int, bool]]:
    """Yield (buffer, file offset of buffer, accept start, accept stop, newlines before, first).

    The carry is the last `carry_size` bytes of the previous buffer; the accept zones of
    consecutive buffers tile the file exactly.
    """
    carry = b""
    base = 0  # file offset of buffer[0]
    lines_before = 0
    lead = 0
    first = True
    chunk = stream.read(chunk_size)
    while True:
        following = stream.read(chunk_size) if chunk else b""
        buf = carry + chunk
        last = not following
        reach = 0 if last else carry_size - _LEAD
        stop = len(buf) - reach
        yield buf, base, lead, stop, lines_before, first
        if last:
            return
        first = False
        keep = min(carry_size, len(buf))
        consumed = len(buf) - keep
        lines_before += buf.count(b"\n", 0, consumed)
        base += consumed
        carry = buf[consumed:]
        lead = stop - consumed
        chunk = following
