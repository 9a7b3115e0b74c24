"""The results store: one SQLite file of every image scanned, keyed by content and versions.

A result's key is (content digest, imgscan version, rule-pack version): the same bytes scanned
by the same code with the same rules give the same result, so a batch skips keys already
`done`. A new imgscan or a changed rule pack makes every image due again; the old rows stay
and `imgscan results list` shows them.

What a row holds: the JSON report (`imgscan.report/v1`, never with raw secrets: a batch never
captures them), rendered without a gate verdict (the gate is judged when the result is used,
against the threshold of that use), and summary columns (coverage, findings per severity, the
exposures as kind/target/principal/severity) so that summaries and exit codes never parse the
reports.

Durability: WAL journal, one transaction per image result, committed as soon as the image is
finished, so a batch killed at any point has lost at most the images it was scanning. An image
handed to a scanner is first `claim`ed (state `running`); a claim whose batch died stays
`running` until a later batch scans the image again (every key not `done` is due). An image
that could not be scanned at all is stored with state `error` and its one-line reason, and is
tried again by the next batch (the cause may be the host: a missing library, a permission).

One writer: a batch holds an exclusive lock (`flock` on `DB.lock`) for its whole run, and only
the process that runs the batch writes (Dask workers send results back; they never open the
store). Readers (`imgscan results`, a test watching progress) may read at any time.
"""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import astuple, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from imgscan.batch.digest import FileIdentity
from imgscan.errors import ImgscanError
from imgscan.model import Severity

SCHEMA_VERSION = "1"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS file_hashes (
    path TEXT PRIMARY KEY,
    device INTEGER NOT NULL, inode INTEGER NOT NULL, size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL, ctime_ns INTEGER NOT NULL,
    sha256 TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS images (
    path TEXT PRIMARY KEY,
    digest TEXT NOT NULL,
    size INTEGER NOT NULL,
    seen_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS images_digest ON images (digest);
CREATE TABLE IF NOT EXISTS results (
    digest TEXT NOT NULL,
    tool_version TEXT NOT NULL,
    pack_version TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('running', 'done', 'error')),
    image_path TEXT NOT NULL,
    format TEXT,
    complete INTEGER,
    critical INTEGER NOT NULL DEFAULT 0,
    high INTEGER NOT NULL DEFAULT 0,
    medium INTEGER NOT NULL DEFAULT 0,
    low INTEGER NOT NULL DEFAULT 0,
    info INTEGER NOT NULL DEFAULT 0,
    exposures TEXT NOT NULL DEFAULT '[]',
    files INTEGER NOT NULL DEFAULT 0,
    bytes INTEGER NOT NULL DEFAULT 0,
    seconds REAL NOT NULL DEFAULT 0,
    error TEXT,
    report TEXT,
    scans INTEGER NOT NULL DEFAULT 0,
    worker TEXT,
    claimed_at TEXT,
    finished_at TEXT,
    PRIMARY KEY (digest, tool_version, pack_version)
);
"""

_RECORD_COLUMNS = (
    "r.digest, r.tool_version, r.pack_version, r.state, r.image_path, r.format, r.complete, "
    "r.critical, r.high, r.medium, r.low, r.info, r.exposures, r.files, r.bytes, r.seconds, "
    "r.error, r.scans, r.worker, r.finished_at"
)


class StoreError(ImgscanError):
    """The results store cannot be opened, is locked by another batch, or is not ours."""


@dataclass(frozen=True)
class Key:
    """What a result is keyed by."""

    digest: str
    tool_version: str
    pack_version: str


@dataclass(frozen=True)
class Record:
    """A stored result's summary columns (not its report). `counts` has every severity, most
    severe first; `exposures` are dicts with kind, target, principal and severity; `complete`
    is None for a result that is not `done`."""

    key: Key
    state: str
    image_path: str
    format: str | None
    complete: bool | None
    counts: dict[Severity, int]
    exposures: tuple[dict[str, Any], ...]
    files: int
    bytes: int
    seconds: float
    error: str | None
    scans: int
    worker: str | None
    finished_at: str | None

    @property
    def findings(self) -> int:
        return sum(self.counts.values())

    def fails(self, fail_on: Severity) -> bool:
        """Whether a finding at or above `fail_on` is among the findings."""
        return any(n for s, n in self.counts.items() if s.rank >= fail_on.rank)


def default_db_path() -> Path:
    """$XDG_DATA_HOME/imgscan/results.sqlite, or ~/.local/share/imgscan/results.sqlite."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "imgscan" / "results.sqlite"


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def summary_columns(report: dict[str, Any]) -> dict[str, Any]:
    """The summary columns of a JSON report (`imgscan.report/v1`)."""
    counts = {s.value: 0 for s in Severity}
    for finding in report["findings"]:
        counts[finding["severity"]] += 1
    exposures = [
        {
            "kind": e["kind"],
            "target": e["target"],
            "principal": e["principal"],
            "severity": e["severity"],
        }
        for e in report["exposures"]
    ]
    return {
        "format": report["image"]["format"],
        "complete": int(bool(report["coverage"]["complete"])),
        **counts,
        "exposures": json.dumps(exposures, ensure_ascii=True),
        "files": report["stats"]["files"],
        "bytes": report["stats"]["bytes"],
        "seconds": report["stats"]["seconds"],
    }


class Store:
    """The SQLite results store at `path` (created with its directory when missing)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # isolation_level=None: transactions are explicit (`_transaction`), one per result.
            self._db = sqlite3.connect(str(path), isolation_level=None, timeout=30)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")  # WAL: durable at checkpoint, safe
            self._db.executescript(_SCHEMA)
            row = self._db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
            if row is None:
                self._db.execute("INSERT INTO meta VALUES ('schema', ?)", (SCHEMA_VERSION,))
            elif row[0] != SCHEMA_VERSION:
                raise StoreError(
                    f"{path}: results store schema {row[0]}, this imgscan reads schema "
                    f"{SCHEMA_VERSION}; use another --db"
                )
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{path}: cannot open the results store: {exc}") from None
        except OSError as exc:
            raise StoreError(f"{path}: cannot create the results store: {exc.strerror}") from None
        self._lock_fd: int | None = None

    def close(self) -> None:
        self._db.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def writer_lock(self) -> Iterator[None]:
        """Hold the store's batch lock for the block; StoreError when another batch has it.
        The kernel drops the lock when the process dies, so a killed batch never leaves it."""
        lock_path = Path(str(self.path) + ".lock")
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StoreError(
                f"{self.path}: another batch is using this results store; wait for it or "
                "use another --db"
            ) from None
        self._lock_fd = fd
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
            self._lock_fd = None

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    # -- the digest cache (digest.HashCache) ----------------------------------------------

    def cached_sha256(self, identity: FileIdentity) -> str | None:
        row = self._db.execute(
            "SELECT sha256 FROM file_hashes WHERE path = ? AND device = ? AND inode = ? "
            "AND size = ? AND mtime_ns = ? AND ctime_ns = ?",
            astuple(identity),
        ).fetchone()
        return None if row is None else str(row[0])

    def remember_sha256(self, identity: FileIdentity, sha256: str) -> None:
        with self._transaction() as db:
            db.execute(
                # The table's columns are FileIdentity's fields, in order, then the hash.
                "INSERT OR REPLACE INTO file_hashes VALUES (?, ?, ?, ?, ?, ?, ?)",
                (*astuple(identity), sha256),
            )

    # -- writing results (the batch's process only) ---------------------------------------

    def see_images(self, seen: list[tuple[str, str, int]]) -> None:
        """Record where images are now: (path, digest, size) each."""
        now = _now()
        with self._transaction() as db:
            db.executemany(
                "INSERT OR REPLACE INTO images VALUES (?, ?, ?, ?)",
                [(path, digest, size, now) for path, digest, size in seen],
            )

    def is_done(self, key: Key) -> bool:
        row = self._db.execute(
            "SELECT 1 FROM results WHERE digest = ? AND tool_version = ? AND pack_version = ? "
            "AND state = 'done'",
            (key.digest, key.tool_version, key.pack_version),
        ).fetchone()
        return row is not None

    def claim(self, claims: list[tuple[Key, str]], worker: str) -> None:
        """Mark each (key, image path) as being scanned (state `running`) in one transaction,
        keeping what an earlier attempt left until the new result replaces it."""
        now = _now()
        with self._transaction() as db:
            db.executemany(
                "INSERT INTO results (digest, tool_version, pack_version, state, image_path, "
                "worker, claimed_at) VALUES (?, ?, ?, 'running', ?, ?, ?) "
                "ON CONFLICT (digest, tool_version, pack_version) DO UPDATE SET "
                "state = 'running', image_path = excluded.image_path, worker = excluded.worker, "
                "claimed_at = excluded.claimed_at",
                [
                    (key.digest, key.tool_version, key.pack_version, path, worker, now)
                    for key, path in claims
                ],
            )

    def commit_result(
        self, key: Key, image_path: str, report: dict[str, Any], worker: str | None
    ) -> None:
        """Store a finished scan's JSON report (as `imgscan.report/v1` data, gate not judged)
        and its summary columns, state `done`, in one transaction."""
        columns = summary_columns(report)
        text = json.dumps(report, ensure_ascii=True, sort_keys=True)
        with self._transaction() as db:
            db.execute(
                "INSERT INTO results (digest, tool_version, pack_version, state, image_path, "
                "format, complete, critical, high, medium, low, info, exposures, files, bytes, "
                "seconds, error, report, scans, worker, finished_at) VALUES "
                "(?, ?, ?, 'done', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, ?, 1, ?, ?) "
                "ON CONFLICT (digest, tool_version, pack_version) DO UPDATE SET "
                "state = 'done', image_path = excluded.image_path, format = excluded.format, "
                "complete = excluded.complete, critical = excluded.critical, "
                "high = excluded.high, medium = excluded.medium, low = excluded.low, "
                "info = excluded.info, exposures = excluded.exposures, files = excluded.files, "
                "bytes = excluded.bytes, seconds = excluded.seconds, error = NULL, "
                "report = excluded.report, scans = results.scans + 1, "
                "worker = excluded.worker, finished_at = excluded.finished_at",
                (
                    key.digest,
                    key.tool_version,
                    key.pack_version,
                    image_path,
                    columns["format"],
                    columns["complete"],
                    *(columns[s.value] for s in Severity),
                    columns["exposures"],
                    columns["files"],
                    columns["bytes"],
                    columns["seconds"],
                    text,
                    worker,
                    _now(),
                ),
            )

    def commit_error(self, key: Key, image_path: str, error: str, worker: str | None) -> None:
        """Store that the image could not be scanned (state `error`, its one-line reason)."""
        with self._transaction() as db:
            db.execute(
                "INSERT INTO results (digest, tool_version, pack_version, state, image_path, "
                "error, scans, worker, finished_at) VALUES (?, ?, ?, 'error', ?, ?, 1, ?, ?) "
                "ON CONFLICT (digest, tool_version, pack_version) DO UPDATE SET "
                "state = 'error', image_path = excluded.image_path, error = excluded.error, "
                "complete = NULL, report = NULL, scans = results.scans + 1, "
                "worker = excluded.worker, finished_at = excluded.finished_at",
                (key.digest, key.tool_version, key.pack_version, image_path, error, worker, _now()),
            )

    # -- reading ---------------------------------------------------------------------------

    def total_scans(self) -> int:
        """How many scans (results and errors) were ever committed: a rerun that scanned
        nothing leaves it unchanged."""
        row = self._db.execute("SELECT COALESCE(SUM(scans), 0) FROM results").fetchone()
        return int(row[0])

    def record(self, key: Key) -> Record | None:
        row = self._db.execute(
            f"SELECT {_RECORD_COLUMNS} FROM results r WHERE r.digest = ? AND r.tool_version = ? "
            "AND r.pack_version = ?",
            (key.digest, key.tool_version, key.pack_version),
        ).fetchone()
        return None if row is None else _record(row, self.path)

    def report(self, key: Key) -> dict[str, Any] | None:
        """The stored JSON report of a `done` result."""
        row = self._db.execute(
            "SELECT report FROM results WHERE digest = ? AND tool_version = ? "
            "AND pack_version = ? AND state = 'done'",
            (key.digest, key.tool_version, key.pack_version),
        ).fetchone()
        if row is None or row[0] is None:
            return None
        data: dict[str, Any] = _json(self.path, f"the report of image {key.digest}", row[0])
        return data

    def records(self) -> list[Record]:
        """Every stored result, newest first."""
        rows = self._db.execute(
            f"SELECT {_RECORD_COLUMNS} FROM results r "
            "ORDER BY COALESCE(r.finished_at, r.claimed_at) DESC, r.digest"
        ).fetchall()
        return [_record(row, self.path) for row in rows]

    def forget_images(self, paths: Sequence[str]) -> None:
        """Forget that a batch saw images at `paths` (their results stay: keyed by content,
        they serve any copy of it a later batch finds)."""
        with self._transaction() as db:
            db.executemany("DELETE FROM images WHERE path = ?", [(path,) for path in paths])

    def images(self) -> list[tuple[str, str]]:
        """Every image path a batch has seen, with its digest then, sorted by path."""
        rows = self._db.execute("SELECT path, digest FROM images ORDER BY path").fetchall()
        return [(str(path), str(digest)) for path, digest in rows]

    def find(self, what: str, tool_version: str, pack_version: str) -> Record | None:
        """The result for an image path (as a batch saw it) or a digest (full, or a prefix of
        at least 12 hex digits after `sha256:`/`sha256set:` or alone): the one with the given
        versions when there is one, else the latest finished. None when nothing matches;
        StoreError when a digest prefix is ambiguous."""
        digests = self._digests_for(what)
        if not digests:
            return None
        if len(digests) > 1:
            raise StoreError(f"{what!r} matches {len(digests)} images; give more of the digest")
        digest = digests[0]
        current = self.record(Key(digest, tool_version, pack_version))
        if current is not None:
            return current
        row = self._db.execute(
            f"SELECT {_RECORD_COLUMNS} FROM results r WHERE r.digest = ? "
            "ORDER BY (r.state = 'done') DESC, COALESCE(r.finished_at, r.claimed_at) DESC "
            "LIMIT 1",
            (digest,),
        ).fetchone()
        return None if row is None else _record(row, self.path)

    def _digests_for(self, what: str) -> list[str]:
        as_path = str(Path(what).absolute())
        for candidate in (as_path, str(Path(what).resolve())):
            row = self._db.execute(
                "SELECT digest FROM images WHERE path = ?", (candidate,)
            ).fetchone()
            if row is not None:
                return [str(row[0])]
        bare = what.split(":", 1)[1] if ":" in what else what
        if len(bare) < 12 or any(c not in "0123456789abcdef" for c in bare.lower()):
            return []
        patterns = [what + "%"] if ":" in what else [f"sha256:{bare}%", f"sha256set:{bare}%"]
        found: list[str] = []
        for pattern in patterns:
            rows = self._db.execute(
                "SELECT DISTINCT digest FROM results WHERE digest LIKE ?", (pattern.lower(),)
            ).fetchall()
            found.extend(str(r[0]) for r in rows if str(r[0]) not in found)
        return found


def _json(store: Path, what: str, text: str) -> Any:
    """`text`, a JSON column of the store, parsed; a crafted or corrupt one (bad JSON, or
    nesting deep enough to exhaust the parser's recursion) is a `StoreError` naming the store."""
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:
        reason = "nested too deep" if isinstance(exc, RecursionError) else "not valid JSON"
        raise StoreError(f"{store}: corrupt results store: {what} is {reason}") from None


def _record(row: tuple[Any, ...], store: Path) -> Record:
    (
        digest,
        tool_version,
        pack_version,
        state,
        image_path,
        fmt,
        complete,
        critical,
        high,
        medium,
        low,
        info,
        exposures,
        files,
        size,
        seconds,
        error,
        scans,
        worker,
        finished_at,
    ) = row
    counts = dict(zip(Severity, (critical, high, medium, low, info), strict=True))
    return Record(
        key=Key(digest, tool_version, pack_version),
        state=state,
        image_path=image_path,
        format=fmt,
        complete=None if complete is None or state != "done" else bool(complete),
        counts={s: int(n) for s, n in counts.items()},
        exposures=tuple(_json(store, f"the exposures of image {digest}", exposures or "[]")),
        files=int(files),
        bytes=int(size),
        seconds=float(seconds),
        error=error,
        scans=int(scans),
        worker=worker,
        finished_at=finished_at,
    )
