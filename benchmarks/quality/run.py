"""The quality harness of issue 4: recall and precision of imgscan's rules on a labelled corpus.

    .venv/bin/python benchmarks/quality/run.py [--corpus DIR | --out DIR] [--seed N]
                                               [--json FILE] [--no-peers] [--top N]

Builds the corpus (corpus.py; or reuses the one in ``--corpus DIR``), scans every file with
imgscan's engine exactly as the scanner's workers do (guest path "/" + relative path, so
path-scoped rules apply; the default chunk size; overlapping hits deduplicated), and prints
recall overall, per category and per kind of secret (the per-kind table, with a column per
peer; ``--no-kinds`` leaves it out of the text, ``--json`` always has it), precision, the
decoys reported, and the misses and false positives that should guide rule work. When peer
scanners are on PATH (peers.py) it runs them on the same files and prints a side-by-side
table. ``--json FILE`` writes every figure.

Targets (issue 4): recall >= 95 % overall and >= 85 % in every category; at most 3 % of decoys
reported. They are printed, not enforced, unless ``--check`` is given (exit status 1 when one is
missed).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from imgscan.detect.engine import Engine, build_spec
from imgscan.detect.rules import load_pack
from imgscan.image.interface import OpenerSpec
from imgscan.model import FileRef, Severity
from imgscan.options import DEFAULT_CHUNK_SIZE, default_cache_dir, default_signatures_dir
from imgscan.scan.worker import FileScanner, InlineOpener, WorkerSpec

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from corpus import CATEGORIES, DEFAULT_SEED, Corpus, build_corpus, load_corpus  # noqa: E402
from peers import PEERS, PeerRun, run_peer  # noqa: E402
from scoring import Finding, Score, score  # noqa: E402

RECALL_TARGET = 0.95
CATEGORY_RECALL_TARGET = 0.85
DECOY_TARGET = 0.03

__all__ = ["Finding", "Score", "main", "scan_imgscan", "score"]


def scan_imgscan(
    corpus: Corpus, signatures: Path | None = None, engine: Engine | None = None
) -> tuple[list[Finding], dict[str, Any]]:
    """imgscan's findings on every corpus file, as the scanner's workers produce them (the
    worker's FileScanner over each file's bytes: archives, validation, deduplication). Findings
    demoted to info (test fixtures) are left out: they do not fail a gate.

    ``engine`` (an imgscan Engine) is built from ``signatures`` (default: the packaged pack)
    when not given. Returns the findings and facts about the rule pack.
    """
    start = time.monotonic()
    if engine is None:
        pack = load_pack(signatures or default_signatures_dir())
        engine = Engine(build_spec(pack, default_cache_dir() / "hyperscan"))
    pack = engine.pack
    built = time.monotonic()
    spec = WorkerSpec(
        engine.spec, OpenerSpec("inline", "-", "raw"), DEFAULT_CHUNK_SIZE, 1 << 30, True
    )
    scanner = FileScanner(spec, InlineOpener())
    findings = []
    for rel in corpus.files():
        data = (corpus.fs / rel).read_bytes()
        outcome = scanner.scan(FileRef("corpus", "/" + rel, len(data), "-", inline=data))
        for found in outcome.findings:
            if found.severity is Severity.INFO or found.secret is None:
                continue  # listed in a report, but not reported as a leak (a test fixture)
            findings.append(
                Finding(
                    rel,
                    found.rule,
                    found.line,
                    found.line + found.secret.count("\n"),
                    value=found.secret,
                    category=found.category,
                )
            )
    info = {
        "pack_version": pack.version,
        "pattern_rules": len(pack.patterns),
        "yara_rules": sum(len(source.rules) for source in pack.yara),
        "engine_seconds": round(built - start, 2),
        "scan_seconds": round(time.monotonic() - built, 2),
    }
    return findings, info


# ---------------------------------------------------------------------------------------------
# Reports
# ---------------------------------------------------------------------------------------------


def _pct(value: float) -> str:
    return f"{100 * value:5.1f} %"


def _short(text: str, width: int = 60) -> str:
    text = text.replace("\n", "\\n")
    return text if len(text) <= width else text[: width - 3] + "..."


def targets_met(result: Score) -> list[str]:
    """The issue-4 targets ``result`` misses (empty when all are met)."""
    misses = []
    if result.recall < RECALL_TARGET:
        misses.append(f"recall {_pct(result.recall)} < {_pct(RECALL_TARGET)}")
    for category in CATEGORIES:
        found, total = result.by_category.get(category, [0, 0])
        if total and found / total < CATEGORY_RECALL_TARGET:
            misses.append(
                f"{category} recall {_pct(found / total)} < {_pct(CATEGORY_RECALL_TARGET)}"
            )
    if result.decoy_rate > DECOY_TARGET:
        misses.append(f"decoys reported {_pct(result.decoy_rate)} > {_pct(DECOY_TARGET)}")
    return misses


def report_imgscan(result: Score, top: int) -> list[str]:
    """The detailed text report of imgscan's figures."""
    r = result
    out = [
        "imgscan (value match: a secret counts when a hit in its file captured exactly it)",
        f"  recall      {_pct(r.recall)}  ({r.found}/{r.secrets})   target >= "
        f"{_pct(RECALL_TARGET)} overall, >= {_pct(CATEGORY_RECALL_TARGET)} per category",
        f"  precision   {_pct(r.precision)}  per hit ({r.true_findings}/{r.findings}),"
        f" {_pct(r.location_precision)} per location",
        f"  decoys      {_pct(r.decoy_rate)}  ({r.decoys_reported}/{r.decoys} reported)"
        f"   target <= {_pct(DECOY_TARGET)}",
        f"  false hits  {len(result.false_findings)} ({result.false_on_decoys} on decoys,"
        f" {len(result.false_findings) - result.false_on_decoys} on unlabelled text)",
        "",
        f"  {'category':<14} {'recall':>8} {'found':>9}   {'precision of rules':>18} {'hits':>9}",
    ]
    for category in CATEGORIES:
        found, total = result.by_category.get(category, [0, 0])
        tp, n = result.findings_by_rule_category.get(category, [0, 0])
        rec = _pct(found / total) if total else "    -  "
        prec = _pct(tp / n) if n else "    -  "
        out.append(f"  {category:<14} {rec:>8} {found:>4}/{total:<4}   {prec:>18} {tp:>4}/{n:<4}")
    out.append("")
    out.append(
        "  decoys reported by group: "
        + ", ".join(f"{group} {r}/{t}" for group, (r, t) in sorted(result.decoys_by_group.items()))
    )
    missed = Counter(lab.kind for lab in result.missed)
    if missed:
        out += ["", f"  missed secrets by kind ({len(result.missed)}):"]
        for kind, count in missed.most_common(top):
            example = next(lab for lab in result.missed if lab.kind == kind)
            total = result.by_kind[kind][1]
            out.append(f"    {count:>3}/{total:<3} {kind:<34} e.g. /{example.path}:{example.line}")
    if result.reported:
        out += ["", f"  decoys reported ({len(result.reported)}):"]
        for lab, finding in result.reported[:top]:
            out.append(
                f"    {finding.rule:<30} /{lab.path}:{lab.line} {lab.kind}: {_short(lab.value, 40)}"
            )
    false = Counter(f.rule for f in result.false_findings)
    if false:
        out += ["", f"  false positives by rule ({len(result.false_findings)}):"]
        for rule, count in false.most_common(top):
            examples = [f for f in result.false_findings if f.rule == rule][:2]
            shown = "; ".join(f"/{f.path}:{f.line} {_short(f.value or '', 36)!r}" for f in examples)
            out.append(f"    {count:>3} {rule:<32} {shown}")
    return out


def report_kinds(result: Score, peers: dict[str, Score] | None = None) -> list[str]:
    """The per-kind table: every secret kind of the corpus, by category, found/total, with a
    column per peer that ran (scored by line, as in the side-by-side table)."""
    peers = peers or {}
    out = [f"  secrets by kind ({len(result.by_kind)} kinds; '-' marks a kind imgscan missed):"]
    if peers:
        out.append(f"    {'':<46} {'imgscan':>8}" + "".join(f" {name:>14}" for name in peers))
    for category in CATEGORIES:
        kinds = sorted(k for k, c in result.kind_category.items() if c == category)
        if not kinds:
            continue
        found, total = result.by_category.get(category, [0, 0])
        out.append(f"    {category} ({found}/{total})")
        for kind in kinds:
            hit, n = result.by_kind[kind]
            row = f"    {'-' if hit < n else ' '} {kind:<44} {f'{hit}/{n}':>8}"
            for peer in peers.values():
                peer_hit = peer.by_kind.get(kind, [0, n])[0]
                row += f" {f'{peer_hit}/{n}':>14}"
            out.append(row)
    return out


def report_side_by_side(
    columns: Sequence[tuple[str, Score | None, PeerRun | None, float]],
) -> list[str]:
    """A table with one column per scanner (None score: the peer did not produce one)."""
    rows: list[tuple[str, list[str]]] = []

    def row(name: str, cell: Any) -> None:
        rows.append((name, [cell(s, r, t) if s is not None else "-" for _, s, r, t in columns]))

    row("recall", lambda s, r, t: f"{_pct(s.recall)}")
    for category in CATEGORIES:
        row(
            f"  {category}",
            lambda s, r, t, c=category: f"{s.by_category[c][0]}/{s.by_category[c][1]}",
        )
    row("decoys reported", lambda s, r, t: f"{s.decoys_reported}/{s.decoys}")
    row("findings", lambda s, r, t: str(s.findings))
    row("false findings", lambda s, r, t: str(len(s.false_findings)))
    row("false locations", lambda s, r, t: str(s.false_locations))
    row("precision/finding", lambda s, r, t: _pct(s.precision))
    row("precision/location", lambda s, r, t: _pct(s.location_precision))
    row("seconds", lambda s, r, t: f"{t:.1f}")
    width = max(14, *(len(name) + 2 for name, _, _, _ in columns))
    header = f"{'':<20}" + "".join(f"{name:>{width}}" for name, _, _, _ in columns)
    out = [header]
    for name, cells in rows:
        out.append(f"{name:<20}" + "".join(f"{cell:>{width}}" for cell in cells))
    return out


# ---------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------


@contextmanager
def _corpus_for(args: argparse.Namespace) -> Iterator[tuple[Corpus, bool]]:
    """The corpus to use and whether it was built now."""
    if args.corpus is not None:
        if (args.corpus / "labels.json").is_file():
            yield load_corpus(args.corpus), False
        else:
            yield build_corpus(args.corpus, args.seed), True
        return
    if args.out is not None:
        yield build_corpus(args.out, args.seed), True
        return
    with tempfile.TemporaryDirectory(prefix="imgscan-quality-") as tmp:
        yield build_corpus(Path(tmp) / "corpus", args.seed), True


def main(argv: list[str] | None = None, engine: Engine | None = None) -> int:
    """Run the harness; ``engine`` lets tests pass an imgscan Engine they already built."""
    parser = argparse.ArgumentParser(
        description="Recall and precision of imgscan (and peers) on a labelled corpus."
    )
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--corpus", type=Path, help="reuse the corpus in DIR (built there if absent)"
    )
    where.add_argument("--out", type=Path, help="build the corpus into DIR and keep it")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="corpus seed")
    parser.add_argument("--signatures", type=Path, help="rule pack directory (default: packaged)")
    parser.add_argument("--json", type=Path, help="write every figure to this file")
    parser.add_argument("--no-peers", action="store_true", help="do not run peer scanners")
    parser.add_argument("--peer-timeout", type=float, default=1800, help="seconds per peer")
    parser.add_argument("--top", type=int, default=15, help="rows in the miss/false lists")
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument(
        "--no-kinds", action="store_true", help="leave the per-kind table out of the text report"
    )
    args = parser.parse_args(argv)

    with _corpus_for(args) as (corpus, built):
        kinds = {lab.kind for lab in corpus.secrets}
        files = corpus.files()
        size = sum((corpus.fs / rel).stat().st_size for rel in files)
        print(
            f"corpus {corpus.root} ({'built' if built else 'reused'}, seed {corpus.seed}):"
            f" {len(files)} files, {size / 1e6:.1f} MB, {len(corpus.secrets)} secrets"
            f" of {len(kinds)} kinds, {len(corpus.decoys)} decoys"
        )
        findings, pack = scan_imgscan(corpus, args.signatures, engine)
        seconds = float(pack["scan_seconds"])
        print(
            f"rule pack {pack['pack_version']}: {pack['pattern_rules']} pattern rules,"
            f" {pack['yara_rules']} YARA rules; engine {pack['engine_seconds']:.1f} s,"
            f" scan {seconds:.1f} s\n"
        )
        by_value = score(corpus.labels, findings, "value")
        by_line = score(corpus.labels, findings, "line")
        print("\n".join(report_imgscan(by_value, args.top)))
        misses = targets_met(by_value)
        print("\n  targets: " + ("all met" if not misses else "MISSED: " + "; ".join(misses)))

        runs: list[PeerRun] = []
        if not args.no_peers:
            with tempfile.TemporaryDirectory(prefix="imgscan-peers-") as work:
                for peer in PEERS:
                    run = run_peer(peer, corpus.fs, Path(work), args.peer_timeout)
                    runs.append(run)
        columns: list[tuple[str, Score | None, PeerRun | None, float]] = [
            ("imgscan/value", by_value, None, seconds),
            ("imgscan/line", by_line, None, seconds),
        ]
        peer_scores: dict[str, Score] = {}
        for run in runs:
            if run.status == "ok":
                peer_scores[run.name] = score(corpus.labels, run.findings, "line")
                columns.append((run.name, peer_scores[run.name], run, run.seconds))
        print()
        if runs:
            print("peers (scored by line: a finding on a secret's line finds it; see peers.py):")
            for run in runs:
                detail = run.version or ""
                if run.status != "ok":
                    detail = f"{run.status.upper()}: {run.error}"
                print(f"  {run.name:<15} {detail}")
            print()
            print("\n".join(report_side_by_side(columns)))
        else:
            print("peers not run (--no-peers)")

        if not args.no_kinds:
            print("\n" + "\n".join(report_kinds(by_value, peer_scores)))

        if args.json:
            doc = {
                "corpus": {
                    "root": str(corpus.root),
                    "seed": corpus.seed,
                    "files": len(files),
                    "bytes": size,
                    "secrets": len(corpus.secrets),
                    "kinds": len(kinds),
                    "decoys": len(corpus.decoys),
                },
                "imgscan": {
                    **pack,
                    "value": by_value.summary(),
                    "line": by_line.summary(),
                    "targets_missed": misses,
                },
                "peers": {
                    run.name: {
                        "status": run.status,
                        "version": run.version,
                        "seconds": round(run.seconds, 2),
                        "command": run.command,
                        "error": run.error,
                        "score": peer_scores[run.name].summary()
                        if run.name in peer_scores
                        else None,
                    }
                    for run in runs
                },
            }
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(doc, indent=1) + "\n")
            print(f"\nfigures written to {args.json}")
    return 1 if args.check and misses else 0


if __name__ == "__main__":
    sys.exit(main())
