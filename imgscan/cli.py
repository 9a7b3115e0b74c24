"""Command line: options -> scan -> render -> exit code.

The only module that prints to the terminal or decides the process exit status. Exit codes:
  0  no finding fails the gate (--fail-on, --policy), and the whole image was read
  1  findings fail the gate, and the whole image was read
  2  error, or coverage incomplete (a volume or file could not be read): fail closed
130  interrupted (SIGINT or SIGTERM): the report, if the scan had begun, is partial and says so
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from types import FrameType
from typing import Any

from imgscan import __version__
from imgscan.detect.rules import load_pack
from imgscan.errors import ImgscanError
from imgscan.image import ReaderKind
from imgscan.model import GateAction, ScanResult, Severity, Verdict
from imgscan.options import (
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

EXIT_CLEAN, EXIT_FINDINGS, EXIT_ERROR, EXIT_INTERRUPTED = 0, 1, 2, 130

_EPILOG = """\
exit codes:
  0    no finding fails the gate (--fail-on, --policy), and every volume and file was read
  1    findings fail the gate
  2    error, or coverage incomplete (something could not be read): the gate fails closed
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
        description="Scan offline VM disk images (qcow2, vmdk, raw) for secrets and report "
        "what a copy of the image would leak. Images are only ever read.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=_EPILOG,
    )
    parser.add_argument("--version", action="version", version=f"imgscan {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    scan = commands.add_parser(
        "scan",
        help="scan one disk image",
        description="Scan one disk image read-only and report the secrets on it.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=_EPILOG,
    )
    _add_image_options(scan)
    scan.add_argument(
        "-f",
        "--format",
        choices=["table", "json", "sarif", "markdown", "html"],
        default="table",
        help="report format (default: table); sarif: SARIF 2.1.0 for code hosts and "
        "pipelines; markdown: a short summary for a merge-request or registry comment (never "
        "shows values); html: one self-contained page for incident triage (no external "
        "assets, filterable findings)",
    )
    scan.add_argument(
        "-o",
        "--output",
        type=Path,
        metavar="FILE",
        help="write the report to FILE instead of stdout",
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
    return parser


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
        help="rule pack directory (default: the bundled signatures/)",
    )
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
        show_secrets=getattr(args, "show_secrets", False),
        allow_external_files=args.allow_external_files,
        signatures=args.signatures,
        progress=not args.no_progress,
        luks_keys=_luks_keys(args),
    )
    bar, update = _progress(options.progress)
    try:
        return scan_image(options, update)
    finally:
        if bar is not None:
            bar.close()


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
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise ImgscanError(f"{path}: cannot write {what}: {exc.strerror}") from None


def _policy(args: argparse.Namespace) -> Policy:
    """The gate policy: `--policy FILE` (its rule ids checked against the rule pack) or none,
    with `--fail-on`, when given, overriding the file's fail_on."""
    policy = load_policy(args.policy) if args.policy else Policy()
    if any(rule.rule for rule in policy.rules):
        check_rule_ids(policy, load_pack(args.signatures or default_signatures_dir()))
    return policy if args.fail_on is None else replace(policy, fail_on=args.fail_on)


class _Interrupts:
    """SIGINT and SIGTERM while a command runs: the first one raises KeyboardInterrupt in the
    main thread (SIGTERM is treated like a Ctrl-C, so a supervisor's stop also gets a partial
    report and exit code 130); later ones are ignored, so that stopping the workers and the
    libguestfs appliance and writing the partial report are not cut short. That clean-up is
    bounded (pool.py and guestfs.py give every wait a timeout); SIGKILL remains for the rest.

    Once a scan's result is in hand (`deferred`), a first signal raises nothing: the report is
    written whole, never cut off halfway through a file, and the exit code is then 130.
    """

    def __init__(self) -> None:
        self.received: str | None = None  # the name of the first signal, once one arrived
        self.deferred = False

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


def _run_scan(args: argparse.Namespace, interrupts: _Interrupts) -> int:
    from imgscan.scan.scanner import ScanInterrupted
    from imgscan.suppress import apply_suppressions, load_baseline, load_ignore

    # Read the acceptance and policy files first: a typo in one should not cost a whole scan.
    baseline = load_baseline(args.baseline) if args.baseline else frozenset()
    ignore = tuple(entry for path in args.ignore for entry in load_ignore(path))
    policy = _policy(args)
    interrupted_by: str | None = None
    try:
        scanned = _scan(args)
    except ScanInterrupted as stop:
        # The workers and the appliance are stopped; what was found so far is still worth a
        # report, which says it is partial (coverage incomplete, `interrupted`).
        interrupted_by = interrupts.received or "SIGINT"
        warning = f"scan interrupted by {interrupted_by}: this report is partial"
        scanned = replace(stop.partial, warnings=(*stop.partial.warnings, warning))
    interrupts.deferred = True
    result = apply_suppressions(scanned, baseline, ignore)
    result = replace(result, gate=judge(policy, result))
    for warning in result.warnings:
        print(f"imgscan: warning: {printable(warning)}", file=sys.stderr)
    try:
        _write(args.output, _renderer(args.format)(result), "report")
    except ImgscanError as exc:
        if interrupted_by is None:
            raise
        # Still an interruption: exit 130.
        print(f"imgscan: error: {printable(str(exc))}", file=sys.stderr)
    print(_summary(result, interrupted_by), file=sys.stderr)
    if interrupted_by is None and interrupts.received is not None:
        print(_late(interrupts.received), file=sys.stderr)
        return EXIT_INTERRUPTED
    return exit_code(result, policy.fail_on, args.allow_incomplete)


def _late(signame: str) -> str:
    return f"imgscan: interrupted by {signame} once the scan had ended (what was written is whole)"


def _run_baseline(args: argparse.Namespace, interrupts: _Interrupts) -> int:
    from imgscan.scan.scanner import ScanInterrupted
    from imgscan.suppress import render_baseline

    try:
        result = _scan(args)
    except ScanInterrupted as stop:
        interrupted_by = interrupts.received or "SIGINT"
        print(_summary(stop.partial, interrupted_by), file=sys.stderr)
        print(
            f"imgscan: interrupted by {interrupted_by}: no baseline written (a baseline of a "
            "half-read image accepts too little)",
            file=sys.stderr,
        )
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
    _write(args.output, render_baseline(result), "baseline")
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
    with _Interrupts().installed() as interrupts:
        return _run(parser, args, interrupts)


def _run(parser: argparse.ArgumentParser, args: argparse.Namespace, interrupts: _Interrupts) -> int:
    """Run the command; turn every way it can end into one line on stderr and an exit code."""
    try:
        match args.command:
            case "scan":
                return _run_scan(args, interrupts)
            case "baseline":
                return _run_baseline(args, interrupts)
            case _:
                parser.error(f"unknown command {args.command}")
    except KeyboardInterrupt:
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
