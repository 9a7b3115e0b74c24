"""Command line: options -> scan -> render -> exit code.

The only module that prints to the terminal or decides the process exit status. Exit codes:
  0  no finding fails the gate (--fail-on, --policy), and the whole image was read
  1  findings fail the gate, and the whole image was read
  2  error, or coverage incomplete (a volume or file could not be read): fail closed
130  interrupted (SIGINT or SIGTERM): the report, if the scan had begun, is partial and says so
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import stat
import sys
import tempfile
import threading
import traceback
from collections.abc import Callable, Container, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, replace
from pathlib import Path
from types import FrameType
from typing import Any

from imgscan import build
from imgscan.detect.rules import load_pack, load_packs
from imgscan.errors import ImgscanError
from imgscan.image import ReaderKind
from imgscan.model import GateAction, ScanResult, Severity, Verdict
from imgscan.options import (
    DEFAULT_FILE_TIMEOUT,
    DEFAULT_MAX_FILE_SIZE,
    ScanOptions,
    default_signatures_dir,
    parse_severity,
)
from imgscan.policy import Policy, check_rule_ids, judge, load_policy
from imgscan.report.html import render_html
from imgscan.report.interface import printable
from imgscan.report.json import render_json
from imgscan.report.markdown import render_markdown
from imgscan.report.sarif import render_sarif
from imgscan.report.table import render_table
from imgscan.suppress import IgnoreEntry, check_ignore_rule_ids

EXIT_CLEAN, EXIT_FINDINGS, EXIT_ERROR, EXIT_INTERRUPTED = 0, 1, 2, 130

_EPILOG = """\
exit codes:
  0    no finding fails the gate (--fail-on, --policy), and every volume and file was read
  1    findings fail the gate
  2    error (--timeout included), or coverage incomplete (something could not be read):
       the gate fails closed
  130  interrupted (SIGINT or SIGTERM); the report written is partial and says so

examples:
  imgscan scan disk.qcow2                      table of findings, secrets redacted
  imgscan scan disk.vmdk --format json -o report.json
  imgscan scan disk.raw --reader guestfs       libguestfs only (real kernel; slower)
  imgscan scan disk.qcow2 --fail-on high       gate: exit 1 only for high and critical
  imgscan baseline disk.qcow2 -o accepted.json accept today's findings ...
  imgscan scan disk.qcow2 --baseline accepted.json   ... and report only new ones
  imgscan scan disk.qcow2 --ignore imgscan-ignore.toml   accept by rule, path or fingerprint
  imgscan scan disk.qcow2 --policy gate.toml   gate by policy rules, then a threshold
  imgscan scan disk.qcow2 --timeout 600        stop after 10 min: one-line error, exit 2

gate policy (--policy FILE, TOML; the first [[rule]] that matches a finding decides it):
  fail_on = "high"          # for findings no rule decides; --fail-on overrides it
  [[rule]]
  action = "fail"           # or "allow"
  exposure = "identity"     # and/or severity, category, rule, path (a glob); lists allowed
  reason = "a copy must never carry this host's identity"
"""


def _size(text: str) -> int:
    units = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
    value = text.strip().lower().removesuffix("b").removesuffix("i")
    suffix = value[-1:] if value[-1:].isalpha() else ""
    number = value[: len(value) - len(suffix)]
    try:
        result = int(float(number) * units[suffix])
    except (ValueError, KeyError):
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (try 100M or 2G)") from None
    if result <= 0:
        raise argparse.ArgumentTypeError("size must be positive")
    return result


def _severity(text: str) -> Severity:
    try:
        return parse_severity(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _seconds(text: str) -> float:
    """A positive number of seconds (argparse type)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds: {text!r}")
    return value


def _jobs(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError("jobs must be 0 (one per core) or more")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="imgscan",
        description="Scan offline VM disk images (qcow2, vmdk, VHD, VHDX, VDI, raw, OVA) for "
        "secrets and report what a copy of the image would leak. Images are only ever read.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=_EPILOG,
    )
    parser.add_argument(
        "--version",
        action="version",
        version=str(build.current()),
        help="show the release, the code digest and the rule pack digest, and exit",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    scan = commands.add_parser(
        "scan",
        help="scan one disk image",
        description="Scan one disk image read-only and report the secrets on it.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=_EPILOG,
    )
    _add_image_options(scan)
    _add_report_options(scan)
    scan.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="no progress bar and no summary line on stderr (errors and warnings still shown)",
    )
    scan.add_argument(
        "--fail-on",
        type=_severity,
        default=None,  # None: not given, so a policy's fail_on (or low) applies
        metavar="SEVERITY",
        help="lowest severity that makes the exit code 1: critical, high, "
        "medium, low (default) or info; overrides a --policy file's fail_on",
    )
    scan.add_argument(
        "--show-secrets",
        action="store_true",
        help="include raw secret values in the report (off by default)",
    )
    scan.add_argument(
        "--baseline",
        type=Path,
        metavar="FILE",
        help="accept the findings listed in FILE (made by `imgscan baseline`): they are "
        "reported as suppressed and do not fail the gate",
    )
    scan.add_argument(
        "--ignore",
        type=Path,
        action="append",
        default=[],
        metavar="FILE",
        help="accept findings matching the [[ignore]] entries of FILE (rule, path glob or "
        "fingerprint, a reason, an optional expiry date); repeatable",
    )
    scan.add_argument(
        "--policy",
        type=Path,
        metavar="FILE",
        help="gate policy (TOML): [[rule]] tables with an action (fail or allow), a reason "
        "and matchers (severity, category, rule, path glob, exposure kind; all given must "
        "match); the first rule that matches a finding decides it, the rest fail at or above "
        'fail_on. E.g. action = "fail", exposure = "identity" fails on SSH host keys even '
        "under --fail-on critical (full example below)",
    )
    baseline = commands.add_parser(
        "baseline",
        help="record an image's current findings as accepted",
        description="Scan one disk image and write its findings' fingerprints to a baseline "
        "file; `imgscan scan IMAGE --baseline FILE` then reports only new findings. The file "
        "holds fingerprints, rules and paths, never a secret. Coverage must be complete "
        "(or --allow-incomplete given): a baseline of a half-read image accepts too little.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_image_options(baseline)
    baseline.add_argument(
        "-o", "--output", type=Path, metavar="FILE", required=True, help="baseline file to write"
    )
    render = commands.add_parser(
        "render",
        help="write a saved JSON report in other formats, without scanning",
        description="Read a JSON report written by `imgscan scan -f json` and write it in the "
        "formats given, as the scan would have. Nothing is scanned; the gate verdict is the "
        "one the report holds. Exit code 0 once every report is written.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    render.add_argument("report", type=Path, metavar="REPORT.json", help="a saved JSON report")
    _add_report_options(render)
    render.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    schema = commands.add_parser(
        "schema",
        help="print the JSON Schema of the JSON report or of the batch summary",
        description="Print the JSON Schema (draft 2020-12) that `scan -f json` reports "
        "(report: imgscan.report/v1) or `batch --summary-format json` summaries (summary: "
        "imgscan.batch-summary/v1) follow. Fields may be added; none is renamed or removed.",
    )
    schema.add_argument("name", choices=["report", "summary"], help="which schema")
    schema.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    completion = commands.add_parser(
        "completion",
        help="print a shell completion script",
        description="Print a completion script for SHELL, generated from imgscan's own options. "
        "bash: `source <(imgscan completion bash)` in ~/.bashrc (or save it under "
        "/etc/bash_completion.d/imgscan); zsh: save it as _imgscan in a directory on $fpath.",
    )
    completion.add_argument("shell", choices=["bash", "zsh", "tcsh"], help="the shell")
    completion.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    _add_batch_parsers(commands)
    return parser


def _formats(text: str) -> tuple[str, ...]:
    """`json,sarif,markdown`: the report formats asked for, each once, in order."""
    names = tuple(dict.fromkeys(name.strip() for name in text.split(",")))
    unknown = [name for name in names if name not in _EXTENSIONS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown format {', '.join(unknown) or repr(text)}; choose from "
            f"{', '.join(_EXTENSIONS)} (several separated by commas, with --output-dir)"
        )
    return names


def _add_report_options(command: argparse.ArgumentParser) -> None:
    """-f/--format, -o/--output and --output-dir: which reports to write, and where."""
    command.add_argument(
        "-f",
        "--format",
        type=_formats,
        default=("table",),
        metavar="FORMAT[,FORMAT...]",
        help="report format: table (default), json, sarif, markdown or html; several, "
        "separated by commas, with --output-dir. sarif: SARIF 2.1.0 for code hosts and "
        "pipelines; markdown: a short summary for a merge-request or registry comment (never "
        "shows values); html: one self-contained page for incident triage (no external "
        "assets, filterable findings)",
    )
    command.add_argument(
        "-o",
        "--output",
        type=Path,
        metavar="FILE",
        help="write the report to FILE instead of stdout (`-` is stdout); checked before the "
        "scan starts. A report is written even when the scan fails (exit code 2): it gives "
        "the error and says coverage is incomplete",
    )
    command.add_argument(
        "--output-dir",
        type=Path,
        metavar="DIR",
        help="write one report per format into DIR (made if missing), named after the image "
        "file: disk.qcow2 gives DIR/disk.qcow2.json, DIR/disk.qcow2.sarif, ...",
    )


def _add_image_options(command: argparse.ArgumentParser) -> None:
    """Options that say how to open and read an image (shared by scan and baseline)."""
    command.add_argument("image", type=Path, metavar="IMAGE", help="disk image file")
    command.add_argument(
        "--reader",
        type=ReaderKind,
        choices=list(ReaderKind),
        default=ReaderKind.AUTO,
        metavar="{auto,native,guestfs}",
        help="auto (default): the native reader for every volume it can read, libguestfs for "
        "the rest; native: in-process, fast, no VM; guestfs: libguestfs appliance (real "
        "kernel), retried under TCG when KVM fails",
    )
    command.add_argument(
        "-j", "--jobs", type=_jobs, default=0, help="worker processes (default: one per core)"
    )
    command.add_argument(
        "--max-file-size",
        type=_size,
        default=DEFAULT_MAX_FILE_SIZE,
        metavar="SIZE",
        help="skip (and report) files larger than SIZE (default: 1G)",
    )
    command.add_argument(
        "--timeout",
        type=_seconds,
        default=0.0,
        metavar="SECONDS",
        help="stop a scan that takes longer than SECONDS: one-line error, exit 2, and the "
        "reports asked for say the scan failed (as `batch --timeout` does for each image; "
        "default: no limit)",
    )
    command.add_argument(
        "--file-timeout",
        type=_seconds,
        default=DEFAULT_FILE_TIMEOUT,
        metavar="SECONDS",
        help="list a file that takes longer to scan as skipped (coverage incomplete; "
        f"default: {DEFAULT_FILE_TIMEOUT:g})",
    )
    command.add_argument(
        "--exclude",
        action="append",
        default=[],
        metavar="GLOB",
        help="do not scan files whose guest path matches GLOB (the ignore-file glob syntax: "
        "'/var/lib/docker/**', '**/*.iso'); repeatable. Excluded files are listed per glob "
        "in the report as excluded by you, and do not make coverage incomplete",
    )
    command.add_argument(
        "--image-digest",
        action="store_true",
        help="record the image's SHA-256 in the report (image.sha256; `sha256:` as sha256sum "
        "prints it, `sha256set:` over a split vmdk's parts): evidence of what was scanned, at "
        "the cost of reading the whole file once more",
    )
    command.add_argument(
        "--allow-external-files",
        action="store_true",
        help="allow a qcow2 backing file or vmdk extents in other files "
        "(refused by default: a hostile image could name host files)",
    )
    command.add_argument(
        "--key-file",
        type=Path,
        action="append",
        default=[],
        metavar="FILE",
        help="a LUKS passphrase in FILE (a trailing newline is also tried without); repeatable",
    )
    command.add_argument(
        "--passphrase-env",
        action="append",
        default=[],
        metavar="VAR",
        help="a LUKS passphrase in environment variable VAR; repeatable. imgscan never prompts",
    )
    command.add_argument(
        "--allow-incomplete",
        action="store_true",
        help="do not turn incomplete coverage into exit code 2",
    )
    command.add_argument(
        "--signatures",
        type=Path,
        metavar="DIR",
        help="rule pack directory that replaces the built-in pack (default: the pack inside "
        "the package, imgscan/signatures/)",
    )
    command.add_argument(
        "--rules",
        type=Path,
        action="append",
        default=[],
        metavar="DIR",
        help="add the rules in DIR to the pack (laid out as imgscan/signatures/ is: "
        "patterns/*.toml, yara/*.yar, files.toml; checked as the pack is, examples included); "
        "repeatable. A rule id already in the pack is an error",
    )
    _add_terminal_options(command)


def _add_terminal_options(command: argparse.ArgumentParser) -> None:
    """--no-progress, --verbose and --debug: what a long-running command says on stderr."""
    command.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress bar (it is shown only when stderr is a terminal)",
    )
    command.add_argument(
        "-v", "--verbose", action="store_true", help="say what is happening on stderr"
    )
    command.add_argument(
        "--debug", action="store_true", help="show tracebacks of errors and debug messages"
    )


def exit_code(
    result: ScanResult, fail_on: Severity = Severity.LOW, allow_incomplete: bool = False
) -> int:
    """The gate's exit code. Incomplete coverage wins over findings: fail closed.

    The findings that fail are those `result.gate` lists when the result was judged (the CLI
    judges it against the policy and the effective threshold before rendering); a result not
    judged is judged here by the threshold `fail_on` alone. An interrupted scan is 130 whatever
    it found: neither a verdict nor an error, and `--allow-incomplete` does not change that.
    """
    if result.interrupted:
        return EXIT_INTERRUPTED
    if not result.complete and not allow_incomplete:
        return EXIT_ERROR
    gate = result.gate if result.gate is not None else judge(Policy(fail_on=fail_on), result)
    return EXIT_FINDINGS if gate.failing else EXIT_CLEAN


def _summary(result: ScanResult, interrupted_by: str | None = None) -> str:
    """The one-line summary for stderr; `interrupted_by` names the signal that stopped an
    interrupted scan."""
    detail = ", ".join(f"{n} {s.value}" for s, n in result.severity_counts().items() if n)
    scanned = len(result.volumes) - result.unread_volumes
    unread = f"{result.unread_volumes} volume(s) not read, {len(result.skipped)} file(s) skipped"
    if result.interrupted:
        coverage = f"INTERRUPTED by {interrupted_by or 'a signal'}: partial report ({unread})"
    elif result.complete:
        coverage = "coverage complete"
    else:
        coverage = f"COVERAGE INCOMPLETE ({unread})"
    excluded = sum(e.files for e in result.excluded)
    if excluded:
        coverage += f"; {excluded} file(s) excluded by --exclude"
    if result.image.in_use is not None:
        coverage += "; IMAGE IN USE (a running VM may have it mid-change)"
    return (
        f"imgscan: {len(result.findings)} finding(s)"
        + (f" ({detail})" if detail else "")
        + (f", {len(result.suppressed)} suppressed" if result.suppressed else "")
        + f" in {result.stats.files} files, {result.stats.bytes / 1e6:.1f} MB, "
        f"{scanned}/{len(result.volumes)} volume(s), {result.stats.seconds:.1f} s; {coverage}"
        + (_gate_summary(result.gate) if result.gate is not None else "")
    )


def _gate_summary(gate: Verdict) -> str:
    """`; N fail the gate (...)`: the threshold, and each policy rule that decided findings,
    by number and the start of its reason."""
    parts = [f"fail-on {gate.fail_on.value}"]
    decided: dict[int, tuple[GateAction, str, int]] = {}
    for d in gate.decisions:
        action, reason, count = decided.get(d.rule, (d.action, d.reason, 0))
        decided[d.rule] = (action, reason, count + 1)
    for number, (action, reason, count) in sorted(decided.items()):
        brief = reason if len(reason) <= 40 else reason[:39].rstrip() + "…"
        verb = "failed" if action is GateAction.FAIL else "allowed"
        parts.append(f'policy rule {number} {verb} {count}: "{brief}"')
    return f"; {len(gate.failing)} fail the gate ({'; '.join(parts)})"


ReportTarget = tuple[str, Path | None]  # a format, and the file it goes to (None: stdout)


def _report_targets(args: argparse.Namespace, image: Path) -> list[ReportTarget]:
    """Where each requested report goes, checked before anything is read: a scan must not run
    for minutes and then fail on a directory that does not exist. Raises ImgscanError."""
    formats: tuple[str, ...] = args.format
    output: Path | None = None if args.output is None or str(args.output) == "-" else args.output
    if args.output is not None and args.output_dir is not None:
        raise ImgscanError("give either -o/--output or --output-dir, not both")
    if args.output_dir is not None:
        folder: Path = args.output_dir
        if not folder.is_dir():
            if not folder.parent.is_dir():
                raise ImgscanError(f"--output-dir {folder}: its parent directory does not exist")
            try:
                folder.mkdir()
            except OSError as exc:
                why = exc.strerror
                raise ImgscanError(f"--output-dir {folder}: cannot create: {why}") from None
        if not os.access(folder, os.W_OK | os.X_OK):
            raise ImgscanError(f"--output-dir {folder}: not writable")
        return [(name, folder / f"{image.name}.{_EXTENSIONS[name]}") for name in formats]
    if len(formats) > 1:
        raise ImgscanError(
            f"{len(formats)} formats need --output-dir DIR (one file per format); "
            "-o and stdout take one"
        )
    if output is not None:
        if output.is_dir():
            raise ImgscanError(f"-o {output}: is a directory")
        parent = output.parent
        if not parent.is_dir():
            raise ImgscanError(f"-o {output}: directory {parent} does not exist")
        if not output.exists() and not os.access(parent, os.W_OK | os.X_OK):
            raise ImgscanError(f"-o {output}: directory {parent} is not writable")
    return [(formats[0], output)]


def _failed_result(image: Path, reader: str, error: str) -> ScanResult:
    """The result of a scan that could not be done: only the error, coverage incomplete."""
    from imgscan.model import ImageInfo, ReaderInfo, Stats

    return ScanResult(
        image=ImageInfo(str(image), "unknown", 0),
        reader=ReaderInfo(reader),
        volumes=(),
        skipped=(),
        findings=(),
        stats=Stats(files=0, bytes=0, seconds=0.0),
        error=error,
    )


def _write_failed_reports(targets: list[ReportTarget], result: ScanResult) -> None:
    """Write the report of a failed scan to every target but a table on stdout (a person at a
    terminal, who has the error line on stderr); a target that cannot be written is said on
    stderr, and the original error stays the one that decides the exit code."""
    for name, path in targets:
        if name == "table" and path is None:
            continue
        try:
            _write(path, _renderer(name)(result), f"{name} report")
        except ImgscanError as exc:
            print(f"imgscan: error: {printable(str(exc))}", file=sys.stderr)


def _renderer(name: str) -> Callable[[ScanResult], str]:
    if name == "json":
        return render_json
    if name == "markdown":
        return render_markdown
    if name == "sarif":
        return render_sarif
    if name == "html":
        return render_html
    return render_table


def _progress(enabled: bool) -> tuple[Any, Any]:
    if not enabled or not sys.stderr.isatty():
        return None, None
    from tqdm import tqdm

    bar = tqdm(
        total=None,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        desc="scanning",
        file=sys.stderr,
        dynamic_ncols=True,
        leave=False,
    )
    counter = {"files": 0}

    def update(outcome: Any) -> None:
        counter["files"] += 1
        bar.update(outcome.bytes)
        bar.set_postfix(files=counter["files"], refresh=False)

    return bar, update


def _luks_keys(args: argparse.Namespace) -> tuple[str, ...]:
    """Passphrases from --key-file and --passphrase-env, in the order given."""
    keys: list[str] = []
    for path in args.key_file:
        try:
            text = path.read_bytes().decode("utf-8", "surrogateescape")
        except OSError as exc:
            raise ImgscanError(f"{path}: cannot read key file: {exc.strerror}") from None
        keys.append(text)
        if text.endswith("\n"):
            keys.append(text[:-1])
    for name in args.passphrase_env:
        value = os.environ.get(name)
        if value is None:
            raise ImgscanError(f"--passphrase-env {name}: the variable is not set")
        keys.append(value)
    return tuple(dict.fromkeys(keys))


def _scan(args: argparse.Namespace) -> ScanResult:
    """Scan the image the arguments name, with a progress bar on a terminal."""
    from imgscan.scan.scanner import scan_image

    options = ScanOptions(
        image=args.image,
        reader=args.reader,
        jobs=args.jobs,
        max_file_size=args.max_file_size,
        file_timeout=args.file_timeout,
        show_secrets=getattr(args, "show_secrets", False),
        allow_external_files=args.allow_external_files,
        signatures=args.signatures,
        rules=tuple(args.rules),
        progress=not args.no_progress and not getattr(args, "quiet", False),
        luks_keys=_luks_keys(args),
        exclude=tuple(args.exclude),
    )
    bar, update = _progress(options.progress)
    try:
        result = scan_image(options, update)
    finally:
        if bar is not None:
            bar.close()
    if getattr(args, "image_digest", False):
        result = replace(result, image=replace(result.image, sha256=_image_sha256(args.image)))
    return result


def _image_sha256(image: Path) -> str:
    """The image's content digest as the batch store defines it (imgscan/batch/digest.py):
    the file's SHA-256, or over the parts of a vmdk with extent files."""
    from imgscan.batch.digest import FileIdentity, image_digest
    from imgscan.batch.discover import ImageFile, vmdk_extents

    class _NoCache:
        def cached_sha256(self, identity: FileIdentity) -> str | None:
            return None

        def remember_sha256(self, identity: FileIdentity, sha256: str) -> None:
            pass

    target = image.absolute()
    try:
        digest, _ = image_digest(ImageFile(target, (target, *vmdk_extents(target))), _NoCache())
    except OSError as exc:
        raise ImgscanError(f"{image}: cannot read for --image-digest: {exc.strerror}") from None
    return digest


def _write(path: Path | None, text: str, what: str) -> None:
    """`text` to `path`, or to stdout when there is none."""
    if path is None:
        try:
            sys.stdout.write(text)
            sys.stdout.flush()
        except BrokenPipeError:
            # The reader went away (`imgscan ... | head`, or killed with us by a Ctrl-C). Point
            # stdout at /dev/null so that the flush at exit does not complain a second time.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)
            raise ImgscanError(f"stdout: cannot write {what}: the pipe is closed") from None
        return
    try:
        _write_atomically(path, text.encode("utf-8"))
    except OSError as exc:
        raise ImgscanError(f"{path}: cannot write {what}: {exc.strerror}") from None


def _write_atomically(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that the file is either the old one or the whole new one,
    never a half-written report: a temporary file in the same directory, then os.replace.

    A path that exists and is not a regular file (/dev/stdout, /dev/null, a FIFO) is written
    in place: replacing it would put a regular file where the device or pipe was. A symlink
    is followed, so the file it points at is the one replaced, as a plain write would.
    The new file gets the old file's permission bits, or those the umask gives a new file.
    """
    target = Path(os.path.realpath(path))
    try:
        st = target.stat()
    except FileNotFoundError:
        st = None
    if st is not None and not stat.S_ISREG(st.st_mode):
        with target.open("wb") as fh:
            fh.write(data)
        return
    if st is not None:
        mode = stat.S_IMODE(st.st_mode)
    else:
        umask = os.umask(0)
        os.umask(umask)
        mode = 0o666 & ~umask
    fd, temporary = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(temporary, mode)
        os.replace(temporary, target)
    except BaseException:
        with suppress(OSError):
            os.unlink(temporary)
        raise


def _refuse_output_over_input(output: Path | None, inputs: Sequence[Path], what: str) -> None:
    """Raise ImgscanError when `output` is one of `inputs` (the same file, by device and inode:
    a hard link, a symlink or another spelling of the path counts), before anything is read:
    writing the report would destroy the image, the baseline or the policy it came from."""
    if output is None:
        return
    try:
        written = os.stat(output)
    except OSError:
        return  # it does not exist yet (or cannot be looked at): not an input
    if not stat.S_ISREG(written.st_mode):
        return  # /dev/stdout, /dev/null, a pipe: no input is lost by writing there
    for source in inputs:
        try:
            same = os.path.samefile(output, source)
        except OSError:
            continue
        if same:
            raise ImgscanError(
                f"{output}: the {what} would overwrite an input ({source}); choose another -o"
            )


def _policy(args: argparse.Namespace, ignore: Sequence[IgnoreEntry] = ()) -> Policy:
    """The gate policy: `--policy FILE` or none, with `--fail-on`, when given, overriding the
    file's fail_on. The rule ids that the policy's rules and the ignore entries name are
    checked against the rule pack: an id that names no rule (a typo, a renamed rule) would
    silently match nothing."""
    policy = load_policy(args.policy) if args.policy else Policy()
    if any(rule.rule for rule in policy.rules) or any(entry.rule for entry in ignore):
        pack = load_packs(args.signatures or default_signatures_dir(), getattr(args, "rules", []))
        check_rule_ids(policy, pack)
        check_ignore_rule_ids(ignore, pack)
    return policy if args.fail_on is None else replace(policy, fail_on=args.fail_on)


class _Interrupts:
    """SIGINT and SIGTERM while a command runs: the first one raises KeyboardInterrupt in the
    main thread (SIGTERM is treated like a Ctrl-C, so a supervisor's stop also gets a partial
    report and exit code 130); later ones are ignored, so that stopping the workers and the
    libguestfs appliance and writing the partial report are not cut short. That clean-up is
    bounded (pool.py and guestfs.py give every wait a timeout); SIGKILL remains for the rest.

    After the scan, suppression, the policy, the exposures and rendering still stop at a first
    signal (they are pure Python work on the result, and a hostile image chooses its size); only
    once the report's text is in hand (`deferred`) does a first signal raise nothing: the report
    is written whole, never cut off halfway through a file, and the exit code is then 130.
    """

    def __init__(self) -> None:
        self.received: str | None = None  # the name of the first signal, once one arrived
        self.deferred = False
        self.timed_out: str | None = None  # the error of a --timeout that expired

    def handle(self, signum: int, frame: FrameType | None) -> None:
        if self.received is not None:
            return  # already stopping
        self.received = signal.Signals(signum).name
        if not self.deferred:
            raise KeyboardInterrupt

    @contextmanager
    def installed(self) -> Iterator[_Interrupts]:
        """Handle both signals for the duration of the block; restore the previous handlers
        after it. A signal that was ignored when imgscan started (nohup, a background job of a
        non-interactive shell) stays ignored; off the main thread nothing is installed (Python
        delivers signals to the main thread only)."""
        previous: dict[int, Any] = {}
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                handler = signal.getsignal(signum)
                if handler == signal.SIG_IGN:
                    continue
                previous[signum] = handler if handler is not None else signal.SIG_DFL
                signal.signal(signum, self.handle)
        try:
            yield self
        finally:
            for restored, handler in previous.items():
                signal.signal(restored, handler)


class _Deadline:
    """`--timeout`: once `seconds` have passed, the command is stopped as a SIGTERM would stop
    it (workers and appliance shut down in order), and ends with the one-line error instead of
    a partial report. Where the main thread does not come back from a C call (a reader stuck
    in a library or in the appliance), after a further grace period the error is written, every
    process imgscan started is killed and waited for, and the process exits 2 at once."""

    GRACE = 15.0

    def __init__(self, seconds: float, image: Path, interrupts: _Interrupts) -> None:
        self.seconds = seconds
        self.message = f"{image}: the scan did not finish within {seconds:g} s (--timeout); stopped"
        self.interrupts = interrupts
        self._timers: list[threading.Timer] = []

    def _start(self, seconds: float, action: Callable[[], None]) -> None:
        timer = threading.Timer(seconds, action)
        timer.daemon = True
        self._timers.append(timer)
        timer.start()

    def _expire(self) -> None:
        self.interrupts.timed_out = self.message
        self._start(self.GRACE, self._force)
        os.kill(os.getpid(), signal.SIGTERM)

    def _force(self) -> None:
        with suppress(OSError):
            os.write(2, f"imgscan: error: {printable(self.message)}\n".encode())
        for pid in _descendants():
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for pid in _child_pids():
            with suppress(ChildProcessError):
                os.waitpid(pid, 0)
        os._exit(EXIT_ERROR)

    def __enter__(self) -> _Deadline:
        if self.seconds > 0:
            self._start(self.seconds, self._expire)
        return self

    def __exit__(self, *exc: object) -> None:
        for timer in self._timers:
            timer.cancel()


def _run_scan(args: argparse.Namespace, interrupts: _Interrupts) -> int:
    from imgscan.scan.scanner import ScanInterrupted
    from imgscan.suppress import Baseline, apply_suppressions, load_baseline, load_ignore

    targets = _report_targets(args, args.image)
    inputs = _scan_inputs(args)
    for _, path in targets:
        _refuse_output_over_input(path, inputs, "report")
    interrupted_by: str | None = None
    try:
        # The acceptance and policy files first: a typo in one should not cost a whole scan.
        baseline = load_baseline(args.baseline) if args.baseline else Baseline()
        ignore = tuple(entry for path in args.ignore for entry in load_ignore(path))
        policy = _policy(args, ignore)
        scanned = _scan(args)
    except ImgscanError as exc:
        # Exit code 2 with a report all the same: a pipeline that uploads SARIF or parses
        # JSON reads "scan failed" instead of failing on a missing file.
        _write_failed_reports(targets, _failed_result(args.image, args.reader.value, str(exc)))
        raise
    except ScanInterrupted as stop:
        if interrupts.timed_out is not None:
            # --timeout: the error, not a partial report (what a timed-out scan found is
            # not a verdict), in every report asked for.
            failed = _failed_result(args.image, args.reader.value, interrupts.timed_out)
            _write_failed_reports(targets, failed)
            raise ImgscanError(interrupts.timed_out) from None
        # The workers and the appliance are stopped; what was found so far is still worth a
        # report, which says it is partial (coverage incomplete, `interrupted`).
        interrupted_by = interrupts.received or "SIGINT"
        warning = f"scan interrupted by {interrupted_by}: this report is partial"
        scanned = replace(stop.partial, warnings=(*stop.partial.warnings, warning))
    except KeyboardInterrupt:
        # (After ScanInterrupted, a KeyboardInterrupt that carries its partial result.)
        if interrupts.timed_out is None:
            raise
        # --timeout while the image was being opened: a failed scan, reported as one.
        failed = _failed_result(args.image, args.reader.value, interrupts.timed_out)
        _write_failed_reports(targets, failed)
        raise ImgscanError(interrupts.timed_out) from None
    try:
        result = apply_suppressions(scanned, baseline, ignore)
        result = replace(result, gate=judge(policy, result))
        reports = [(_renderer(name)(result), name, path) for name, path in targets]
    except KeyboardInterrupt:
        if interrupts.timed_out is not None:
            raise ImgscanError(interrupts.timed_out) from None
        # A signal after the scan, before the report was rendered: stop now (exit 130). No
        # report: one without the suppressions and the verdict would say too much.
        print(_unwritten(interrupts.received or "SIGINT", "report"), file=sys.stderr)
        return EXIT_INTERRUPTED
    interrupts.deferred = True
    for warning in result.warnings:
        print(f"imgscan: warning: {printable(warning)}", file=sys.stderr)
    try:
        for text, name, path in reports:
            _write(path, text, f"{name} report")
    except ImgscanError as exc:
        if interrupted_by is None:
            raise
        # Still an interruption: exit 130.
        print(f"imgscan: error: {printable(str(exc))}", file=sys.stderr)
    if not args.quiet or interrupted_by is not None:
        print(_summary(result, interrupted_by), file=sys.stderr)
    if interrupted_by is None and interrupts.received is not None:
        print(_late(interrupts.received), file=sys.stderr)
        return EXIT_INTERRUPTED
    return exit_code(result, policy.fail_on, args.allow_incomplete)


def _run_render(args: argparse.Namespace) -> int:
    """`imgscan render REPORT.json`: the saved report in the formats asked for."""
    from imgscan.batch.stored import result_from_report, verdict_from_report
    from imgscan.report.json import SCHEMA

    source: Path = args.report
    targets = _report_targets(args, Path(source.stem))
    for _, path in targets:
        _refuse_output_over_input(path, [source], "report")
    try:
        data = json.loads(source.read_bytes())
    except OSError as exc:
        raise ImgscanError(f"{source}: cannot read: {exc.strerror}") from None
    except (ValueError, RecursionError) as exc:
        raise ImgscanError(f"{source}: not a JSON report: {exc}") from None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise ImgscanError(f"{source}: not an imgscan report (schema {SCHEMA} expected)")
    try:
        pack = load_pack(default_signatures_dir())
        known = pack if data["tool"].get("rules") == pack.version else None
        result = result_from_report(data, known)
        result = replace(result, gate=verdict_from_report(data))
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ImgscanError(f"{source}: malformed report ({type(exc).__name__}: {exc})") from None
    for name, path in targets:
        _write(path, _renderer(name)(result), f"{name} report")
    return EXIT_CLEAN


def _scan_inputs(args: argparse.Namespace) -> list[Path]:
    """Every file a scan or baseline command reads: the image and the files its vmdk
    descriptor names beside it, and the baseline, ignore and policy files."""
    from imgscan.batch.discover import vmdk_extents

    inputs = [args.image, *vmdk_extents(args.image)]
    for name in ("baseline", "policy"):
        if getattr(args, name, None):
            inputs.append(getattr(args, name))
    inputs.extend(getattr(args, "ignore", None) or ())
    return inputs


def _late(signame: str) -> str:
    return f"imgscan: interrupted by {signame} once the scan had ended (what was written is whole)"


def _unwritten(signame: str, what: str) -> str:
    return (
        f"imgscan: interrupted by {signame} after the scan, before its {what} was ready: "
        f"no {what} written"
    )


def _run_baseline(args: argparse.Namespace, interrupts: _Interrupts) -> int:
    from imgscan.scan.scanner import ScanInterrupted
    from imgscan.suppress import render_baseline

    _refuse_output_over_input(args.output, _scan_inputs(args), "baseline")
    try:
        result = _scan(args)
    except ScanInterrupted as stop:
        if interrupts.timed_out is not None:
            raise ImgscanError(interrupts.timed_out) from None
        interrupted_by = interrupts.received or "SIGINT"
        print(_summary(stop.partial, interrupted_by), file=sys.stderr)
        print(
            f"imgscan: interrupted by {interrupted_by}: no baseline written (a baseline of a "
            "half-read image accepts too little)",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    try:
        baseline = render_baseline(result)
    except KeyboardInterrupt:
        if interrupts.timed_out is not None:
            raise ImgscanError(interrupts.timed_out) from None
        print(_unwritten(interrupts.received or "SIGINT", "baseline"), file=sys.stderr)
        return EXIT_INTERRUPTED
    interrupts.deferred = True
    for warning in result.warnings:
        print(f"imgscan: warning: {printable(warning)}", file=sys.stderr)
    print(_summary(result), file=sys.stderr)
    if not result.complete and not args.allow_incomplete:
        print(
            "imgscan: error: coverage incomplete: no baseline written (a baseline of a half-read "
            "image accepts too little; pass --allow-incomplete to write it anyway)",
            file=sys.stderr,
        )
        return EXIT_ERROR
    _write(args.output, baseline, "baseline")
    print(
        f"imgscan: baseline of {len(result.findings)} finding(s) written to {args.output}",
        file=sys.stderr,
    )
    if interrupts.received is not None:
        print(_late(interrupts.received), file=sys.stderr)
        return EXIT_INTERRUPTED
    return EXIT_CLEAN


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        format="imgscan: %(message)s",
        stream=sys.stderr,
        level=logging.DEBUG
        if args.debug
        else logging.INFO
        if getattr(args, "verbose", False)
        else logging.WARNING,
    )
    try:
        with _Interrupts().installed() as interrupts:
            return _run(parser, args, interrupts)
    finally:
        if argv is None:
            # The program itself (python -m imgscan, the imgscan script), not a caller in
            # process, whose own children are not ours to wait for.
            wait_for_children()


def wait_for_children(grace: float = 10.0) -> None:
    """Return only once every child process of imgscan has ended, so that none outlives it
    (reparented to PID 1 for a moment, or for good): multiprocessing's workers, reader
    process and resource tracker (which otherwise exits on its own a moment after us), the
    libguestfs appliance, batch children. Children get `grace` seconds in all; what still runs
    then is killed and waited for, so this always returns within about `grace` seconds.
    SIGINT and SIGTERM are blocked meanwhile: the command's result is decided, and a signal
    now must not leave the wait half done (nor print a traceback)."""
    import multiprocessing
    import time
    from multiprocessing import resource_tracker

    if threading.current_thread() is threading.main_thread():
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    deadline = time.monotonic() + grace
    # multiprocessing's own children first, through multiprocessing, so that its records of
    # them stay right (its exit handler joins them again).
    for child in multiprocessing.active_children():
        child.join(max(0.0, deadline - time.monotonic()))
        if child.is_alive():
            child.kill()
            child.join(1.0)
    # The resource tracker ends when every holder of its pipe has closed it: close ours (as
    # CPython's own shutdown does, but without its unbounded wait); it is then waited for
    # below with everything else.
    tracker = getattr(resource_tracker, "_resource_tracker", None)
    fd = getattr(tracker, "_fd", None)
    if tracker is not None and isinstance(fd, int):
        with suppress(OSError):
            os.close(fd)
        tracker._fd = None
        tracker._pid = None
    for pid in _child_pids():
        while True:
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                break  # not ours to wait for after all, or already waited for
            if done:
                break
            if time.monotonic() > deadline:
                with suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                with suppress(ChildProcessError):
                    os.waitpid(pid, 0)
                break
            time.sleep(0.02)


def _parents() -> dict[int, int]:
    """Every process's parent, from /proc (empty where there is none)."""
    parents: dict[int, int] = {}
    with suppress(OSError):
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                with open(f"/proc/{entry.name}/stat", "rb") as fh:
                    fields = fh.read().rsplit(b")", 1)[1].split()
            except OSError:
                continue
            parents[int(entry.name)] = int(fields[1])
    return parents


def _descendants() -> list[int]:
    """Every process below this one (children, theirs, ...), from /proc."""
    parents = _parents()
    found, frontier = [], [os.getpid()]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, ppid in parents.items() if ppid == parent]
        found += children
        frontier += children
    return found


def _child_pids() -> list[int]:
    """The processes whose parent is this one, from /proc (empty where there is none)."""
    me = os.getpid()
    return [pid for pid, parent in _parents().items() if parent == me]


def _run(parser: argparse.ArgumentParser, args: argparse.Namespace, interrupts: _Interrupts) -> int:
    """Run the command; turn every way it can end into one line on stderr and an exit code."""
    try:
        match args.command:
            case "scan":
                with _Deadline(args.timeout, args.image, interrupts):
                    return _run_scan(args, interrupts)
            case "baseline":
                with _Deadline(args.timeout, args.image, interrupts):
                    return _run_baseline(args, interrupts)
            case "batch":
                return _run_batch(args, interrupts)
            case "results":
                return _run_results(args)
            case "render":
                return _run_render(args)
            case "completion":
                import shtab

                # The internal batch-worker command has no help, so shtab leaves it out.
                _write(None, shtab.complete(build_parser(), args.shell), "completion script")
                return EXIT_CLEAN
            case "schema":
                from imgscan.report.schema import schema_text

                _write(None, schema_text(args.name), "schema")
                return EXIT_CLEAN
            case "batch-worker":
                return _run_batch_worker()
            case _:
                parser.error(f"unknown command {args.command}")
    except KeyboardInterrupt:
        if interrupts.timed_out is not None:  # --timeout, while the image was being opened
            print(f"imgscan: error: {printable(interrupts.timed_out)}", file=sys.stderr)
            return EXIT_ERROR
        # Before the scan began (reading the policy, the baseline, the ignore files); a scan
        # interrupted later is reported by the command itself, with its partial report.
        print(f"imgscan: interrupted by {interrupts.received or 'SIGINT'}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except ImgscanError as exc:
        if args.debug:
            traceback.print_exc()
        print(f"imgscan: error: {printable(str(exc))}", file=sys.stderr)
        return EXIT_ERROR
    except Exception as exc:  # a bug: still one line and exit 2 unless --debug
        if args.debug:
            traceback.print_exc()
        print(
            f"imgscan: internal error: {type(exc).__name__}: {printable(str(exc))} "
            "(run with --debug for details)",
            file=sys.stderr,
        )
        return EXIT_ERROR
    return EXIT_ERROR


# -- batch, results, batch-worker ----------------------------------------------------------

_BATCH_EPILOG = """\
exit codes (batch; `results summary` the same over the stored results):
  0    every image was read completely and no finding fails the gate
  1    findings at or above --fail-on in at least one image
  2    an image could not be opened or scanned completely (it is listed with its error; the
       batch goes on with the others): the gate fails closed, before findings
  130  interrupted (SIGINT or SIGTERM): images finished so far are in the store; run the same
       command again to scan only the rest

examples:
  imgscan batch /srv/images --out-dir reports/          every image under the directory
  imgscan batch '/srv/images/**/*.qcow2' @more.txt      a glob and a list file (one per line)
  imgscan batch /srv/images --summary-format csv -o summary.csv
  imgscan batch /srv/images --scheduler tcp://sched:8786   on a Dask cluster (docs/batch.md)
  imgscan results summary --fail-on high                gate on stored results, no rescan
  imgscan results show disk.qcow2 --format html -o disk.html
"""

_EXTENSIONS = {"table": "txt", "json": "json", "sarif": "sarif", "markdown": "md", "html": "html"}


def _add_gate_options(command: argparse.ArgumentParser, incomplete_help: str) -> None:
    """--fail-on and --allow-incomplete, as the batch and results commands take them."""
    command.add_argument(
        "--fail-on",
        type=_severity,
        default=None,  # None: not given, so a batch --policy's fail_on (or low) applies
        metavar="SEVERITY",
        help="lowest severity that makes the exit code 1 (default: low, or a --policy "
        "file's fail_on)",
    )
    command.add_argument("--allow-incomplete", action="store_true", help=incomplete_help)


def _add_db_option(command: argparse.ArgumentParser) -> None:
    from imgscan.batch.store import default_db_path

    command.add_argument(
        "--db",
        type=Path,
        default=None,
        metavar="FILE",
        help=f"results store, SQLite (default: {default_db_path()}, i.e. "
        "$XDG_DATA_HOME/imgscan/results.sqlite or ~/.local/share/imgscan/results.sqlite)",
    )


def _add_batch_parsers(commands: Any) -> None:
    """The `batch`, `results` and (hidden) `batch-worker` commands."""
    batch = commands.add_parser(
        "batch",
        help="scan many images (directories, globs, list files), resumably, optionally on Dask",
        description="Scan every image named, in parallel, keeping each result in a results "
        "store keyed by the image's content digest and the imgscan and rule-pack versions: a "
        "rerun scans only images it has no result for (new, changed, or not finished when a "
        "batch was stopped). Directories are walked for files named like disk images "
        "(.qcow2 .qcow .img .raw .vmdk .vhd .vhdx .vdi .ova); a file named explicitly is "
        "scanned whatever its name. Raw secret values are never captured in a batch.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=_BATCH_EPILOG,
    )
    batch.add_argument(
        "paths",
        nargs="*",
        metavar="PATH",
        help="image file, directory (walked recursively), glob ('**' recurses; quote it), "
        "or @FILE: a file listing images, one per line (# comments)",
    )
    batch.add_argument(
        "--from-file",
        type=Path,
        action="append",
        default=[],
        metavar="FILE",
        help="a file listing images, one per line (relative to the file); repeatable",
    )
    _add_db_option(batch)
    batch.add_argument(
        "--out-dir",
        type=Path,
        metavar="DIR",
        help="write one report per image to DIR, named after the image with the --format "
        "extension (disk.qcow2.json); a report of an image already in the store is written "
        "only when its file is missing",
    )
    batch.add_argument(
        "-f",
        "--format",
        choices=list(_EXTENSIONS),
        default="json",
        help="format of the per-image reports (default: json)",
    )
    batch.add_argument(
        "--summary-format",
        choices=["table", "json", "csv"],
        default="table",
        help="format of the summary of exposures per image (default: table)",
    )
    batch.add_argument(
        "-o", "--output", type=Path, metavar="FILE", help="write the summary to FILE, not stdout"
    )
    _add_gate_options(
        batch,
        "do not turn incomplete coverage into exit code 2 (an image that could not be opened "
        "still is)",
    )
    batch.add_argument(
        "--reader",
        type=ReaderKind,
        choices=list(ReaderKind),
        default=ReaderKind.AUTO,
        metavar="{auto,native,guestfs}",
        help="image reader, as for `scan` (default: auto)",
    )
    batch.add_argument(
        "-j",
        "--jobs",
        type=_jobs,
        default=0,
        help="worker processes on this host in all (default: one per core), shared between "
        "images scanned at once (half as many as jobs) and each image's workers; with "
        "--scheduler: worker processes per image on each Dask worker (default: one per core)",
    )
    batch.add_argument(
        "--images",
        type=_jobs,
        default=0,
        metavar="N",
        help="images scanned at once on this host (default: chosen from --jobs)",
    )
    batch.add_argument(
        "--max-file-size",
        type=_size,
        default=DEFAULT_MAX_FILE_SIZE,
        metavar="SIZE",
        help="skip (and report) files larger than SIZE (default: 1G)",
    )
    batch.add_argument(
        "--allow-external-files",
        action="store_true",
        help="allow qcow2 backing files and vmdk extents elsewhere (see `scan --help`); such "
        "files are not part of the content digest",
    )
    batch.add_argument(
        "--signatures", type=Path, metavar="DIR", help="rule pack directory (default: bundled)"
    )
    batch.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="run on the Dask cluster at ADDRESS (tcp://host:8786), one task per image; the "
        "workers must read the images at the same paths; results come back to this store",
    )
    batch.add_argument(
        "--retries",
        type=_jobs,
        default=2,
        metavar="N",
        help="scan an image again up to N times when its scan process dies (default: 2)",
    )
    batch.add_argument(
        "--timeout",
        type=_seconds,
        default=0.0,
        metavar="SECONDS",
        help="stop the scan of an image that takes longer than SECONDS and list it as an "
        "error (exit 2): one stuck image cannot hold the batch (default: no limit)",
    )
    batch.add_argument(
        "--policy",
        type=Path,
        metavar="FILE",
        help="judge every image by this gate policy (as `scan --policy`); stored results stay "
        "raw, the policy decides each image's gate, its report and the exit code",
    )
    batch.add_argument(
        "--ignore",
        type=Path,
        action="append",
        default=[],
        metavar="FILE",
        help="accept the findings matching the [[ignore]] entries of FILE in every image (as "
        "`scan --ignore`); repeatable",
    )
    batch.add_argument(
        "--baseline",
        type=Path,
        metavar="FILE",
        help="accept the findings a baseline file lists, in every image (as `scan --baseline`)",
    )
    batch.add_argument(
        "--rescan",
        action="store_true",
        help="scan every image again, even those with a stored result",
    )
    batch.add_argument(
        "-q", "--quiet", action="store_true", help="no progress bar and no closing line on stderr"
    )
    _add_terminal_options(batch)

    results = commands.add_parser(
        "results",
        help="query the results store without scanning",
        description="Read past batch results from the results store; nothing is scanned.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=_BATCH_EPILOG,
    )
    queries = results.add_subparsers(dest="query", metavar="QUERY", required=True)
    listing = queries.add_parser(
        "list",
        help="every stored result (all versions), newest first; exit 0",
        description="Every stored result, with its state (done, error, running: claimed by a "
        "batch that did not finish it), versions and counts. Exit code 0.",
    )
    listing.add_argument("--format", choices=["table", "json", "csv"], default="table")
    listing.add_argument("-o", "--output", type=Path, metavar="FILE", help="write to FILE")
    prune = queries.add_parser(
        "prune",
        help="forget images that are no longer where a batch saw them; exit 0",
        description="Forget every image path a batch saw that no longer exists, so that "
        "`results summary` stops listing (and failing on) deleted images. Results stay: they "
        "are keyed by content and serve any copy of it. Takes the store's writer lock.",
    )
    prune.add_argument("--dry-run", action="store_true", help="only list what would be forgotten")
    show = queries.add_parser(
        "show",
        help="one image's stored report; exit code as `scan` would give",
        description="Render the stored report of an image, named by its path (as a batch saw "
        "it) or its digest (or 12+ hex digits of it). The result for the current imgscan and "
        "rule pack is preferred, else the latest. Exit codes as for `scan`: 0, 1 (findings "
        "fail the gate), 2 (incomplete, an error, or no result).",
    )
    show.add_argument("target", metavar="IMAGE-or-DIGEST")
    show.add_argument("-f", "--format", choices=list(_EXTENSIONS), default="table")
    show.add_argument("-o", "--output", type=Path, metavar="FILE")
    summary = queries.add_parser(
        "summary",
        help="the summary of every image the store has seen; exit code as a gate",
        description="One row per image path a batch has seen, with its stored result "
        "(current versions preferred). Exit codes as for `batch`.",
    )
    summary.add_argument("--format", choices=["table", "json", "csv"], default="table")
    summary.add_argument("-o", "--output", type=Path, metavar="FILE")
    for query in (listing, prune, show, summary):
        _add_db_option(query)
        query.add_argument(
            "--signatures",
            type=Path,
            metavar="DIR",
            help="the rule pack whose version is current (default: bundled)",
        )
        query.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    for query in (show, summary):
        _add_gate_options(query, "do not turn incomplete coverage into exit code 2")
    # No help: not listed. A batch's child process: scans one image (ImageTask on stdin) and
    # prints its JSON envelope (imgscan/batch/runner.py).
    worker = commands.add_parser("batch-worker")
    worker.add_argument("--debug", action="store_true")


def _store_path(args: argparse.Namespace) -> Path:
    """The results store's path: `--db`, or the user's default."""
    from imgscan.batch.store import default_db_path

    path: Path = args.db if args.db is not None else default_db_path()
    return path


def _open_store(args: argparse.Namespace, must_exist: bool = False) -> Any:
    """The results store `--db` names (default: the user's); for a query, one that exists."""
    from imgscan.batch.store import Store

    path = _store_path(args)
    if must_exist and not path.is_file():
        raise ImgscanError(f"{path}: no results store here (`imgscan batch` makes one)")
    return Store(path)


def _report_names(paths: Sequence[str], extension: str) -> dict[str, str]:
    """Report file names: the image's file name plus the extension; names that two images of
    the batch share get a short hash of the image's path (stable from run to run)."""
    import hashlib
    from collections import Counter

    counts = Counter(Path(p).name for p in paths)
    names = {}
    for path in paths:
        name = Path(path).name
        if counts[name] > 1:
            name += "-" + hashlib.sha256(path.encode("utf-8", "surrogateescape")).hexdigest()[:8]
        names[path] = f"{name}.{extension}"
    return names


class _BatchBar:
    """The batch's one progress bar on stderr: images and bytes done, rate and ETA (by bytes),
    through the hashing phase and then the scanning phase."""

    def __init__(self) -> None:
        from tqdm import tqdm

        self._bar = tqdm(
            total=0,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            file=sys.stderr,
            dynamic_ncols=True,
            leave=False,
            delay=0.5,  # a rerun of an unchanged store is over before a bar is worth drawing
        )
        self._name, self._images, self._done = "", 0, 0

    def phase(self, name: str, images: int, size: int) -> None:
        self._name, self._images, self._done = name, images, 0
        self._bar.reset(total=size)
        self._bar.set_description(f"{name} 0/{images} images", refresh=True)

    def advance(self, images: int, size: int) -> None:
        if images:
            self._done += images
            self._bar.set_description(
                f"{self._name} {self._done}/{self._images} images", refresh=False
            )
        self._bar.update(size)

    def close(self) -> None:
        self._bar.close()


def _run_batch(args: argparse.Namespace, interrupts: _Interrupts) -> int:
    from imgscan.batch.discover import discover
    from imgscan.batch.runner import BatchSettings, ImageOutcome, run_batch
    from imgscan.batch.stored import result_from_report
    from imgscan.batch.summary import SummaryRow, render_summary

    if not args.paths and not args.from_file:
        raise ImgscanError("batch: name at least one PATH (or --from-file FILE)")
    pack = load_pack(args.signatures or default_signatures_dir())
    discovery = discover(list(args.paths), list(args.from_file))
    if not discovery.images and not discovery.problems:
        # A typo in a glob or an empty directory is not "every image passed".
        named = ", ".join(map(str, [*args.paths, *args.from_file]))
        raise ImgscanError(f"batch: no disk image found in {named}")
    images = [part for image in discovery.images for part in image.parts]
    accepted = [p for p in (args.policy, args.baseline, *args.ignore) if p is not None]
    _refuse_output_over_input(args.output, [*images, _store_path(args), *accepted], "summary")
    names = _report_names([str(i.path) for i in discovery.images], _EXTENSIONS[args.format])
    if args.out_dir is not None:
        try:
            args.out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ImgscanError(f"{args.out_dir}: cannot create: {exc.strerror}") from None
    gate = _batch_gate(args)
    settings = BatchSettings(
        reader=args.reader,
        jobs=args.jobs,
        parallel_images=args.images,
        max_file_size=args.max_file_size,
        allow_external_files=args.allow_external_files,
        signatures=args.signatures,
        retries=args.retries,
        timeout=args.timeout,
        scheduler=args.scheduler,
        rescan=args.rescan,
    )
    reports: dict[str, str] = {}
    failing: dict[str, int] = {}
    store = _open_store(args)

    def judged(data: dict[str, Any], key_pack: str, path: str) -> ScanResult:
        """A stored report as the gate sees it: suppressions applied, judged by the policy."""
        result = result_from_report(data, pack if key_pack == pack.version else None)
        result = replace(result, image=replace(result.image, path=path))
        return gate.judged(result)

    def write_report(outcome: ImageOutcome) -> None:
        """The image's report in --out-dir, as soon as its result is in the store, and its
        gate when a policy, ignore file or baseline judges it."""
        record = outcome.record
        if record is None or record.state != "done":
            return
        if args.out_dir is None and not gate.custom:
            return
        target = args.out_dir / names[outcome.path] if args.out_dir is not None else None
        if target is not None:
            reports[outcome.path] = str(target)
        if outcome.status == "cached" and not gate.custom and target and target.exists():
            return
        data = store.report(record.key)
        if data is None:
            return
        result = judged(data, record.key.pack_version, outcome.path)
        assert result.gate is not None
        failing[outcome.path] = len(result.gate.failing)
        if target is not None:
            _write(target, _renderer(args.format)(result), "report")

    bar = None
    if not (args.no_progress or args.quiet) and sys.stderr.isatty():
        bar = _BatchBar()
    try:
        with store, store.writer_lock():
            outcome = run_batch(discovery, store, settings, bar, write_report, pack)
    finally:
        if bar is not None:
            bar.close()
    interrupts.deferred = True
    rows = [
        SummaryRow(
            o.path, o.status, o.digest, o.record, o.error, reports.get(o.path), failing.get(o.path)
        )
        for o in outcome.outcomes
    ]
    _write(
        args.output,
        render_summary(rows, args.summary_format, gate.policy.fail_on, outcome.pack_version),
        "summary",
    )
    if args.out_dir is not None:
        # For people: every image with its verdict and exposures, linking its report.
        from imgscan.batch.index import render_index_html, render_index_markdown

        folder = args.out_dir.resolve()
        fail_on = gate.policy.fail_on
        _write(args.out_dir / "index.html", render_index_html(rows, fail_on, folder), "index")
        _write(args.out_dir / "index.md", render_index_markdown(rows, fail_on, folder), "index")
    if not args.quiet:
        print(
            f"imgscan: batch of {len(rows)} image(s): {outcome.count('scanned')} scanned, "
            f"{outcome.count('cached')} already in the store, {outcome.count('error')} "
            f"error(s)"
            + (f", {outcome.count('interrupted')} not finished" if outcome.interrupted else "")
            + f"; results in {store.path}",
            file=sys.stderr,
        )
    if outcome.interrupted or interrupts.received is not None:
        print(
            f"imgscan: interrupted by {interrupts.received or 'SIGINT'}: run the same command "
            "again to scan the images not finished",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    return _gate_of_rows(rows, gate.policy.fail_on, args.allow_incomplete)


@dataclass(frozen=True)
class _BatchGate:
    """How a batch judges each image: the policy (with --fail-on), a baseline and ignore
    entries. `custom` when any was given: each image's stored report is then judged again (a
    stored result keeps every finding; acceptance is the gate's business, per image)."""

    policy: Policy
    baseline: Container[str]
    ignore: tuple[IgnoreEntry, ...]
    custom: bool

    def judged(self, result: ScanResult) -> ScanResult:
        from imgscan.suppress import apply_suppressions

        if self.custom:
            result = apply_suppressions(result, self.baseline, self.ignore)
        return replace(result, gate=judge(self.policy, result))


def _batch_gate(args: argparse.Namespace) -> _BatchGate:
    """The batch's gate from --policy, --ignore, --baseline and --fail-on, read (and their
    rule ids checked) before any image is hashed."""
    from imgscan.suppress import Baseline, load_baseline, load_ignore

    baseline = load_baseline(args.baseline) if args.baseline else Baseline()
    ignore = tuple(entry for path in args.ignore for entry in load_ignore(path))
    policy = _policy(args, ignore)
    custom = bool(args.policy or args.ignore or args.baseline)
    return _BatchGate(policy, baseline, ignore, custom)


def _gate_of_rows(rows: Sequence[Any], fail_on: Severity, allow_incomplete: bool) -> int:
    """The exit code of many images: 2 when one could not be scanned (or, unless allowed,
    was not read completely), else 1 when one has findings failing the gate, else 0."""
    gates = {row.gate(fail_on) for row in rows}
    if "error" in gates or ("incomplete" in gates and not allow_incomplete):
        return EXIT_ERROR
    if "fail" in gates or (
        allow_incomplete and any(r.record is not None and r.record.fails(fail_on) for r in rows)
    ):
        return EXIT_FINDINGS
    return EXIT_CLEAN


def _run_results(args: argparse.Namespace) -> int:
    from imgscan.batch.stored import result_from_report
    from imgscan.batch.summary import SummaryRow, render_summary

    if getattr(args, "fail_on", None) is None:
        args.fail_on = Severity.LOW

    pack = load_pack(args.signatures or default_signatures_dir())
    target = getattr(args, "target", None)
    inputs = [_store_path(args), *([Path(target)] if target else [])]
    _refuse_output_over_input(getattr(args, "output", None), inputs, "report")
    with _open_store(args, must_exist=True) as store:
        if args.query == "list":
            rows = [SummaryRow(r.image_path, r.state, r.key.digest, r) for r in store.records()]
            text = render_summary(rows, args.format, Severity.LOW, pack.version, history=True)
            _write(args.output, text, "list")
            return EXIT_CLEAN
        if args.query == "prune":
            gone = [path for path, _ in store.images() if not os.path.lexists(path)]
            if not args.dry_run and gone:
                with store.writer_lock():
                    store.forget_images(gone)
            verb = "would forget" if args.dry_run else "forgot"
            for path in gone:
                print(f"{verb} {printable(path)}")
            print(f"imgscan: {verb} {len(gone)} image(s) no longer present", file=sys.stderr)
            return EXIT_CLEAN
        if args.query == "summary":
            rows = []
            for path, digest in store.images():
                record = store.find(digest, build.tool_version(), pack.version)
                status = record.state if record is not None else "not scanned"
                rows.append(SummaryRow(path, status, digest, record))
            _write(
                args.output,
                render_summary(rows, args.format, args.fail_on, pack.version),
                "summary",
            )
            return _gate_of_rows(rows, args.fail_on, args.allow_incomplete)
        record = store.find(args.target, build.tool_version(), pack.version)
        if record is None and Path(args.target).is_file():
            # An image no batch saw at this path: the same content may be stored under
            # another one (a copy, a rename). Its digest says.
            from imgscan.batch.digest import LookupOnly, image_digest
            from imgscan.batch.discover import ImageFile, vmdk_extents

            target = Path(args.target).absolute()
            image = ImageFile(target, (target, *vmdk_extents(target)))
            try:
                digest, _ = image_digest(image, LookupOnly(store))
            except OSError as exc:
                raise ImgscanError(f"{args.target}: cannot read: {exc.strerror}") from None
            record = store.find(digest, build.tool_version(), pack.version)
        if record is None:
            raise ImgscanError(f"{args.target}: no result in {store.path}")
        if record.state != "done":
            raise ImgscanError(
                f"{args.target}: no finished result ({record.state}"
                + (f": {record.error}" if record.error else "")
                + ")"
            )
        data = store.report(record.key)
        assert data is not None  # a done result has its report
    current = (
        record.key.pack_version == pack.version and record.key.tool_version == build.tool_version()
    )
    if not current:
        print(
            f"imgscan: warning: this result is from imgscan {record.key.tool_version} with rule "
            f"pack {record.key.pack_version}; a batch now would scan the image again",
            file=sys.stderr,
        )
    result = result_from_report(data, pack if record.key.pack_version == pack.version else None)
    result = replace(result, gate=judge(Policy(fail_on=args.fail_on), result))
    _write(args.output, _renderer(args.format)(result), "report")
    return exit_code(result, args.fail_on, args.allow_incomplete)


def _run_batch_worker() -> int:
    from imgscan.batch.runner import serve_child

    envelope = serve_child(sys.stdin.buffer)
    _write(None, json.dumps(envelope, ensure_ascii=True) + "\n", "result")
    return EXIT_INTERRUPTED if envelope.get("interrupted") else EXIT_CLEAN
