"""What a found secret is for: the non-secret settings around it (user, host, port, database).

An exposure says "a copy can log into the HR database on db.internal:5432 as hr_app", so a
finding needs more than its secret. This module reads it from the secret's own line (a URL's
user and host, a .pgpass entry, a shadow entry's account, a JDBC or ADO.NET string) or, for a
password in a settings file, from the settings nearest to it (`host = ...`, `user: ...`).
Values equal to the secret are never returned. Extraction is bounded, whatever the length of
the secret's line: at most LINE_LIMIT bytes each side of the secret are read as its line, and
the neighbours are the NEIGHBOUR_LINES lines around it within NEIGHBOUR_BYTES each side. So
the cost of one secret does not grow with its line (a one-line file of 100,000 assignments
costs 100,000 bounded reads, not 100,000 reads of the whole line).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

LINE_LIMIT = 2048
NEIGHBOUR_LINES = 12
NEIGHBOUR_BYTES = NEIGHBOUR_LINES * LINE_LIMIT
Context = tuple[tuple[str, str], ...]

_URL = (
    rb"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]{1,20})://(?P<user>[^:@/\s'\"]{0,128}):%s@"
    rb"(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]{1,253})(?::(?P<port>\d{1,5}))?"
    rb"(?:/(?P<database>[A-Za-z0-9_.-]{1,128}))?"
)
_PGPASS = (
    rb"^(?P<host>[^:\s]{1,253}):(?P<port>[^:\s]{1,16}):(?P<database>[^:\s]{1,128}):"
    rb"(?P<user>[^:\s]{1,128}):%s$"
)
_NETRC = (
    rb"machine[ \t]+(?P<host>\S{1,253})(?:[ \t]+login[ \t]+(?P<user>\S{1,128}))?"
    rb"[ \t]+password[ \t]+%s"
)
_PASSWD_LINE = rb"^(?P<user>[A-Za-z0-9_.][A-Za-z0-9_.-]{0,31})\$?:%s(?::|$)"
_JDBC = re.compile(
    rb"jdbc:(?P<scheme>[a-z0-9]{2,20}):(?:thin:[^@\s]*@)?(?://)?(?P<host>[A-Za-z0-9._-]{1,253})"
    rb"(?::(?P<port>\d{1,5}))?(?:[/:](?P<database>[A-Za-z0-9_.-]{1,128}))?"
)
# key = value settings on nearby lines, in ini, yaml, .env, properties, shell and code forms.
_SETTING = re.compile(
    rb"(?im)^[ \t]*(?:export[ \t]+|[$@]?)?['\"]?(?:[A-Za-z0-9_.-]{0,40}?[_.-])?"
    rb"(?P<key>host|hostname|server|address|addr|port|user|username|login|uid|user[_ ]?id|"
    rb"database|dbname|db|db_name|database_name|initial catalog|ssid)"
    rb"['\"]?[ \t]*(?:=>|[:=])[ \t]*['\"]?(?P<value>[A-Za-z0-9_.@%+-]{1,253})"
)
# A saved RDP connection (.rdp) types its settings: "full address:s:host[:port]",
# "username:s:DOMAIN\\user"; the generic settings would read the type letter as the value.
_RDP_PASSWORD = b"password 51:b:"
_RDP_SETTING = re.compile(
    rb"(?im)^(?P<key>full address|username):s:(?P<value>[^\r\n]{1,253}?)[ \t\r]*$"
)
_RDP_REACH = 65536
_PAIR = re.compile(rb"(?i)(?P<key>[A-Za-z ]{2,24})=(?P<value>[^;]{1,253})")
_KEYS = {
    b"host": "host",
    b"hostname": "host",
    b"server": "host",
    b"address": "host",
    b"addr": "host",
    b"data source": "host",
    b"port": "port",
    b"user": "user",
    b"username": "user",
    b"login": "user",
    b"uid": "user",
    b"userid": "user",
    b"user id": "user",
    b"user_id": "user",
    b"database": "database",
    b"dbname": "database",
    b"db": "database",
    b"db_name": "database",
    b"database_name": "database",
    b"initial catalog": "database",
    b"databasename": "database",
    b"ssid": "ssid",
}


def secret_context(buf: bytes, start: int, end: int) -> Context:
    """Non-secret settings that say what the secret at buf[start:end] opens."""
    secret = buf[start:end]
    if not secret or b"\n" in secret:
        return ()  # a key block: its context is its path
    # The line around the secret, cut at LINE_LIMIT bytes each side when it is longer.
    floor = max(0, start - LINE_LIMIT)
    line_start = buf.rfind(b"\n", floor, start) + 1 or floor
    cut = line_start > 0 and buf[line_start - 1 : line_start] != b"\n"
    ceiling = min(len(buf), end + LINE_LIMIT)
    line_end = buf.find(b"\n", end, ceiling)
    if line_end < 0:
        line_end = ceiling
    line = buf[line_start:line_end].rstrip(b"\r")
    if line.lower().startswith(_RDP_PASSWORD):
        return _clean(_rdp_settings(buf[max(0, start - _RDP_REACH) : end + _RDP_REACH]), secret)
    escaped = re.escape(secret)
    # A cut line has no known start: the templates anchored there (.pgpass, passwd-like
    # entries) would take a fragment for the entry.
    templates = (_URL, _NETRC) if cut else (_URL, _PGPASS, _NETRC, _PASSWD_LINE)
    for template in templates:
        match = re.search(template % escaped, line)
        if match:
            return _clean(match.groupdict(), secret)
    found: dict[str, bytes] = {}
    jdbc = _JDBC.search(line)
    if jdbc:
        found.update({k: v for k, v in jdbc.groupdict().items() if v})
    if b";" in line:  # ADO.NET / ODBC: Server=x;Database=y;User Id=z;Password=secret
        for pair in _PAIR.finditer(line):
            key = _KEYS.get(pair.group("key").strip().lower())
            if key is not None:
                found.setdefault(key, pair.group("value").strip().split(b",")[0])
    if not found:
        found = _neighbours(buf, line_start, line_end, secret)
    return _clean(found, secret)


def _rdp_settings(text: bytes) -> dict[str, bytes]:
    """Host, port and user of the saved RDP connection in `text`."""
    found: dict[str, bytes] = {}
    for match in _RDP_SETTING.finditer(text):
        value = match.group("value")
        if match.group("key").lower() == b"username":
            found.setdefault("user", value)
            continue
        host, colon, port = value.rpartition(b":")
        if colon and port.isdigit() and not host.endswith(b":"):  # not a bare IPv6 address
            found.setdefault("host", host)
            found.setdefault("port", port)
        else:
            found.setdefault("host", value)
    return found


def _neighbours(buf: bytes, line_start: int, line_end: int, secret: bytes) -> dict[str, bytes]:
    """The settings nearest to the secret's line, within NEIGHBOUR_LINES lines and
    NEIGHBOUR_BYTES bytes either side (every search below is bounded by those bytes)."""
    floor = max(0, line_start - NEIGHBOUR_BYTES)
    before = line_start
    for _ in range(NEIGHBOUR_LINES):
        if before <= floor:
            before = floor
            break
        before = buf.rfind(b"\n", floor, before - 1) + 1 or floor
    ceiling = min(len(buf), line_end + NEIGHBOUR_BYTES)
    after = line_end
    for _ in range(NEIGHBOUR_LINES):
        nxt = buf.find(b"\n", after + 1, ceiling)
        if nxt < 0:
            after = ceiling
            break
        after = nxt
    window = buf[before:after]
    centre = line_start - before
    best: dict[str, tuple[int, bytes]] = {}
    for match in _SETTING.finditer(window):
        key = _KEYS.get(match.group("key").lower())
        value = match.group("value")
        if key is None or value == secret:
            continue
        distance = abs(match.start() - centre)
        if key not in best or distance < best[key][0]:
            best[key] = (distance, value)
    return {key: value for key, (_, value) in best.items()}


def _clean(found: Mapping[str, bytes | None], secret: bytes) -> Context:
    items = []
    for key, value in sorted(found.items()):
        if value is None or not value or secret in value:
            continue
        items.append((key, value.decode("utf-8", "replace")[:253]))
    return tuple(items)
