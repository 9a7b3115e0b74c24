"""Errors that reach the user. Each message says what went wrong and, where it can, what to do.

The CLI turns any `ImgscanError` into a one-line message and exit code 2; anything else is a bug
and is shown as a traceback only with `--debug`.
"""

from __future__ import annotations


class ImgscanError(Exception):
    """Base class of every error imgscan reports to the user as a one-line message."""


class ImageError(ImgscanError):
    """The image cannot be opened or read as a whole (missing, not an image, unsafe, corrupt)."""


class RulePackError(ImgscanError):
    """The rule pack is malformed; the message names the file and the rule id."""


class ReaderUnavailableError(ImgscanError):
    """A reader's native library is missing; the message names the packages to install."""
