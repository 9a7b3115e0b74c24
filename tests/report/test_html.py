"""The HTML report: self-contained, escaped and deterministic in its source, and in headless
Chromium (offline, Debian's chromium and chromedriver) what a person actually sees: the
exposures, the findings and their filters, the coverage, and nothing a hostile name could run."""

from __future__ import annotations

import base64
import hashlib
import html
import json
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from expect import IDENTIFIER_RULES
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import Select
from test_cli import run
from test_markdown import _result

from imgscan.model import (
    Check,
    CheckResult,
    Exposure,
    Finding,
    OsInfo,
    OsUser,
    ScanResult,
    Severity,
    Skipped,
    Suppressed,
    Validation,
)
from imgscan.report.html import CSP, render_html

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")

HOSTILE_PATH = '/srv/<img src=x onerror="window.pwned=1">.env'
HOSTILE_USER = '"><script>window.pwned=2</script>'
# Not credential-shaped: only whether it appears matters.
RAW_VALUE = "not-a-real-value<&>-0451"


def _finding(
    rule: str,
    category: str,
    severity: Severity,
    path: str,
    line: int = 1,
    context: tuple[tuple[str, str], ...] = (),
) -> Finding:
    checks = (Check("shape", CheckResult.PASS, "well-formed"),) if category == "cloud" else ()
    return Finding(
        rule,
        category,
        severity,
        path,
        line,
        "…(24)",
        f"fp1:{rule}:{path}:{line}",
        validation=Validation(checks),
        context=context,
    )


FINDINGS = (
    _finding(
        "openssh-private-key", "private-key", Severity.CRITICAL, "/home/alice/.ssh/id_ed25519"
    ),
    _finding("aws-access-key-id", "cloud", Severity.HIGH, "/root/.aws/credentials", 2),
    _finding(
        "postgres-connection-url",
        "database",
        Severity.HIGH,
        "/srv/app/.env",
        5,
        (("scheme", "postgres"), ("user", "hr_app"), ("host", "db.internal")),
    ),
    _finding("generic-password-unquoted", "password", Severity.MEDIUM, HOSTILE_PATH, 3),
    _finding("generic-password-unquoted", "password", Severity.MEDIUM, "/etc/myapp/app.conf", 14),
    _finding("jwt", "token", Severity.LOW, "/srv/app/tokens.txt", 2),
)
EXPOSURES = (
    Exposure(
        "ssh",
        "SSH servers that trust this key",
        "alice",
        Severity.CRITICAL,
        (FINDINGS[0].fingerprint,),
        (FINDINGS[0].path,),
        "remove the key from the image",
        ("ssh-userdir",),
        (("hosts", "git.internal"), ("encrypted", "no")),
    ),
    Exposure(
        "database",
        "postgresql://db.internal:5432/hr",
        "hr_app",
        Severity.HIGH,
        (FINDINGS[2].fingerprint,),
        (FINDINGS[2].path,),
        "rotate the database password",
    ),
    Exposure(
        "credential",
        "a password",
        None,
        Severity.MEDIUM,
        (FINDINGS[3].fingerprint,),
        (HOSTILE_PATH,),
        "rotate it",
    ),
)


def _sample() -> ScanResult:
    """A result with every section filled and hostile strings where the image puts strings."""
    return replace(
        _result(FINDINGS, (Skipped("/var/lib/<b>big</b>.img", "larger than the size limit"),)),
        exposures=EXPOSURES,
        os=OsInfo(
            "linux",
            "debian",
            "12",
            "Debian GNU/Linux 12 (bookworm)",
            "app01",
            (OsUser("alice", 1000, "/home/alice"), OsUser(HOSTILE_USER, 1001, "/home/x")),
        ),
        suppressed=(Suppressed("jwt", "/srv/app/old.txt", 4, "fp1:abc", "baseline"),),
        warnings=("ignore entry expired: <TICKET-1>",),
    )


class _Tags(HTMLParser):
    """Every start tag with its attributes, the text outside tags, and the scripts' bodies."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.scripts: list[str] = []
        self.styles: list[str] = []
        self._in: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        self._in = tag if tag in ("script", "style") else None

    def handle_endtag(self, tag: str) -> None:
        self._in = None

    def handle_data(self, data: str) -> None:
        if self._in == "script":
            self.scripts.append(data)
        elif self._in == "style":
            self.styles.append(data)
        else:
            self.text.append(data)


def _parse(document: str) -> _Tags:
    parser = _Tags()
    parser.feed(document)
    parser.close()
    return parser


def _hash(source: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(source.encode()).digest()).decode() + "'"


# Unit tests: the document's source.


def test_deterministic() -> None:
    # Two results built apart from the same data: the same bytes (no clock, no randomness).
    assert render_html(_sample()).encode() == render_html(_sample()).encode()


def test_self_contained_and_locked_down() -> None:
    document = render_html(_sample())
    parsed = _parse(document)
    assert "http://" not in document and "https://" not in document
    assert "<link" not in document and "url(" not in document and "@import" not in document
    names = {tag for tag, _ in parsed.tags}
    assert not names & {"link", "img", "iframe", "object", "embed", "base", "audio", "video"}
    for tag, attrs in parsed.tags:
        assert not {"src", "href", "srcset", "action", "style"} & set(attrs), (tag, attrs)
        assert not any(name.startswith("on") for name in attrs), (tag, attrs)
    # One inline style and one inline script, both allowed by hash and nothing else allowed.
    assert len(parsed.scripts) == 1 and len(parsed.styles) == 1
    (csp,) = [
        a["content"] for t, a in parsed.tags if a.get("http-equiv") == "Content-Security-Policy"
    ]
    assert csp == CSP
    assert "default-src 'none'" in CSP and "unsafe" not in CSP
    assert f"script-src {_hash(parsed.scripts[0])}" in CSP
    assert f"style-src {_hash(parsed.styles[0])}" in CSP


def test_hostile_strings_are_escaped() -> None:
    document = render_html(_sample())
    parsed = _parse(document)
    assert HOSTILE_PATH not in document and HOSTILE_USER not in document
    assert html.escape(HOSTILE_PATH, quote=True) in document
    assert html.escape(HOSTILE_USER, quote=True) in document
    assert "<b>big</b>" not in document and "<TICKET-1>" not in document
    # They come back as text when parsed, and add no element.
    text = "".join(parsed.text)
    assert f"{HOSTILE_PATH}:3" in text and HOSTILE_USER in text and "<TICKET-1>" in text
    assert [t for t, _ in parsed.tags].count("script") == 1
    # Undecodable bytes (surrogate escapes) and terminal codes: escaped, and the page encodes.
    odd = replace(_sample(), warnings=("bad name /srv/\udcff\x1b[2J.env",))
    assert "/srv/\\xff\\x1b[2J.env" in render_html(odd).encode("utf-8").decode()


def test_preview_unless_the_scan_kept_values() -> None:
    redacted = render_html(_sample())
    assert "…(24)" in redacted and "<th>Preview</th>" in redacted
    assert "raw-values" not in redacted
    kept = replace(_sample(), findings=tuple(replace(f, secret=RAW_VALUE) for f in FINDINGS))
    shown = render_html(kept)
    assert RAW_VALUE not in shown  # its < & > are escaped too
    assert shown.count(html.escape(RAW_VALUE)) == len(FINDINGS)
    assert "<th>Secret</th>" in shown and 'id="raw-values"' in shown


def test_every_finding_row_carries_its_filter_keys() -> None:
    rows = [a for t, a in _parse(render_html(_sample())).tags if a.get("class") == "finding"]
    assert [(r["data-severity"], r["data-category"]) for r in rows] == [
        ("critical", "private-key"),
        ("high", "cloud"),
        ("high", "database"),
        ("medium", "password"),
        ("medium", "password"),
        ("low", "token"),
    ]


# Headless Chromium: what is shown.


def _options(javascript: bool) -> webdriver.ChromeOptions:
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    if not javascript:
        options.add_experimental_option(
            "prefs", {"profile.managed_default_content_settings.javascript": 2}
        )
    return options


@contextmanager
def _chromium(javascript: bool = True) -> Iterator[WebDriver]:
    """Debian's Chromium driven by Debian's chromedriver, both named explicitly so that
    Selenium Manager never looks for (or downloads) a browser or a driver."""
    for tool in (CHROMIUM, CHROMEDRIVER):
        if not os.access(tool, os.X_OK):
            pytest.fail(f"{tool} is missing: chromium is installed by dev.sh (chromium-driver too)")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("SE_OFFLINE", "true")
        driver = webdriver.Chrome(
            options=_options(javascript), service=Service(executable_path=str(CHROMEDRIVER))
        )
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    with _chromium() as driver:
        yield driver


def _open(driver: WebDriver, document: str, path: Path) -> None:
    """Load `document` from a file, with the console log emptied first."""
    path.write_text(document, encoding="utf-8")
    driver.get_log("browser")
    driver.get(path.as_uri())


def _console_errors(driver: WebDriver) -> list[dict[str, Any]]:
    return [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def _cells(rows: list[WebElement], *classes: str) -> list[tuple[str, ...]]:
    return [
        tuple(row.find_element(By.CSS_SELECTOR, f"td.{c}").text for c in classes) for row in rows
    ]


def _shown_findings(driver: WebDriver) -> list[tuple[str | None, str | None]]:
    rows = driver.find_elements(By.CSS_SELECTOR, "#findings tr.finding")
    return [
        (row.get_attribute("data-severity"), row.get_attribute("data-category"))
        for row in rows
        if row.is_displayed()
    ]


def _count(driver: WebDriver) -> str:
    return driver.find_element(By.ID, "findings-count").text


def test_chromium_shows_exposures_and_os(browser: WebDriver, tmp_path: Path) -> None:
    _open(browser, render_html(_sample()), tmp_path / "report.html")
    rows = browser.find_elements(By.CSS_SELECTOR, "#exposures tr.exposure")
    assert all(row.is_displayed() for row in rows)
    assert _cells(rows, "kind", "target", "principal") == [
        ("ssh", "SSH servers that trust this key", "alice"),
        ("database", "postgresql://db.internal:5432/hr", "hr_app"),
        ("credential", "a password", ""),
    ]
    details = rows[0].find_element(By.CSS_SELECTOR, "td.details").text.split("\n")
    assert details == ["hosts", "git.internal", "encrypted", "no"]
    command = browser.find_element(By.ID, "sysprep-command").text
    assert command == "virt-sysprep -a /images/app01.qcow2 --operations ssh-userdir"
    users = browser.find_elements(By.CSS_SELECTOR, "#os tr.user td.name")
    assert [u.text for u in users] == ["alice", HOSTILE_USER]
    assert "incomplete" in browser.find_element(By.ID, "coverage-verdict").text
    assert _console_errors(browser) == []


def test_chromium_filters_findings(browser: WebDriver, tmp_path: Path) -> None:
    _open(browser, render_html(_sample()), tmp_path / "report.html")
    assert _count(browser) == "6 of 6 findings shown"
    assert len(_shown_findings(browser)) == 6
    assert browser.find_element(By.ID, "filters").is_displayed()

    browser.find_element(By.ID, "filter-low").click()
    browser.find_element(By.ID, "filter-medium").click()
    assert _shown_findings(browser) == [
        ("critical", "private-key"),
        ("high", "cloud"),
        ("high", "database"),
    ]
    assert _count(browser) == "3 of 6 findings shown"

    category = Select(browser.find_element(By.ID, "category-filter"))
    category.select_by_value("database")
    assert _shown_findings(browser) == [("high", "database")]
    assert _count(browser) == "1 of 6 findings shown"

    browser.find_element(By.ID, "filter-medium").click()
    category.select_by_value("password")
    assert _shown_findings(browser) == [("medium", "password")] * 2
    assert _count(browser) == "2 of 6 findings shown"

    category.select_by_value("")
    assert len(_shown_findings(browser)) == 5 and _count(browser) == "5 of 6 findings shown"
    assert _console_errors(browser) == []


def test_chromium_shows_hostile_names_as_text(browser: WebDriver, tmp_path: Path) -> None:
    _open(browser, render_html(_sample()), tmp_path / "report.html")
    locations = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "td.location")]
    assert f"{HOSTILE_PATH}:3" in locations
    assert browser.find_elements(By.TAG_NAME, "img") == []
    assert len(browser.find_elements(By.TAG_NAME, "script")) == 1
    assert browser.execute_script("return window.pwned") is None
    assert _console_errors(browser) == []


def test_chromium_console_reports_a_csp_violation(browser: WebDriver, tmp_path: Path) -> None:
    """The console check above is not vacuous: a script the CSP does not list is refused, and
    the refusal is a SEVERE console entry. The page stays readable, only the filters are gone."""
    tampered = render_html(_sample()).replace('"use strict";', '"use strict"; window.pwned = 3;')
    _open(browser, tampered, tmp_path / "tampered.html")
    errors = _console_errors(browser)
    assert errors and any("Content Security Policy" in e["message"] for e in errors), errors
    assert browser.execute_script("return window.pwned") is None
    assert not browser.find_element(By.ID, "filters").is_displayed()
    assert len(_shown_findings(browser)) == 6


def test_everything_is_visible_without_javascript(tmp_path: Path) -> None:
    with _chromium(javascript=False) as driver:
        _open(driver, render_html(_sample()), tmp_path / "report.html")
        assert len(_shown_findings(driver)) == 6 and _count(driver) == "6 of 6 findings shown"
        assert not driver.find_element(By.ID, "filters").is_displayed()
        for section in ("summary", "os", "exposures", "findings", "coverage", "suppressed"):
            assert driver.find_element(By.ID, section).is_displayed(), section
        rows = driver.find_elements(By.CSS_SELECTOR, "tr.exposure, tr.volume, tr.suppressed")
        assert len(rows) == 3 + 2 + 1 and all(row.is_displayed() for row in rows)
        assert _console_errors(driver) == []


# End to end: the CLI on the server image.


def _secret_fragments(value: str) -> list[str]:
    """The value, and each line of it long enough to be its own (armour lines are public)."""
    lines = [line for line in value.split("\n") if len(line) >= 16 and not line.startswith("-----")]
    return [value, *lines]


def test_server_image_report(images: Path, browser: WebDriver, tmp_path: Path) -> None:
    image = images / "server.qcow2"
    page = tmp_path / "server.html"
    proc = run("scan", image, "--format", "html", "-o", page)
    assert proc.returncode == 1, proc.stderr
    report: dict[str, Any] = json.loads(run("scan", image, "--format", "json").stdout)
    total = len(report["findings"])
    assert total > 0

    document = page.read_text(encoding="utf-8")
    browser.get_log("browser")
    browser.get(page.as_uri())
    rows = browser.find_elements(By.CSS_SELECTOR, "#exposures tr.exposure")
    assert ("database", "postgresql://db.internal:5432/hr", "hr_app") in _cells(
        rows, "kind", "target", "principal"
    )
    assert _count(browser) == f"{total} of {total} findings shown"
    assert len(_shown_findings(browser)) == total
    volumes = browser.find_elements(By.CSS_SELECTOR, "#volumes tr.volume")
    assert _cells(volumes, "device", "mountpoint", "status") == [
        (v["device"], v["mountpoint"] or "", v["status"]) for v in report["coverage"]["volumes"]
    ]
    assert re.search(r"\bcomplete\b", browser.find_element(By.ID, "coverage-verdict").text)
    assert _console_errors(browser) == []

    # Not one of the values a --show-secrets scan sees is in the page made without it.
    shown = json.loads(run("scan", image, "--format", "json", "--show-secrets").stdout)
    # File rules (a credential store known by its path) report a file, not a value.
    values = [
        f["secret"]
        for f in shown["findings"]
        if f.get("secret") and f["rule"] not in IDENTIFIER_RULES  # identifiers are shown
    ]
    assert len(shown["findings"]) == total and len(values) > total // 2, shown["findings"]
    for value in values:
        for fragment in _secret_fragments(value):
            assert fragment not in document and html.escape(fragment) not in document, fragment


def test_chromium_stays_usable_with_5000_findings(browser: WebDriver, tmp_path: Path) -> None:
    """A stock server gives hundreds of findings and a bad image thousands: the verdict is a
    banner at the top, the rows can be searched and sorted, each shows its fingerprint (for an
    ignore entry), and long paths break after a "/", not inside a name."""
    from imgscan.model import Verdict, Volume, VolumeStatus

    order = list(Severity)
    findings = tuple(
        _finding(
            f"rule-{i % 37}",
            "password",
            order[i % 5],
            f"/srv/app{i % 50}/a/rather/long/directory/path/for/wrapping/config-{i:04}.env",
            i % 200 + 1,
        )
        for i in range(5000)
    )
    failing = tuple(f.fingerprint for f in findings if f.severity is not Severity.INFO)
    result = replace(
        _result(findings),
        volumes=(Volume("/dev/sda1", "ext4", "/", VolumeStatus.SCANNED),),
        gate=Verdict(Severity.LOW, None, failing),
    )
    page = render_html(result)
    assert "/<wbr>srv/<wbr>app" in page
    _open(browser, page, tmp_path / "big.html")
    banner = browser.find_element(By.ID, "gate-banner")
    assert banner.text == "FAIL: 4000 finding(s) fail the gate (fail-on low)"
    assert banner.location["y"] < browser.find_element(By.ID, "findings").location["y"]
    assert _count(browser) == "5000 of 5000 findings shown"
    browser.find_element(By.ID, "search").send_keys("config-4321.env")
    assert _count(browser) == "1 of 5000 findings shown"
    (shown,) = [r for r in browser.find_elements(By.CSS_SELECTOR, "tr.finding") if r.is_displayed()]
    fingerprint = shown.find_element(By.CSS_SELECTOR, "td.fingerprint").text
    assert fingerprint == findings[4321].fingerprint
    browser.execute_script(
        "var s = document.getElementById('search'); s.value = '';"
        "s.dispatchEvent(new Event('input'));"
    )
    assert _count(browser) == "5000 of 5000 findings shown"
    header = browser.find_element(By.CSS_SELECTOR, 'th[data-sort="path"]')
    header.click()
    paths = sorted(f.path for f in findings)

    def first_path() -> str | None:
        row = browser.find_element(By.CSS_SELECTOR, "#findings tr.finding")
        return row.get_attribute("data-path")

    assert first_path() == paths[0]
    header.click()
    assert first_path() == paths[-1]
    # A location cell is no wider than the table lets it be: the path wrapped.
    cell = browser.find_element(By.CSS_SELECTOR, "#findings tr.finding td.location")
    table = browser.find_element(By.CSS_SELECTOR, "#findings table")
    assert cell.size["width"] < table.size["width"] / 2
    assert _console_errors(browser) == []
    passing = render_html(replace(result, gate=Verdict(Severity.LOW, None, ())))
    assert 'id="gate-banner">PASS: no finding fails the gate' in passing
    incomplete = render_html(replace(result, volumes=_result(()).volumes))
    assert 'class="verdict verdict-incomplete"' in incomplete
