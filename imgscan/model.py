"""Value types that cross process and layer boundaries, and the two functions that decide what
of a secret may ever be shown: `redact()` and `fingerprint()`.

Everything here is a frozen dataclass of plain data, so it pickles cheaply to and from worker
processes and can be compared in tests.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from enum import StrEnum


class Severity(StrEnum):
    """Finding severity, ordered from most to least serious."""

    CRITICAL = "critical"
    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"
    INFO = "info"

    @property
    def rank(self) -> int:
        """Higher is more serious; used for `--fail-on` and sorting."""
        return _RANK[self]


_RANK = {
    Severity.CRITICAL: 4,
    Severity.HIGH: 3,
    Severity.MEDIUM: 2,
    Severity.LOW: 1,
    Severity.INFO: 0,
}


class VolumeStatus(StrEnum):
    """What happened to a volume: the report lists every volume the reader saw."""

    SCANNED = "scanned"
    UNREADABLE = "unreadable"  # recognised, but reading it failed (corrupt, I/O error)
    UNSUPPORTED = "unsupported"  # a volume type or filesystem this reader cannot read
    SKIPPED = "skipped"  # deliberately not scanned (an LVM physical volume, ...)
    EMPTY = "empty"  # no filesystem, and every byte read is zero: nothing to scan
    # The scan stopped (SIGINT/SIGTERM) before every file of this volume was scanned.
    INTERRUPTED = "interrupted"


@dataclass(frozen=True)
class FileRef:
    """One regular file to scan, as plain data a worker can act on.

    `volume` is the device name the file lives on, `path` the absolute guest path, `locator` the
    reader's own plain-data address of the file (a location inside the filesystem for the native
    reader, a spool file for the guestfs reader). `inline` carries small file content when the
    reader already has it in hand, so the worker need not open anything.
    """

    volume: str
    path: str
    size: int
    locator: str
    inline: bytes | None = None
    raw: bool = False  # the raw bytes of a whole volume (swap), not a file of a filesystem
    # File-system metadata scanned as content (imgscan/image/metadata.py): "" for a file's own
    # content, else which metadata `inline` holds ("names", "xattr", "symlink"). Such a
    # FileRef is not a file: it counts in no volume's files or bytes.
    metadata: str = ""
    # metadata "names": the guest path of each name in `inline`, in order (see `name_at`).
    names: tuple[str, ...] = ()


class CheckResult(StrEnum):
    """What one offline check says about a value."""

    PASS = "pass"  # the value's own structure checks out (checksum, parse, live hash)
    FAIL = "fail"  # the value cannot work as it is (expired, does not parse)
    INFO = "info"  # a fact worth knowing that judges nothing


class ValidationStatus(StrEnum):
    """The verdict of a finding's offline checks. Nothing is ever tried against a service."""

    # At least one offline check passed and none failed: the value has the structure its
    # kind must have (a checksum matches, a key parses, a JWT decodes). Named so that it
    # cannot be read as "tried against the service and accepted", which imgscan never does.
    WELL_FORMED = "well-formed"
    FAILED = "failed"  # a check failed: the finding is demoted to low severity
    UNVERIFIED = "unverified"  # no offline check applies to this kind of value


@dataclass(frozen=True)
class Check:
    """One offline check of a found value. `detail` never contains the value itself."""

    name: str
    result: CheckResult
    detail: str


@dataclass(frozen=True)
class Validation:
    """Offline checks of a finding's value and their verdict."""

    checks: tuple[Check, ...] = ()

    @property
    def status(self) -> ValidationStatus:
        results = {c.result for c in self.checks}
        if CheckResult.FAIL in results:
            return ValidationStatus.FAILED
        if CheckResult.PASS in results:
            return ValidationStatus.WELL_FORMED
        return ValidationStatus.UNVERIFIED


@dataclass(frozen=True)
class Package:
    """The package that installed the file a finding is in, by the guest's own records
    (imgscan/ownership.py): `manager` (dpkg, python, apk, rpm, npm), name and version, whether
    the file's content still has the digest the record gives (`unmodified`; None when the
    record holds no digest per file, as npm's lockfile), the record file that says so
    (`record`), and the severity the finding had before vendor content was demoted to info."""

    manager: str
    name: str
    version: str
    unmodified: bool | None
    record: str
    original_severity: Severity

    def describe(self) -> str:
        """One line for reports: `dpkg package gnutls-bin 3.7.9-2, unmodified`."""
        state = {
            True: "unmodified",
            False: "modified since installed",
            None: "content not verifiable (no digest per file)",
        }[self.unmodified]
        version = f" {self.version}" if self.version else ""
        return f"{self.manager} package {self.name}{version}, {state}"


@dataclass(frozen=True)
class PackageFiles:
    """What one package-manager record on the image says a package installed: crosses from
    the workers (imgscan/detect/packages.py reads the records as they stream past) to the main
    process, which decides ownership once every record is in (imgscan/ownership.py).

    `files` holds (guest path, digest algorithm, lowercase hex digest). `version` is empty
    when the record does not hold it (dpkg's md5sums files: the status file has it).
    `directory` is set by a manager that records the directory a package was unpacked into
    and no file list (npm): every file below it is the package's, with no digest to check."""

    manager: str
    name: str
    version: str
    record: str
    files: tuple[tuple[str, str, str], ...] = ()
    directory: str | None = None


@dataclass(frozen=True)
class Finding:
    """One secret found at one place. `secret` is None unless the user asked for raw values."""

    rule: str
    category: str
    severity: Severity
    path: str
    line: int
    preview: str
    fingerprint: str
    secret: str | None = None
    validation: Validation = Validation()
    # What the secret opens, from the settings around it: (key, value) with keys among user,
    # host, port, database, scheme, ssid. Never the secret itself.
    context: tuple[tuple[str, str], ...] = ()
    # The package that installed the file, when a package manager's record on the image lists
    # it (imgscan/ownership.py); vendor content, unmodified, is demoted to info.
    package: Package | None = None

    def sort_key(self) -> tuple[str, int, str, str]:
        return (self.path, self.line, self.rule, self.fingerprint)


@dataclass(frozen=True)
class Exposure:
    """What a copy of the image grants: a kind (database, cloud, saas, ssh, identity, account,
    network, login, kubernetes, key, credential), its target and principal, the worst severity
    of the findings behind it (`evidence`: their fingerprints; `paths`), what to do about it,
    the virt-sysprep operations that remove the artifacts where there are some, and details."""

    kind: str
    target: str
    principal: str | None
    severity: Severity
    evidence: tuple[str, ...]
    paths: tuple[str, ...]
    remediation: str
    sysprep: tuple[str, ...] = ()
    # What the image says about the exposure beyond its target, as (key, value): for SSH keys
    # "hosts" (where the image says the key is used), "encrypted"; for TLS keys the matching
    # certificate's "subject", "sans" and "certificate" path. Never a secret.
    details: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Clue:
    """A fact the image states about where a key is used, read from the file at `path`:
    kind `ssh-config` (host, user, identity), `ssh-known-host` (host), `ssh-command` (host,
    user, identity; from shell history) or `certificate` (public_key, subject, sans,
    not_after). Never a secret."""

    kind: str
    path: str
    facts: tuple[tuple[str, str], ...]

    def get(self, key: str) -> str:
        return dict(self.facts).get(key, "")


@dataclass(frozen=True)
class RuleDoc:
    """What a report says about a rule that produced findings (SARIF's rule metadata)."""

    id: str
    name: str
    category: str
    severity: Severity
    help: str


@dataclass(frozen=True)
class Suppressed:
    """A finding a baseline or an ignore entry accepted: kept out of the gate's verdict, but
    still listed (without its value) with what accepted it."""

    rule: str
    path: str
    line: int
    fingerprint: str
    by: str  # "baseline", or "ignore: <the entry's reason>"


@dataclass(frozen=True)
class Skipped:
    """A file (or archive member) that was not scanned, with the reason. Never silently dropped."""

    path: str
    reason: str


@dataclass(frozen=True)
class Excluded:
    """Files the user excluded by a path glob (`--exclude`): not read, by choice, so coverage
    stays complete; how many files and bytes each glob kept out (the first glob that matches
    a file counts it)."""

    pattern: str
    files: int
    bytes: int


@dataclass(frozen=True)
class Capped:
    """Findings of one rule in one file that a cap held back (detect/engine.py: at most
    MAX_FINDINGS_PER_RULE per rule and MAX_FINDINGS_PER_FILE per file are reported).

    The file was read whole, so coverage is complete (unless it is also listed as skipped);
    `reported` is how many findings of the rule the cap let through (one leak matched by two
    rules is then listed once, under the more severe) and `not_reported` how many further
    matches passed the rule's validators but were only counted (not checked, fingerprinted or
    listed)."""

    path: str
    rule: str
    reported: int
    not_reported: int


# Volume types that only hold other volumes, which are listed themselves.
CONTAINER_FSTYPES = frozenset({"LVM2_member", "crypto_LUKS"})


@dataclass(frozen=True)
class Volume:
    """A volume as the report shows it."""

    device: str
    fstype: str | None
    mountpoint: str | None
    status: VolumeStatus
    reason: str | None = None
    files: int = 0
    bytes: int = 0
    reader: str | None = None  # the reader that read (or tried to read) this volume
    # btrfs: (subvolume path from the top level, guest path where its files appear)
    subvolumes: tuple[tuple[str, str | None], ...] = ()

    @property
    def covered(self) -> bool:
        """Whether the volume's content was read: scanned itself, read and found to be all
        zeros (a Microsoft reserved partition), or a container (an LVM physical volume, an
        unlocked LUKS volume) whose content is listed, and judged, as volumes of its own."""
        if self.status in (VolumeStatus.SCANNED, VolumeStatus.EMPTY):
            return True
        return self.status is VolumeStatus.SKIPPED and self.fstype in CONTAINER_FSTYPES


@dataclass(frozen=True)
class ImageInfo:
    """The image file: path as given, detected container format, virtual disk size in bytes,
    and whether another process had it locked when the scan began."""

    path: str
    format: str
    virtual_size: int
    # Another process holds a lock on the file (a running VM's qemu does): what the kernel
    # says of that lock. None when the image is not in use.
    in_use: str | None = None
    # The image's content digest (`sha256:` of the file, `sha256set:` of a split vmdk's
    # parts, as imgscan/batch/digest.py defines it), when asked for (`--image-digest`).
    sha256: str | None = None


@dataclass(frozen=True)
class ReaderInfo:
    """Which reader ran and, for libguestfs, which accelerator its appliance used."""

    name: str
    accel: str | None = None


@dataclass(frozen=True)
class OsUser:
    name: str
    uid: int
    home: str


@dataclass(frozen=True)
class OsInfo:
    """What the guest operating system says about itself (from its own files)."""

    type: str  # linux | windows
    distro: str | None
    version: str | None
    name: str | None
    hostname: str | None
    users: tuple[OsUser, ...] = ()


@dataclass(frozen=True)
class Stats:
    """How much was scanned, and how long it took.

    `stages` says where the time went, in seconds (for benchmarks and for a user wondering why
    a scan is slow): `open` (detecting the format, opening the image, placing volumes and
    reading OS facts, before the first file), `listing` (waiting for the reader to list files),
    `read` and `match` (the workers' time reading file content from the image and scanning it,
    summed over the workers, so they may add up to more than `seconds` with several workers).
    """

    files: int
    bytes: int
    seconds: float
    stages: tuple[tuple[str, float], ...] = ()
    # When the scan began and ended: UTC, ISO 8601 to the second ("" when not known, as in
    # reports written before these existed).
    started_at: str = ""
    finished_at: str = ""


@dataclass(frozen=True)
class ScanResult:
    """Everything one scan produced. Renderers turn this into text; they never scan."""

    image: ImageInfo
    reader: ReaderInfo
    volumes: tuple[Volume, ...]
    skipped: tuple[Skipped, ...]
    findings: tuple[Finding, ...]
    stats: Stats
    warnings: tuple[str, ...] = field(default=())
    os: OsInfo | None = None
    suppressed: tuple[Suppressed, ...] = ()
    rules: tuple[RuleDoc, ...] = ()  # every rule that produced a finding, by id
    exposures: tuple[Exposure, ...] = ()  # what the findings grant (imgscan/exposures.py)
    # What the image says about where its keys are used (detect/usage.py); the exposures are
    # built from findings and clues, and rebuilt from them when findings are suppressed.
    clues: tuple[Clue, ...] = ()
    # The gate's verdict (imgscan/policy.py `judge`), filled in by the CLI before rendering.
    gate: Verdict | None = None
    # The scan was stopped (SIGINT or SIGTERM) before its end: this is a partial result, and
    # the volumes it did not finish have status `interrupted`.
    interrupted: bool = False
    # The rule pack that scanned (`RulePack.version`; "" when not known, as in old stored reports).
    pack_version: str = ""
    # Files whose findings were capped (read whole, but not every match is listed).
    capped: tuple[Capped, ...] = ()
    # Files kept out of the scan by the user's --exclude globs (not counted as unread).
    excluded: tuple[Excluded, ...] = ()
    # Why the scan could not be done at all (the image cannot be opened, an input file is
    # malformed): a result that carries only this, so that a report is still written.
    error: str | None = None

    @property
    def complete(self) -> bool:
        """True only when the scan ran to its end without an error, every volume was scanned
        and no file was skipped.

        A skipped volume (swap, say) still makes coverage incomplete: a gate must not call an
        image clean when part of it was not read.
        """
        return (
            self.error is None
            and not self.interrupted
            and not self.skipped
            and all(v.covered for v in self.volumes)
        )

    @property
    def unread_volumes(self) -> int:
        """How many volumes were not read (not `covered`)."""
        return sum(1 for v in self.volumes if not v.covered)

    def severity_counts(self) -> dict[Severity, int]:
        """How many findings have each severity, every severity listed, most severe first."""
        return {s: sum(1 for f in self.findings if f.severity is s) for s in Severity}


# Bump when the fingerprint construction changes, so stored baselines can tell old from new.
FINGERPRINT_VERSION = "fp1"
# PBKDF2 makes a dictionary attack on a fingerprint slow; the salt binds it to rule and place, so
# the same weak password at two places gives unrelated fingerprints.
_FP_ITERATIONS = 20_000


def fingerprint(rule: str, path: str, secret: bytes) -> str:
    """A stable, versioned identifier of `secret` found by `rule` at guest `path`.

    Independent of line numbers and of the scan, so baselines survive edits above the secret and
    rescans of copies of the image. Never a plain hash of the secret.
    """
    salt = b"imgscan/" + FINGERPRINT_VERSION.encode() + b"\0" + rule.encode() + b"\0"
    salt += path.encode("utf-8", "surrogateescape")
    digest = hashlib.pbkdf2_hmac("sha256", secret, salt, _FP_ITERATIONS, dklen=16)
    return f"{FINGERPRINT_VERSION}:{digest.hex()}"


def redact(secret: bytes, prefix: int, whole: bool = False) -> str:
    """Preview of a secret that reveals only its public marker and its length.

    `prefix` is how many leading characters the rule declares a fixed public marker (`AKIA`,
    `ghp_`, `-----BEGIN`); passwords use 0 and show nothing but their length. `whole`: the
    value is an identifier, no secret (the rule says so), and is shown as it is.
    """
    text = secret.decode("utf-8", "replace")
    if whole:
        return _printable(text)
    shown = _printable(text[: max(0, min(prefix, len(text) - 1))])
    return f"{shown}…({len(secret)})"


def _printable(text: str) -> str:
    """Escape control characters so a preview can never drive a terminal."""
    return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text)


class GateAction(StrEnum):
    """What a gate policy rule does with the findings it matches."""

    FAIL = "fail"
    ALLOW = "allow"


@dataclass(frozen=True)
class GateDecision:
    """A finding a gate policy rule decided: the rule's number in the policy file (counting
    from 1), what it did and its reason. A finding no rule matched has no decision: the
    threshold judged it."""

    fingerprint: str
    action: GateAction
    rule: int
    reason: str


@dataclass(frozen=True)
class Verdict:
    """The gate's verdict on a scan's findings (imgscan/policy.py): the threshold it used, the
    policy file (None without one), the fingerprints of the findings that fail the gate, and
    the decisions policy rules made. Coverage is not part of it: the exit code adds that."""

    fail_on: Severity
    policy: str | None
    failing: tuple[str, ...]
    decisions: tuple[GateDecision, ...] = ()
