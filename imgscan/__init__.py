"""imgscan: scan offline VM disk images for the secrets a copy of the image would leak.

The library API is one call (the command line is built on the same code)::

    import imgscan

    result = imgscan.scan_image("disk.qcow2")    # a ScanResult (imgscan/model.py)
    for finding in result.findings:
        print(finding.severity, finding.rule, finding.path, finding.line)
    print(result.complete)                       # False: part of the image was not read

It works from a plain script (no `if __name__ == "__main__":` guard is needed: imgscan's
worker processes never import the caller's script). Reports: `imgscan.report.json.to_dict`,
`render_json`, `render_sarif`, `render_markdown`, `render_html`, `render_table` take the
result; `imgscan.policy.judge` applies a gate policy, `imgscan.suppress.apply_suppressions` a
baseline and ignore entries. Errors are `imgscan.errors.ImgscanError` (one line, no traceback
needed), with `ImageError` for an image that cannot be read.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from imgscan.model import ScanResult

__version__ = "0.3.0"

__all__ = ["__version__", "scan_image"]


# Not `scan`: that name is the imgscan.scan subpackage, which importing it binds here.
def scan_image(image: str | os.PathLike[str], **options: Any) -> ScanResult:
    """Scan the disk image at `image` read-only and return what was found.

    Options (keywords, all optional), as the `imgscan scan` options of the same names:
    `reader` ("auto", "native" or "guestfs"), `jobs` (worker processes; 0: one per core),
    `max_file_size` (bytes), `file_timeout` (seconds per file), `show_secrets` (capture raw
    values: off by default), `allow_external_files` (a backing file or extent named by the
    image), `signatures` (a rule pack directory), `luks_keys` (a tuple of passphrases).

    Raises `imgscan.errors.ImgscanError` when the image cannot be scanned at all, and
    TypeError for an unknown option. A scan that could read only part of the image returns
    normally with `result.complete` False and the reasons in `result.volumes` and
    `result.skipped`. KeyboardInterrupt stops the workers and raises
    `imgscan.scan.scanner.ScanInterrupted`, which carries the partial result.
    """
    from imgscan.image import ReaderKind
    from imgscan.options import ScanOptions
    from imgscan.scan import scanner

    if "reader" in options:
        options["reader"] = ReaderKind(options["reader"])
    if "signatures" in options and options["signatures"] is not None:
        options["signatures"] = Path(options["signatures"])
    return scanner.scan_image(ScanOptions(image=Path(image), **options))
