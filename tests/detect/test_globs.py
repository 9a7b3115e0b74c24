"""Guest-path globs (detect/globs.py): the rule pack's glob semantics, in linear time."""

from __future__ import annotations

import random
import re
import time

import pytest

from imgscan.detect.globs import Glob, compile_glob
from imgscan.detect.rules import path_glob_regex
from imgscan.suppress import path_matches


def test_same_answers_as_the_glob_regex() -> None:
    # Random globs and paths over the characters that matter: the automaton answers as the
    # regex the rule pack compiles for Hyperscan (newlines aside: see below).
    rng = random.Random(20)
    tokens = ("a", "b", "/", ".", "*", "**", "**/", "?")
    letters = ("a", "b", "/", ".", "A")
    compared = 0
    for _ in range(20_000):
        glob = "".join(rng.choice(tokens) for _ in range(rng.randint(0, 7)))
        if rng.random() < 0.5:
            glob = "/" + glob
        path = "".join(rng.choice(letters) for _ in range(rng.randint(0, 10)))
        for caseless in (False, True):
            flags = re.IGNORECASE if caseless else 0
            expected = re.match(path_glob_regex(glob), path, flags) is not None
            assert Glob(glob, caseless).match(path) is expected, (glob, path, caseless)
            compared += 1
    assert compared == 40_000


@pytest.mark.parametrize(
    ("glob", "path", "matches"),
    [
        ("**/vendor/**/tests/**/*.pem", "/srv/vendor/a/tests/b/c/key.pem", True),
        ("**/vendor/**/tests/**/*.pem", "/srv/vendor/tests/key.pem", True),
        ("**/vendor/**/tests/**/*.pem", "/srv/vendor/tests/key.pem.bak", False),
        ("/srv/**", "/srv/app/.env", True),
        ("/srv/*", "/srv/app/.env", False),
        ("*.env", "/srv/app/.env", True),
        ("app/?env", "/srv/app/.env", True),
        ("/srv/app/**", "/srv/application/.env", False),
        # ** crosses every character, a newline in a file name included; the end is the end.
        ("/srv/**/*.conf", "/srv/new\nline/app.conf", True),
        ("/srv/*.conf", "/srv/app.conf\n", False),
    ],
)
def test_glob_semantics(glob: str, path: str, matches: bool) -> None:
    assert compile_glob(glob).match(path) is matches


def test_windows_paths_match_regardless_of_case() -> None:
    assert path_matches("C:/Users/*/NTUSER.DAT", "C:\\users\\Alice\\ntuser.dat")
    assert not path_matches("/home/*/.env", "/HOME/alice/.env")


def test_linear_in_the_path_whatever_the_glob() -> None:
    # A backtracking matcher takes time exponential in the number of `**` on a path that
    # almost matches; the automaton steps each character once. 100 KB of short directories
    # against globs of up to 40 `**` that fail only at the end: generous bound, far below what
    # `re` needs for the first glob alone on a path of 4 KB.
    path = "/" + "vendor/tests/spec/vendor/lib/" * 3_500 + "c1.conf"
    assert len(path) > 100_000
    globs = (
        "**/vendor/**/tests/**/*.pem",
        "**/" * 40 + "x/**/*.pem",
        "/vendor/**/lib/**/tests/**/spec/**/x*.conf",
        "**/tests/**/**/**/**/vendor/**/c*.crt",
    )
    started = time.monotonic()
    for glob in globs:
        for caseless in (False, True):
            assert not Glob(glob, caseless).match(path)
    assert Glob("**/vendor/**/tests/**/c?.conf").match(path)
    assert time.monotonic() - started < 10.0
