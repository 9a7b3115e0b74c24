"""Pattern rules: Hyperscan locates candidates of every rule in one pass, `regex` confirms.

A per-rule regex loop in Python cannot be fast (../shared/FACTS.md: 0.2 MB/s for 221 rules),
while one Hyperscan database over all rules scans hundreds of MB/s. Hyperscan reports where a
candidate starts (start-of-match on) and the rule's own `regex` pattern then runs on a bounded
window there to confirm it and capture the `secret` group.

Each rule is located in the best mode Hyperscan accepts for it:
  som      the locator itself, with start of match: the window starts at the candidate;
  end      the locator without start of match: the window ends `window` bytes before the end;
  keyword  the rule's literal keywords, when Hyperscan rejects the locator (look-arounds):
           the window spans `window` bytes either side of the keyword.
Without the hyperscan module, every rule runs in keyword mode through Python (much slower);
the engine warns when that happens.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import regex

from imgscan.detect.rules import PatternRule

try:
    import hyperscan

    HAS_HYPERSCAN = True
except ImportError:  # pragma: no cover - hyperscan has x86-64 wheels; other hosts fall back
    HAS_HYPERSCAN = False

MODE_SOM, MODE_END, MODE_KEYWORD = "som", "end", "keyword"
_END_SLACK = 64  # bytes after a candidate's end the confirm regex may still look at


@dataclass(frozen=True)
class CompiledPatterns:
    """The compiled locator, as plain data for worker processes.

    `database` is a serialized Hyperscan database (None without hyperscan); `entries` maps each
    Hyperscan expression id to (rule index, mode).
    """

    database: bytes | None
    entries: tuple[tuple[int, str], ...]
    warnings: tuple[str, ...]


def _try_compile(expression: bytes, flags: int) -> bool:
    database = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
    try:
        database.compile(expressions=[expression], ids=[0], elements=1, flags=[flags])
    except hyperscan.error:
        return False
    return True


def _plan(
    rules: tuple[PatternRule, ...],
) -> tuple[list[bytes], list[int], list[tuple[int, str]], list[str]]:
    """Choose each rule's locating mode. Trying rules one by one costs a compile each, so it
    happens only when the database of every locator with start of match does not compile."""
    som = hyperscan.HS_FLAG_SOM_LEFTMOST
    locators = [rule.locate.encode() for rule in rules]
    database = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
    try:
        database.compile(
            expressions=locators,
            ids=list(range(len(locators))),
            elements=len(locators),
            flags=[som] * len(locators),
        )
    except hyperscan.error:
        pass
    else:
        return locators, [som] * len(locators), [(i, MODE_SOM) for i in range(len(rules))], []
    expressions: list[bytes] = []
    flags: list[int] = []
    entries: list[tuple[int, str]] = []
    warnings: list[str] = []
    for index, (rule, locate) in enumerate(zip(rules, locators, strict=True)):
        if _try_compile(locate, som):
            expressions.append(locate)
            flags.append(som)
            entries.append((index, MODE_SOM))
        elif _try_compile(locate, 0):
            expressions.append(locate)
            flags.append(0)
            entries.append((index, MODE_END))
        else:
            warnings.append(
                f"rule {rule.id}: Hyperscan cannot compile its locator; located by keywords instead"
            )
            for keyword in rule.keywords:
                expressions.append(re.escape(keyword).encode())
                flags.append(som | hyperscan.HS_FLAG_CASELESS)
                entries.append((index, MODE_KEYWORD))
    return expressions, flags, entries, warnings


def compile_patterns(
    rules: tuple[PatternRule, ...], cache_dir: Path | None = None
) -> CompiledPatterns:
    """Build one Hyperscan database over every rule (done once, in the main process).

    Compiling a few hundred locators with start of match takes seconds, so the result is kept
    in `cache_dir` (when given and writable) under a digest of the locators and the Hyperscan
    version; a cache file that does not load is ignored and rebuilt.
    """
    if not HAS_HYPERSCAN:
        return CompiledPatterns(
            None,
            tuple((i, MODE_KEYWORD) for i in range(len(rules))),
            ("hyperscan is not installed: matching falls back to a slow pure-Python path",),
        )
    digest = hashlib.sha256(str(getattr(hyperscan, "__version__", "")).encode())
    for rule in rules:
        digest.update(rule.id.encode() + b"\0" + rule.locate.encode() + b"\0")
        digest.update(b"\0".join(k.encode() for k in rule.keywords) + b"\1")
    cache = cache_dir / f"{digest.hexdigest()[:32]}.json" if cache_dir else None
    if cache is not None:
        cached = _load_cached(cache)
        if cached is not None:
            return cached
    expressions, flags, entries, warnings = _plan(rules)
    database = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
    database.compile(
        expressions=expressions,
        ids=list(range(len(expressions))),
        elements=len(expressions),
        flags=flags,
    )
    compiled = CompiledPatterns(hyperscan.dumpb(database), tuple(entries), tuple(warnings))
    if cache is not None:
        try:
            cache.parent.mkdir(parents=True, exist_ok=True)
            partial = cache.with_suffix(f".{os.getpid()}.tmp")
            partial.write_text(
                json.dumps(
                    {
                        "database": base64.b64encode(compiled.database or b"").decode(),
                        "entries": compiled.entries,
                        "warnings": compiled.warnings,
                    }
                )
            )
            partial.replace(cache)
        except OSError:
            pass  # a read-only home: compile again next time
    return compiled


def _load_cached(cache: Path) -> CompiledPatterns | None:
    """A cached compiled locator, or None when absent or unusable (plain JSON: no pickle)."""
    try:
        data = json.loads(cache.read_text())
        database = base64.b64decode(data["database"])
        hyperscan.loadb(database, hyperscan.HS_MODE_BLOCK)
        compiled = CompiledPatterns(
            database,
            tuple((int(i), str(mode)) for i, mode in data["entries"]),
            tuple(str(w) for w in data["warnings"]),
        )
    except (OSError, ValueError, KeyError, TypeError, hyperscan.error):
        return None
    return compiled


@dataclass(frozen=True)
class PatternHit:
    """A confirmed match: the rule, where the whole match starts, and the secret's span."""

    rule: int
    start: int
    secret_start: int
    secret_end: int


class PatternMatcher:
    """Finds confirmed matches of every pattern rule in a buffer (one per worker process)."""

    def __init__(self, rules: tuple[PatternRule, ...], compiled: CompiledPatterns) -> None:
        self.rules = rules
        self._regexes = [regex.compile(rule.pattern.encode()) for rule in rules]
        self._entries = compiled.entries
        self._database: Any = None
        if compiled.database is not None:
            self._database = hyperscan.loadb(compiled.database, hyperscan.HS_MODE_BLOCK)
            # A deserialized database has no scratch space until it is given one.
            self._database.scratch = hyperscan.Scratch(self._database)
        self._keywords = [[k.encode() for k in rule.keywords] for rule in rules]

    def find(self, buf: bytes, allowed: frozenset[int] | None) -> list[PatternHit]:
        """Confirmed matches in `buf` of the rules whose index is in `allowed` (None: all)."""
        spans: dict[int, list[tuple[int, int]]] = {}
        if not buf:
            return []  # Hyperscan rejects an empty buffer
        if self._database is not None:
            self._locate(buf, allowed, spans)
        else:
            self._locate_by_keywords(buf, allowed, spans)
        hits: list[PatternHit] = []
        size = len(buf)
        for index, windows in spans.items():
            pattern = self._regexes[index]
            windows.sort()
            merged: list[list[int]] = []
            for start, end in windows:
                if merged and start <= merged[-1][1]:
                    merged[-1][1] = max(merged[-1][1], end)
                else:
                    merged.append([start, end])
            for start, end in merged:
                for match in pattern.finditer(buf, max(0, start), min(size, end)):
                    secret_start, secret_end = match.span("secret")
                    if secret_end > secret_start:
                        hits.append(PatternHit(index, match.start(), secret_start, secret_end))
        return hits

    def _locate(
        self, buf: bytes, allowed: frozenset[int] | None, spans: dict[int, list[tuple[int, int]]]
    ) -> None:
        entries = self._entries
        rules = self.rules
        last: list[tuple[int, int]] = [(-1, -1)]

        def on_match(expression: int, start: int, end: int, _flags: int, _ctx: object) -> None:
            index, mode = entries[expression]
            if allowed is not None and index not in allowed:
                return
            window = rules[index].window
            if mode == MODE_SOM:
                if last[0] == (expression, start):
                    return  # the same candidate reported again at a later end
                last[0] = (expression, start)
                span = (start, start + window)
            elif mode == MODE_END:
                span = (end - window, end + _END_SLACK)
            else:
                span = (start - window, end + window)
            spans.setdefault(index, []).append(span)

        self._database.scan(buf, match_event_handler=on_match)

    def _locate_by_keywords(
        self, buf: bytes, allowed: frozenset[int] | None, spans: dict[int, list[tuple[int, int]]]
    ) -> None:
        lowered = buf.lower()
        for index, keywords in enumerate(self._keywords):
            if allowed is not None and index not in allowed:
                continue
            window = self.rules[index].window
            for keyword in keywords:
                position = lowered.find(keyword)
                while position != -1:
                    spans.setdefault(index, []).append(
                        (position - window, position + len(keyword) + window)
                    )
                    position = lowered.find(keyword, position + 1)
