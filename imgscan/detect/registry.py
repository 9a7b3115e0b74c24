"""Registry hives: the values registry rules (imgscan/signatures/registry.toml) name, read offline.

Windows keeps many credentials where no text scanner sees them: in hive files (SOFTWARE, SAM,
SECURITY, every profile's NTUSER.DAT and UsrClass.dat, and any copy of them: RegBack,
`reg save` output, a backup). The worker hands every file whose first bytes are a primary
hive's base block (`regf`, file type 0; transaction logs share the signature but not the type)
to `RegistryMatcher.scan`, which walks only the keys some rule's path can still match and
judges the values there.

The parser is libregf (`pyregf`), as in imgscan/image/windows.py: libyal's maintained
read-only hive library (the family of dfvfs's file-system libraries, used by plaso), written in
C for hostile input, that reads a hive from a Python file object on demand, so a hive is never
loaded whole. hivex (read-write, used by testdata/ to write the test hives) and regipy (pure
Python, slower) were the alternatives; using the writer's own library to read back what it
wrote would also test nothing.

Bounds: a hive larger than `MAX_HIVE_SIZE` is not parsed; the walk visits at most `MAX_KEYS`
keys, reads at most `MAX_VALUES` values of a key and goes at most `MAX_DEPTH` keys deep (the
longest rule path). What the bounds leave unread is reported, never silently dropped.
"""

from __future__ import annotations

import fnmatch
import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

from imgscan.detect.decoders import DECODERS, Decoded, value_text
from imgscan.detect.rules import RegistryRule
from imgscan.detect.validate import VALIDATORS
from imgscan.model import Check

MAX_HIVE_SIZE = 512 << 20  # real SOFTWARE hives of long-lived servers reach a few hundred MB
MAX_KEYS = 200_000
MAX_VALUES = 4096
MAX_DEPTH = 32
DEFAULT_VALUE = "(default)"  # how a path names a key's unnamed value, as regedit shows it
_PRIMARY = 0  # base block file type: 0 primary hive, 1/2/6 transaction logs


def is_hive(head: bytes) -> bool:
    """Whether a file starting with `head` is a primary registry hive."""
    return len(head) >= 0x20 and head[:4] == b"regf" and _file_type(head) == _PRIMARY


def _file_type(head: bytes) -> int:
    return int(struct.unpack_from("<I", head, 0x1C)[0])


def value_path(hive_path: str, key: str, value: str) -> str:
    """A value's guest path in findings: `<hive file>!/<key path, / between keys>:<value>`."""
    return f"{hive_path}!/{key}:{value or DEFAULT_VALUE}"


@dataclass(frozen=True)
class RegistryHit:
    """One value a registry rule accepted: where (key path below the hive root with "/"
    separators, value name), what (the decoded secret, or None for presence rules), the data
    the fingerprint is taken over, facts to report beside it and offline checks."""

    rule: RegistryRule
    key: str
    value: str
    secret: bytes | None
    evidence: bytes
    context: tuple[tuple[str, str], ...]
    checks: tuple[Check, ...]


class HiveLimit(Exception):
    """The hive exceeds a bound: what was read so far stands, the rest was not read."""


@dataclass(frozen=True)
class _Glob:
    rule: int
    segments: tuple[re.Pattern[str], ...]


class RegistryMatcher:
    """Every registry rule of a pack over hive files. Build one per process."""

    def __init__(self, rules: tuple[RegistryRule, ...]) -> None:
        self.rules = rules
        self._globs = tuple(
            _Glob(i, tuple(_segment(s) for s in key.strip("/").split("/")))
            for i, rule in enumerate(rules)
            for key in rule.keys
        )
        self._values = tuple(_segment(rule.value) for rule in rules)
        self._validators = tuple(tuple(VALIDATORS[v] for v in r.validators) for r in rules)

    def scan(self, stream: BinaryIO, size: int) -> tuple[list[RegistryHit], str | None]:
        """The rules' hits in the hive `stream` (`size` bytes), and why part of it was not
        read (None when all of it was). Raises OSError when the hive cannot be opened."""
        if not self.rules:
            return [], None
        if size > MAX_HIVE_SIZE:
            return [], f"registry hive larger than {MAX_HIVE_SIZE >> 20} MiB, not parsed"
        import pyregf

        hive = pyregf.file()
        hive.open_file_object(stream)
        hits: list[RegistryHit] = []
        budget = [MAX_KEYS]
        try:
            self._walk(hive.get_root_key(), (), self._globs, budget, hits)
        except HiveLimit as exc:
            return hits, str(exc)
        finally:
            hive.close()
        return hits, None

    def _walk(
        self,
        key: Any,
        path: tuple[str, ...],
        globs: tuple[_Glob, ...],
        budget: list[int],
        hits: list[RegistryHit],
    ) -> None:
        depth = len(path)
        here = [g.rule for g in globs if len(g.segments) == depth]
        if here:
            hits.extend(self._judge(key, path, sorted(set(here))))
        deeper = tuple(g for g in globs if len(g.segments) > depth)
        if not deeper:
            return
        if depth >= MAX_DEPTH:
            raise HiveLimit(f"registry keys nested deeper than {MAX_DEPTH} levels not read")
        for child in _sub_keys(key, budget):
            name = child.name or ""
            matching = tuple(g for g in deeper if g.segments[depth].match(name))
            if matching:
                self._walk(child, (*path, name), matching, budget, hits)

    def _judge(self, key: Any, path: tuple[str, ...], rules: list[int]) -> Iterator[RegistryHit]:
        values = []
        for index, value in enumerate(key.values):
            if index >= MAX_VALUES:
                raise HiveLimit(f"a registry key has more than {MAX_VALUES} values; rest not read")
            try:
                values.append((value.name or "", value.type, bytes(value.data or b"")))
            except OSError:
                continue  # a corrupt value cell: the other values still count
        siblings = {}
        for name, kind, data in values:
            text = value_text(kind, data)
            if text is not None:
                siblings[name.lower()] = text
        key_path = "/".join(path)
        for i in rules:
            rule = self.rules[i]
            for name, kind, data in values:
                if not self._values[i].match(name):
                    continue
                decoded = DECODERS[rule.decoder](kind, data, siblings)
                if decoded is None or self._dropped(i, decoded):
                    continue
                yield RegistryHit(
                    rule=rule,
                    key=key_path,
                    value=name,
                    secret=decoded.secret,
                    evidence=decoded.secret if decoded.secret is not None else data,
                    context=_context(rule, path, siblings) + decoded.facts,
                    checks=decoded.checks,
                )

    def _dropped(self, rule: int, decoded: Decoded) -> bool:
        """Whether a validator says the decoded secret is a placeholder, not a secret."""
        secret = decoded.secret
        return secret is not None and any(check(secret) for check in self._validators[rule])


def _segment(glob: str) -> re.Pattern[str]:
    """One key (or value) name glob as a case-insensitive regex: `*` and `?` stay in it."""
    return re.compile(fnmatch.translate(glob), re.IGNORECASE | re.DOTALL)


def _sub_keys(key: Any, budget: list[int]) -> Iterator[Any]:
    for child in key.sub_keys:
        budget[0] -= 1
        if budget[0] < 0:
            raise HiveLimit(f"registry hive has more than {MAX_KEYS} keys; rest not read")
        yield child


def _context(
    rule: RegistryRule, path: tuple[str, ...], siblings: dict[str, str]
) -> tuple[tuple[str, str], ...]:
    """The facts a rule reports beside its value: sibling values, the key's own name."""
    facts = []
    for name, source in rule.context:
        if source == "@key":
            value = path[-1] if path else ""
        elif source == "@parent":
            value = path[-2] if len(path) > 1 else ""
        else:
            value = siblings.get(source.lower(), "")
        if value:
            facts.append((name, value))
    return tuple(facts)
