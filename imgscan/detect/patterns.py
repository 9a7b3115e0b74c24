"""Pattern rules: Hyperscan locates candidates, `regex` confirms and captures.

A per-rule regex loop in Python cannot be fast (../shared/FACTS.md: 0.2 MB/s for 221 rules),
and neither is one Hyperscan database of every rule with start of match on: reporting where
matches start costs Hyperscan most of its speed (~40 MB/s for 300 rules here). So locating
takes two passes over a buffer:

  1. one database of every rule that applies to any path, without start of match and with
     single-match on: it says only which rules occur at all (hundreds of MB/s; most buffers
     of most files name no rule at all);
  2. for each rule that occurred (and each path-scoped rule whose glob matched the file), the
     rule's own database finds its candidates, and the rule's `regex` pattern confirms each on
     a bounded window and captures the `secret` group.

A rule is located in one of two modes:
  end      its locator, compiled without start of match: a match is at most `window` bytes
           long and contains the locator's match, so the window spans `window` bytes either
           side of where the locator's match ends;
  keyword  its literal keywords, when Hyperscan rejects the locator (look-arounds): the window
           spans `window` bytes either side of the keyword.
Start of match is never asked for: besides its cost, the Vectorscan build behind the
`hyperscan` wheel crashes the process on some inputs with some start-of-match patterns, and
a hostile image must not be able to choose that input.
Without the hyperscan module, every rule runs in keyword mode through Python (much slower);
the engine warns when that happens. Path globs are matched by Hyperscan too (a regex per rule
per file was most of the time on trees of small files).
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

from imgscan.detect.rules import PatternRule, path_glob_regex

try:
    import hyperscan

    HAS_HYPERSCAN = True
except ImportError:  # pragma: no cover - hyperscan has x86-64 wheels; other hosts fall back
    HAS_HYPERSCAN = False

MODE_END, MODE_KEYWORD = "end", "keyword"
_FORMAT = 3  # of the cached compiled form


@dataclass(frozen=True)
class CompiledPatterns:
    """The compiled locators, as plain data for worker processes.

    `screen` is the serialized pass-1 database (ids are rule indices; None without hyperscan),
    `rules` each rule's own serialized database (None in keyword mode) and `modes` its mode;
    `paths` and `paths_nocase` match the pattern rules' path globs, `files` and `files_nocase`
    the file rules' (ids are rule indices; None when there are no globs, or without hyperscan).
    """

    screen: bytes | None
    rules: tuple[bytes | None, ...]
    modes: tuple[str, ...]
    paths: bytes | None
    paths_nocase: bytes | None
    warnings: tuple[str, ...]
    files: bytes | None = None
    files_nocase: bytes | None = None

    @classmethod
    def keyword_only(cls, count: int, warning: str) -> CompiledPatterns:
        """Every rule located by its keywords in Python: the fallback without hyperscan."""
        return cls(None, (None,) * count, (MODE_KEYWORD,) * count, None, None, (warning,))


def _database(expressions: list[bytes], flags: list[int], ids: list[int]) -> Any:
    database = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
    database.compile(expressions=expressions, ids=ids, elements=len(expressions), flags=flags)
    return database


def _rule_database(rule: PatternRule) -> tuple[Any, str]:
    """A rule's own locating database and its mode (None, keyword: Hyperscan rejects it)."""
    try:
        return _database([rule.locate.encode()], [0], [0]), MODE_END
    except hyperscan.error:
        return None, MODE_KEYWORD


def _screen_expressions(rule: PatternRule, mode: str) -> list[tuple[bytes, int]]:
    """What pass 1 looks for to tell whether `rule` may occur in a buffer."""
    if mode == MODE_KEYWORD:
        return [(re.escape(k).encode(), hyperscan.HS_FLAG_CASELESS) for k in rule.keywords]
    return [(rule.locate.encode(), 0)]


def _glob_databases(globs: list[tuple[int, str]]) -> tuple[bytes | None, bytes | None]:
    """Serialized databases matching guest-path globs (ids: rule indices), exact and caseless."""
    if not globs:
        return None, None
    ids = [i for i, _ in globs]
    exprs = [path_glob_regex(g).encode() for _, g in globs]
    single = hyperscan.HS_FLAG_SINGLEMATCH
    exact = hyperscan.dumpb(_database(exprs, [single] * len(exprs), ids))
    caseless = [single | hyperscan.HS_FLAG_CASELESS] * len(exprs)
    return exact, hyperscan.dumpb(_database(exprs, caseless, ids))


def _compile(
    rules: tuple[PatternRule, ...], files: tuple[tuple[str, ...], ...]
) -> CompiledPatterns:
    single = hyperscan.HS_FLAG_SINGLEMATCH
    serialized: list[bytes | None] = []
    modes: list[str] = []
    warnings: list[str] = []
    expressions: list[bytes] = []
    flags: list[int] = []
    ids: list[int] = []
    for index, rule in enumerate(rules):
        database, mode = _rule_database(rule)
        serialized.append(hyperscan.dumpb(database) if database is not None else None)
        modes.append(mode)
        if mode == MODE_KEYWORD:
            warnings.append(
                f"rule {rule.id}: Hyperscan cannot compile its locator; located by keywords instead"
            )
        if not rule.paths:
            for expression, flag in _screen_expressions(rule, mode):
                expressions.append(expression)
                flags.append(flag | single)
                ids.append(index)
    screen = hyperscan.dumpb(_database(expressions, flags, ids)) if expressions else None
    paths, paths_nocase = _glob_databases([(i, g) for i, r in enumerate(rules) for g in r.paths])
    file_dbs = _glob_databases([(i, g) for i, globs in enumerate(files) for g in globs])
    return CompiledPatterns(
        screen, tuple(serialized), tuple(modes), paths, paths_nocase, tuple(warnings), *file_dbs
    )


def compile_patterns(
    rules: tuple[PatternRule, ...],
    cache_dir: Path | None = None,
    files: tuple[tuple[str, ...], ...] = (),
) -> CompiledPatterns:
    """Build the Hyperscan databases for every rule (done once, in the main process); `files`
    are the globs of each file rule.

    Compiling a few hundred locators takes seconds, so the result is kept in `cache_dir` (when
    given and writable) under a digest of the rules' locators, keywords and globs and the
    Hyperscan version; a cache file that does not load is ignored and rebuilt.
    """
    if not HAS_HYPERSCAN:
        return CompiledPatterns.keyword_only(
            len(rules), "hyperscan is not installed: matching falls back to a slow pure-Python path"
        )
    digest = hashlib.sha256(f"{getattr(hyperscan, '__version__', '')}:{_FORMAT}".encode())
    for rule in rules:
        digest.update(rule.id.encode() + b"\0" + rule.locate.encode() + b"\0")
        digest.update(b"\0".join(k.encode() for k in rule.keywords) + b"\1")
        digest.update(b"\0".join(g.encode() for g in rule.paths) + b"\2")
    for globs in files:
        digest.update(b"\0".join(g.encode() for g in globs) + b"\3")
    cache = cache_dir / f"{digest.hexdigest()[:32]}.json" if cache_dir else None
    if cache is not None:
        cached = _load_cached(cache)
        if cached is not None:
            return cached
    compiled = _compile(rules, files)
    if cache is not None:
        try:
            cache.parent.mkdir(parents=True, exist_ok=True)
            partial = cache.with_suffix(f".{os.getpid()}.tmp")
            partial.write_text(json.dumps(_to_json(compiled)))
            partial.replace(cache)
        except OSError:
            pass  # a read-only home: compile again next time
    return compiled


def _b64(data: bytes | None) -> str | None:
    return base64.b64encode(data).decode() if data is not None else None


def _unb64(text: str | None) -> bytes | None:
    return base64.b64decode(text) if text is not None else None


def _to_json(compiled: CompiledPatterns) -> dict[str, Any]:
    return {
        "screen": _b64(compiled.screen),
        "rules": [_b64(r) for r in compiled.rules],
        "modes": list(compiled.modes),
        "paths": _b64(compiled.paths),
        "paths_nocase": _b64(compiled.paths_nocase),
        "files": _b64(compiled.files),
        "files_nocase": _b64(compiled.files_nocase),
        "warnings": list(compiled.warnings),
    }


def _load_cached(cache: Path) -> CompiledPatterns | None:
    """A cached compiled form, or None when absent or unusable (plain JSON: no pickle)."""
    try:
        data = json.loads(cache.read_text())
        compiled = CompiledPatterns(
            _unb64(data["screen"]),
            tuple(_unb64(r) for r in data["rules"]),
            tuple(str(m) for m in data["modes"]),
            _unb64(data["paths"]),
            _unb64(data["paths_nocase"]),
            tuple(str(w) for w in data["warnings"]),
            _unb64(data["files"]),
            _unb64(data["files_nocase"]),
        )
        blobs = (compiled.screen, compiled.paths, compiled.paths_nocase, *compiled.rules)
        for blob in (*blobs, compiled.files, compiled.files_nocase):
            if blob is not None:
                hyperscan.loadb(blob, hyperscan.HS_MODE_BLOCK)
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


def _load(blob: bytes | None) -> Any:
    if blob is None:
        return None
    database = hyperscan.loadb(blob, hyperscan.HS_MODE_BLOCK)
    # A deserialized database has no scratch space until it is given one.
    database.scratch = hyperscan.Scratch(database)
    return database


class PatternMatcher:
    """Finds confirmed matches of every pattern rule in a buffer (one per worker process)."""

    def __init__(self, rules: tuple[PatternRule, ...], compiled: CompiledPatterns) -> None:
        self.rules = rules
        self._regexes = [regex.compile(rule.pattern.encode()) for rule in rules]
        self._modes = compiled.modes
        self._serialized = compiled.rules
        self._databases: dict[int, Any] = {}  # rule index -> its own database, loaded on use
        self._screen = _load(compiled.screen)
        self._paths = _load(compiled.paths)
        self._paths_nocase = _load(compiled.paths_nocase)
        self._files = _load(compiled.files)
        self._files_nocase = _load(compiled.files_nocase)
        self._keywords = [[k.encode() for k in rule.keywords] for rule in rules]
        self._free = frozenset(i for i, rule in enumerate(rules) if not rule.paths)
        self._fallback = compiled.screen is None

    def path_rules(self, path: str, caseless: bool) -> set[int] | None:
        """Indices of the path-scoped rules whose globs match `path`; None if this matcher
        has no path database (the caller matches the globs itself)."""
        return _globbed(self._paths_nocase if caseless else self._paths, path)

    def file_rules(self, path: str, caseless: bool) -> set[int] | None:
        """Indices of the file rules whose globs match `path` (None: no database)."""
        return _globbed(self._files_nocase if caseless else self._files, path)

    def find(self, buf: bytes, allowed: frozenset[int] | None) -> list[PatternHit]:
        """Confirmed matches in `buf` of the rules whose index is in `allowed` (None: all)."""
        if not buf:
            return []  # Hyperscan rejects an empty buffer
        wanted = set(range(len(self.rules))) if allowed is None else set(allowed)
        if self._fallback:
            candidates = wanted
        else:
            fired: set[int] = set()
            self._screen.scan(buf, match_event_handler=_collect(fired))
            # Pass 1 covers the rules for every path; path-scoped ones are always tried.
            candidates = (fired & wanted) | (wanted - self._free)
        hits: list[PatternHit] = []
        for index in sorted(candidates):
            spans = self._spans(index, buf)
            if spans:
                hits.extend(self._confirm(index, buf, spans))
        return hits

    def _spans(self, index: int, buf: bytes) -> list[tuple[int, int]]:
        """Windows of `buf` where rule `index` may match."""
        window = self.rules[index].window
        mode = self._modes[index]
        spans: list[tuple[int, int]] = []
        if mode == MODE_KEYWORD or self._fallback:
            lowered = buf.lower()
            for keyword in self._keywords[index]:
                position = lowered.find(keyword)
                while position != -1:
                    spans.append((position - window, position + len(keyword) + window))
                    position = lowered.find(keyword, position + 1)
            return spans
        database = self._databases.get(index)
        if database is None:
            database = self._databases[index] = _load(self._serialized[index])

        def on_match(_id: int, _start: int, end: int, _flags: int, _ctx: object) -> None:
            # Matches arrive in end order; a locator that matches at every byte (a run of
            # letters for a rule located by a character class) would otherwise cost one
            # Python tuple per byte: overlapping windows are merged as they come.
            if spans and end - window <= spans[-1][1]:
                spans[-1] = (spans[-1][0], end + window)
            else:
                spans.append((end - window, end + window))

        database.scan(buf, match_event_handler=on_match)
        return spans

    def _confirm(self, index: int, buf: bytes, spans: list[tuple[int, int]]) -> list[PatternHit]:
        pattern = self._regexes[index]
        size = len(buf)
        spans.sort()
        merged: list[list[int]] = []
        for start, end in spans:
            if merged and start <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], end)
            else:
                merged.append([start, end])
        hits = []
        for start, end in merged:
            for match in pattern.finditer(buf, max(0, start), min(size, end)):
                secret_start, secret_end = match.span("secret")
                if secret_end > secret_start:
                    hits.append(PatternHit(index, match.start(), secret_start, secret_end))
        return hits


def _globbed(database: Any, path: str) -> set[int] | None:
    if database is None:
        return None
    found: set[int] = set()
    if path:
        database.scan(path.encode("utf-8", "surrogateescape"), match_event_handler=_collect(found))
    return found


def _collect(into: set[int]) -> Any:
    def on_match(rule: int, _start: int, _end: int, _flags: int, _ctx: object) -> None:
        into.add(rule)

    return on_match
