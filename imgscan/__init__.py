"""imgscan: scan offline VM disk images for the secrets a copy of the image would leak."""

from __future__ import annotations

__version__ = "0.3.0"
