"""Accepted findings: baselines and ignore files, applied to a finished scan.

A baseline (`imgscan baseline IMAGE --output FILE`) lists the fingerprints of an image's
current findings; a later scan with `--baseline FILE` hides those and reports only what is new.
An ignore file (TOML, `--ignore FILE`) holds entries that match by rule, path glob and/or
fingerprint, each with a reason and an optional expiry date; an expired entry stops
suppressing and says so. Suppressed findings leave the gate's verdict but stay in the report
(rule, path, fingerprint and why), so nothing is hidden silently. Neither file ever holds a
secret: fingerprints are salted PBKDF2 digests.
"""

from __future__ import annotations

import datetime
import json
import re
import tomllib
from collections.abc import Container, Iterable, Iterator
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TextIO

from imgscan import __version__
from imgscan.detect.globs import compile_glob
from imgscan.detect.rules import RulePack, glob_form, rule_ids
from imgscan.errors import ImgscanError
from imgscan.exposures import build_exposures
from imgscan.model import FINGERPRINT_VERSION, Finding, ScanResult, Suppressed

BASELINE_SCHEMA = "imgscan.baseline/v1"


@dataclass(frozen=True)
class IgnoreEntry:
    """One ignore-file entry: every field given must match; `where` names it in messages."""

    reason: str
    where: str
    rule: str | None = None
    path: str | None = None
    fingerprint: str | None = None
    expires: datetime.date | None = None

    def matches(self, finding: Finding) -> bool:
        if self.rule is not None and finding.rule != self.rule:
            return False
        if self.fingerprint is not None and finding.fingerprint != self.fingerprint:
            return False
        return self.path is None or path_matches(self.path, finding.path)


def path_matches(glob: str, path: str) -> bool:
    """Whether guest `path` matches the path glob of an ignore entry or a policy rule (the
    rule pack's glob syntax: `**` crosses directories; Windows paths match regardless of
    case). Time linear in the path's length, whatever the glob (detect/globs.py)."""
    form, caseless = glob_form(path)
    return compile_glob(glob, caseless).match(form)


def render_baseline(result: ScanResult) -> str:
    """The baseline file for `result`: its findings' fingerprints, with rule and path for
    the people who review it (no secret, no preview)."""
    data = {
        "schema": BASELINE_SCHEMA,
        "tool": {"name": "imgscan", "version": __version__},
        "image": result.image.path,
        "findings": [
            {"fingerprint": f.fingerprint, "rule": f.rule, "path": f.path}
            for f in sorted(result.findings, key=Finding.sort_key)
        ],
    }
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


class Baseline(AbstractSet[str]):
    """The fingerprints a baseline accepts, held compactly: a current-version fingerprint
    (`fp1:` and 32 hex digits) as its 16 digest bytes, anything else as the string. A baseline
    of 2 million findings costs about 200 MB this way; as parsed JSON (with rule and path) it
    cost over a GB."""

    def __init__(self, fingerprints: Iterable[str] = ()) -> None:
        self._digests: set[bytes] = set()
        self._other: set[str] = set()
        for fingerprint in fingerprints:
            self.add(fingerprint)

    def add(self, fingerprint: str) -> None:
        """Accept `fingerprint`."""
        if _COMPACT.fullmatch(fingerprint):
            self._digests.add(bytes.fromhex(fingerprint[len(_FP_PREFIX) :]))
        else:
            self._other.add(fingerprint)

    def __contains__(self, fingerprint: object) -> bool:
        if not isinstance(fingerprint, str):
            return False
        if _COMPACT.fullmatch(fingerprint):
            return bytes.fromhex(fingerprint[len(_FP_PREFIX) :]) in self._digests
        return fingerprint in self._other

    def __iter__(self) -> Iterator[str]:
        yield from (_FP_PREFIX + digest.hex() for digest in self._digests)
        yield from self._other

    def __len__(self) -> int:
        return len(self._digests) + len(self._other)


_FP_PREFIX = FINGERPRINT_VERSION + ":"
_COMPACT = re.compile(re.escape(_FP_PREFIX) + "[0-9a-f]{32}")
# A baseline is read in pieces of this many characters; one entry (or any other value of the
# top-level object) may not be longer than _MAX_VALUE.
_PIECE = 1 << 20
_MAX_VALUE = 16 << 20


def load_baseline(path: Path) -> AbstractSet[str]:
    """The fingerprints a baseline file accepts.

    The file is read incrementally, entry by entry (`json` parses one entry at a time), and
    only the fingerprints are kept: memory grows with the number of findings, not the size
    of the file. Anything malformed (not JSON, nested too deep, an entry over 16 MiB, the wrong
    schema, an entry without a fingerprint) is an `ImgscanError` of one line naming the file.
    """
    try:
        with path.open(encoding="utf-8") as text:
            return _parse_baseline(path, _Pieces(text))
    except OSError as exc:
        raise ImgscanError(f"{path}: cannot read baseline: {exc.strerror}") from None
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        # RecursionError: arrays or objects nested a thousand deep, which json gives up on
        raise ImgscanError(f"{path}: not a baseline file: {_one_line(exc)}") from None


def _parse_baseline(path: Path, doc: _Pieces) -> Baseline:
    accepted = Baseline()
    schema: Any = None
    findings = False
    doc.expect("{")
    more = doc.peek() != "}"
    if not more:
        doc.expect("}")
    while more:
        key = doc.value()
        if not isinstance(key, str):
            raise ValueError("expected a key")
        doc.expect(":")
        if key != "findings":
            value = doc.value()
            if key == "schema":
                schema = value
        else:
            findings = _fingerprints(path, doc, accepted)
        more = doc.separator("}")
    if doc.peek():
        raise ValueError("extra data after the baseline")
    if schema != BASELINE_SCHEMA:
        raise ImgscanError(f"{path}: not a baseline file (schema is not {BASELINE_SCHEMA})")
    if not findings:
        raise ImgscanError(f"{path}: baseline findings must each have a fingerprint")
    return accepted


def _fingerprints(path: Path, doc: _Pieces, into: Baseline) -> bool:
    """Read the `findings` value into `into`; False when it is not a list of entries that
    each have a fingerprint (the rest of it is still read)."""
    if doc.peek() != "[":
        doc.value()
        return False
    doc.expect("[")
    good = True
    more = doc.peek() != "]"
    if not more:
        doc.expect("]")
    while more:
        entry = doc.value()
        if isinstance(entry, dict) and isinstance(entry.get("fingerprint"), str):
            into.add(entry["fingerprint"])
        else:
            good = False
        more = doc.separator("]")
    return good


_SPACE = re.compile(r"[ \t\n\r]*")


class _Pieces:
    """A JSON text read piece by piece: the unread part is kept in memory, the rest dropped."""

    def __init__(self, text: TextIO) -> None:
        self._text = text
        self._buf = ""
        self._pos = 0
        self._eof = False
        self._decoder = json.JSONDecoder()

    def _more(self) -> bool:
        """Read the next piece; False at the end of the file."""
        piece = "" if self._eof else self._text.read(_PIECE)
        if not piece:
            self._eof = True
            return False
        self._buf = self._buf[self._pos :] + piece
        self._pos = 0
        return True

    def peek(self) -> str:
        """The next character that is not white space ("" at the end)."""
        while True:
            match = _SPACE.match(self._buf, self._pos)
            self._pos = match.end() if match else self._pos
            if self._pos < len(self._buf) or not self._more():
                return self._buf[self._pos : self._pos + 1]

    def expect(self, char: str) -> None:
        if self.peek() != char:
            raise ValueError(f"expected {char!r} at character {self._pos}")
        self._pos += 1

    def separator(self, close: str) -> bool:
        """After a member: True for a comma (another member follows), False for `close`."""
        char = self.peek()
        if char not in (",", close):
            raise ValueError(f"expected ',' or {close!r}")
        self._pos += 1
        return char == ","

    def value(self) -> Any:
        """The next complete JSON value; more pieces are read while it is cut off."""
        self.peek()
        while True:
            try:
                value, end = self._decoder.raw_decode(self._buf, self._pos)
            except json.JSONDecodeError:
                if len(self._buf) - self._pos > _MAX_VALUE:
                    raise ValueError(f"a value longer than {_MAX_VALUE >> 20} MiB") from None
                if not self._more():
                    raise
                continue
            # A number at the end of what was read may go on in the next piece.
            if end == len(self._buf) and not self._eof and self._more():
                continue
            self._pos = end
            return value


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300] or type(exc).__name__


def load_toml(path: Path, what: str) -> dict[str, Any]:
    """The TOML file `path` (an ignore or policy file: `what`), or `ImgscanError` with one
    line naming it when it cannot be read or is not TOML."""
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ImgscanError(f"{path}: cannot read {what}: {exc.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError, RecursionError) as exc:
        # RecursionError: arrays or tables nested a thousand deep, which tomllib gives up on
        raise ImgscanError(f"{path}: not valid TOML: {exc}") from None


def load_ignore(path: Path) -> tuple[IgnoreEntry, ...]:
    """The `[[ignore]]` entries of an ignore file; a malformed one is an error naming it."""
    data = load_toml(path, "ignore file")
    entries = data.get("ignore", [])
    if not isinstance(entries, list):
        raise ImgscanError(f"{path}: expected an array of [[ignore]] tables")
    return tuple(_entry(path, number, entry) for number, entry in enumerate(entries, start=1))


def _entry(path: Path, number: int, entry: Any) -> IgnoreEntry:
    where = f"{path}: ignore entry {number}"
    if not isinstance(entry, dict):
        raise ImgscanError(f"{where}: must be a table")
    unknown = set(entry) - {"rule", "path", "fingerprint", "reason", "expires"}
    if unknown:
        raise ImgscanError(f"{where}: unknown key(s) {', '.join(map(repr, sorted(unknown)))}")
    fields = {key: entry.get(key) for key in ("rule", "path", "fingerprint")}
    if not any(fields.values()):
        raise ImgscanError(f"{where}: needs a rule, a path or a fingerprint")
    if not all(value is None or (isinstance(value, str) and value) for value in fields.values()):
        raise ImgscanError(f"{where}: rule, path and fingerprint must be non-empty strings")
    reason = entry.get("reason")
    if not isinstance(reason, str) or not reason.strip():
        raise ImgscanError(f"{where}: needs a reason")
    expires = entry.get("expires")
    if expires is not None and (
        not isinstance(expires, datetime.date) or isinstance(expires, datetime.datetime)
    ):
        raise ImgscanError(f"{where}: expires must be a date (expires = 2027-01-31)")
    return IgnoreEntry(reason.strip(), where, expires=expires, **fields)


def check_ignore_rule_ids(ignore: Iterable[IgnoreEntry], pack: RulePack) -> None:
    """Raise `ImgscanError` when an ignore entry names a rule id the pack does not have: the
    entry would never match, and the finding it was written for would still fail the gate
    with nothing saying why."""
    known = rule_ids(pack)
    for entry in ignore:
        if entry.rule is not None and entry.rule not in known:
            raise ImgscanError(f"{entry.where}: unknown rule id {entry.rule!r} (not in the pack)")


def apply_suppressions(
    result: ScanResult,
    baseline: Container[str] = frozenset(),
    ignore: tuple[IgnoreEntry, ...] = (),
    today: datetime.date | None = None,
) -> ScanResult:
    """`result` with accepted findings moved to `suppressed`, a warning per expired entry and
    one per active entry that matched no finding (stale, or written for another image: a
    reviewer should know it accepts nothing).

    An entry expires at the end of its `expires` day. Coverage is untouched: suppressing a
    finding never makes an incomplete scan look complete.
    """
    today = today or datetime.date.today()
    active = [e for e in ignore if e.expires is None or e.expires >= today]
    warnings = [
        f"{e.where} expired on {e.expires.isoformat()} and no longer suppresses ({e.reason})"
        for e in ignore
        if e.expires is not None and e.expires < today
    ]
    kept: list[Finding] = []
    suppressed: list[Suppressed] = []
    used: set[int] = set()
    for finding in result.findings:
        if finding.fingerprint in baseline:
            suppressed.append(_suppressed(finding, "baseline"))
            continue
        index = next((i for i, e in enumerate(active) if e.matches(finding)), None)
        if index is not None:
            used.add(index)
            suppressed.append(_suppressed(finding, f"ignore: {active[index].reason}"))
            continue
        kept.append(finding)
    warnings += [
        f"{entry.where} matched no finding ({entry.reason})"
        for index, entry in enumerate(active)
        if index not in used
    ]
    return replace(
        result,
        findings=tuple(kept),
        exposures=build_exposures(kept, result.clues),
        suppressed=result.suppressed + tuple(suppressed),
        warnings=result.warnings + tuple(warnings),
    )


def _suppressed(finding: Finding, by: str) -> Suppressed:
    return Suppressed(finding.rule, finding.path, finding.line, finding.fingerprint, by)
