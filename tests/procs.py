"""The process tree of a scan, read from /proc: what the interrupt and worker-crash tests watch
(no psutil needed on Linux), and the slow file that keeps a worker busy while they watch."""

from __future__ import annotations

import random
from pathlib import Path

# Far beyond what a worker reads while it starts (imports, the 7 MB compiled rule database):
# a worker past this is reading file content.
SCANNING_BYTES = 40 << 20


def stat_fields(pid: int) -> list[str] | None:
    """/proc/PID/stat's fields after the command name (state, ppid, pgrp, session, ...)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()


def pids() -> list[int]:
    return [int(entry.name) for entry in Path("/proc").iterdir() if entry.name.isdigit()]


def cmdline(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    return raw.replace(b"\0", b" ").decode(errors="replace")[:120]


def session_processes(sid: int) -> list[str]:
    """Live (not zombie) processes of session `sid`, as "pid cmdline"."""
    found = []
    for pid in pids():
        fields = stat_fields(pid)
        if fields is not None and int(fields[3]) == sid and fields[0] != "Z":
            found.append(f"{pid} {cmdline(pid)}")
    return found


def descendants(pid: int) -> list[int]:
    """Every process below `pid` in the process tree."""
    parents: dict[int, int] = {}
    for child in pids():
        fields = stat_fields(child)
        if fields is not None:
            parents[child] = int(fields[1])
    found, frontier = [], [pid]
    while frontier:
        parent = frontier.pop()
        children = [c for c, p in parents.items() if p == parent]
        found += children
        frontier += children
    return found


def comm(pid: int) -> str:
    """The process's name as ps shows it (imgscan names its children), or "" if it is gone."""
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def named_children(pid: int, name: str) -> list[int]:
    """The live processes below `pid` that named themselves `name` (as soon as they start)."""
    return [
        child
        for child in descendants(pid)
        if comm(child) == name and (stat_fields(child) or ["Z"])[0] != "Z"
    ]


def workers(pid: int) -> list[int]:
    """The live scanning worker processes below process `pid`."""
    return named_children(pid, "imgscan-worker")


def readers(pid: int) -> list[int]:
    """The live reader processes (the native reader's, image/isolated.py) below `pid`."""
    return named_children(pid, "imgscan-reader")


def read_bytes(pid: int) -> int:
    """Bytes `pid` has read with read(2) and the like (its `rchar`); 0 once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/io").read_text().splitlines():
            if line.startswith("rchar:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


# How big the slow file of `write_slow_log` is: seconds of work for a worker on this machine.
SLOW_LOG_MIB = 400


def write_slow_log(path: Path, mib: int = SLOW_LOG_MIB) -> None:
    """`mib` MiB of text that keeps a worker busy for seconds and holds no finding: credential
    words and no value, so the engine looks closer at every line (~140 MB/s instead of ~600)."""
    rng = random.Random(7)
    words = ["alpha", "token", "secret", "password", "key", "api", "auth", "field", "north"]
    block = "".join(
        " ".join(rng.choice(words) for _ in range(10)) + f" {n}\n" for n in range(20000)
    ).encode()[: 1 << 20]
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as out:
        for _ in range(mib):
            out.write(block)
