"""Location demotion (issue 20): a directory named tests/ or spec/ is no evidence that a
credential is a fixture. Credential files, and anything in a home directory or under /etc,
keep their severity wherever they sit; the test data of installed software is still demoted."""

from __future__ import annotations

import build as testdata
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from imgscan.detect.checks import fixture_location
from imgscan.model import FileRef, Severity
from imgscan.scan.worker import FileScanner


@pytest.mark.parametrize(
    "path",
    [
        "/root/.aws/tests/credentials",
        "/root/spec/.ssh/id_ed25519",
        "/home/carol/src/app/test/fixtures/.env",
        "/etc/myapp/test/app.conf",
        "C:\\Users\\bob\\tests\\web.config",
        "/home/bob/backup.zip!/tests/.env",
        # credential files outside home directories and /etc
        "/srv/app/tests/.aws/credentials",
        "/opt/tool/spec/.ssh/id_rsa",
        "/srv/www/test/.pgpass",
        "/var/lib/app/fixtures/.netrc",
        "/opt/vendor/tests/server.key",
        "/opt/vendor/tests/krb5.keytab",
        "/srv/backup/test/shadow",
        "/srv/profile/tests/.config/gcloud/credentials.db",
        "/srv/profile/spec/logins.json",
        "/srv/fixtures/ssh/ssh_host_ed25519_key",
        "/srv/data/tests/bundle.zip!/etc/shadow",
    ],
)
def test_credentials_keep_their_place(path: str) -> None:
    assert fixture_location(path) is None


@pytest.mark.parametrize(
    "path",
    [
        "/usr/lib/python3/dist-packages/lib/tests/fixtures/.env",
        "/opt/tool/spec/data.zip!/.env",
        "/usr/share/doc/pkg/test/settings.yml",
        "/srv/app/node_modules/x/__tests__/config.json",
    ],
)
def test_fixtures_of_installed_software_are_still_demoted(path: str) -> None:
    check = fixture_location(path)
    assert check is not None and check.detail == "in a test or fixture directory"


def test_live_keys_in_test_named_directories_keep_their_severity(
    inline_scanner: FileScanner,
) -> None:
    key_id = testdata.aws_key_id()
    aws = (
        "[default]\n"
        f"aws_access_key_id = {key_id}\n"
        f"aws_secret_access_key = {testdata.rand_chars(testdata.B64, 40)}\n"
    ).encode()
    ssh = ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    for path, text in (("/root/.aws/tests/credentials", aws), ("/root/spec/.ssh/id_ed25519", ssh)):
        outcome = inline_scanner.scan(FileRef("/dev/sda1", path, len(text), "-", text))
        assert outcome.findings, path
        for finding in outcome.findings:
            assert finding.severity is not Severity.INFO, (path, finding.rule)
            assert finding.severity.rank >= Severity.HIGH.rank, (path, finding.rule)
            assert all(c.name != "location" for c in finding.validation.checks)
