"""Provider-token corpus entries kept as data (providers.toml) and the writer that plants them.

providers.toml lists, per credential kind, the file it sits in, the line that holds it and a
value shape; its decoys (placeholders, look-alikes with the right prefix and the wrong length
or alphabet, public counterparts, documentation examples) sit beside it, and ``[[decoys]]``
tables plant more of them in documentation and example files. Values are drawn at
run time from the corpus's seeded generator (shapes.Shapes), so the data holds shapes, never
a credential.

Shapes are literal text with ``<CLASS:N>`` pieces: N characters of CLASS (``alnum``,
``lower``, ``upper``, ``alnumlower``, ``digits``, ``hex``, ``HEX``, ``b64``, ``b64url``,
``base32``), ``<uuid>`` (a random UUID), ``<x:N>`` / ``<X:N>`` (N times "x" or "X", a
placeholder) or ``<crc32>`` (the CRC32, in 8 hex digits, of the value drawn so far: checksummed
token formats). In a ``line``, ``@@`` is where the labelled value goes; ``<...>`` pieces
elsewhere in a line are unlabelled filler (an access key id beside its secret). Lines may hold
``\\n``; each labelled value gets a line of its own.
"""

from __future__ import annotations

import re
import string
import tomllib
import zlib
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from shapes import B64, B64URL, BASE32, HEX, Shapes

DATA = Path(__file__).resolve().parent / "providers.toml"

_PIECE = re.compile(r"<([A-Za-z0-9]+)(?::([0-9]+))?>")
_CLASSES = {
    "alnum": string.ascii_letters + string.digits,
    "lower": string.ascii_lowercase,
    "upper": string.ascii_uppercase,
    "alnumlower": string.ascii_lowercase + string.digits,
    "hex": HEX,
    "HEX": HEX.upper(),
    "b64": B64,
    "b64url": B64URL,
    "base32": BASE32,
}


class Builder(Protocol):
    """What the writer needs of corpus.CorpusBuilder (kept structural: corpus imports us)."""

    def file(self, path: str) -> Any: ...


@dataclass(frozen=True)
class Planted:
    """One labelled value: ``role`` secret or decoy, its kind, the line (with ``@@``) and shape."""

    role: str
    kind: str
    line: str
    shape: str


@dataclass(frozen=True)
class Data:
    """providers.toml, checked: kinds with their categories and the files' planted values."""

    secret_kinds: dict[str, str]
    decoy_kinds: dict[str, str]
    files: dict[str, list[Planted]]


def draw(shape: str, g: Shapes) -> str:
    """A value of ``shape`` (see the module docstring) drawn from ``g``."""
    one = _piece(g)

    out = ""
    end = 0
    for match in _PIECE.finditer(shape):
        out += shape[end : match.start()]
        end = match.end()
        if match.group(1) == "crc32":
            out += f"{zlib.crc32(out.encode()):08x}"
        else:
            out += one(match)
    return out + shape[end:]


def _piece(g: Shapes) -> Callable[[re.Match[str]], str]:
    """The drawer of one ``<CLASS:N>`` piece."""

    def one(match: re.Match[str]) -> str:
        name, count = match.group(1), int(match.group(2) or 0)
        if name == "uuid":
            return g.uuid()
        if name in ("x", "X"):
            return name * count
        if name == "digits":
            return g.digits(count)
        if name not in _CLASSES or count < 1:
            raise ValueError(f"unknown shape piece {match.group(0)!r}")
        alphabet = _CLASSES[name]
        return "".join(g.rng.choice(alphabet) for _ in range(count))

    return one


def load(path: Path = DATA, decoy_kinds: Collection[str] = ()) -> Data:
    """Read and check providers.toml (unknown keys or kinds, a line without ``@@``: ValueError).
    ``decoy_kinds`` are the corpus's own decoy kinds, which entries may use besides the file's."""
    doc = tomllib.loads(path.read_text())
    secret_kinds: dict[str, str] = dict(doc.get("secret_kinds", {}))
    known_decoys = set(decoy_kinds)
    own_decoys: dict[str, str] = dict(doc.get("decoy_kinds", {}))
    files: dict[str, list[Planted]] = {}
    for entry in doc.get("entries", []):
        unknown = set(entry) - {"kind", "file", "line", "value", "decoys"}
        kind = entry.get("kind")
        if unknown or kind not in secret_kinds or "@@" not in entry.get("line", ""):
            raise ValueError(f"{path}: bad entry {kind!r} ({sorted(unknown)})")
        planted = files.setdefault(entry["file"], [])
        planted.append(Planted("secret", kind, entry["line"], entry["value"]))
        for decoy in entry.get("decoys", []):
            bad_kind = decoy.get("kind") not in {*own_decoys, *known_decoys}
            if bad_kind or "@@" not in decoy.get("line", ""):
                raise ValueError(f"{path}: bad decoy of {kind}: {decoy!r}")
            planted.append(Planted("decoy", decoy["kind"], decoy["line"], decoy["value"]))
    # Decoys of no one entry: documentation pages and example files full of look-alikes.
    for decoy in doc.get("decoys", []):
        unknown = set(decoy) - {"kind", "file", "line", "value"}
        if unknown or decoy.get("kind") not in {*own_decoys, *known_decoys}:
            raise ValueError(f"{path}: bad decoy {decoy!r}")
        if "@@" not in decoy.get("line", ""):
            raise ValueError(f"{path}: decoy line without @@: {decoy!r}")
        files.setdefault(decoy["file"], []).append(
            Planted("decoy", decoy["kind"], decoy["line"], decoy["value"])
        )
    return Data(secret_kinds, own_decoys, files)


def writer(data: Data) -> Callable[[Builder, Shapes], None]:
    """The corpus writer that plants ``data``'s values, one file per ``file`` of the data."""

    def write(c: Builder, g: Shapes) -> None:
        for path, planted in data.files.items():
            f = c.file(path)
            # JSON files start with their object; the others with a comment line.
            lines = [] if path.endswith(".json") else [f"# {Path(path).name}: service settings", ""]
            for item in planted:
                value = draw(item.shape, g)
                mark = f.s(value, item.kind) if item.role == "secret" else f.d(value, item.kind)
                before, after = item.line.split("@@", 1)
                lines.append(draw(before, g) + mark + draw(after, g))
                lines.append("")
            f.lines(lines)

    return write
