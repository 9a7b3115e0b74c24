"""Published example and test credentials (imgscan/signatures/published.toml): exactly those
values are not reported, a value of the same shape is, and a malformed entry stops the load.

The published values are assembled from pieces here so that this file does not itself look like
it holds credentials to a push-protection scanner."""

from __future__ import annotations

import hashlib
import secrets
import shutil
import string
from pathlib import Path

import pytest

from imgscan.detect.engine import Engine
from imgscan.detect.rules import RulePack, RulePackError, load_pack
from imgscan.options import default_signatures_dir

AZURITE_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVEr" + "Cz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
STRIPE_DOCS_KEY = "sk_" + "test_" + "4eC39HqLyjWDarjtT1zdp7dc"
JWT_IO_TOKEN = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9"
    + ".eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ"
    + ".SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
)


def _azure(key: str) -> str:
    return (
        "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
        f"AccountKey={key};BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1;\n"
    )


def _stripe(key: str) -> str:
    return f"STRIPE_SECRET_KEY={key}\n"


def _jwt(token: str) -> str:
    return f"Authorization: Bearer {token}\n"


def _like(value: str) -> str:
    """A random value of the same shape (same length, same character classes at each place)."""
    out = []
    for ch in value:
        if ch in string.ascii_uppercase:
            out.append(secrets.choice(string.ascii_uppercase))
        elif ch in string.ascii_lowercase:
            out.append(secrets.choice(string.ascii_lowercase))
        elif ch in string.digits:
            out.append(secrets.choice(string.digits))
        else:
            out.append(ch)
    return "".join(out)


CASES = [
    ("azure", _azure, AZURITE_KEY, "/srv/app/appsettings.Development.json"),
    ("stripe", _stripe, STRIPE_DOCS_KEY, "/srv/app/.env"),
    ("jwt", _jwt, JWT_IO_TOKEN, "/home/alice/notes/api.txt"),
]


def test_every_case_is_on_the_list(pack: RulePack) -> None:
    for _, _, value, _ in CASES:
        assert hashlib.sha256(value.encode()).digest() in pack.published


@pytest.mark.parametrize(("kind", "render", "value", "path"), CASES, ids=[c[0] for c in CASES])
def test_a_published_value_is_not_reported_and_its_shape_is(
    engine: Engine, kind: str, render: object, value: str, path: str
) -> None:
    assert callable(render)
    assert engine.scan_bytes(render(value).encode(), path) == []
    other = _like(value)
    hits = engine.scan_bytes(render(other).encode(), path)
    assert any(h.secret == other.encode() or other.encode() in h.secret for h in hits), kind


def _pack_with(tmp_path: Path, text: str) -> Path:
    target = tmp_path / "pack"
    shutil.copytree(default_signatures_dir(), target)
    (target / "published.toml").write_text(text)
    return target


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[[published]]\nsha256 = "abc"\nname = "x"\nsource = "y"\n', "64 lowercase hex"),
        (f'[[published]]\nsha256 = "{"0" * 64}"\nname = "x"\n', "source is required"),
        (
            f'[[published]]\nsha256 = "{"0" * 64}"\nname = "x"\nsource = "y"\nvalue = "z"\n',
            "unknown keys",
        ),
        ("published = 1\n", "expected an array of [[published]] tables"),
    ],
)
def test_a_malformed_entry_stops_the_load(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(RulePackError, match=message.replace("[", r"\[").replace("]", r"\]")) as err:
        load_pack(_pack_with(tmp_path, text))
    assert "published.toml" in str(err.value)


def test_the_list_is_part_of_the_pack_version(tmp_path: Path) -> None:
    before = load_pack(default_signatures_dir()).version
    text = (default_signatures_dir() / "published.toml").read_text()
    edited = text + f'\n[[published]]\nsha256 = "{"0" * 64}"\nname = "x"\nsource = "y"\n'
    assert load_pack(_pack_with(tmp_path, edited)).version != before
