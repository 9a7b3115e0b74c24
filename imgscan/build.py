"""The identity of the running build: the release version plus digests of the code and of the
rule pack.

The release version alone (`imgscan.__version__`) stays the same across many commits, so it
cannot tell a results store whether a stored result came from the code that runs now. The code
digest covers every Python module of the package as it is on disk (a checkout, an editable
install and a wheel of the same commit give the same digest; any edit gives another), the rule
pack's digest is its `RulePack.version`. Reports carry both, and the batch results store keys
on them, so an upgrade or a local edit makes the next batch scan again instead of reusing what
an older build saw.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from pathlib import Path

from imgscan import __version__
from imgscan.detect.rules import pack_digest
from imgscan.options import default_signatures_dir

PACKAGE_DIR = Path(__file__).resolve().parent


@dataclass(frozen=True)
class BuildId:
    """`version` is the release, `code` and `rules` 16 hex digits each."""

    version: str
    code: str
    rules: str

    @property
    def tool_version(self) -> str:
        """The version results are stored under: `0.3.0+code.<digest>` (PEP 440 local label)."""
        return f"{self.version}+code.{self.code}"

    def __str__(self) -> str:
        return f"imgscan {self.version} (code {self.code}, rules {self.rules})"


def code_digest(package_dir: Path = PACKAGE_DIR) -> str:
    """16 hex digits of sha256 over every `*.py` below `package_dir` (relative path and bytes,
    in sorted order). Compiled caches, the rule pack and other data are not part of it."""
    digest = hashlib.sha256()
    for path in sorted(package_dir.rglob("*.py")):
        if "__pycache__" in path.parts:
            continue
        data = path.read_bytes()
        digest.update(path.relative_to(package_dir).as_posix().encode() + b"\0")
        digest.update(len(data).to_bytes(8, "big") + data)
    return digest.hexdigest()[:16]


@functools.cache
def current() -> BuildId:
    """The running build, with the built-in rule pack (computed once per process, ~5 ms)."""
    return BuildId(__version__, code_digest(), pack_digest(default_signatures_dir()))


def tool_version() -> str:
    """The running build's `BuildId.tool_version`."""
    return current().tool_version
