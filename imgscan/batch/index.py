"""The index of a scanned store, for people: one page (HTML, and Markdown for a wiki or a merge
request) listing every image with its gate verdict, findings per severity and exposures, and a
link to its report. `imgscan batch --out-dir DIR` writes DIR/index.html and DIR/index.md beside
the reports.

Contract, as for the HTML report (imgscan/report/html.py): pure and deterministic (rows sorted
by verdict, failing first, then by path); self-contained and inert (one inline style allowed by
its hash, no script, no URL but the relative links to the reports); every string from the
store (paths, exposure targets and principals, errors) escaped, control characters included.
No secret can appear: the store never holds one.
"""

from __future__ import annotations

import base64
import hashlib
import html
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import quote

from imgscan import build
from imgscan.batch.summary import SummaryRow, summary_error
from imgscan.model import Severity
from imgscan.report.interface import printable
from imgscan.report.markdown import code_span

# Failing first: what a person must look at.
_ORDER = {"fail": 0, "error": 1, "incomplete": 2, "pass": 3}

_STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; color: #1f2328; margin: 1.5rem auto;
       max-width: 1400px; padding: 0 1rem; }
h1 { font-size: 1.4rem; }
table { border-collapse: collapse; width: 100%; }
th, td { border: 1px solid #d0d7de; padding: .25rem .45rem; text-align: left;
         vertical-align: top; }
th { background: #f6f8fa; }
code { font: 12.5px/1.4 ui-monospace, monospace; overflow-wrap: anywhere; }
td.path code { word-break: normal; overflow-wrap: anywhere; }
.fail, .error { color: #a40e26; font-weight: 600; }
.incomplete { color: #9a6700; font-weight: 600; }
.pass { color: #1a7f37; }
ul { margin: 0; padding-left: 1.1rem; }
"""


def _text(value: object) -> str:
    return html.escape(printable(str(value)), quote=True)


def _link(report: str | None, folder: Path) -> str | None:
    """The report's location relative to the index's folder, quoted for an href."""
    if report is None:
        return None
    path = Path(report).resolve()
    try:
        relative = path.relative_to(folder)
    except ValueError:
        relative = path
    return quote(relative.as_posix())


def _rows(rows: Sequence[SummaryRow], fail_on: Severity) -> list[SummaryRow]:
    return sorted(rows, key=lambda r: (_ORDER.get(r.gate(fail_on), 9), r.path))


def render_index_html(rows: Sequence[SummaryRow], fail_on: Severity, folder: Path) -> str:
    """The HTML index of `rows`, its links relative to `folder` (where it is written)."""
    gates = Counter(row.gate(fail_on) for row in rows)
    style_hash = base64.b64encode(hashlib.sha256(_STYLE.encode()).digest()).decode()
    csp = f"default-src 'none'; style-src 'sha256-{style_hash}'"
    verdict = ", ".join(
        f'<span class="{g}">{gates.get(g, 0)} {g}</span>'
        for g in ("fail", "error", "incomplete", "pass")
    )
    out = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{csp}">',
        "<title>imgscan: image store index</title>",
        f"<style>{_STYLE}</style>",
        "</head>",
        "<body>",
        "<h1>imgscan: image store</h1>",
        f'<p id="verdict">{len(rows)} image(s): {verdict} (fail-on {fail_on.value}); '
        f"{_text(build.current())}</p>",
        '<table id="images">',
        "<thead><tr><th>Image</th><th>Gate</th><th>Findings C/H/M/L/I</th>"
        "<th>What a copy grants</th><th>Report</th></tr></thead>",
        "<tbody>",
    ]
    for row in _rows(rows, fail_on):
        gate = row.gate(fail_on)
        record = row.record
        done = record is not None and record.state == "done"
        counts = "/".join(str(record.counts[s]) for s in Severity) if done and record else "-"
        exposures = ""
        if done and record is not None and record.exposures:
            exposures = (
                "<ul>"
                + "".join(
                    f"<li>{_text(e.get('severity', ''))} {_text(e.get('kind', ''))}: "
                    f"<code>{_text(e.get('target', ''))}</code>"
                    + (f" as <code>{_text(e['principal'])}</code>" if e.get("principal") else "")
                    + "</li>"
                    for e in record.exposures
                )
                + "</ul>"
            )
        error = summary_error(row)
        if error:
            exposures += f'<p class="error">{_text(error)}</p>'
        href = _link(row.report, folder)
        report = f'<a href="{_text(href)}">report</a>' if href else "-"
        out.append(
            f'<tr data-gate="{gate}"><td class="path"><code>{_text(row.path)}</code></td>'
            f'<td class="{gate}">{gate}</td><td>{counts}</td><td>{exposures or "-"}</td>'
            f"<td>{report}</td></tr>"
        )
    out += ["</tbody>", "</table>", "</body>", "</html>"]
    return "\n".join(out) + "\n"


def render_index_markdown(rows: Sequence[SummaryRow], fail_on: Severity, folder: Path) -> str:
    """The Markdown index of `rows`, its links relative to `folder`."""
    gates = Counter(row.gate(fail_on) for row in rows)
    lines = [
        "### imgscan: image store",
        "",
        f"{len(rows)} image(s): "
        + ", ".join(f"{gates.get(g, 0)} {g}" for g in ("fail", "error", "incomplete", "pass"))
        + f" (fail-on {fail_on.value})",
        "",
        "| Image | Gate | C/H/M/L/I | What a copy grants | Report |",
        "|---|---|---|---|---|",
    ]
    for row in _rows(rows, fail_on):
        record = row.record
        done = record is not None and record.state == "done"
        counts = "/".join(str(record.counts[s]) for s in Severity) if done and record else "-"
        kinds = Counter(e.get("kind", "") for e in record.exposures) if done and record else {}
        grants = ", ".join(f"{k} ({n})" if n > 1 else k for k, n in sorted(kinds.items()))
        error = summary_error(row)
        if error:
            grants = (grants + "; " if grants else "") + f"error: {code_span(error)}"
        href = _link(row.report, folder)
        report = f"[report]({href})" if href else "-"
        cells = (code_span(row.path), row.gate(fail_on), counts, grants or "-", report)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
