"""A self-contained HTML page for incident triage: open it in a browser, offline, anywhere.

Contract:
- Pure and deterministic: the same ScanResult gives the same bytes (no clock, no randomness;
  findings sorted by severity then place, everything else in the result's own order).
- Self-contained and inert towards the network: one inline <style>, one inline <script>, no
  URL of any kind. A Content-Security-Policy <meta> forbids every load (`default-src 'none'`)
  and allows only that style and that script, by their SHA-256 hashes computed here, so even
  markup that slipped through could neither run nor fetch anything.
- Every string that comes from the image or the result (paths, rule ids, previews, OS names,
  user names, reasons, warnings, context values, details) goes through `_text`: control
  characters escaped (as in the table), then `html.escape(..., quote=True)`. A file named
  `<script>` or `"onerror=` is shown as text.
- A raw value appears only when the scan kept it (`Finding.secret`, `--show-secrets`), and
  the page then says so at the top; otherwise only the redacted preview.
- Everything is visible without JavaScript. The script only adds the findings filters (by
  severity and by category; every finding row carries `data-severity` and `data-category`)
  and keeps the "N of M findings shown" line up to date.

Sections, in order: summary, operating system, what a copy of this image grants (exposures),
findings, coverage (volumes, skipped files, warnings), suppressed findings.
"""

from __future__ import annotations

import base64
import hashlib
import html
from collections.abc import Iterable

from imgscan import build
from imgscan.exposures import sysprep_command
from imgscan.model import Finding, Package, ScanResult, Severity, Volume
from imgscan.report.interface import printable

_STYLE = """
:root { color-scheme: light; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1f2328;
       margin: 1.5rem auto; max-width: 1400px; padding: 0 1rem; }
h1 { font-size: 1.4rem; margin: 0 0 .5rem; }
h2 { font-size: 1.15rem; margin: 2rem 0 .5rem; border-bottom: 1px solid #d0d7de;
     padding-bottom: .2rem; }
code, pre { font: 12.5px/1.4 ui-monospace, "DejaVu Sans Mono", monospace; }
code { overflow-wrap: anywhere; }
pre { background: #f6f8fa; border: 1px solid #d0d7de; padding: .5rem; white-space: pre-wrap;
      overflow-wrap: anywhere; }
table { border-collapse: collapse; width: 100%; margin: .5rem 0; }
table.narrow { width: auto; min-width: 30rem; }
th, td { border: 1px solid #d0d7de; padding: .25rem .45rem; text-align: left;
         vertical-align: top; }
th { background: #f6f8fa; font-weight: 600; }
tbody tr:nth-child(even) { background: #fbfcfd; }
dl { margin: 0; display: grid; grid-template-columns: max-content 1fr; gap: 0 .6rem; }
dt { color: #57606a; }
dd { margin: 0; }
ul.plain { margin: 0; padding-left: 1.1rem; }
.summary dl { grid-template-columns: max-content 1fr; max-width: 60rem; }
.muted { color: #57606a; }
.banner { border: 2px solid #a40e26; background: #ffebe9; padding: .5rem .8rem;
          font-weight: 600; }
.ok { color: #1a7f37; font-weight: 600; }
.bad { color: #a40e26; font-weight: 600; }
.sev { font-weight: 700; text-transform: uppercase; font-size: .8rem; white-space: nowrap; }
.sev-critical { color: #fff; background: #a40e26; }
.sev-high { color: #fff; background: #d1242f; }
.sev-medium { color: #3b2300; background: #f0b72f; }
.sev-low { color: #0a3069; background: #ddf4ff; }
.sev-info { color: #424a53; background: #eaeef2; }
.counts span.sev { padding: .05rem .35rem; margin-right: .3rem; border-radius: 3px; }
.secret { color: #a40e26; white-space: pre-wrap; }
form#filters { display: flex; flex-wrap: wrap; gap: .4rem 1.2rem; align-items: center;
               margin: .4rem 0; }
form#filters[hidden] { display: none; }
form#filters fieldset { border: 1px solid #d0d7de; padding: .2rem .6rem; margin: 0; }
tr[hidden] { display: none; }
@media print { form#filters { display: none; } }
.verdict { font-size: 1.15rem; font-weight: 700; padding: .5rem .8rem; margin: .4rem 0 .8rem;
           border-radius: 4px; }
.verdict-fail { color: #fff; background: #a40e26; }
.verdict-incomplete { color: #3b2300; background: #f0b72f; }
.verdict-pass { color: #fff; background: #1a7f37; }
.verdict-unjudged { color: #1f2328; background: #eaeef2; }
td.location code { overflow-wrap: break-word; }
td.fingerprint code { font-size: 11px; }
input#search { min-width: 18rem; }
th[data-sort] { cursor: pointer; text-decoration: underline dotted; }
""".strip()

# Constant: it reads the categories and severities from the rows, so no data from the result
# ever enters the script (and its hash is fixed).
_SCRIPT = """
(function () {
  "use strict";
  var form = document.getElementById("filters");
  var rows = Array.prototype.slice.call(document.querySelectorAll("tr.finding"));
  var count = document.getElementById("findings-count");
  var category = document.getElementById("category-filter");
  var boxes = Array.prototype.slice.call(form.querySelectorAll("input[name=severity]"));
  var search = document.getElementById("search");
  var texts = rows.map(function (row) { return row.textContent.toLowerCase(); });
  function update() {
    var severities = {};
    boxes.forEach(function (box) { severities[box.value] = box.checked; });
    var wanted = category.value;
    var query = search.value.trim().toLowerCase();
    var shown = 0;
    rows.forEach(function (row, i) {
      var visible = severities[row.dataset.severity] === true &&
        (wanted === "" || row.dataset.category === wanted) &&
        (query === "" || texts[i].indexOf(query) !== -1);
      row.hidden = !visible;
      if (visible) { shown += 1; }
    });
    count.textContent = shown + " of " + rows.length + " findings shown";
  }
  // Sorting: a header with data-sort orders the rows by that data attribute of theirs;
  // clicking it again reverses the order.
  var body = rows.length ? rows[0].parentNode : null;
  var order = {};
  Array.prototype.slice.call(document.querySelectorAll("#findings th[data-sort]"))
    .forEach(function (th) {
      th.addEventListener("click", function () {
        var key = th.dataset.sort;
        order[key] = order[key] === 1 ? -1 : 1;
        var pairs = rows.map(function (row, i) { return [row, texts[i]]; });
        pairs.sort(function (a, b) {
          var x = a[0].dataset[key], y = b[0].dataset[key];
          return (x < y ? -1 : x > y ? 1 : 0) * order[key];
        });
        rows = pairs.map(function (p) { return p[0]; });
        texts = pairs.map(function (p) { return p[1]; });
        rows.forEach(function (row) { body.appendChild(row); });
      });
    });
  form.addEventListener("change", update);
  search.addEventListener("input", update);
  form.addEventListener("submit", function (event) { event.preventDefault(); });
  form.hidden = false;
  update();
})();
""".strip()


def _sha256(source: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(source.encode()).digest()).decode() + "'"


# No default source at all: only the one style and the one script, by hash. No images, fonts,
# frames, connections, form targets or <base>.
CSP = (
    f"default-src 'none'; style-src {_sha256(_STYLE)}; script-src {_sha256(_SCRIPT)}; "
    "img-src 'none'; base-uri 'none'; form-action 'none'"
)


def _text(value: object) -> str:
    """Any value as HTML text or attribute content: control characters escaped, then
    `html.escape(..., quote=True)`. With `_value` (raw values), the only way data reaches
    the page. Escaping lone surrogates too keeps the page encodable as UTF-8."""
    return html.escape(printable(str(value)), quote=True)


def _value(secret: str) -> str:
    """A raw value keeps its line breaks (a PEM key stays readable); every other control
    character is escaped, then the whole is HTML-escaped."""
    return html.escape("\n".join(printable(line) for line in secret.split("\n")), quote=True)


def _severity(severity: Severity) -> str:
    return f'<span class="sev sev-{severity.value}">{severity.value}</span>'


def _severity_cell(severity: Severity) -> str:
    return f'<td class="sev sev-{severity.value}">{severity.value}</td>'


def _size(size: int) -> str:
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if size >= 1 << shift:
            return f"{size / (1 << shift):.1f} {unit} ({size} bytes)"
    return f"{size} bytes"


def _pairs(pairs: Iterable[tuple[str, str]]) -> str:
    """(key, value) pairs as a small definition list, or an empty string."""
    items = "".join(f"<dt>{_text(k)}</dt><dd><code>{_text(v)}</code></dd>" for k, v in pairs)
    return f"<dl>{items}</dl>" if items else ""


def _list(items: Iterable[str], code: bool = True) -> str:
    """Already escaped items as a plain list, or an empty string."""
    wrap = "<li><code>{}</code></li>" if code else "<li>{}</li>"
    body = "".join(wrap.format(item) for item in items)
    return f'<ul class="plain">{body}</ul>' if body else ""


def _verdict_banner(result: ScanResult) -> str:
    """The gate's verdict in one line at the top, as the exit code decides it: incomplete
    coverage first (the gate fails closed), then the findings that fail the gate."""
    gate = result.gate
    if result.error is not None:
        kind, text = "incomplete", "SCAN FAILED: nothing was read; the gate fails closed"
    elif result.interrupted:
        kind, text = "incomplete", "INTERRUPTED: a partial report; the gate fails closed"
    elif not result.complete:
        kind, text = (
            "incomplete",
            "INCOMPLETE: part of the image was not read; the gate fails closed",
        )
    elif gate is None:
        kind, text = "unjudged", f"{len(result.findings)} finding(s); no gate was applied"
    elif gate.failing:
        kind = "fail"
        text = f"FAIL: {len(gate.failing)} finding(s) fail the gate (fail-on {gate.fail_on.value})"
    else:
        kind, text = "pass", f"PASS: no finding fails the gate (fail-on {gate.fail_on.value})"
    return f'<p class="verdict verdict-{kind}" id="gate-banner">{_text(text)}</p>'


def _location(path: str, line: int) -> str:
    return f"{path}:{line}" if line >= 1 else path


def render_html(result: ScanResult) -> str:
    """The report as one self-contained HTML document (see the module docstring)."""
    findings = sorted(result.findings, key=lambda f: (-f.severity.rank, f.sort_key()))
    title = f"imgscan: {result.image.path.rsplit('/', 1)[-1]}"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">',
        '<meta name="referrer" content="no-referrer">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_text(title)}</title>",
        f"<style>{_STYLE}</style>",
        "</head>",
        "<body>",
        *_summary(result, findings),
        *_os(result),
        *_exposures(result),
        *_findings(findings),
        *_coverage(result),
        *_suppressed(result),
        f"<script>{_SCRIPT}</script>",
        "</body>",
        "</html>",
    ]
    return "\n".join(parts) + "\n"


def _summary(result: ScanResult, findings: list[Finding]) -> list[str]:
    counts = result.severity_counts()
    verdict = " ".join(
        f'<span class="sev sev-{s.value}" data-count="{n}">{n} {s.value}</span>'
        for s, n in counts.items()
    )
    coverage = (
        '<span class="ok">complete</span>: every volume and file was read'
        if result.complete
        else f'<span class="bad">incomplete</span>: {result.unread_volumes} volume(s) '
        f"not read, {len(result.skipped)} file(s) skipped; a clean verdict would be unfounded"
    )
    if result.image.in_use is not None:
        coverage += (
            f'; <span class="bad" id="in-use">image in use</span>: another process holds '
            f"{_text(result.image.in_use)} on it (a running VM); its file systems may be "
            "mid-change"
        )
    if result.error is not None:
        coverage = (
            f'<span class="bad" id="scan-error">scan failed</span>: {_text(result.error)}; '
            "nothing was read"
        )
    reader = _text(result.reader.name)
    if result.reader.accel:
        reader += f" ({_text(result.reader.accel)})"
    out = [
        '<header class="summary" id="summary">',
        f"<h1>imgscan report: <code>{_text(result.image.path)}</code></h1>",
        _verdict_banner(result),
    ]
    if any(f.secret is not None for f in findings):
        out.append(
            '<p class="banner" id="raw-values">This report contains raw secret values '
            "(--show-secrets): handle it like the secrets themselves.</p>"
        )
    out += [
        "<dl>",
        f"<dt>Image</dt><dd><code>{_text(result.image.path)}</code></dd>",
        f"<dt>Format</dt><dd>{_text(result.image.format)}</dd>",
        f"<dt>Size</dt><dd>{_size(result.image.virtual_size)}</dd>",
        *(
            [f'<dt>Digest</dt><dd><code id="image-sha256">{_text(result.image.sha256)}</code></dd>']
            if result.image.sha256
            else []
        ),
        f"<dt>Reader</dt><dd>{reader}</dd>",
        f'<dt>Findings</dt><dd class="counts" id="verdict">{len(findings)}: {verdict}</dd>',
        f"<dt>Exposures</dt><dd>{len(result.exposures)}</dd>",
        f"<dt>Suppressed</dt><dd>{len(result.suppressed)}</dd>",
        f'<dt>Coverage</dt><dd id="coverage-verdict">{coverage}</dd>',
        *_gate(result),
        f"<dt>Scanned</dt><dd>{result.stats.files} files, {_size(result.stats.bytes)}, "
        f"{result.stats.seconds:.1f} s"
        + (
            f", {_text(result.stats.started_at)} to {_text(result.stats.finished_at)}"
            if result.stats.started_at
            else ""
        )
        + "</dd>",
        f"<dt>Tool</dt><dd>{_text(str(build.current()))}</dd>",
        "</dl>",
        "</header>",
    ]
    return out


def _gate(result: ScanResult) -> list[str]:
    """The gate's verdict: how many findings fail it, at which threshold, under which policy."""
    gate = result.gate
    if gate is None:
        return []
    policy = f", policy <code>{_text(gate.policy)}</code>" if gate.policy else ""
    css = "bad" if gate.failing else "ok"
    return [
        f'<dt>Gate</dt><dd id="gate"><span class="{css}">{len(gate.failing)} finding(s) fail '
        f"the gate</span> (fail-on {gate.fail_on.value}{policy})</dd>"
    ]


def _exposures(result: ScanResult) -> list[str]:
    out = ['<section id="exposures">', "<h2>What a copy of this image grants</h2>"]
    if not result.exposures:
        out += ['<p class="muted">Nothing: no finding grants access to anything.</p>']
        out.append("</section>")
        return out
    out += [
        "<table>",
        "<thead><tr><th>Severity</th><th>Kind</th><th>Target</th><th>Principal</th>"
        "<th>Findings</th><th>Remediation</th><th>Details</th><th>Paths</th></tr></thead>",
        "<tbody>",
    ]
    for e in result.exposures:
        principal = f"<code>{_text(e.principal)}</code>" if e.principal else ""
        remediation = _text(e.remediation)
        if e.sysprep:
            ops = ", ".join(f"<code>{_text(op)}</code>" for op in e.sysprep)
            remediation += f'<br><span class="muted">virt-sysprep: {ops}</span>'
        out.append(
            f'<tr class="exposure" data-kind="{_text(e.kind)}">'
            f"{_severity_cell(e.severity)}"
            f'<td class="kind">{_text(e.kind)}</td>'
            f'<td class="target"><code>{_text(e.target)}</code></td>'
            f'<td class="principal">{principal}</td>'
            f'<td class="evidence">{len(e.evidence)}</td>'
            f'<td class="remediation">{remediation}</td>'
            f'<td class="details">{_pairs(e.details)}</td>'
            f'<td class="paths">{_list(_text(p) for p in e.paths)}</td>'
            "</tr>"
        )
    out += ["</tbody>", "</table>"]
    command = sysprep_command(result.image.path, result.exposures)
    if command:
        out += [
            "<p>virt-sysprep removes part of it from a copy (run it on the copy, not the "
            "original):</p>",
            f'<pre id="sysprep-command"><code>{_text(command)}</code></pre>',
        ]
    out.append("</section>")
    return out


def _findings(findings: list[Finding]) -> list[str]:
    total = len(findings)
    out = [
        '<section id="findings">',
        "<h2>Findings</h2>",
        f'<p id="findings-count">{total} of {total} findings shown</p>',
    ]
    if not findings:
        out += ['<p class="muted">No secrets found.</p>', "</section>"]
        return out
    # The filters need the script; without it they stay hidden and every row stays visible.
    out += ['<form id="filters" hidden>', "<fieldset><legend>Severity</legend>"]
    for s in Severity:
        n = sum(1 for f in findings if f.severity is s)
        out.append(
            f'<label><input type="checkbox" name="severity" value="{s.value}" '
            f'id="filter-{s.value}" checked> {_severity(s)} ({n})</label>'
        )
    out += [
        "</fieldset>",
        '<label>Category <select id="category-filter" name="category">',
        '<option value="">all categories</option>',
    ]
    for category in sorted({f.category for f in findings}):
        n = sum(1 for f in findings if f.category == category)
        out.append(f'<option value="{_text(category)}">{_text(category)} ({n})</option>')
    out += [
        "</select></label>",
        '<label>Search <input type="search" id="search" name="search" '
        'placeholder="path, rule, preview, fingerprint"></label>',
        "</form>",
    ]
    value_header = "Secret" if any(f.secret is not None for f in findings) else "Preview"
    out += [
        "<table>",
        '<thead><tr><th data-sort="rank">Severity</th><th data-sort="rule">Rule</th>'
        '<th>Category</th><th data-sort="path">Location</th>'
        f"<th>{value_header}</th><th>Validation</th><th>Context</th><th>Fingerprint</th>"
        "</tr></thead>",
        "<tbody>",
    ]
    for f in findings:
        if f.secret is not None:
            value = f'<code class="secret">{_value(f.secret)}</code>'
        else:
            value = f"<code>{_text(f.preview)}</code>"
        checks = _list(
            (
                f"{_text(c.name)}: {_text(c.result.value)}"
                + (f" ({_text(c.detail)})" if c.detail else "")
                for c in f.validation.checks
            ),
            code=False,
        )
        # Long paths wrap after a "/" (a <wbr> after each), not in the middle of a name.
        location = _text(_location(f.path, f.line)).replace("/", "/<wbr>")
        out.append(
            f'<tr class="finding" data-severity="{f.severity.value}" '
            f'data-category="{_text(f.category)}" data-rank="{9 - f.severity.rank}" '
            f'data-rule="{_text(f.rule)}" data-path="{_text(f.path)}">'
            f"{_severity_cell(f.severity)}"
            f'<td class="rule"><code>{_text(f.rule)}</code></td>'
            f'<td class="category">{_text(f.category)}</td>'
            f'<td class="location"><code>{location}</code>'
            f"{_package(f.package)}</td>"
            f'<td class="value">{value}</td>'
            f'<td class="validation">{_text(f.validation.status.value)}{checks}</td>'
            f'<td class="context">{_pairs(f.context)}</td>'
            f'<td class="fingerprint"><code>{_text(f.fingerprint)}</code></td>'
            "</tr>"
        )
    out += ["</tbody>", "</table>", "</section>"]
    return out


def _package(package: Package | None) -> str:
    """The package that installed the finding's file, under its location."""
    if package is None:
        return ""
    return f'<div class="package">{_text(package.describe())}</div>'


def _os(result: ScanResult) -> list[str]:
    out = ['<section id="os">', "<h2>Operating system</h2>"]
    info = result.os
    if info is None:
        out += ['<p class="muted">The guest operating system was not identified.</p>']
        out.append("</section>")
        return out
    out.append("<dl>")
    for label, value in (
        ("Type", info.type),
        ("Distribution", info.distro),
        ("Version", info.version),
        ("Name", info.name),
        ("Host name", info.hostname),
    ):
        shown = _text(value) if value else '<span class="muted">unknown</span>'
        out.append(f"<dt>{label}</dt><dd>{shown}</dd>")
    out.append("</dl>")
    if info.users:
        out += [
            '<table class="narrow">',
            "<thead><tr><th>User</th><th>uid</th><th>Home</th></tr></thead>",
            "<tbody>",
        ]
        out += [
            f'<tr class="user"><td class="name"><code>{_text(u.name)}</code></td>'
            f"<td>{u.uid}</td><td><code>{_text(u.home)}</code></td></tr>"
            for u in info.users
        ]
        out += ["</tbody>", "</table>"]
    else:
        out.append('<p class="muted">No login accounts found.</p>')
    out.append("</section>")
    return out


def _mountpoint(volume: Volume) -> str:
    where = f"<code>{_text(volume.mountpoint)}</code>" if volume.mountpoint else ""
    subvolumes = _list(
        f"{_text(path)} at {_text(mountpoint) if mountpoint else 'not mounted'}"
        for path, mountpoint in volume.subvolumes
    )
    return where + subvolumes


def _coverage(result: ScanResult) -> list[str]:
    verdict = (
        '<p class="ok">Coverage complete.</p>'
        if result.complete
        else '<p class="bad">Coverage incomplete: part of the image was not read.</p>'
    )
    out = ['<section id="coverage">', "<h2>Coverage</h2>", verdict, "<h3>Volumes</h3>"]
    if result.volumes:
        out += [
            '<table id="volumes">',
            "<thead><tr><th>Device</th><th>Filesystem</th><th>Mountpoint</th><th>Status</th>"
            "<th>Reason</th><th>Files</th><th>Bytes</th><th>Reader</th></tr></thead>",
            "<tbody>",
        ]
        for v in result.volumes:
            status = "ok" if v.covered else "bad"
            out.append(
                f'<tr class="volume" data-status="{v.status.value}">'
                f'<td class="device"><code>{_text(v.device)}</code></td>'
                f'<td class="fstype">{_text(v.fstype or "")}</td>'
                f'<td class="mountpoint">{_mountpoint(v)}</td>'
                f'<td class="status {status}">{v.status.value}</td>'
                f'<td class="reason">{_text(v.reason or "")}</td>'
                f'<td class="files">{v.files}</td>'
                f'<td class="bytes">{v.bytes}</td>'
                f'<td class="reader">{_text(v.reader or "")}</td>'
                "</tr>"
            )
        out += ["</tbody>", "</table>"]
    else:
        out.append('<p class="bad">The reader found no volume.</p>')
    out.append("<h3>Skipped files</h3>")
    if result.skipped:
        out += [
            '<table class="narrow" id="skipped">',
            "<thead><tr><th>Path</th><th>Reason</th></tr></thead>",
            "<tbody>",
        ]
        out += [
            f'<tr class="skipped"><td><code>{_text(s.path)}</code></td>'
            f"<td>{_text(s.reason)}</td></tr>"
            for s in result.skipped
        ]
        out += ["</tbody>", "</table>"]
    else:
        out.append('<p class="muted">None.</p>')
    if result.excluded:
        out += [
            "<h3>Excluded by --exclude</h3>",
            '<ul id="excluded">'
            + "".join(
                f"<li><code>{_text(e.pattern)}</code>: {e.files} file(s), {e.bytes} bytes</li>"
                for e in result.excluded
            )
            + "</ul>",
        ]
    out.append("<h3>Warnings</h3>")
    if result.warnings:
        out.append(
            '<ul id="warnings">'
            + "".join(f"<li>{_text(w)}</li>" for w in result.warnings)
            + "</ul>"
        )
    else:
        out.append('<p class="muted">None.</p>')
    out.append("</section>")
    return out


def _suppressed(result: ScanResult) -> list[str]:
    out = [
        '<section id="suppressed">',
        f"<h2>Suppressed findings ({len(result.suppressed)})</h2>",
    ]
    if not result.suppressed:
        out += ['<p class="muted">None.</p>', "</section>"]
        return out
    out += [
        '<p class="muted">Accepted by a baseline or an ignore entry: not counted by the gate, '
        "listed without their values.</p>",
        '<table class="narrow">',
        "<thead><tr><th>Rule</th><th>Path</th><th>Line</th><th>By</th></tr></thead>",
        "<tbody>",
    ]
    out += [
        f'<tr class="suppressed"><td><code>{_text(s.rule)}</code></td>'
        f"<td><code>{_text(s.path)}</code></td><td>{s.line}</td><td>{_text(s.by)}</td></tr>"
        for s in result.suppressed
    ]
    out += ["</tbody>", "</table>", "</section>"]
    return out
