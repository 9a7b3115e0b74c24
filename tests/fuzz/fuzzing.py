"""The fuzz harness's shared parts: the kept corpus, mutation strategies and resource bounds.

Every property runs first on each seed of its corpus (`corpus_cases`, one pytest case per
file), then on inputs Hypothesis derives from those seeds (`mutated`) or builds from a grammar.
The run is reproducible: one seed per session, printed in the terminal summary and taken from
IMGSCAN_FUZZ_SEED when set (see README.md beside this file).
"""

from __future__ import annotations

import functools
import os
import secrets
import signal
import sys
import threading
import tracemalloc
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any, ClassVar, Literal, TypeVar

import pytest
from hypothesis import seed
from hypothesis import strategies as st

CORPUS = Path(__file__).resolve().parent / "corpus"
PROFILE = os.environ.get("IMGSCAN_FUZZ_PROFILE", "ci")
SEED = int(os.environ.get("IMGSCAN_FUZZ_SEED") or secrets.randbelow(1 << 32))

F = TypeVar("F", bound=Callable[..., Any])


def fuzz(test: F) -> F:
    """Run `test` from this session's seed, so a failure found in CI can be replayed."""
    return seed(SEED)(test)


def examples(ci: int) -> int:
    """`ci` examples under the CI profile, many more under the long one (for costly tests
    that set their own count)."""
    return ci * 20 if PROFILE == "long" else ci


@functools.cache
def seed_files(target: str) -> tuple[tuple[str, bytes], ...]:
    """The seeds kept for `target`: (name, content) of every file in corpus/<target>/, in name
    order, read once per session. `valid-*` seeds are valid inputs; `bug-*` seeds once found
    a bug."""
    folder = CORPUS / target
    return tuple((p.name, p.read_bytes()) for p in sorted(folder.iterdir()) if p.is_file())


class Seeds(list[bytes]):
    """Seed inputs that print as their origin: Hypothesis shows the strategies it draws from,
    and a repr of every seed's bytes is long and useless."""

    def __init__(self, label: str, seeds: Iterable[bytes]) -> None:
        super().__init__(seeds)
        self.label = label

    def __repr__(self) -> str:
        return f"<{len(self)} seeds: {self.label}>"


def corpus(target: str) -> Seeds:
    """The content of every seed kept for `target`."""
    return Seeds(f"corpus/{target}", (data for _, data in seed_files(target)))


def corpus_cases(target: str, names: bool = False) -> list[Any]:
    """The seeds of `target` as pytest cases named after their files: each case is the seed's
    bytes, or (file name, bytes) with `names`."""
    return [
        pytest.param((name, data) if names else data, id=name) for name, data in seed_files(target)
    ]


# Values that break parsers of binary headers: sizes, offsets, counts and flags at the edges.
INTERESTING_INTS = (
    0,
    1,
    2,
    3,
    7,
    8,
    9,
    0x7F,
    0x80,
    0xFF,
    0x100,
    0x1FF,
    0x200,
    0xFFFF,
    0x10000,
    0x7FFFFFFF,
    0x80000000,
    0xFFFFFFFF,
    0x100000000,
    0x7FFFFFFFFFFFFFFF,
    0x8000000000000000,
    0xFFFFFFFFFFFFFFFF,
)
_WIDTHS = {2: 0xFFFF, 4: 0xFFFFFFFF, 8: 0xFFFFFFFFFFFFFFFF}
_OPERATIONS = (
    "token",
    "flip",
    "byte",
    "int",
    "insert",
    "delete",
    "copy",
    "repeat",
    "cut",
    "splice",
)


@st.composite
def mutated(
    draw: st.DrawFn,
    seeds: Sequence[bytes],
    tokens: Sequence[bytes] = (),
    max_ops: int = 6,
    max_size: int = 1 << 20,
) -> bytes:
    """A seed from `seeds`, changed by up to `max_ops` mutations: bit flips, edge-value bytes
    and integers (both byte orders), inserted random bytes or `tokens` (the format's own
    keywords and punctuation, optionally repeated thousands of times: deep nesting and long
    lines), deleted, duplicated or repeated ranges, truncation, and splices with another seed.
    The result is at most `max_size` bytes."""
    # An index, not sampled_from(seeds): Hypothesis would put every seed in its messages.
    data = bytearray(seeds[draw(st.integers(0, len(seeds) - 1))])
    for _ in range(draw(st.integers(0, max_ops))):
        op = draw(st.sampled_from(_OPERATIONS if tokens else _OPERATIONS[1:]))
        size = len(data)
        pos = draw(st.integers(0, size))
        if op == "flip" and size:
            at = min(pos, size - 1)
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "byte" and size:
            at = min(pos, size - 1)
            data[at] = draw(st.sampled_from([0, 1, 0x7F, 0x80, 0xFF]) | st.integers(0, 255))
        elif op == "int":
            width = draw(st.sampled_from(sorted(_WIDTHS)))
            value = draw(st.sampled_from(INTERESTING_INTS) | st.integers(0, _WIDTHS[width]))
            order: Literal["big", "little"] = "big" if draw(st.booleans()) else "little"
            data[pos : pos + width] = (value & _WIDTHS[width]).to_bytes(width, order)
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=64))
        elif op == "token":
            token = draw(st.sampled_from(list(tokens)))
            times = draw(st.sampled_from([1, 1, 1, 2, 3]) | st.integers(1, 4000))
            data[pos:pos] = token * min(times, max_size // len(token) + 1)
        elif op == "delete":
            end = draw(st.integers(pos, size))
            del data[pos:end]
        elif op == "copy" and size:
            start = draw(st.integers(0, size - 1))
            chunk = data[start : draw(st.integers(start + 1, size))]
            data[pos:pos] = chunk
        elif op == "repeat" and size:
            start = min(pos, size - 1)
            chunk = data[start : draw(st.integers(start + 1, min(size, start + 64)))]
            data[start:start] = chunk * draw(st.integers(1, 4000))
        elif op == "cut":
            del data[pos:]
        elif op == "splice":
            other = seeds[draw(st.integers(0, len(seeds) - 1))]
            data = data[:pos] + other[draw(st.integers(0, len(other))) :]
        del data[max_size:]
    return bytes(data)


def lines(
    vocabulary: Sequence[str], max_lines: int = 30, max_words: int = 12
) -> st.SearchStrategy[str]:
    """Text of lines made of `vocabulary` words, arbitrary text and odd whitespace, joined
    by every line break str.splitlines knows (parsers split on them)."""
    word = st.sampled_from(list(vocabulary)) | st.text(max_size=12)
    space = st.sampled_from([" ", "\t", "  ", "", "=", " = ", "\x00", "\u00a0", "\u3000"])
    line = st.lists(st.tuples(word, space), max_size=max_words).map(
        lambda pairs: "".join(w + s for w, s in pairs)
    )
    breaks = st.sampled_from(["\n", "\n", "\n", "\r\n", "\r", "\x0b", "\x1c", "\x85", "\u2028"])
    return st.lists(st.tuples(line, breaks), max_size=max_lines).map(
        lambda pairs: "".join(text + end for text, end in pairs)
    )


def encoded(text: st.SearchStrategy[str]) -> st.SearchStrategy[bytes]:
    """`text` as UTF-8, sometimes with an invalid byte or a BOM thrown in."""
    junk = st.sampled_from([b"", b"", b"\xff", b"\xef\xbb\xbf", b"\xc3", b"\x00"])
    return st.tuples(text, junk, st.integers(0, 64)).map(
        lambda t: (
            t[0].encode("utf-8", "surrogatepass")[: t[2]]
            + t[1]
            + t[0].encode("utf-8", "surrogatepass")[t[2] :]
        )
    )


def toml_document(keys: Sequence[str], table_arrays: Sequence[str]) -> st.SearchStrategy[str]:
    """TOML text whose top level and `[[table_arrays]]` tables hold `keys` (and other keys)
    with values of every TOML type, nested arrays and inline tables included."""
    key = st.sampled_from(list(keys)) | st.from_regex(
        r"[A-Za-z_][A-Za-z0-9_-]{0,8}", fullmatch=True
    )
    scalar = st.one_of(
        st.text(max_size=40).map(_toml_string),
        st.sampled_from(list(keys)).map(_toml_string),
        st.integers().map(str),
        st.floats().map(_toml_float),
        st.booleans().map(lambda b: "true" if b else "false"),
        st.dates().map(str),
        st.datetimes().map(lambda d: d.isoformat()),
        st.sampled_from(["1979-05-27T07:32:00Z", "07:32:00", "0x7f", "0o17", "1e400", "-0.0"]),
    )
    value = st.recursive(
        scalar,
        lambda inner: st.one_of(
            st.lists(inner, max_size=4).map(lambda items: "[" + ", ".join(items) + "]"),
            st.lists(st.tuples(key, inner), max_size=4).map(
                lambda pairs: "{" + ", ".join(f"{_toml_key(k)} = {v}" for k, v in pairs) + "}"
            ),
        ),
        max_leaves=12,
    )
    body = st.lists(st.tuples(key, value), max_size=10).map(
        lambda pairs: "".join(f"{_toml_key(k)} = {v}\n" for k, v in _unique(pairs))
    )
    section = st.tuples(st.sampled_from(list(table_arrays)), body).map(
        lambda t: f"\n[[{t[0]}]]\n{t[1]}"
    )
    return st.tuples(body, st.lists(section, max_size=5)).map(lambda t: t[0] + "".join(t[1]))


def _unique(pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return list(dict(pairs).items())


def _toml_key(key: str) -> str:
    return key if key and all(c.isalnum() or c in "_-" for c in key) else _toml_string(key)


def _toml_string(text: str) -> str:
    escaped = "".join(
        c if c.isprintable() and c not in '"\\' else f"\\u{ord(c):04x}"
        for c in text
        if not 0xD800 <= ord(c) <= 0xDFFF
    )
    return f'"{escaped}"'


def _toml_float(value: float) -> str:
    if value != value:
        return "nan"
    if value in (float("inf"), float("-inf")):
        return "inf" if value > 0 else "-inf"
    text = repr(value)
    return text if any(c in text for c in ".e") else text + ".0"


def json_values(keys: Sequence[str]) -> st.SearchStrategy[Any]:
    """JSON-able values of every type (NaN and infinities included, as json.dumps writes
    them), with `keys` among the object keys."""
    return st.recursive(
        st.none()
        | st.booleans()
        | st.integers()
        | st.floats()
        | st.text(max_size=20)
        | st.sampled_from(list(keys)),
        lambda inner: (
            st.lists(inner, max_size=4)
            | st.dictionaries(st.sampled_from(list(keys)) | st.text(max_size=8), inner, max_size=4)
        ),
        max_leaves=16,
    )


def nested(opening: str, closing: str) -> st.SearchStrategy[str]:
    """Nesting many levels deep: what recursive-descent parsers of JSON and TOML trip on."""
    return st.integers(1, 5000).map(lambda depth: opening * depth + closing * depth)


class _TooSlow(BaseException):
    """Raised by the alarm inside the code under test: a BaseException, so that the code's
    own `except Exception` (per-file trouble is data) does not swallow it."""


@contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Fail (AssertionError, which Hypothesis shrinks) when the block runs longer than
    `seconds`. Unlike Hypothesis' deadline, which is measured after the example returns, this
    stops an example that would run for hours. Python code only: a long call into C is
    stopped when it returns."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signals reach the main thread only
        return

    def alarm(signum: int, frame: FrameType | None) -> None:
        raise _TooSlow

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    except _TooSlow:
        raise AssertionError(
            f"took more than {seconds} s: a hostile input must cost bounded time"
        ) from None
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


MEMORY_BOUND = 64 << 20  # what scanning an archive holds is ~12 MiB (an 8 MiB spool)


@contextmanager
def allocation_peak() -> Iterator[list[int]]:
    """The most memory Python objects held at once inside the block, above what they held
    when it began (one int, in the yielded list). Only this block is measured, unlike the
    process's peak RSS, which Hypothesis' own bookkeeping raises over a long run; allocations
    inside C libraries (zlib's window, ...) are not counted, the bytes they return are."""
    started = not tracemalloc.is_tracing()
    if started:
        tracemalloc.start()
    tracemalloc.reset_peak()
    before = tracemalloc.get_traced_memory()[0]
    result = [0]
    try:
        yield result
    finally:
        result[0] = tracemalloc.get_traced_memory()[1] - before
        if started:
            tracemalloc.stop()


class OpenedFiles:
    """The paths the process opened while `recording()` was active, from the interpreter's
    own audit events: every open() of Python code and C extensions that go through it."""

    _lock = threading.Lock()
    _active: ClassVar[list[list[str]]] = []
    _installed = False

    @classmethod
    @contextmanager
    def recording(cls) -> Iterator[list[str]]:
        with cls._lock:
            if not cls._installed:
                sys.addaudithook(cls._hook)  # hooks cannot be removed: install one, once
                cls._installed = True
        opened: list[str] = []
        cls._active.append(opened)
        try:
            yield opened
        finally:
            cls._active.remove(opened)

    @classmethod
    def _hook(cls, event: str, args: tuple[Any, ...]) -> None:
        if event == "open" and cls._active and isinstance(args[0], str | bytes | os.PathLike):
            cls._active[-1].append(os.fsdecode(args[0]))
