"""What a worker process does with one file: open it, expand archives, run the engine, read
registry hives' values (detect/registry.py), and turn hits into findings (redacted unless raw
values were asked for).

`FileScanner` is built once per process from the plain-data `WorkerSpec` (pool initializer);
the main process never sends it anything but FileRefs.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import hashlib
import io
import lzma
import tarfile
import tempfile
import time
import zipfile
import zlib
from dataclasses import dataclass, replace
from typing import Any, BinaryIO, cast

import zstandard

from imgscan.detect import packages, usage
from imgscan.detect.checks import fixture_location, private_key_id
from imgscan.detect.engine import Engine, EngineSpec, FileTimeout, Hit, Quota
from imgscan.detect.registry import RegistryHit, RegistryMatcher, is_hive, value_path
from imgscan.image.interface import FileOpener, OpenerSpec
from imgscan.image.metadata import NAME_SUFFIX, name_at
from imgscan.model import (
    Check,
    CheckResult,
    Clue,
    FileRef,
    Finding,
    PackageFiles,
    Severity,
    Skipped,
    Validation,
    ValidationStatus,
    fingerprint,
    redact,
)
from imgscan.options import DEFAULT_FILE_TIMEOUT
from imgscan.scan.archives import (
    MAX_DEPTH,
    Member,
    archive_kind,
    bomb_reason,
    expand,
    expansion_limit,
)


@dataclass(frozen=True)
class WorkerSpec:
    engine: EngineSpec
    opener: OpenerSpec
    chunk_size: int
    max_file_size: int
    show_secrets: bool
    # The time budget of one file (per started GiB of it): past it the file is listed as
    # skipped (what was found until then is reported). Checked between chunks and matches,
    # not inside a read.
    file_timeout: float = DEFAULT_FILE_TIMEOUT  # archive members included
    # hashlib names of the digests taken of every file as it is read, for the package records
    # that may list it (imgscan/ownership.py): only those the image's package managers use.
    digests: tuple[str, ...] = ()


@dataclass(frozen=True)
class FileOutcome:
    """The result of scanning one FileRef (and every archive member inside it)."""

    volume: str
    findings: tuple[Finding, ...]
    skipped: tuple[Skipped, ...]
    bytes: int
    clues: tuple[Clue, ...] = ()  # where the image says its keys are used (detect/usage.py)
    # Where the time went (benchmarks' per-stage figures): seconds inside reads of the file's
    # content from the image, and seconds scanning it in all (reads, expansion, matching).
    read_seconds: float = 0.0
    scan_seconds: float = 0.0
    # Findings a cap held back (detect/engine.py Quota): (path, rule id, reported, not
    # reported) for each rule of this file that hit a cap. The file was read all the same.
    capped: tuple[tuple[str, str, int, int], ...] = ()
    # Package-manager records the file holds (detect/packages.py), and the digests of the file
    # as (algorithm, hex), taken only when it has findings (imgscan/ownership.py needs no other).
    records: tuple[PackageFiles, ...] = ()
    digests: tuple[tuple[str, str], ...] = ()
    # The FileRef was file-system metadata (names, a link target, an extended attribute), not
    # a file: it counts in no volume's files or bytes.
    metadata: bool = False


class _TimedReads:
    """A stream that counts the seconds spent in its `read` (the reader library's work of
    fetching and decompressing image blocks); everything else is passed through."""

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self.seconds = 0.0

    def read(self, size: int | None = -1) -> bytes:
        started = time.perf_counter()
        try:
            # read() with no argument, not read(-1): dfvfs' file objects refuse a negative size.
            return self._stream.read() if size is None or size < 0 else self._stream.read(size)
        finally:
            self.seconds += time.perf_counter() - started

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


class _Digesting:
    """A stream that hashes the file's bytes as the scan reads them, so a file is never read
    twice for its digest. The scan reads a plain file once from start to end, but it also
    peeks at the head, seeks back and re-reads (usage clues, file rules): the hashes take each
    byte once, in order, from the bytes read contiguously from the start. An archive, read out
    of order, has the bytes nobody read yet read by `digests()` (only for a file with findings).
    """

    def __init__(self, stream: BinaryIO, algorithms: tuple[str, ...]) -> None:
        self._stream = stream
        self._hashes = [hashlib.new(name) for name in algorithms]
        self._position = 0
        self._hashed = 0  # bytes [0, _hashed) are in the hashes

    def read(self, size: int | None = -1) -> bytes:
        data = self._stream.read() if size is None or size < 0 else self._stream.read(size)
        start, end = self._position, self._position + len(data)
        if self._hashes and start <= self._hashed < end:
            part = memoryview(data)[self._hashed - start :]
            for digest in self._hashes:
                digest.update(part)
            self._hashed = end
        self._position = end
        return data

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        self._stream.seek(offset, whence)
        self._position = self._stream.tell()  # dfvfs' seek() returns None
        return self._position

    def tell(self) -> int:
        return self._position

    def seekable(self) -> bool:
        return self._stream.seekable()

    def digests(self, size: int) -> tuple[tuple[str, str], ...]:
        """(algorithm, hex) of the file's `size` bytes; () when they cannot all be hashed."""
        if not self._hashes:
            return ()
        if self._hashed < size:
            if not self._stream.seekable():
                return ()
            self.seek(self._hashed)
            while self._hashed < size and self.read(1 << 20):
                pass
        if self._hashed != size:
            return ()
        return tuple((digest.name, digest.hexdigest()) for digest in self._hashes)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


_SPOOL_IN_MEMORY = 8 << 20
# A file gets its --file-timeout for every started GiB of its size: a 4 GiB swap volume, read
# at the speed of a slow reader, is not cut off where a small file would be.
_BUDGET_UNIT = 1 << 30
# Files larger than this get no digest: package records list few such files (a 100 MB libLLVM
# is large for one), while the big files of an image are its data (databases, logs, disk
# images), which no record lists. A finding in one keeps its severity ("not known to be
# unmodified"), so skipping its digest can never hide it.
DIGEST_MAX_SIZE = 256 << 20


class _Budget:
    """Expanded-bytes allowance of one outermost archive (decompression-bomb bound)."""

    def __init__(self, archive_size: int) -> None:
        self.limit = self.left = expansion_limit(archive_size)


class InlineOpener:
    """A FileOpener for FileRefs that carry their content inline (callers of the API that scan
    bytes they already hold): nothing is ever opened."""

    def open(self, ref: FileRef) -> BinaryIO:
        raise ValueError(f"{ref.path}: no inline content to scan")

    def release(self, ref: FileRef) -> None:
        pass


class FileScanner:
    def __init__(self, spec: WorkerSpec, opener: FileOpener, engine: Engine | None = None) -> None:
        """`engine`, when given, is one already built from `spec.engine` (a pool worker builds
        it while the main process is still opening the image)."""
        self.spec = spec
        self.engine = engine if engine is not None else Engine(spec.engine)
        self.registry = RegistryMatcher(self.engine.pack.registry)
        self.opener = opener
        self._quota = Quota()  # the current file's (set by scan)
        self._metadata: FileRef | None = None  # the current FileRef, when it is metadata
        self._pair_rules: dict[str, str] | None = None

    @property
    def _pairs(self) -> dict[str, str]:
        """Secret rule id -> the identifier rule it pairs with (rules' `pairs_with`)."""
        if self._pair_rules is None:
            self._pair_rules = {
                r.id: r.meta.pairs_with for r in self.engine.pack.patterns if r.meta.pairs_with
            }
        return self._pair_rules

    def scan(self, ref: FileRef) -> FileOutcome:
        started = time.perf_counter()
        findings: list[Finding] = []
        skipped: list[Skipped] = []
        clues: list[Clue] = []
        records: tuple[PackageFiles, ...] = ()
        digests: tuple[tuple[str, str], ...] = ()
        if ref.size > self.spec.max_file_size:
            skipped.append(
                Skipped(
                    ref.path,
                    f"larger than the size limit ({ref.size} > {self.spec.max_file_size} bytes)",
                )
            )
            self.opener.release(ref)
            return FileOutcome(ref.volume, (), tuple(skipped), 0, metadata=bool(ref.metadata))
        if ref.size == 0 and ref.inline is None and not ref.raw:
            # Nothing to read and nothing to match (file rules need at least one byte):
            # a file system of a million empty files costs no opens.
            self.opener.release(ref)
            return FileOutcome(ref.volume, (), (), 0)
        timed = None
        self._metadata = ref if ref.metadata else None
        budget = self.spec.file_timeout * max(1, -(-ref.size // _BUDGET_UNIT))
        self._quota = quota = Quota(deadline=time.monotonic() + budget)
        try:
            opened = io.BytesIO(ref.inline) if ref.inline is not None else self.opener.open(ref)
            timed = _TimedReads(opened)
            if ref.raw:
                stream = cast(BinaryIO, timed)
                try:
                    hits = self.engine.scan(stream, ref.path, self.spec.chunk_size, True, quota)
                except FileTimeout as stop:
                    findings.extend(self._finding(hit, ref.path) for hit in _dedupe(stop.hits))
                    raise
                findings.extend(self._finding(hit, ref.path) for hit in _dedupe(hits))
            else:
                algorithms = self.spec.digests if ref.size <= DIGEST_MAX_SIZE else ()
                digesting = _Digesting(cast(BinaryIO, timed), algorithms)
                stream = cast(BinaryIO, digesting)
                self._scan_stream(stream, ref.path, 0, _Budget(ref.size), findings, skipped, clues)
                if packages.wants(ref.path) and stream.seekable() and not ref.metadata:
                    stream.seek(0)
                    records = packages.read_records(ref.path, stream)
                if findings:
                    digests = digesting.digests(ref.size)
        except FileTimeout:
            # Listed as skipped (coverage incomplete), with what was found until then: one
            # hostile file must not hold up the scan.
            skipped.append(
                Skipped(
                    ref.path,
                    f"time budget of {budget:g} s exceeded: not scanned to its end "
                    "(--file-timeout)",
                )
            )
        except Exception as exc:
            # Per-file trouble is data, not a crash: a corrupt file (or a reader library's own
            # error type) costs that file, recorded with the reason, never the whole scan.
            skipped.append(Skipped(ref.path, f"read error: {_one_line(exc)}"))
        finally:
            self.opener.release(ref)
        return FileOutcome(
            ref.volume,
            tuple(_paired(findings, self._pairs)),
            tuple(skipped),
            ref.size,
            tuple(clues),
            read_seconds=timed.seconds if timed is not None else 0.0,
            scan_seconds=time.perf_counter() - started,
            capped=tuple(
                (ref.path, rule, quota.reported.get(rule, 0), count)
                for rule, count in sorted(quota.withheld.items())
            ),
            records=records,
            digests=digests,
            metadata=bool(ref.metadata),
        )

    def _scan_stream(
        self,
        stream: BinaryIO,
        path: str,
        depth: int,
        budget: _Budget,
        findings: list[Finding],
        skipped: list[Skipped],
        clues: list[Clue],
    ) -> None:
        head = _peek(stream, 512)
        # Metadata is matched as it is: a name crafted to start like a gzip is not expanded.
        kind = archive_kind(head) if stream.seekable() and self._metadata is None else None
        if kind is not None and depth < MAX_DEPTH:
            try:
                members = expand(stream, path, kind, self.spec.max_file_size, budget.left)
                for item in members:
                    if self._quota.expired():
                        raise FileTimeout([])
                    if isinstance(item, Skipped):
                        skipped.append(item)
                        continue
                    self._scan_member(item, depth, budget, findings, skipped, clues)
                return
            except (
                zipfile.BadZipFile,
                tarfile.TarError,
                EOFError,
                OSError,
                lzma.LZMAError,
                zstandard.ZstdError,
                # The archive modules' own errors on corrupt input: zipfile's on a member's
                # deflate stream (zlib.error), an offset before the start of the file
                # ("negative seek value") and a version it does not know ("zip file version
                # 12.7"), tarfile's on a truncated GNU sparse header.
                zlib.error,
                ValueError,
                NotImplementedError,
                IndexError,
            ) as exc:
                skipped.append(Skipped(path, f"corrupt {kind} archive: {_one_line(exc)}"))
                stream.seek(0)  # still scan the raw bytes: they may hold plain text
        elif kind is not None:
            skipped.append(Skipped(path, f"archive nested deeper than {MAX_DEPTH} levels"))
        # Windows writes many text files as UTF-16 (mstsc's .rdp files, regedit exports,
        # PowerShell 5's Out-File): matched as the UTF-8 text they hold.
        text = _utf16_as_utf8(stream, head) or stream
        try:
            hits = _dedupe(self.engine.scan(text, path, self.spec.chunk_size, quota=self._quota))
        except FileTimeout as stop:
            findings.extend(self._finding(hit, path) for hit in _dedupe(stop.hits))
            raise
        for hit in hits:
            findings.append(self._finding(hit, path))
        if self._metadata is not None:
            # A name, a link target or an attribute value: no file rule, hive or usage clue.
            if text is not stream:
                text.close()
            return
        values = self._registry_findings(stream, path, head, skipped)
        findings.extend(values)
        if not hits and not values:
            file_finding = self._file_finding(stream, path)
            if file_finding is not None:
                findings.append(file_finding)
        if usage.wants(path) and text.seekable():
            text.seek(0)
            clues.extend(usage.read_clues(path, text.read(usage.MAX_BYTES)))
        if text is not stream:
            text.close()

    def _registry_findings(
        self, stream: BinaryIO, path: str, head: bytes, skipped: list[Skipped]
    ) -> list[Finding]:
        """Findings of the registry rules when the file is a registry hive; its bytes have
        been through the content engine like any file's. A hive that does not open, or whose
        walk hit a bound, is recorded as skipped (partly unread), with what was found."""
        if not is_hive(head) or not self.registry.rules or not stream.seekable():
            return []
        stream.seek(0, io.SEEK_END)
        size = stream.tell()
        stream.seek(0)
        try:
            hits, unread = self.registry.scan(stream, size)
        except OSError as exc:  # libregf's error for a hive it cannot parse
            skipped.append(Skipped(path, f"registry hive unreadable: {_one_line(exc)}"))
            return []
        if unread is not None:
            skipped.append(Skipped(path, unread))
        return [self._registry_finding(hit, path) for hit in hits]

    def _registry_finding(self, hit: RegistryHit, hive: str) -> Finding:
        """A registry value as a finding at `<hive>!/<key>:<value>`. A presence rule's value
        (encrypted hashes, LSA secrets) is evidence, never shown: its preview gives its size."""
        meta = hit.rule.meta
        path = value_path(hive, hit.key, hit.value)
        if hit.secret is None:
            preview = f"value of {len(hit.evidence)} bytes"
        else:
            preview = redact(hit.secret, meta.preview_prefix, meta.identifier)
        shown = hit.secret is not None and self.spec.show_secrets
        return Finding(
            rule=meta.id,
            category=meta.category,
            severity=meta.severity,
            path=path,
            line=0,
            preview=preview,
            fingerprint=fingerprint(meta.id, path, hit.evidence),
            secret=hit.secret.decode("utf-8", "replace") if shown and hit.secret else None,
            validation=Validation(hit.checks),
            context=hit.context,
        )

    def _file_finding(self, stream: BinaryIO, path: str) -> Finding | None:
        """A finding for a credential store known by its path (a file rule), when no content
        rule fired on it. The evidence is the file itself: the preview gives its size and the
        fingerprint is taken over its first MiB; its content is never put in the report."""
        rule = self.engine.file_rule(path)
        if rule is None or not stream.seekable():
            return None
        stream.seek(0, io.SEEK_END)
        size = stream.tell()  # dfvfs file objects' seek() returns None, not the position
        if size < rule.min_size:
            return None
        stream.seek(0)
        digest = hashlib.sha256(stream.read(1 << 20)).hexdigest().encode()
        checks = (Check("file", CheckResult.INFO, "known by its path; no content rule fired"),)
        location = fixture_location(path)
        validation = Validation(checks + ((location,) if location else ()))
        return Finding(
            rule=rule.id,
            category=rule.meta.category,
            severity=Severity.INFO if location else rule.meta.severity,
            path=path,
            line=0,
            preview=f"file of {size} bytes",
            fingerprint=fingerprint(rule.id, path, digest),
            validation=validation,
        )

    def _scan_member(
        self,
        member: Member,
        depth: int,
        budget: _Budget,
        findings: list[Finding],
        skipped: list[Skipped],
        clues: list[Clue],
    ) -> None:
        # Compressed member streams cannot seek, and nested archives need seeking, so each
        # member is copied in chunks to a spool that stays in memory up to a few MiB and moves
        # to a temporary file beyond: memory stays bounded whatever the member's size.
        limit = min(budget.left, self.spec.max_file_size)
        with tempfile.SpooledTemporaryFile(max_size=_SPOOL_IN_MEMORY) as spool:
            size = 0
            while chunk := member.stream.read(min(self.spec.chunk_size, limit + 1 - size)):
                spool.write(chunk)
                size += len(chunk)
                if size > limit:
                    break
            if size > self.spec.max_file_size:
                skipped.append(Skipped(member.path, "member larger than the size limit"))
                return
            if size > budget.left:
                skipped.append(Skipped(member.path, bomb_reason(budget.limit)))
                budget.left = 0
                return
            budget.left -= size
            spool.seek(0)
            self._scan_stream(
                cast(BinaryIO, spool), member.path, depth + 1, budget, findings, skipped, clues
            )

    def _finding(self, hit: Hit, path: str) -> Finding:
        meta = hit.rule
        preview = redact(hit.secret, meta.preview_prefix, meta.identifier)
        named = name_at(self._metadata, hit.offset) if self._metadata is not None else None
        if named is not None:
            # Found in an entry's name: the place is that entry, and since every report shows
            # the place, the secret in it is replaced by its preview unless asked for.
            secret = hit.secret.decode("utf-8", "surrogateescape")
            if not self.spec.show_secrets:
                named = named.replace(secret, preview)
            path = named + NAME_SUFFIX
        line = 0 if named is not None else hit.line  # a batch's line numbers mean nothing
        location = fixture_location(path)
        validation = Validation(hit.checks + ((location,) if location else ()))
        severity = meta.severity
        if validation.status is ValidationStatus.FAILED and severity.rank > Severity.LOW.rank:
            # Expired or unparseable: still on the image, but it no longer grants access.
            severity = Severity.LOW
        if location is not None:
            # A fixture of the software it ships with: listed, but it does not fail a gate
            # unless --fail-on info asks for that.
            severity = Severity.INFO
        return Finding(
            rule=meta.id,
            category=meta.category,
            severity=severity,
            path=path,
            line=line,
            preview=preview,
            fingerprint=fingerprint(meta.id, path, hit.secret),
            secret=hit.secret.decode("utf-8", "replace") if self.spec.show_secrets else None,
            validation=validation,
            context=hit.context
            + _public_key(meta.category, hit.secret)
            + ((("principal", _printable_id(hit.secret)),) if meta.identifier else ())
            + _encoded_user(meta.encoding, hit.secret, hit.context),
        )


def _encoded_user(
    encoding: str, secret: bytes, context: tuple[tuple[str, str], ...]
) -> tuple[tuple[str, str], ...]:
    """The user an encoded credential names (docker's `auth`: base64 of `user:password`),
    as context: the principal of its exposure. Never the password."""
    if encoding != "base64-user-password" or any(key == "user" for key, _ in context):
        return ()
    try:
        decoded = base64.b64decode(secret, validate=True)
    except (binascii.Error, ValueError):
        return ()
    user, colon, _ = decoded.partition(b":")
    if not colon or not user:
        return ()
    return (("user", _printable_id(user)),)


def _printable_id(value: bytes) -> str:
    return redact(value, 0, whole=True)


def _paired(findings: list[Finding], pairs: dict[str, str]) -> list[Finding]:
    """Each secret of an identifier/secret pair (a rule with `pairs_with`) given the principal
    of the nearest finding of its identifier rule in the same file (an AWS secret access key
    the access key ID above it, in its profile): one credential, one exposure. Nearest by
    line, an identifier above the secret preferred; none in the file leaves it as it was."""
    if not pairs or not any(f.rule in pairs for f in findings):
        return findings
    out = []
    for f in findings:
        partner = pairs.get(f.rule)
        ids = [g for g in findings if partner and g.rule == partner and g.path == f.path]
        principal = None
        if ids:
            best = min(ids, key=lambda g: (abs(f.line - g.line), g.line > f.line, g.line))
            principal = dict(best.context).get("principal")
        if principal is None or "principal" in dict(f.context):
            out.append(f)
        else:
            out.append(replace(f, context=(*f.context, ("principal", principal))))
    return out


def _public_key(category: str, secret: bytes) -> tuple[tuple[str, str], ...]:
    """A private key's public half, as its fingerprint: what links it to its certificate and
    says which servers' authorized_keys trust it. Public, so it may be reported."""
    if category != "private-key":
        return ()
    key_id = private_key_id(secret)
    return (("public_key", key_id),) if key_id else ()


_UTF16_BOMS = {codecs.BOM_UTF16_LE: "utf-16-le", codecs.BOM_UTF16_BE: "utf-16-be"}


def _utf16_as_utf8(stream: BinaryIO, head: bytes) -> BinaryIO | None:
    """The UTF-8 transcoding of a seekable stream that starts with a UTF-16 byte-order mark
    (lines stay lines, so line numbers hold), spooled like an archive member: memory stays
    bounded. None for anything else, and for bytes that are not UTF-16 after all (a binary
    file that happens to start with FF FE): those are scanned as they are."""
    encoding = _UTF16_BOMS.get(head[:2])
    if encoding is None or not stream.seekable():
        return None
    decoder = codecs.getincrementaldecoder(encoding)("strict")
    # Returned open: the caller closes it once scanned.
    spool = tempfile.SpooledTemporaryFile(max_size=_SPOOL_IN_MEMORY)  # noqa: SIM115
    stream.seek(2)
    try:
        while chunk := stream.read(1 << 20):
            spool.write(decoder.decode(chunk).encode("utf-8", "surrogatepass"))
        spool.write(decoder.decode(b"", final=True).encode("utf-8", "surrogatepass"))
    except UnicodeDecodeError:
        spool.close()
        stream.seek(0)
        return None
    spool.seek(0)
    stream.seek(0)
    return cast(BinaryIO, spool)


def _peek(stream: BinaryIO, size: int) -> bytes:
    if not stream.seekable():
        return b""
    position = stream.tell()
    head = stream.read(size)
    stream.seek(position)
    return head


def _dedupe(hits: list[Hit]) -> list[Hit]:
    """One hit per leaked value: when rules capture overlapping bytes (a service-account key
    found both as JSON and as an escaped PEM block), keep the most severe, then the first by
    rule id, so one leak is reported once."""
    kept: list[Hit] = []
    for hit in sorted(hits, key=lambda h: (-h.rule.severity.rank, h.rule.id, h.offset)):
        end = hit.offset + len(hit.secret)
        if not any(k.offset < end and hit.offset < k.offset + len(k.secret) for k in kept):
            kept.append(hit)
    return sorted(kept, key=lambda h: (h.offset, h.rule.id))


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:300] if text else type(exc).__name__
