"""Documentation and example shapes are not secrets (issue 16, part 4): through a worker's
FileScanner over the whole pack, the shapes docs and sample configs use are dropped, while
values of the same shape that could be real stay found. Every value here is a textbook example
or generated at test time."""

from __future__ import annotations

import secrets

import pytest

from imgscan.model import FileRef, Severity
from imgscan.scan.worker import FileScanner

EXAMPLES = [
    'engine = create_engine("postgresql://scott:tiger@localhost:5432/mydatabase")',
    "postgresql://user:password@localhost/mydb",
    'password: "your-password-here"',
    'db_password = "insert_password_here"',
    'api_key = "my_api_key"',
    '"password": "hunter2"',
    'password = "test1234"',
    'password = "s3cr3t"',
    'password = "P@ssw0rd"',
    'api_key = "1234567890abcdef"',
    '"secret": "0123456789abcdef0123456789abcdef"',
    'url = f"postgresql://{user}:{password}@{host}:{port}/{db}"',
    'url = "postgresql://%s:%s@%s/%s" % (user, password, host, db)',
    "DATABASE_URL=postgres://${DB_USER}:${DB_PASSWORD}@${DB_HOST}/${DB_NAME}",
    'password = "<password>"',
    "Server=myServerAddress;Database=myDataBase;User Id=myUsername;Password=myPassword;",
    "LANGFUSE_SECRET_KEY=sk-lf-00000000-0000-0000-0000-000000000000",
    "CLOJARS_PASSWORD=CLOJARS_xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
]


def _reported(scanner: FileScanner, text: str) -> list[tuple[str, str | None]]:
    data = (text + "\n").encode()
    outcome = scanner.scan(FileRef("/dev/sda1", "/srv/app/settings.conf", len(data), "-", data))
    return [(f.rule, f.secret) for f in outcome.findings if f.severity is not Severity.INFO]


@pytest.mark.parametrize("text", EXAMPLES)
def test_documentation_shapes_are_dropped(inline_scanner: FileScanner, text: str) -> None:
    assert _reported(inline_scanner, text) == []


def test_real_values_of_the_same_shapes_stay(inline_scanner: FileScanner) -> None:
    password = "Kq7" + secrets.token_urlsafe(12)
    key = secrets.token_hex(16)
    for text, value in (
        (f"postgresql://scott:{password}@db.internal:5432/hr", password),
        (f'password: "{password}"', password),
        (f'api_key = "{key}"', key),
        (f'"secret": "{key}"', key),
    ):
        assert value in {secret for _, secret in _reported(inline_scanner, text)}, text
