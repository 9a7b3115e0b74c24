"""The official SARIF 2.1.0 JSON schema, for the tests that validate imgscan's SARIF output.

The schema is not copied into the repository: it is taken from the npm package that Microsoft's
SARIF SDK team publishes with it (`@microsoft/jest-sarif`, which ships
`lib/schemas/sarif-2.1.0-rtm.5.json`, the OASIS committee's final 2.1.0 schema), downloaded
from the npm registry by HTTPS, checked against the package's pinned sha512 integrity, and
cached beside the test images.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import tarfile
import urllib.request
from pathlib import Path
from typing import Any

import build as base

TARBALL = "https://registry.npmjs.org/@microsoft/jest-sarif/-/jest-sarif-1.0.0-beta.0.tgz"
# `npm view @microsoft/jest-sarif@1.0.0-beta.0 dist.integrity`
INTEGRITY = (
    "sha512-A1fOhPd6Ic5iDk4F9YPw1qNB4XF+7+IviR7xl8r2F6Qz"
    "Qkx5cpY9LsGk2rExiFIEcBbjpVnSmwWGBukASkiQ9A=="
)
MEMBER = "package/lib/schemas/sarif-2.1.0-rtm.5.json"
NAME = "sarif-2.1.0-rtm.5.json"


def sarif_schema(out: Path | None = None) -> dict[str, Any]:
    """The SARIF 2.1.0 schema (downloaded once, then read from the cache)."""
    root = (out if out is not None else base.default_out()).expanduser()
    cached = root / NAME
    if not cached.is_file():
        with urllib.request.urlopen(TARBALL, timeout=60) as response:
            tarball = response.read()
        digest = "sha512-" + base64.b64encode(hashlib.sha512(tarball).digest()).decode()
        if digest != INTEGRITY:
            raise base.BuildError(f"{TARBALL}: integrity {digest} is not the pinned one")
        with tarfile.open(fileobj=io.BytesIO(tarball)) as archive:
            member = archive.extractfile(MEMBER)
            if member is None:
                raise base.BuildError(f"{TARBALL}: no {MEMBER}")
            data = member.read()
        root.mkdir(parents=True, exist_ok=True)
        partial = cached.with_suffix(f".{os.getpid()}.tmp")
        partial.write_bytes(data)
        partial.replace(cached)
    schema: dict[str, Any] = json.loads(cached.read_text())
    return schema
