"""The signature engine: every rule of the pack over one file, read in overlapping chunks.

No file is loaded whole. Each chunk is scanned together with the tail of the previous one (the
carry), and every match is accepted in exactly one chunk, by where it starts:

    buffer = carry + chunk
    accept a match starting in [lead, len(buffer) - reach)   (reach = 0 on the last chunk)

where `reach` is the largest rule window and `lead` is the part of the carry that the previous
buffer already accepted. A match that could still run past the end of the buffer is therefore
left to the next buffer, which sees it whole: secrets straddling a chunk boundary are found once.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from imgscan.detect.checks import NotASecret, file_checks, offline_checks
from imgscan.detect.context import Context, secret_context
from imgscan.detect.patterns import CompiledPatterns, PatternMatcher, compile_patterns
from imgscan.detect.rules import (
    FileRule,
    PatternRule,
    RuleMeta,
    RulePack,
    glob_form,
    path_glob_regex,
)
from imgscan.detect.validate import VALIDATORS, published_value
from imgscan.detect.yara import YaraMatcher
from imgscan.model import Check

RAW_PATH = "@raw"  # what path rules see for raw volume bytes
_LEAD = 256  # context kept before the accept zone, for word boundaries and prefixes


@dataclass(frozen=True)
class Hit:
    """One confirmed secret in one file: rule, secret bytes, byte offset and 1-based line."""

    rule: RuleMeta
    secret: bytes
    offset: int
    line: int
    checks: tuple[Check, ...] = ()  # offline checks of the secret (detect/checks.py)
    context: Context = ()  # what it opens: user, host, port, database (detect/context.py)


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
        self._path_rules = _glob_regexes(rules)
        self._file_rules = _glob_regexes(spec.pack.files)
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
            extra = {i for i, rx in self._path_rules[caseless] if rx.match(path)}
        return self._free.union(extra) if extra else self._free

    def file_rule(self, path: str) -> FileRule | None:
        """The first file rule whose globs match guest `path`, if any."""
        path, caseless = glob_form(path)
        found = self._patterns.file_rules(path, caseless)
        if found is None:
            found = {i for i, rx in self._file_rules[caseless] if rx.match(path)}
        return self.pack.files[min(found)] if found else None

    def scan_bytes(self, data: bytes, path: str) -> list[Hit]:
        """Scan an in-memory file (examples, small members)."""
        import io

        return self.scan(io.BytesIO(data), path, max(len(data), 1))

    def scan(self, stream: BinaryIO, path: str, chunk_size: int, raw: bool = False) -> list[Hit]:
        """Every confirmed, validated secret in `stream`, in file order.

        `raw` marks the bytes of a whole volume (swap): path rules then apply if they list
        the pseudo-path `@raw` (paged-out memory holds config fragments of every kind).
        """
        allowed = self.allowed_rules(RAW_PATH if raw else path)
        chunk_size = max(chunk_size, 4 * (self._reach + _LEAD))
        hits: list[Hit] = []
        for buf, base, lead, stop, lines_before, first in _buffers(
            stream, chunk_size, self._reach + _LEAD
        ):
            if first and _binary(buf):
                whole = stop == len(buf)  # the first buffer is the whole file
                for yhit in self._yara.find(buf):
                    try:
                        checks = offline_checks(yhit.secret)
                    except NotASecret:
                        continue
                    if whole:
                        checks += file_checks(yhit.meta.id, buf)
                    line = buf.count(b"\n", 0, yhit.start) + 1
                    hits.append(Hit(yhit.meta, yhit.secret, yhit.start, line, checks))
            for phit in self._patterns.find(buf, allowed):
                if not lead <= phit.start < stop:
                    continue
                secret = buf[phit.secret_start : phit.secret_end]
                if any(check(secret) for check in self._validators[phit.rule]):
                    continue
                try:
                    checks = offline_checks(secret)
                except NotASecret:
                    continue
                line = lines_before + buf.count(b"\n", 0, phit.secret_start) + 1
                context = secret_context(buf, phit.secret_start, phit.secret_end)
                meta = self._rules[phit.rule].meta
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


def _glob_regexes(
    rules: Sequence[PatternRule | FileRule],
) -> dict[bool, list[tuple[int, re.Pattern[str]]]]:
    """For each rule with globs: (index, one regex of them all), exact and caseless."""
    alternatives = [(i, "|".join(path_glob_regex(g) for g in r.paths)) for i, r in enumerate(rules)]
    return {
        caseless: [
            (i, re.compile(rx, re.IGNORECASE if caseless else 0)) for i, rx in alternatives if rx
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
